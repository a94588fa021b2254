#!/usr/bin/env bash
# fastalloc-load against the small C epoll client, same server, same run, interleaved.
# The client must never be what limits a benchmark: its figures should be at least 95 % of the
# C client's. Server: the tuned C libuv echo (peers/uv-echo-tuned, 1 worker: one 64 KiB buffer
# per connection, uv_try_write first), the fastest echo we have; against the malloc-per-read
# uv-echo both clients wait on the server and the comparison shows nothing.
#
#   Benchmarks/client-vs-c.sh [ROUNDS] [SECONDS]     (default 5 rounds of 5 s, 1 s warm-up)
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-5}
seconds=${2:-5}
port=${PORT:-17701}

make -s -C peers
(cd .. && swift build -c release --product fastalloc-load >/dev/null)
load=../.build/release/fastalloc-load

peers/uv-echo-tuned "$port" 1 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do  # wait (bounded) until the server accepts
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
    sleep 0.1
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

c_client() {  # connections size depth field(1: msg/s, 2: MB/s)
    peers/epoll-client 127.0.0.1 "$port" "$1" "$2" "$3" "$seconds" 1 | awk -v f="$4" '{print $f}'
}

swift_client() {  # connections size depth field(1: msg/s, 2: MB/s)
    $load --target 127.0.0.1:"$port" --connections "$1" --size "$2" --depth "$3" \
            --duration "${seconds}s" --warmup 1s --threads 1 --json 2>/dev/null \
        | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['messages_per_second'] if $4 == 1 else r['megabytes_per_second'])"
}

run() {  # name connections size depth field(1: msg/s, 2: MB/s)
    local name=$1 connections=$2 size=$3 depth=$4 field=$5
    local c_results=() swift_results=()
    for round in $(seq "$rounds"); do
        # Alternate which client goes first, so neither always runs on a cooler (or hotter) machine.
        if (( round % 2 )); then
            c=$(c_client "$connections" "$size" "$depth" "$field")
            s=$(swift_client "$connections" "$size" "$depth" "$field")
        else
            s=$(swift_client "$connections" "$size" "$depth" "$field")
            c=$(c_client "$connections" "$size" "$depth" "$field")
        fi
        c_results+=("$c")
        swift_results+=("$s")
        echo "  round $round: C epoll client $c, fastalloc-load $s" >&2
    done
    local cm sm
    cm=$(printf '%s\n' "${c_results[@]}" | median)
    sm=$(printf '%s\n' "${swift_results[@]}" | median)
    python3 -c "print(f'| $name | {float($cm):,.0f} | {float($sm):,.0f} | {float($sm)/float($cm)*100:.0f} % |')"
}

echo "machine: $(nproc) cores, $(uname -srm); server: peers/uv-echo-tuned, 1 worker; $rounds rounds of ${seconds}s, medians"
echo
echo "| workload | C epoll client | fastalloc-load --threads 1 | fastalloc-load / C |"
echo "|---|---:|---:|---:|"
run "64 connections x 64 B, depth 1 (msg/s)" 64 64 1 1
run "16 connections x 16 KiB, depth 4 (MB/s, verified)" 16 16384 4 2
