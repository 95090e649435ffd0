#!/usr/bin/env bash
# Builds steward-bench (release) and runs its Database benchmark (`steward-bench database`)
# against the local PostgreSQL primary and streaming replica of scripts/ensure-postgres-replica.sh:
# observation cost, backup and restore test against pg_dump / pg_restore by hand, and the time
# from lag to the deploy gate holding (see docs/BENCHMARKS.md, "Database").
#
# It prepares the data in a scratch database of its own on the primary, steward_bench_<pid of
# this script>: 200 small tables (500 rows each, a tenth deleted) and 4 tables of generated rows
# worth about BENCH_DB_MB MiB with their indexes (default 1000). The database is dropped at the
# end, also when the bench fails or is interrupted; replay on the replica is resumed then too
# (the bench pauses it in its gate section and resumes it itself; this is the backstop). No other
# database is touched.
#
# Markdown goes to stdout and to target/bench/database-<timestamp>.md; progress to stderr.
# Extra arguments are passed to steward-bench database (--help lists them).
#
# Environment: BENCH_DB_MB (1000), BENCH_DB_TIMEOUT_SECS (the bench's hard limit, 2700).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB="${BENCH_DB_MB:-1000}"
TIMEOUT_SECS="${BENCH_DB_TIMEOUT_SECS:-2700}"
DB="steward_bench_$$"
WORK="${TMPDIR:-/tmp}/steward-bench-db-$$"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BENCH_PID=""

log() { echo "bench-database: $*" >&2; }

PG_BIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "${d}/psql" && -x "${d}/pg_dump" ]]; then PG_BIN="${d}"; break; fi
done
[[ -n "${PG_BIN}" ]] || { log "no PostgreSQL client binaries under /usr/lib/postgresql/*/bin"; exit 1; }

as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Stops a bench that is still running (the time limit, an interrupt): it runs in a process group
# of its own (setsid), which gets SIGTERM, then SIGKILL if anything is left after 10 s.
stop_bench() {
    [[ -n "${BENCH_PID}" ]] && kill -0 "${BENCH_PID}" 2>/dev/null || return 0
    log "stopping the bench (process group ${BENCH_PID})"
    kill -TERM -- "-${BENCH_PID}" 2>/dev/null
    for _ in $(seq 1 20); do
        pgrep -g "${BENCH_PID}" >/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-${BENCH_PID}" 2>/dev/null
    wait "${BENCH_PID}" 2>/dev/null
    sleep 1
}

