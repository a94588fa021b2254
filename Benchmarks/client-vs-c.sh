#!/usr/bin/env bash
# fastalloc-load against the small C epoll client, same server, same run, interleaved.
# The client must never be what limits a benchmark: its figures should be at least 90 % of the
# C client's. Server: the C libuv echo server (1 worker) in peers/.
#
#   Benchmarks/client-vs-c.sh [ROUNDS] [SECONDS]     (default 3 rounds of 5 s, 1 s warm-up)
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-3}
seconds=${2:-5}
port=${PORT:-17001}

make -s -C peers
(cd .. && swift build -c release --product fastalloc-load >/dev/null)
load=../.build/release/fastalloc-load

peers/uv-echo "$port" 1 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do  # wait (bounded) until the server accepts
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
    sleep 0.1
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run() {  # name connections size depth field(1: msg/s, 2: MB/s)
    local name=$1 connections=$2 size=$3 depth=$4 field=$5
    local c_results=() swift_results=()
    for round in $(seq "$rounds"); do
        c=$(peers/epoll-client 127.0.0.1 "$port" "$connections" "$size" "$depth" "$seconds" 1 | awk -v f="$field" '{print $f}')
        s=$($load --target 127.0.0.1:"$port" --connections "$connections" --size "$size" --depth "$depth" \
                --duration "${seconds}s" --warmup 1s --threads 1 --json 2>/dev/null \
            | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['messages_per_second'] if $field == 1 else r['megabytes_per_second'])")
        c_results+=("$c")
        swift_results+=("$s")
        echo "  round $round: C epoll client $c, fastalloc-load $s" >&2
    done
    local cm sm
    cm=$(printf '%s\n' "${c_results[@]}" | median)
    sm=$(printf '%s\n' "${swift_results[@]}" | median)
    python3 -c "print(f'| $name | {float($cm):,.0f} | {float($sm):,.0f} | {float($sm)/float($cm)*100:.0f} % |')"
}

echo "machine: $(nproc) cores, $(uname -srm); server: peers/uv-echo, 1 worker; $rounds rounds of ${seconds}s, medians"
echo
echo "| workload | C epoll client | fastalloc-load --threads 1 | fastalloc-load / C |"
echo "|---|---:|---:|---:|"
run "64 connections x 64 B, depth 1 (msg/s)" 64 64 1 1
run "16 connections x 16 KiB, depth 4 (MB/s, verified)" 16 16384 4 2
