#!/usr/bin/env bash
# Builds the taxcollector-demo images (v1, v2, broken, unhealthy) from a static
# demo-app binary, FROM scratch, without any registry. Images are rebuilt only
# when the binary or the Dockerfile changed (tracked through image labels);
# set FORCE=1 to rebuild regardless.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=x86_64-unknown-linux-gnu
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BINARY="${TARGET_DIR}/${TARGET}/release/demo-app"
DOCKERFILE=crates/demo-app/Dockerfile
REPO=taxcollector-demo
FORCE="${FORCE:-0}"

# name:version:mode
IMAGES=(
    "v1:v1:ok"
    "v2:v2:ok"
    "broken:broken:broken"
    "unhealthy:unhealthy:unhealthy"
)

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "demo-images: cannot reach the Docker engine" >&2
    exit 1
fi

# Static binary (glibc, crt-static): runs in an empty scratch image.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release -p demo-app --target "${TARGET}"

binary_sha="$(sha256sum "${BINARY}" | cut -d' ' -f1)"
dockerfile_sha="$(sha256sum "${DOCKERFILE}" | cut -d' ' -f1)"

# Use BuildKit only when the CLI has buildx; the legacy builder is fine here.
if [[ -z "${DOCKER_BUILDKIT:-}" ]]; then
    if docker buildx version >/dev/null 2>&1; then
        export DOCKER_BUILDKIT=1
    else
        export DOCKER_BUILDKIT=0
    fi
fi

context=""
cleanup() { if [[ -n "${context}" ]]; then rm -rf "${context}"; fi; }
trap cleanup EXIT

for spec in "${IMAGES[@]}"; do
    IFS=: read -r tag version mode <<<"${spec}"
    image="${REPO}:${tag}"

    if [[ "${FORCE}" != 1 ]]; then
        have="$(docker image inspect --format \
            '{{index .Config.Labels "io.steward.demo.binary-sha256"}} {{index .Config.Labels "io.steward.demo.dockerfile-sha256"}}' \
            "${image}" 2>/dev/null || true)"
        if [[ "${have}" == "${binary_sha} ${dockerfile_sha}" ]]; then
            echo "${image}: up to date (binary ${binary_sha:0:12})"
            continue
        fi
    fi

    if [[ -z "${context}" ]]; then
        context="$(mktemp -d "${TMPDIR:-/tmp}/demo-images.XXXXXX")"
        cp "${BINARY}" "${context}/demo-app"
        cp "${DOCKERFILE}" "${context}/Dockerfile"
    fi

    # 2>&1: surface build errors; the legacy builder's deprecation notice is dropped.
    if ! id="$(docker build --quiet \
        --build-arg "DEMO_VERSION=${version}" \
        --build-arg "DEMO_MODE=${mode}" \
        --build-arg "BINARY_SHA256=${binary_sha}" \
        --build-arg "DOCKERFILE_SHA256=${dockerfile_sha}" \
        --tag "${image}" \
        "${context}" 2>&1)"; then
        echo "${id}" >&2
        echo "demo-images: building ${image} failed" >&2
        exit 1
    fi
    id="$(tail -n1 <<<"${id}")"
    id="${id#sha256:}"
    echo "${image}: built ${id:0:12} (version ${version}, mode ${mode}, binary ${binary_sha:0:12})"
done

# Drop untagged demo images left behind by earlier builds (images still used
# by a container are kept by Docker).
if [[ -n "${context}" ]]; then
    docker image prune --force --filter "label=io.steward.demo=true" >/dev/null
fi
