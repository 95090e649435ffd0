#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is installed, and prints the path of its binary.
# The dashboard's end-to-end tests drive it (tests/api.rs, tests/database/dashboard.rs). Uses Debian's `chromium` package:
# nothing is downloaded from anywhere else, so this works wherever apt does. Safe to run again.
set -euo pipefail

log() { echo "ensure-chromium: $*" >&2; }

find_chromium() {
    local name
    for name in chromium chromium-browser; do
        if command -v "${name}" >/dev/null 2>&1; then
            command -v "${name}"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    echo "${path}"
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    log "chromium is not installed and installing it needs root (apt-get install chromium)"
    exit 1
fi

# Two test runs installing at once would fight over dpkg's lock; the second waits here and
# then finds the binary the first installed.
lock="${TMPDIR:-/tmp}/steward-ensure-chromium.lock"
exec 9>"${lock}"
if ! flock -w 600 9; then
    log "another run holds ${lock}; gave up waiting"
    exit 1
fi
if path="$(find_chromium)"; then
    echo "${path}"
    exit 0
fi

log "installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Fonts are not pulled in by --no-install-recommends, and without one every glyph of a
# screenshot renders as a box.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if ! path="$(find_chromium)"; then
    log "the chromium package installed, but no chromium binary is on PATH"
    exit 1
fi
echo "${path}"
