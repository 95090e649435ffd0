#!/usr/bin/env bash
# Makes sure the local Docker engine is a (single-node) swarm manager.
# Initialises a swarm if the node is not part of one; never leaves a swarm.
set -euo pipefail

if ! command -v docker >/dev/null 2>&1; then
    echo "ensure-swarm: the 'docker' CLI is not installed or not on PATH" >&2
    exit 1
fi

# Docker 20.10's swarm manager can crash (a nil pointer in swarmkit's service removal was seen
# here once). As root, with the engine installed but not running, start it rather than fail.
if ! docker info >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v dockerd >/dev/null 2>&1 \
    && ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "ensure-swarm: the Docker engine is not running; starting dockerd"
    nohup dockerd >>/var/log/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi

if ! state="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>&1)"; then
    echo "ensure-swarm: cannot reach the Docker engine (is dockerd running, and may this user access its socket?):" >&2
    printf '%s\n' "${state}" | sed -e '/^[[:space:]]*$/d' -e 's/^/  /' >&2
    exit 1
fi

case "${state}" in
    active)
        echo "ensure-swarm: swarm already active"
        ;;
    inactive | "")
        echo "ensure-swarm: initialising single-node swarm"
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        echo "ensure-swarm: swarm active"
        ;;
    *)
        echo "ensure-swarm: swarm is in state '${state}'; refusing to touch it (unlock or repair it manually)" >&2
        exit 1
        ;;
esac
