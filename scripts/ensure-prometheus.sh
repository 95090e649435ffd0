#!/usr/bin/env bash
# Makes sure a Prometheus for steward's tests answers on 127.0.0.1, and prints its URL.
# Installs Debian's `prometheus` package when the binary is missing, then starts our own
# instance (never the package's service: it may not run in a container, and a :9090 one
# started by the package is left alone). Safe to run again: an instance that already
# answers is reused.
#
# Environment:
#   STEWARD_PROMETHEUS_PORT  listen port on 127.0.0.1 (default 19090)
#   STEWARD_PROMETHEUS_DIR   config, data, log and targets (default /tmp/steward-prometheus)
#
# Adding a scrape target: write a file_sd JSON file into "${STEWARD_PROMETHEUS_DIR}/targets/",
# named *.json. Prometheus re-reads the folder within about a second and scrapes /metrics
# every second. Write it under another name first and rename it, so that a half-written
# file is never read. Delete the file to stop scraping. Format:
#
#   [
#     {
#       "targets": ["127.0.0.1:PORT"],
#       "labels": {"instance_id": "a-unique-value"}
#     }
#   ]
#
# Every sample scraped from those targets carries the labels, plus job="steward-e2e".
set -euo pipefail

PORT="${STEWARD_PROMETHEUS_PORT:-19090}"
DIR="${STEWARD_PROMETHEUS_DIR:-/tmp/steward-prometheus}"
URL="http://127.0.0.1:${PORT}"
READY_TIMEOUT_SECS=30

log() { echo "ensure-prometheus: $*" >&2; }

ready() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 -o /dev/null "${URL}/-/ready" 2>/dev/null
    else
        # Without curl: a bare HTTP/1.0 request; /-/ready answers 200 only once the TSDB is open.
        local status
        status="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/${PORT} &&
            printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && head -n1 <&3" 2>/dev/null)" || return 1
        [[ "${status}" == *" 200 "* ]]
    fi
}

if ready; then
    log "already ready"
    echo "${URL}"
    exit 0
fi

mkdir -p "${DIR}/data" "${DIR}/targets"

# Parallel runs (test jobs) would both install, both write the config and both start an
# instance, and the loser's failed bind would fail its run: the second waits for the first.
# Prometheus must not inherit the lock, or it would hold it for its whole life.
exec 9>"${DIR}/.lock"
if ! flock -w 300 9; then
    log "another run holds ${DIR}/.lock; gave up waiting"
    exit 1
fi

if ! command -v prometheus >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]]; then
        log "prometheus is not installed and installing it needs root (apt-get install prometheus)"
        exit 1
    fi
    log "installing Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's postinst tries to start its own service; in a container that may fail
    # or be skipped, which does not fail the install.
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Rewritten on every run so that a changed script takes effect at the next start.
config="${DIR}/prometheus.yml"
cat >"${config}.tmp" <<EOF
# Written by scripts/ensure-prometheus.sh; edits are overwritten.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: steward-e2e
    file_sd_configs:
      - files: ["${DIR}/targets/*.json"]
        refresh_interval: 1s
EOF
mv "${config}.tmp" "${config}"

pidfile="${DIR}/prometheus.pid"

# Our instance, if one is still alive: the pid may have been reused by another program.
running_pid() {
    local pid
    pid="$(cat "${pidfile}" 2>/dev/null)" || return 1
    [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
        [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == prometheus* ]] && echo "${pid}"
}

start() {
    log "starting prometheus on ${URL} (log ${DIR}/prometheus.log)"
    nohup prometheus \
        --config.file="${config}" \
        --web.listen-address="127.0.0.1:${PORT}" \
        --storage.tsdb.path="${DIR}/data" \
        --storage.tsdb.retention.time=2h \
        --storage.tsdb.retention.size=256MB \
        >"${DIR}/prometheus.log" 2>&1 </dev/null 9>&- &
    echo $! >"${pidfile}"
    echo $!
}

started=0
if ready; then
    log "ready (started by a concurrent run)"
    echo "${URL}"
    exit 0
elif pid="$(running_pid)"; then
    # Left by an interrupted run while starting up, or on its way down.
    log "instance ${pid} is running but not ready yet; waiting for it"
else
    pid="$(start)"
    started=1
fi

deadline=$((SECONDS + READY_TIMEOUT_SECS))
until ready; do
    if ! kill -0 "${pid}" 2>/dev/null; then
        if ((started == 0)); then
            pid="$(start)"
            started=1
            continue
        fi
        log "prometheus exited before it was ready; last lines of ${DIR}/prometheus.log:"
        tail -n 20 "${DIR}/prometheus.log" >&2 || true
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "prometheus (pid ${pid}) not ready after ${READY_TIMEOUT_SECS}s; see ${DIR}/prometheus.log"
        exit 1
    fi
    sleep 0.25
done

log "ready (pid ${pid})"
echo "${URL}"
