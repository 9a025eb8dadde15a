"""Notifications service: recipients, routing of signals and legal deadlines to them, alerts and
their durable delivery (webhooks, email, Server-Sent Events, ``rollcall.alerts.v1``)."""
