#!/usr/bin/env bash
# What the README promises a newcomer, checked: `make run` starts the echo server with its
# defaults, fastalloc-load gets every byte back, SIGTERM drains it, it exits 0 with every buffer
# home. Bounded: gives up after 5 minutes of building and 60 s of waiting for the server.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT

make run ARGS="--workers 2" >"$log" 2>&1 &
pid=$!
for _ in $(seq 600); do  # the first build can take a while
    grep -q "^listening on 127.0.0.1:7000 (echo, 2 workers)" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "smoke: make run exited" >&2; exit 1; }
    sleep 0.5
done
grep -q "^listening on" "$log" || { cat "$log"; echo "smoke: no 'listening on' line" >&2; exit 1; }

.build/release/fastalloc-load --target 127.0.0.1:7000 --connections 16 --size 512 --duration 2s --warmup 1s 2>/dev/null | tee -a "$log"
# SIGTERM the server itself (make's child), not make: make exits with the server's status.
server=$(pgrep -P "$pid" -f "fastalloc-server echo")
kill -TERM "$server"
wait "$pid"
pid=
grep -q "^stopped: .*buffers in use 0" "$log" || { cat "$log"; echo "smoke: no clean summary" >&2; exit 1; }
echo "smoke: ok: $(grep '^stopped:' "$log")"
