#!/usr/bin/env bash
# Makes sure a PostgreSQL for steward's tests answers on 127.0.0.1, and prints its URL.
# Installs Debian's `postgresql` package when initdb/pg_ctl are missing, then runs our own
# cluster (never the package's service: it may not start in a container, and one started by
# the package on 5432 is left alone). Safe to run again: a cluster that already answers is
# reused.
#
# Environment:
#   STEWARD_PG_PORT  listen port on 127.0.0.1 (default 15432)
#   STEWARD_PG_DIR   data directory, socket and log (default /tmp/steward-postgres)
#
# Authentication is `trust` on loopback only: this cluster holds throw-away test data. Tests
# create their own databases (unique names) through the printed URL and drop them afterwards.
set -euo pipefail

PORT="${STEWARD_PG_PORT:-15432}"
DIR="${STEWARD_PG_DIR:-/tmp/steward-postgres}"
DATA="${DIR}/data"
SOCKETS="${DIR}/run"
LOG="${DIR}/postgres.log"
DB=steward_test
# initdb and the server refuse to run as root; as root they run as the package's `postgres`
# user, otherwise as whoever runs this.
if [[ "$(id -u)" == 0 ]]; then OS_USER=postgres; else OS_USER="$(id -un)"; fi
URL="postgres://postgres@127.0.0.1:${PORT}/${DB}"
READY_TIMEOUT_SECS=60
INSTALL_LOCK_TIMEOUT_SECS=600

log() { echo "ensure-postgres: $*" >&2; }

# Debian puts the server binaries outside PATH, one directory per major version; prefer the
# newest.
find_bindir() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "${dir}/initdb" && -x "${dir}/pg_ctl" ]]; then
            echo "${dir}"
            return 0
        fi
    done
    return 1
}

as_postgres() {
    if [[ "$(id -un)" == "${OS_USER}" ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "${OS_USER}" -- "$@"
    else
        # su needs one command string; every argument here is ours and free of quotes.
        su "${OS_USER}" -s /bin/sh -c "$*"
    fi
}

ready() {
    "${PG_ISREADY}" -q -h 127.0.0.1 -p "${PORT}" -d postgres -U postgres -t 2 >/dev/null 2>&1
}

psql_admin() {
    "${PSQL}" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORT}" -U postgres -d postgres "$@"
}

ensure_database() {
    local exists
    exists="$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '${DB}'")"
    if [[ "${exists}" != 1 ]]; then
        log "creating database ${DB}"
        # A concurrent run may create it between the check and here; that is fine.
        psql_admin -c "CREATE DATABASE ${DB}" >/dev/null 2>&1 ||
            [[ "$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '${DB}'")" == 1 ]]
    fi
}

mkdir -p "${DIR}"

# Parallel runs would both install, both initdb and both start a server, and the loser's
# failed start would fail its run: the second waits for the first. The server must not
# inherit the lock, or it would hold it for its whole life.
exec 9>"${DIR}/.lock"
if ! flock -w "${INSTALL_LOCK_TIMEOUT_SECS}" 9; then
    log "another run holds ${DIR}/.lock; gave up waiting"
    exit 1
fi

if ! BIN="$(find_bindir)"; then
    if [[ "$(id -u)" != 0 ]]; then
        log "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
        exit 1
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's postinst creates and tries to start its own cluster; in a container that
    # may fail or be skipped, which does not fail the install, and we never use that cluster.
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    BIN="$(find_bindir)" || {
        log "postgresql installed, but no initdb/pg_ctl found under /usr/lib/postgresql/*/bin"
        exit 1
    }
fi
# The client tools normally sit beside the server's; fall back to PATH (the client package).
client_tool() {
    if [[ -x "${BIN}/$1" ]]; then
        echo "${BIN}/$1"
    else
        command -v "$1"
    fi
}
PG_ISREADY="$(client_tool pg_isready)" || { log "pg_isready not found"; exit 1; }
PSQL="$(client_tool psql)" || { log "psql not found"; exit 1; }

if ready; then
    ensure_database
    log "already ready"
    echo "${URL}"
    exit 0
fi

if ! id -u "${OS_USER}" >/dev/null 2>&1; then
    log "the ${OS_USER} OS user does not exist (the postgresql package creates it)"
    exit 1
fi

# The server refuses a data directory it does not own.
mkdir -p "${SOCKETS}"
if [[ "$(id -u)" == 0 ]]; then
    chown "${OS_USER}:" "${DIR}" "${SOCKETS}"
fi
chmod 0700 "${DIR}"

if [[ ! -s "${DATA}/PG_VERSION" ]]; then
    log "initialising a cluster in ${DATA}"
    rm -rf "${DATA}"
    as_postgres "${BIN}/initdb" -D "${DATA}" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C.UTF-8 >"${DIR}/initdb.log" 2>&1 || {
        log "initdb failed; last lines of ${DIR}/initdb.log:"
        tail -n 20 "${DIR}/initdb.log" >&2 || true
        exit 1
    }
fi

# Rewritten on every start so that a changed script takes effect. Loopback only, trust.
hba="${DATA}/pg_hba.conf"
cat >"${hba}.tmp" <<'EOF'
# Written by scripts/ensure-postgres.sh; edits are overwritten. Test cluster: trust on loopback.
local   all all              trust
host    all all 127.0.0.1/32 trust
host    all all ::1/128      trust
EOF
if [[ "$(id -u)" == 0 ]]; then
    chown "${OS_USER}:" "${hba}.tmp"
fi
mv "${hba}.tmp" "${hba}"

# A server left by a killed run may still be shutting down, or its pid file may be stale;
# pg_ctl start handles a stale pid file itself.
status=0
as_postgres "${BIN}/pg_ctl" -D "${DATA}" status >/dev/null 2>&1 || status=$?
if ((status == 0)); then
    log "a server is running on ${DATA} but not answering yet; waiting for it"
else
    log "starting PostgreSQL on 127.0.0.1:${PORT} (log ${LOG})"
    # fsync off: test data only, and it makes every commit much cheaper.
    as_postgres "${BIN}/pg_ctl" -D "${DATA}" -l "${LOG}" -w -t "${READY_TIMEOUT_SECS}" start \
        -o "-c listen_addresses=127.0.0.1 -p ${PORT} -k ${SOCKETS} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        >/dev/null 9>&- || {
        log "pg_ctl start failed; last lines of ${LOG}:"
        tail -n 20 "${LOG}" >&2 || true
        exit 1
    }
fi

deadline=$((SECONDS + READY_TIMEOUT_SECS))
until ready; do
    if ((SECONDS >= deadline)); then
        log "PostgreSQL not ready on 127.0.0.1:${PORT} after ${READY_TIMEOUT_SECS}s; see ${LOG}"
        exit 1
    fi
    sleep 0.25
done

ensure_database
log "ready"
echo "${URL}"
