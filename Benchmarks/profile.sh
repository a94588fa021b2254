#!/usr/bin/env bash
# Where fastalloc-server's CPU goes, from perf: the share spent in the kernel and in user space,
# and the hottest symbols, for the workloads where a peer comes close or leads (relay at 64 B;
# relay at 5,000 connections; echo at 16 KiB). Runs the release server on 1 worker under `perf record` while fastalloc-load
# drives it; prints markdown.
#
#   Benchmarks/profile.sh [SECONDS]      (default 5; needs linux-perf)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-5}
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)"; exit 1; }
make -s -C peers
(cd .. && swift build -c release --product fastalloc-server >/dev/null && swift build -c release --product fastalloc-load >/dev/null)
server=../.build/release/fastalloc-server
load=../.build/release/fastalloc-load
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

peers/uv-echo 17800 1 2>/dev/null &
pids+=($!)
wait_port 17800

profile() {  # title, server arguments..., -- load arguments...
    local title=$1; shift
    local server_args=() load_args=()
    while [ "$1" != "--" ]; do server_args+=("$1"); shift; done; shift
    load_args=("$@")
    "$server" "${server_args[@]}" --listen 127.0.0.1:17801 --workers 1 --stats off >/dev/null 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_port 17801
    perf record -q -p "$pid" -o "$work/perf.data" -- sleep "$((seconds + 3))" 2>/dev/null &
    local recorder=$!
    "$load" --target 127.0.0.1:17801 "${load_args[@]}" --duration "${seconds}s" --warmup 3s --json >"$work/load.json"
    wait "$recorder" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "### $title"
    echo
    python3 -c "import json; r=json.load(open('$work/load.json')); print(f\"load: {r['messages_per_second']:,.0f} msg/s, {r['megabytes_per_second']:,.0f} MB/s, every byte checked: {r['mismatched_bytes'] == 0}\")"
    echo
    perf report -i "$work/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | awk 'NR <= 6' |
        awk 'BEGIN {print "| share of server samples | where |"; print "|---:|---|"} {print "| " $1 " | " $2 " |"}'
    echo
    echo "Hottest symbols (self):"
    echo
    echo '```'
    perf report -i "$work/perf.data" --no-children -g none --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | awk 'NR <= 12' | cut -c1-110
    echo '```'
    echo
}

profile "Relay, 64 connections x 64 B ping-pong (where haproxy and nginx are level)" \
    relay --upstream 127.0.0.1:17800 -- --connections 64 --size 64
profile "Relay, 5,000 connections x 64 B ping-pong (the most connections a relay gets here)" \
    relay --upstream 127.0.0.1:17800 --max-connections 12000 -- --connections 5000 --size 64
profile "Echo, 16 connections x 16 KiB at depth 4 (where SwiftNIO is level or ahead)" \
    echo -- --connections 16 --size 16384 --depth 4
