"""Rules service: measures, bands and signals from the register (issue 3; not built yet)."""
