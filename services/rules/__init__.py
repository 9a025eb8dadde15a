"""Rules service: every pupil's measures, band and signals, recomputed as marks arrive (SPEC §3–§6)."""