# Never stops half-way: every step is tried (no errexit in here).
cleanup() {
    set +e
    stop_bench
    # Servers of the bench live in the work directory: the restore by hand's (pg_ctl starts it
    # detached) and steward's throwaway ones (the bench's TMPDIR is in there too).
    local pid
    for pid in $(find "${WORK}" -maxdepth 5 -name postmaster.pid 2>/dev/null); do
        as_postgres "${PG_BIN}/pg_ctl" -D "$(dirname "${pid}")" -m immediate -w -t 20 stop >/dev/null 2>&1
    done
    rm -rf "${WORK}"
    if [[ -n "${REPLICA:-}" ]]; then
        "${PG_BIN}/psql" -X -q -d "${REPLICA}/postgres" -c "SELECT pg_wal_replay_resume()" >/dev/null 2>&1 ||
            log "could not resume replay on ${REPLICA}: run SELECT pg_wal_replay_resume() there"
    fi
    if [[ -n "${PRIMARY:-}" ]]; then
        PGOPTIONS="-c client_min_messages=warning" "${PG_BIN}/psql" -X -q -d "${PRIMARY}/postgres" \
            -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || log "could not drop ${DB}"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release -p steward-bench

mapfile -t URLS < <(scripts/ensure-postgres-replica.sh)
[[ "${#URLS[@]}" == 2 ]] || { log "scripts/ensure-postgres-replica.sh printed no URLs"; exit 1; }
PRIMARY="${URLS[0]%/*}"
REPLICA="${URLS[1]%/*}"
psql_db() { "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -d "${PRIMARY}/${DB}" "$@"; }

ROWS=$(( SIZE_MB * 1048576 / 177 / 4 ))  # 177 bytes a row with both indexes, measured
log "preparing ${DB} on ${PRIMARY}: 200 small tables, 4 × ${ROWS} rows"
t0=${SECONDS}
"${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -d "${PRIMARY}/postgres" -c "CREATE DATABASE ${DB}"
psql_db -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
psql_db <<'SQL'
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, name text NOT NULL, amount numeric(12,2), '
                   'updated_at timestamptz NOT NULL DEFAULT now())', lpad(i::text, 3, '0'));
    EXECUTE format('INSERT INTO small_%s (id, name, amount) SELECT g, ''item '' || g, g * 1.5 '
                   'FROM generate_series(1, 500) g', lpad(i::text, 3, '0'));
  END LOOP;
END $$;
SQL
for n in 1 2 3 4; do
    psql_db <<SQL
CREATE TABLE big_${n} (id bigint, customer_id int, amount numeric(12,2), status text, note text, created_at timestamptz);
INSERT INTO big_${n}
  SELECT g, (g::bigint * 7919) % 100000, ((g * 31) % 100000) / 100.0, (ARRAY['paid','due','late','refunded'])[1 + g % 4],
         md5(g::text) || ' ' || md5(g::text || 'k${n}'), timestamptz '2024-01-01' + g * interval '1 second'
  FROM generate_series(1, ${ROWS}) g;
ALTER TABLE big_${n} ADD PRIMARY KEY (id);
CREATE INDEX ON big_${n} (customer_id);
SQL
done
psql_db -c "VACUUM ANALYZE" >/dev/null
# Dead tuples in the small tables (50 of 500 rows each: under autovacuum's threshold).
psql_db <<'SQL'
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    EXECUTE format('DELETE FROM small_%s WHERE id %% 10 = 0', lpad(i::text, 3, '0'));
  END LOOP;
END $$;
SQL
# A few statements for pg_stat_statements to list.
psql_db -c "SELECT status, count(*), avg(amount) FROM big_1 GROUP BY status" >/dev/null
psql_db -c "SELECT count(*) FROM big_2 WHERE customer_id = 42" >/dev/null
log "prepared in $(( SECONDS - t0 )) s: $(psql_db -At -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
# The replica replays the generated WAL before anything is measured (within 1 MiB; bounded:
# other users of the primary may keep writing).
for _ in $(seq 1 300); do
    behind="$("${PG_BIN}/psql" -X -At -d "${PRIMARY}/postgres" -c \
        "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), -1)::bigint FROM pg_stat_replication")"
    (( behind >= 0 && behind < 1048576 )) && break
    sleep 1
done
log "replica ${behind} bytes behind"

mkdir -p "${TARGET_DIR}/bench"
out="${TARGET_DIR}/bench/database-$(date -u +%Y%m%dT%H%M%SZ).md"
# TMPDIR: steward's throwaway restore servers are made in the work directory, so nothing of
# theirs can outlive the run even if the bench is killed.
mkdir -p "${WORK}/tmp"
TMPDIR="${WORK}/tmp" setsid "${TARGET_DIR}/release/steward-bench" database --db "${DB}" --primary "${PRIMARY}" --replica "${REPLICA}" \
    --work "${WORK}" "$@" >"${out}" &
BENCH_PID=$!
deadline=$(( SECONDS + TIMEOUT_SECS ))
while kill -0 "${BENCH_PID}" 2>/dev/null; do
    if (( SECONDS > deadline )); then
        log "the bench exceeded ${TIMEOUT_SECS} s"
        stop_bench
        break
    fi
    sleep 1
done
rc=0
wait "${BENCH_PID}" 2>/dev/null || rc=$?
BENCH_PID=""
cat "${out}"
log "results in ${out}"
exit "${rc}"
