#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test FastAlloc: the Swift toolchain
# must already be on the machine (it is at /opt/swift on ours); this adds the C libraries the
# project links (libuv for the server, http-parser for its stats endpoint, libyaml for its config
# file) and pkg-config. Idempotent: installs only what is missing.
set -euo pipefail

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "setup: swift is at /opt/swift/usr/bin but not on PATH; add it: export PATH=/opt/swift/usr/bin:\$PATH" >&2
    else
        echo "setup: no Swift toolchain found; install Swift 6.2 or later from https://swift.org/install" >&2
    fi
    exit 1
fi

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libuv 2>/dev/null || missing+=(libuv1-dev)
[ -f /usr/include/http_parser.h ] || missing+=(libhttp-parser-dev)
pkg-config --exists yaml-0.1 2>/dev/null || missing+=(libyaml-dev)

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "setup: $(swift --version 2>/dev/null | head -n 1); libuv $(pkg-config --modversion libuv)" >&2
