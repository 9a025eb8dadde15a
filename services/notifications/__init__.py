"""Notifications service: recipients, routing and alert delivery (issue 4; not built yet)."""
