#!/usr/bin/env bash
# Builds steward and steward-bench (release) and runs the rollback benchmark against the local
# Docker engine (a single-node swarm manager with the taxcollector-demo images v2, broken and
# unhealthy; see scripts/ensure-swarm.sh and scripts/demo-images.sh). The run itself takes about
# 6 minutes and is bounded at 9.5 (runs that would overrun are skipped and reported).
#
# Markdown goes to stdout and to target/bench/rollback-<timestamp>.md; progress to stderr.
# Extra arguments are passed to `steward-bench rollback` (--help lists them). STEWARD_BIN picks
# another steward binary to measure (for instance one built from a clean worktree of a commit).
#
# Everything created is named bench-<pid of this script>-rb-… and removed at the end, also when
# the bench fails or is interrupted. Other services are never touched.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX="bench-$$"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cleanup() {
    # Backstop for a bench that was killed before its own cleanup ran. `steward run` children
    # die with the bench (they are killed when dropped); the services are removed here.
    local svcs
    svcs="$(docker service ls --filter "name=${PREFIX}-" --format '{{.Name}}' 2>/dev/null | grep "^${PREFIX}-" || true)"
    if [[ -n "${svcs}" ]]; then
        echo "bench-rollback: removing leftover services: ${svcs//$'\n'/ }" >&2
        # shellcheck disable=SC2086
        docker service rm ${svcs} >/dev/null || true
    fi
    rm -rf "${TMPDIR:-/tmp}/${PREFIX}-rb"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${STEWARD_BIN:-}" ]]; then
    cargo build --release -p steward-bench
    set -- --steward "${STEWARD_BIN}" "$@"
else
    cargo build --release -p steward -p steward-bench
fi

mkdir -p "${TARGET_DIR}/bench"
out="${TARGET_DIR}/bench/rollback-$(date -u +%Y%m%dT%H%M%SZ).md"
"${TARGET_DIR}/release/steward-bench" rollback --prefix "${PREFIX}" "$@" | tee "${out}"
echo "bench-rollback: results in ${out}" >&2
