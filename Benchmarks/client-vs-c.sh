#!/usr/bin/env bash
# fastalloc-load against the small C epoll client, same server, same run, interleaved.
# The client must never be what limits a benchmark: its figures should be at least 95 % of the
# C client's. Server: the tuned C libuv echo (peers/uv-echo-tuned, 1 worker: one 64 KiB buffer
# per connection, uv_try_write first), the fastest echo we have; against the malloc-per-read
# uv-echo both clients wait on the server and the comparison shows nothing.
#
#   Benchmarks/client-vs-c.sh [ROUNDS] [SECONDS]     (default 5 rounds of 5 s, 1 s warm-up)
#   COMPARE=/path/to/another/fastalloc-load Benchmarks/client-vs-c.sh    (adds that build's column)
#   LOAD=/path/to/fastalloc-load ...     (that build instead of building this tree's release one)
# Ratios: of the medians, and in brackets the median of each round's own ratio.
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-5}
seconds=${2:-5}
port=${PORT:-17701}

make -s -C peers
if [[ -z "${LOAD:-}" ]]; then
    (cd .. && swift build -c release --product fastalloc-load >/dev/null)
fi
load=${LOAD:-../.build/release/fastalloc-load}

# PIN=1: the server on CPU 0, the clients on CPU 1. Not the default: on the 2-core machine
# where it was tried, the figures were no steadier pinned, and 16 KiB ran slower.
pin=${PIN:-0}
server_cpu=() client_cpu=()
if [[ $pin == 1 && $(nproc) -ge 2 ]]; then server_cpu=(taskset -c 0); client_cpu=(taskset -c 1); fi
"${server_cpu[@]}" peers/uv-echo-tuned "$port" 1 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do  # wait (bounded) until the server accepts
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
    sleep 0.1
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

c_client() {  # connections size depth field(1: msg/s, 2: MB/s)
    "${client_cpu[@]}" peers/epoll-client 127.0.0.1 "$port" "$1" "$2" "$3" "$seconds" 1 | awk -v f="$4" '{print $f}'
}

swift_client() {  # connections size depth field(1: msg/s, 2: MB/s)
    "${client_cpu[@]}" $load --target 127.0.0.1:"$port" --connections "$1" --size "$2" --depth "$3" \
            --duration "${seconds}s" --warmup 1s --threads 1 --json 2>/dev/null \
        | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['messages_per_second'] if $4 == 1 else r['megabytes_per_second'])"
}

# The clients of a round, in the order they run: rotated each round, so that none always runs
# first (on a cooler, or hotter, machine).
clients=(c swift)
[[ -n "${COMPARE:-}" ]] && clients+=(compare)

one() {  # client connections size depth field
    case $1 in
        c) c_client "$2" "$3" "$4" "$5" ;;
        swift) swift_client "$2" "$3" "$4" "$5" ;;
        compare) load=$COMPARE swift_client "$2" "$3" "$4" "$5" ;;
    esac
}

run() {  # name connections size depth field(1: msg/s, 2: MB/s)
    local name=$1 connections=$2 size=$3 depth=$4 field=$5
    local -A results=()
    local n=${#clients[@]}
    for round in $(seq "$rounds"); do
        local line="  round $round:"
        for k in $(seq 0 $((n - 1))); do
            local client=${clients[$(((round + k) % n))]}
            local figure
            figure=$(one "$client" "$connections" "$size" "$depth" "$field")
            results[$client]+="$figure "
            line+=" $client $figure"
        done
        echo "$line" >&2
    done
    local row="| $name"
    local cm
    cm=$(printf '%s\n' ${results[c]} | median)
    for client in "${clients[@]}"; do
        local m
        m=$(printf '%s\n' ${results[$client]} | median)
        row+=$(python3 -c "print(f' | {float($m):,.0f}')")
    done
    for client in "${clients[@]:1}"; do
        # The median of the round's own ratios too: on a noisy machine it moves less.
        local paired
        paired=$(paste <(printf '%s\n' ${results[$client]}) <(printf '%s\n' ${results[c]}) | awk '{print $1 / $2}' | median)
        row+=$(python3 -c "print(f' | {float($(printf '%s\n' ${results[$client]} | median))/float($cm)*100:.0f} % ({float($paired)*100:.0f} %)')")
    done
    echo "$row |"
}

echo "machine: $(nproc) cores, $(uname -srm); server: peers/uv-echo-tuned, 1 worker; ${client_cpu[*]:+server on CPU 0, client on CPU 1; }$rounds rounds of ${seconds}s, medians"
echo
if [[ -n "${COMPARE:-}" ]]; then
    echo "| workload | C epoll client | fastalloc-load --threads 1 | $COMPARE | fastalloc-load / C (paired) | $COMPARE / C (paired) |"
    echo "|---|---:|---:|---:|---:|---:|"
else
    echo "| workload | C epoll client | fastalloc-load --threads 1 | fastalloc-load / C (paired) |"
    echo "|---|---:|---:|---:|"
fi
run "64 connections x 64 B, depth 1 (msg/s)" 64 64 1 1
run "16 connections x 16 KiB, depth 4 (MB/s, verified)" 16 16384 4 2
