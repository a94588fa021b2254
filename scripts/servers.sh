# Sourced by the check scripts (relays and their upstreams on this machine's loopback).
#
# start_server NAME ARGS... starts .build/release/fastalloc-server
# with ARGS (listening on port 0), adds its PID to the caller's `pids` (which its cleanup stops)
# and waits, bounded, for its one line on stdout, "listening on ADDRESS (...)[; stats on
# http://STATS/]"; it sets `listening` and `stats_at` (empty without --stats) from it. Its
# output goes to $work/NAME.out and .log; a server that does not start fails the caller.
start_server() {
    local name=$1
    shift
    .build/release/fastalloc-server "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q '^listening on ' "$work/$name.out" 2>/dev/null && break
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    listening=$(sed -n 's/^listening on \([^ ]*\) .*/\1/p' "$work/$name.out")
    stats_at=$(sed -n 's|.*; stats on http://\([^/]*\)/.*|\1|p' "$work/$name.out")
    [ -n "$listening" ] || { cat "$work/$name.log" >&2; echo "$(basename "$0"): $name did not start" >&2; exit 1; }
}

# The loopback host for a second upstream: [::1] when the machine has IPv6 loopback (an IPv6
# address in the `upstream` label), else 127.0.0.1.
ipv6_or_ipv4_loopback() {
    if python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
        echo "[::1]"
    else
        echo 127.0.0.1
    fi
}

# 127.0.0.1:PORT where nothing listens (a port bound for a free number, then closed): an upstream
# whose connects are refused.
refused_address() {
    echo "127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
}
