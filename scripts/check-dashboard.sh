#!/usr/bin/env bash
# The dashboard in a real browser: headless Chromium loads http://STATS/ while fastalloc-load
# drives the server, lets the page poll /stats for a few (virtual) seconds, and the DOM it dumps
# must show the live figures: serving, the connections under load, a byte rate, every worker's
# pool and the overflow pool, and the failures panel with the resets of a few clients that reset
# their connections on purpose. SCREENSHOT=file.png also saves a picture of the page.
# Bounded: every wait has a limit; everything started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-17800}
stats_port=${STATS_PORT:-19465}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "check-dashboard: needs Debian's chromium" >&2; exit 1; }
swift build -c release --product fastalloc-server >/dev/null
swift build -c release --product fastalloc-load >/dev/null

.build/release/fastalloc-server echo --listen 127.0.0.1:"$port" --workers 2 --stats 127.0.0.1:"$stats_port" \
    --local-buffers 4 --overflow-initial 2 --overflow-growth linear:8 --overflow-max 256 >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$stats_port/healthz" 2>/dev/null && break; sleep 0.1; done
# Our server, not something else on the port: it must still be running.
kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/server.log"; echo "check-dashboard: the server did not start" >&2; exit 1; }
.build/release/fastalloc-load --target 127.0.0.1:"$port" --connections 32 --size 30000 --depth 4 --duration 30s --warmup 0s \
    >/dev/null 2>&1 &
pids+=($!)
# Four clients that send and never read hold buffers in their write queues, so the pools fill
# and the overflow pool grows (what the page should show).
python3 - "$port" <<'PY' >/dev/null 2>&1 &
import socket, sys, time
hogs = []
for _ in range(4):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.settimeout(0.5)
    hogs.append(s)
    try:
        while True: s.sendall(b"x" * 65536)
    except OSError:
        pass
time.sleep(40)
PY
pids+=($!)
# Five clients that send, read their echo, then reset the connection (SO_LINGER 0): the server
# counts each as a client reset, which the failures panel must show.
python3 - "$port" <<'PY'
import socket, struct, sys
for _ in range(5):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.sendall(b"reset me")
    echoed = b""
    while len(echoed) < 8:
        chunk = s.recv(8 - len(echoed))
        if not chunk:
            sys.exit("check-dashboard: the server closed a client before its echo")
        echoed += chunk
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
PY
# Wait (bounded) until the server shows what the page must show: connections under load,
# buffers held, the overflow pool grown, the resets counted.
for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$stats_port/stats" 2>/dev/null | python3 -c "
import json, sys
s = json.load(sys.stdin)
t = s['totals']
sys.exit(0 if t['connections_active'] >= 30 and t['buffers_in_use'] > 0 and s['overflow']['growth_events'] > 0
         and t['client_resets'] >= 5 else 1)"
    then break; fi
    sleep 0.1
done

flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=5000)
timeout 60 "$browser" "${flags[@]}" --dump-dom "http://127.0.0.1:$stats_port/" >"$work/dom.html" 2>"$work/chromium.log"
check() {  # description, extended regex that the dumped DOM must contain
    if grep -Eq "$2" "$work/dom.html"; then echo "  ok: $1"; else echo "  MISSING: $1" >&2; missing=1; fi
}
missing=0
check "status: serving, 2 workers" 'id="status">serving · 2 worker\(s\)'
check "connections under load" 'id="connections">(3[0-9]|[4-9][0-9]|[0-9]{3,})<'
check "buffers held by the hogs" 'buffers in use \(all pools\)</td><td>[1-9]'
check "a byte rate" 'id="bytesRate">[0-9.]+ [kMG]?B/s<'
check "worker 0's pool" 'worker 0 \(local\): [0-9]+ / 4 in use'
check "worker 1's pool" 'worker 1 \(local\): [0-9]+ / 4 in use'
check "the overflow pool" 'overflow \(shared\): [0-9]+ / [0-9]+ in use'
check "lock figures" 'id="lockDetail">acquisitions [0-9]+'
check "growth events (the hogs made the overflow pool grow)" 'id="growthSummary">[1-9][0-9]* growth event'
check "connections closed" 'id="connectionsDetail">accepted [0-9]+, closed [0-9]+,'
check "failures panel: the 5 client resets" '<td>client resets</td><td>([5-9]|[1-9][0-9]+)</td>'
check "failures panel: accept errors" '<td>accept errors</td><td>[0-9]+</td>'
check "failures panel: write timeouts" '<td>write timeouts</td><td>[0-9]+</td>'
check "failures panel: linger timeouts" '<td>linger timeouts</td><td>[0-9]+</td>'
check "failures panel: stalled evictions" '<td>stalled evictions</td><td>[0-9]+</td>'
check "failures panel: drain cut / completed" '<td>drain cut / completed</td><td>[0-9]+ / [0-9]+</td>'
if [ -n "${SCREENSHOT:-}" ]; then
    timeout 60 "$browser" "${flags[@]}" --window-size=1200,900 --screenshot="$SCREENSHOT" "http://127.0.0.1:$stats_port/" \
        >/dev/null 2>&1
    echo "  screenshot: $SCREENSHOT"
fi
[ $missing -eq 0 ] || { echo "check-dashboard: the page did not show the figures" >&2; exit 1; }
echo "check-dashboard: ok"
