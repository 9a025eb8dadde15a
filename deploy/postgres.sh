#!/usr/bin/env bash
# Make sure a local PostgreSQL server is running with Rollcall's test role and database.
# Installs Debian's postgresql package if absent (needs root), starts the cluster, creates
# role "rollcall" (password "rollcall") and database "rollcall_test". Idempotent.
# Prints the SQLAlchemy URL to use as ROLLCALL_TEST_POSTGRES_URL.
set -euo pipefail
PGPORT="${PGPORT:-5432}"

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing postgresql…" >&2
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main -p "$PGPORT" >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start >&2
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$PGPORT" && break
  sleep 0.5
done
psql_as_postgres() { runuser -u postgres -- psql -p "$PGPORT" -qtAX "$@"; }
psql_as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname='rollcall'" | grep -q 1 ||
  psql_as_postgres -c "CREATE ROLE rollcall LOGIN PASSWORD 'rollcall' CREATEDB" >&2
psql_as_postgres -c "SELECT 1 FROM pg_database WHERE datname='rollcall_test'" | grep -q 1 ||
  psql_as_postgres -c "CREATE DATABASE rollcall_test OWNER rollcall" >&2
echo "postgresql+asyncpg://rollcall:rollcall@127.0.0.1:${PGPORT}/rollcall_test"
