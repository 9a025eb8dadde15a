"""Legal service: cases, penalty notices and statutory clocks (issue 5; not built yet)."""
