#!/usr/bin/env bash
# Builds steward and steward-bench (release) and runs the API, GitOps and memory benchmark
# against the local Docker engine (a single-node swarm manager with taxcollector-demo:v1; see
# scripts/ensure-swarm.sh and scripts/demo-images.sh) and git. The run itself takes about
# 5 minutes and is bounded at 9.5 (sections that would overrun are skipped and reported).
#
#   1. GET /api/v1/status and /api/v1/events latency over a state file of 1,000 statuses and
#      100,000 event records (served in-process by steward_api::serve);
#   2. RSS of the real `steward run` on that file and on an empty one (3 services each);
#   3. push -> first Swarm write -> converged, with a signed push webhook and with polling.
#
# Markdown goes to stdout and to target/bench/api-<timestamp>.md; progress to stderr. Extra
# arguments are passed to `steward-bench api` (--help lists them).
#
# Everything created is named bench-<pid of this script>-api-… (services, and a temp dir with
# the state files and git repositories) and removed at the end, also when the bench fails or is
# interrupted. Other services are never touched.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX="bench-$$"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cleanup() {
    # Backstop for a bench that was killed before its own cleanup ran. Its `steward run`
    # children die with it (they are killed when dropped); the services are removed here.
    local svcs
    svcs="$(docker service ls --filter "name=${PREFIX}-api-" --format '{{.Name}}' 2>/dev/null | grep "^${PREFIX}-api-" || true)"
    if [[ -n "${svcs}" ]]; then
        echo "bench-api: removing leftover services: ${svcs//$'\n'/ }" >&2
        # shellcheck disable=SC2086
        docker service rm ${svcs} >/dev/null || true
    fi
    rm -rf "${TMPDIR:-/tmp}/${PREFIX}-api"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release -p steward -p steward-bench

mkdir -p "${TARGET_DIR}/bench"
out="${TARGET_DIR}/bench/api-$(date -u +%Y%m%dT%H%M%SZ).md"
"${TARGET_DIR}/release/steward-bench" api --prefix "${PREFIX}" "$@" | tee "${out}"
echo "bench-api: results in ${out}" >&2
