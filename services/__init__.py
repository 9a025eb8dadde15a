"""Rollcall's four services. Each owns its tables and talks to the others only through Kafka and HTTP."""
