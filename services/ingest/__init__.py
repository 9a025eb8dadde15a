"""Ingest service: schools' MIS systems and social-care systems push the register and registry here."""
