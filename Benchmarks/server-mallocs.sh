#!/usr/bin/env bash
# Heap allocations per message in fastalloc-server while traffic flows, echo and relay.
#
# The server runs under LD_PRELOAD=peers/libmalloc-count.so, which counts every malloc, calloc,
# realloc, posix_memalign and aligned_alloc of the process and prints the total at exit. Each
# mode runs twice with the same connections and a different number of messages (fastalloc-load
# --messages); set-up, connections and exit cost the same in both runs, so
#   (mallocs of the long run - mallocs of the short run) / (messages long - messages short)
# is the allocations per message in steady state. It must be 0: the script fails otherwise.
#
#   Benchmarks/server-mallocs.sh            (64 connections, 2,000 vs 10,000 messages each)
set -euo pipefail
cd "$(dirname "$0")"
connections=${CONNECTIONS:-64}
short=${SHORT:-2000}
long=${LONG:-10000}
size=${SIZE:-64}
port=${PORT:-17300}

make -s -C peers
(cd .. && swift build -c release --product fastalloc-server >/dev/null && swift build -c release --product fastalloc-load >/dev/null)
server=../.build/release/fastalloc-server
load=../.build/release/fastalloc-load

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {  # bounded wait until something accepts on the port
    for _ in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

# The relay's upstream: the C echo server.
peers/uv-echo $((port + 1)) 1 2>/dev/null &
pids+=($!)
wait_port $((port + 1))

count_run() {  # mode messages -> prints "mallocs messages"
    local mode=$1 messages=$2 log
    log=$(mktemp)
    local args=(echo --listen 127.0.0.1:"$port" --workers 2)
    [ "$mode" = relay ] && args=(relay --listen 127.0.0.1:"$port" --upstream 127.0.0.1:$((port + 1)) --workers 2)
    LD_PRELOAD=$PWD/peers/libmalloc-count.so "$server" "${args[@]}" >/dev/null 2>"$log" &
    local pid=$!
    wait_port "$port"
    local done
    done=$("$load" --target 127.0.0.1:"$port" --connections "$connections" --size "$size" --messages "$messages" --json 2>/dev/null \
        | python3 -c "import json,sys; r=json.load(sys.stdin); assert r['succeeded'], r; print(r['messages'])")
    kill -TERM "$pid"
    wait "$pid"
    echo "$(grep -o 'malloc-count: [0-9]*' "$log" | tail -1 | awk '{print $2}') $done"
    rm -f "$log"
}

status=0
echo "| mode | messages (short / long run) | server mallocs (short / long) | mallocs per message |"
echo "|---|---:|---:|---:|"
for mode in echo relay; do
    read -r m1 n1 < <(count_run "$mode" "$short")
    read -r m2 n2 < <(count_run "$mode" "$long")
    per=$(python3 -c "print(f'{($m2 - $m1) / ($n2 - $n1):.6f}')")
    echo "| $mode | $n1 / $n2 | $m1 / $m2 | $per |"
    # A handful of one-off allocations (a log line, a late-growing table) may differ between
    # runs; more than 1 per 10,000 messages is a per-message allocation.
    if python3 -c "import sys; sys.exit(0 if ($m2 - $m1) / ($n2 - $n1) < 1e-4 else 1)"; then :; else status=1; fi
done

# Connections: the same servers (echo, and the relay with its upstream connect, pick and
# release), 3 and then 23 rounds of fastalloc-load, each opening 50 connections that send 20
# messages and close. After the first rounds the worker reuses its sessions and closed streams,
# so more rounds should cost no more allocations.
churn_run() {  # mode rounds -> prints "mallocs connections"
    local mode=$1 rounds=$2 log
    log=$(mktemp)
    # One worker: every round then reaches the same peak (50 connections), so what the longer run
    # adds is per-connection cost alone. (With two, SO_REUSEPORT's split varies per round, and a
    # longer run sees a higher per-worker peak, which adds sessions and streams to the free lists.)
    local args=(echo --listen 127.0.0.1:"$port" --workers 1)
    [ "$mode" = relay ] && args=(relay --listen 127.0.0.1:"$port" --upstream 127.0.0.1:$((port + 1)) --workers 1)
    LD_PRELOAD=$PWD/peers/libmalloc-count.so "$server" "${args[@]}" >/dev/null 2>"$log" &
    local pid=$!
    wait_port "$port"
    for _ in $(seq "$rounds"); do
        "$load" --target 127.0.0.1:"$port" --connections 50 --size "$size" --messages 20 --json 2>/dev/null \
            | python3 -c "import json,sys; r=json.load(sys.stdin); assert r['succeeded'], r"
    done
    kill -TERM "$pid"
    wait "$pid"
    echo "$(grep -o 'malloc-count: [0-9]*' "$log" | tail -1 | awk '{print $2}') $((rounds * 50 + 1))"
    rm -f "$log"
}
echo
echo "| mode | connections opened and closed (short / long run) | server mallocs (short / long) | mallocs per connection |"
echo "|---|---:|---:|---:|"
for mode in echo relay; do
    read -r c1 k1 < <(churn_run "$mode" 3)
    read -r c2 k2 < <(churn_run "$mode" 23)
    per=$(python3 -c "print(f'{($c2 - $c1) / ($k2 - $k1):.4f}')")
    echo "| $mode | $k1 / $k2 | $c1 / $c2 | $per |"
    # Two identical runs differ by a few tens of mallocs at start-up, so over 1,000 connections the
    # noise is a few hundredths per connection; a steady allocation per accept would show as 1 or more.
    if python3 -c "import sys; sys.exit(0 if ($c2 - $c1) / ($k2 - $k1) < 0.1 else 1)"; then :; else
        echo "FAILED: the $mode server allocates per connection" >&2
        status=1
    fi
done

[ $status -eq 0 ] || echo "FAILED: the server allocates per message or per connection" >&2
exit $status
