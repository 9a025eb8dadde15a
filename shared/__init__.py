"""Code every Rollcall service shares: the pure domain core and the edges (events, outbox, auth, HTTP)."""
