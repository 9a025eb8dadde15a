"""Local deployment: fetch and run Apache Kafka and PostgreSQL, and run the whole stack."""
