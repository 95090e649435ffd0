#!/usr/bin/env bash
# Builds steward and steward-bench (release) and runs the Swarm benchmark against the local
# Docker engine (a single-node swarm manager with the taxcollector-demo images; see
# scripts/ensure-swarm.sh and scripts/demo-images.sh). Takes under ten minutes.
#
# Markdown tables go to stdout and to target/bench/swarm-<timestamp>.md; progress to stderr.
# Extra arguments are passed to steward-bench (--help lists them).
#
# Everything created is named bench-<pid of this script>-… and removed at the end, also when
# the bench fails or is interrupted. Other services are never touched.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX="bench-$$"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cleanup() {
    # Backstop for a bench that was killed before its own cleanup ran.
    local svcs nets
    docker stack rm "${PREFIX}-compose" >/dev/null 2>&1 || true
    # Configs steward made for --every-field services (labelled with the bench's stack).
    # (every section's stack is named ${PREFIX}-…).
    docker config ls --format '{{.Name}}' 2>/dev/null | grep "^${PREFIX}-" | xargs -r docker config rm >/dev/null 2>&1 || true
    svcs="$(docker service ls --filter "name=${PREFIX}-" --format '{{.Name}}' 2>/dev/null | grep "^${PREFIX}-" || true)"
    if [[ -n "${svcs}" ]]; then
        echo "bench-swarm: removing leftover services: ${svcs//$'\n'/ }" >&2
        # shellcheck disable=SC2086
        docker service rm ${svcs} >/dev/null || true
    fi
    nets="$(docker network ls --filter "name=${PREFIX}-" --format '{{.Name}}' 2>/dev/null | grep "^${PREFIX}-" || true)"
    if [[ -n "${nets}" ]]; then
        for _ in $(seq 1 30); do
            [[ -z "$(docker ps -aq --filter "name=${PREFIX}-")" ]] && break
            sleep 1
        done
        # shellcheck disable=SC2086
        docker network rm ${nets} >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release -p steward -p steward-bench

mkdir -p "${TARGET_DIR}/bench"
out="${TARGET_DIR}/bench/swarm-$(date -u +%Y%m%dT%H%M%SZ).md"
"${TARGET_DIR}/release/steward-bench" --prefix "${PREFIX}" "$@" | tee "${out}"
echo "bench-swarm: results in ${out}" >&2
