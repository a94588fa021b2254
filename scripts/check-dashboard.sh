#!/usr/bin/env bash
# The dashboard in a real browser: headless Chromium loads http://STATS/ while fastalloc-load
# drives the server, lets the page poll /stats for a few (virtual) seconds, and the DOM it dumps
# must show the live figures: serving, the connections under load, a byte rate, every worker's
# pool and the overflow pool, and the failures panel with the resets of a few clients that reset
# their connections on purpose. Then the same page of a relay in front of three upstreams (the
# echo server, a second echo server on [::1], a port where nothing listens) must show its
# Upstreams table, which the echo server's page keeps hidden. SCREENSHOT=file.png also saves a
# picture of the echo server's page (and file-relay.png of the relay's).
# Bounded: every wait has a limit; everything started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-17800}
stats_port=${STATS_PORT:-19465}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source scripts/servers.sh  # start_server, ipv6_or_ipv4_loopback, refused_address

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
dom=$work/dom.html
check() {  # description, extended regex that the dumped DOM ($dom) must contain (DASHBOARD_DEBUG=1: print the upstream rows on a miss)
    if grep -Eq "$2" "$dom"; then echo "  ok: $1"; else echo "  MISSING: $1" >&2; [ -n "${DASHBOARD_DEBUG:-}" ] && grep -o "<tr class=\"upstream[^\n]*" "$dom" | head -5 >&2; missing=1; fi
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
check "failures panel: reloads refused" '<td>reloads refused</td><td>0</td>'
check "failures panel: upgrades failed" '<td>upgrades failed</td><td>0</td>'
check "failures panel: no upstream" '<td>no upstream \(client closed\)</td><td>0</td>'
check "no Upstreams table in echo mode (hidden)" 'id="upstreamsCard" hidden'
if [ -n "${SCREENSHOT:-}" ]; then
    timeout 60 "$browser" "${flags[@]}" --window-size=1200,900 --screenshot="$SCREENSHOT" "http://127.0.0.1:$stats_port/" \
        >/dev/null 2>&1
    echo "  screenshot: $SCREENSHOT"
fi

echo "== a relay in front of three upstreams"
start_server upstream2 echo --listen "$(ipv6_or_ipv4_loopback):0" --workers 1 --stats off
second=$listening
dead=$(refused_address)
# Round robin over equal weights and --fall 1: three connects reach each upstream, and the first
# refused one marks the third down.
start_server relay relay --listen 127.0.0.1:0 --workers 2 --stats 127.0.0.1:0 --balance roundrobin --fall 1 \
    --upstream 127.0.0.1:"$port" --upstream "$second" --upstream "$dead"
relay=$listening
relay_stats=$stats_at
# Nine clients that each get their echo and close, then two that stay connected (active).
python3 - "$relay" <<'PY' >"$work/relay-clients.log" 2>&1 &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
def echo(s):
    s.sendall(b"through the relay")
    got = b""
    while len(got) < 17:
        chunk = s.recv(17 - len(got))
        if not chunk:
            sys.exit("check-dashboard: the relay closed a client before its echo")
        got += chunk
for _ in range(9):
    with socket.create_connection((host, int(port)), timeout=5) as s:
        echo(s)
held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
for s in held:
    echo(s)
print("ready", flush=True)
time.sleep(40)
PY
pids+=($!)
for _ in $(seq 100); do
    if grep -q ready "$work/relay-clients.log" && curl -fsS "http://$relay_stats/stats" 2>/dev/null | python3 -c "
import json, sys
u = json.load(sys.stdin)['upstreams']
sys.exit(0 if len(u) == 3 and not u[2]['up'] and sum(x['connections_active'] for x in u) == 2 else 1)"
    then break; fi
    sleep 0.1
done
timeout 60 "$browser" "${flags[@]}" --dump-dom "http://$relay_stats/" >"$work/relay-dom.html" 2>>"$work/chromium.log"
dom=$work/relay-dom.html
regex() { printf '%s' "$1" | sed 's/[].[]/\\&/g'; }  # an address as an extended regex
check "the Upstreams table is shown" 'id="upstreamsCard"><h2>Upstreams</h2>'
check "its columns" '<th>upstream</th><th>state</th><th>active</th><th>share of selections</th><th>failed connects</th><th>checks passed / failed</th><th>connect p99</th>'
check "2 of 3 up" 'id="upstreamsSummary"[^>]*>2 of 3 up; (1[1-9]|[2-9][0-9]) connection\(s\) balanced<'
check "the echo server: up, a share, no failed connect, a connect p99" \
    "<tr class=\"upstream\"><td>$(regex "127.0.0.1:$port")</td><td>up</td><td>[0-9]+</td><td>[0-9.]+ %</td><td>0</td><td>[0-9]+ / 0</td><td>≤ [0-9.]+ (µs|ms|s)</td>"
check "the second echo server ($second): up" "<tr class=\"upstream\"><td>$(regex "$second")</td><td>up</td><td>[0-9]+</td><td>[0-9.]+ %</td><td>0</td>"
check "the refused port: DOWN (found by a failed check or failed connects), no share since" \
    "<tr class=\"upstream hot\"><td>$(regex "$dead")</td><td>DOWN</td><td>0</td><td>[0-9.]+ %</td><td>[0-9]+( <span class=\"detail\">refused [1-9][0-9]*</span>)?</td><td>0 / [0-9]+</td><td>-</td>"
check "the clients held open are active" '<td>up</td><td>[12]</td>'
if [ -n "${SCREENSHOT:-}" ]; then
    timeout 60 "$browser" "${flags[@]}" --window-size=1200,1100 --screenshot="${SCREENSHOT%.png}-relay.png" "http://$relay_stats/" \
        >/dev/null 2>&1
    echo "  screenshot: ${SCREENSHOT%.png}-relay.png"
fi
[ $missing -eq 0 ] || { echo "check-dashboard: the page did not show the figures" >&2; exit 1; }
echo "check-dashboard: ok"
