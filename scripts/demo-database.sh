#!/usr/bin/env bash
# The demo's database: the project's PostgreSQL primary and streaming replica
# (ensure-postgres-replica.sh), with a `taxcollector_demo` database holding a
# `vehicles_vehicule` table the demo's restore test counts. Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/ensure-postgres-replica.sh >/dev/null
BIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "${d}/psql" ]]; then BIN="${d}"; break; fi
done
PSQL=("${BIN:-/usr/bin}/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${STEWARD_PG_PRIMARY_PORT:-15433}" -U postgres)
if [[ "$("${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'taxcollector_demo'")" != 1 ]]; then
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE taxcollector_demo"
fi
"${PSQL[@]}" -d taxcollector_demo <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE IF NOT EXISTS vehicles_vehicule (id bigserial PRIMARY KEY, plate text NOT NULL, owner text NOT NULL);
INSERT INTO vehicles_vehicule (plate, owner)
    SELECT 'TAA-' || g, 'owner ' || g FROM generate_series(1, 5000) g
    WHERE NOT EXISTS (SELECT 1 FROM vehicles_vehicule);
SQL
mkdir -p /tmp/steward-demo/backups /tmp/steward-demo/archive
