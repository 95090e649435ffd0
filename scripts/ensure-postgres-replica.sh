#!/usr/bin/env bash
# Makes sure a PostgreSQL primary with one streaming replica (made with pg_basebackup) answers
# on 127.0.0.1 for the Database kind's tests, and prints their URLs (primary, then replica).
# Uses the server binaries scripts/ensure-postgres.sh installs. The primary preloads
# pg_stat_statements. Safe to run again: servers that already answer are reused.
#
# Environment:
#   STEWARD_PG_PRIMARY_PORT  (default 15433)   STEWARD_PG_REPLICA_PORT (default 15434)
#   STEWARD_PG_REPL_DIR      data directories, sockets and logs (default /tmp/steward-pg-repl)
#
# Authentication is `trust` on loopback only: throw-away test data. The replica is listed in
# the primary's pg_stat_replication as application_name `replica1` and streams from the physical
# slot `replica1`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PRIMARY_PORT="${STEWARD_PG_PRIMARY_PORT:-15433}"
REPLICA_PORT="${STEWARD_PG_REPLICA_PORT:-15434}"
DIR="${STEWARD_PG_REPL_DIR:-/tmp/steward-pg-repl}"
READY_TIMEOUT_SECS=60
if [[ "$(id -u)" == 0 ]]; then OS_USER=postgres; else OS_USER="$(id -un)"; fi

log() { echo "ensure-postgres-replica: $*" >&2; }

# Installs the package when needed (and starts the store tests' server, harmless here).
scripts/ensure-postgres.sh >/dev/null

BIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "${d}/initdb" && -x "${d}/pg_basebackup" ]]; then BIN="${d}"; break; fi
done
[[ -n "${BIN}" ]] || { log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"; exit 1; }

as_postgres() {
    if [[ "$(id -un)" == "${OS_USER}" ]]; then "$@"; else runuser -u "${OS_USER}" -- "$@"; fi
}
ready() { "${BIN}/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 2 >/dev/null 2>&1; }
wait_ready() {
    local i
    for ((i = 0; i < READY_TIMEOUT_SECS * 2; i++)); do
        ready "$1" && return 0
        sleep 0.5
    done
    log "no answer on port $1 within ${READY_TIMEOUT_SECS} s; see ${DIR}/*.log"
    return 1
}

mkdir -p "${DIR}/run"
exec 9>"${DIR}/.lock"
flock -w 600 9 || { log "another run holds ${DIR}/.lock"; exit 1; }
[[ "$(id -u)" == 0 ]] && chown "${OS_USER}:" "${DIR}" "${DIR}/run"
chmod 0700 "${DIR}"

if ! ready "${PRIMARY_PORT}"; then
    if [[ ! -s "${DIR}/primary/PG_VERSION" ]]; then
        log "initialising the primary in ${DIR}/primary"
        rm -rf "${DIR}/primary" "${DIR}/replica"
        as_postgres "${BIN}/initdb" -D "${DIR}/primary" -U postgres --auth=trust --encoding=UTF8 \
            --locale=C.UTF-8 >"${DIR}/initdb.log" 2>&1
        cat >>"${DIR}/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = ${PRIMARY_PORT}
unix_socket_directories = '${DIR}/run'
wal_level = replica
max_wal_senders = 5
shared_preload_libraries = 'pg_stat_statements'
CONF
        echo "host replication all 127.0.0.1/32 trust" >>"${DIR}/primary/pg_hba.conf"
    fi
    # 9>&-: the server must not inherit the lock, or it would hold it for its whole life.
    as_postgres "${BIN}/pg_ctl" -D "${DIR}/primary" -l "${DIR}/primary.log" -w -t "${READY_TIMEOUT_SECS}" start >/dev/null 9>&-
fi
wait_ready "${PRIMARY_PORT}"
psql_primary() {
    PGOPTIONS="-c client_min_messages=warning" "${BIN}/psql" -X -q -At -h 127.0.0.1 -p "${PRIMARY_PORT}" \
        -U postgres -d postgres -c "$1"
}
psql_primary "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
# A physical slot keeps the WAL a stopped or paused replica still needs (tests stop it and
# write meanwhile), bounded so that a replica gone for good cannot fill the disk.
psql_primary "ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'" >/dev/null
psql_primary "SELECT pg_reload_conf()" >/dev/null
psql_primary "SELECT pg_create_physical_replication_slot('replica1', true)
              WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'replica1')" >/dev/null

stop_replica() {
    as_postgres "${BIN}/pg_ctl" -D "${DIR}/replica" -m fast -w -t "${READY_TIMEOUT_SECS}" stop >/dev/null 2>&1 9>&- || true
}
# A replica made before it had a slot, or one the primary no longer streams to (its WAL was
# recycled while it was down), is cloned again: a test replica that cannot catch up is useless.
if [[ -s "${DIR}/replica/PG_VERSION" ]] && ! grep -q "primary_slot_name = 'replica1'" "${DIR}/replica/postgresql.auto.conf"; then
    log "the replica has no replication slot: cloning it again"
    stop_replica
    rm -rf "${DIR}/replica"
fi
if ready "${REPLICA_PORT}"; then
    streaming=""
    for ((i = 0; i < 20; i++)); do
        streaming="$(psql_primary "SELECT 1 FROM pg_stat_replication WHERE application_name = 'replica1' AND state = 'streaming'")"
        [[ "${streaming}" == 1 ]] && break
        sleep 0.5
    done
    if [[ "${streaming}" != 1 ]] && grep -q "has already been removed" "${DIR}/replica.log" 2>/dev/null; then
        log "the replica cannot catch up (its WAL was removed): cloning it again"
        stop_replica
        rm -rf "${DIR}/replica"
        : >"${DIR}/replica.log"
    fi
fi

if ! ready "${REPLICA_PORT}"; then
    if [[ ! -s "${DIR}/replica/PG_VERSION" ]]; then
        log "cloning the replica with pg_basebackup"
        rm -rf "${DIR}/replica"
        as_postgres "${BIN}/pg_basebackup" -h 127.0.0.1 -p "${PRIMARY_PORT}" -U postgres \
            -D "${DIR}/replica" -R -X stream -S replica1 >"${DIR}/basebackup.log" 2>&1 9>&-
        cat >>"${DIR}/replica/postgresql.auto.conf" <<CONF
port = ${REPLICA_PORT}
primary_conninfo = 'host=127.0.0.1 port=${PRIMARY_PORT} user=postgres application_name=replica1'
primary_slot_name = 'replica1'
CONF
    fi
    as_postgres "${BIN}/pg_ctl" -D "${DIR}/replica" -l "${DIR}/replica.log" -w -t "${READY_TIMEOUT_SECS}" start >/dev/null 9>&-
fi
wait_ready "${REPLICA_PORT}"
echo "postgres://postgres@127.0.0.1:${PRIMARY_PORT}/postgres"
echo "postgres://postgres@127.0.0.1:${REPLICA_PORT}/postgres"
