-- One database per service: each owns its tables and migrations (docker-compose init script).
CREATE DATABASE rollcall_ingest OWNER rollcall;
CREATE DATABASE rollcall_rules OWNER rollcall;
CREATE DATABASE rollcall_legal OWNER rollcall;
CREATE DATABASE rollcall_notifications OWNER rollcall;
