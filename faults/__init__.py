"""Fault injection: replay a term of the synthetic borough through ingest while killing services,
restarting Kafka and PostgreSQL, then verify nothing was lost or duplicated (``python -m faults``)."""
