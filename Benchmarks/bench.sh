#!/usr/bin/env bash
# make bench: everything measured side by side, written to Benchmarks/RESULTS.md with the date,
# the machine and the commands. make bench-quick (QUICK=1): one short round of every server
# configuration, to prove the scripts still run and every byte still matches (CI runs it).
set -euo pipefail
cd "$(dirname "$0")"
quick=${QUICK:-}
out=${RESULTS:-RESULTS.md}
plots=plots
if [ -n "$quick" ]; then
    out=$(mktemp)
    plots=$(mktemp -d)
fi
# Debian's python3 is the one python3-matplotlib installs into (a pyenv python3 may come first on PATH).
python=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}
"$python" -c 'import matplotlib' 2>/dev/null || { echo "bench.sh: $python has no matplotlib (apt-get install python3-matplotlib)" >&2; exit 1; }

{
    echo "# Benchmark results"
    echo
    echo "Made by \`make bench\` (\`Benchmarks/bench.sh\`) on $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores,"
    echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr);"
    echo "$(swift --version 2>/dev/null | head -1); a shared VM, so every comparison below is one run, side by side."
    echo
    echo "Runs by hand, profiles and what was measured and rejected are in [ANALYSES.md](ANALYSES.md) (not rewritten here)."
    echo
    echo "## Servers and relays side by side"
    echo
    if [ -n "$quick" ]; then
        echo "\`Benchmarks/server-vs-peers.py --quick --only echo,relay\`"
        echo
        "$python" server-vs-peers.py --quick --only echo,relay --plots "$plots"
    else
        echo "\`Benchmarks/server-vs-peers.py --rounds 3 --seconds 5 --only echo,relay --plots plots\`"
        echo
        "$python" server-vs-peers.py --rounds 3 --seconds 5 --only echo,relay --plots "$plots"
        echo
        echo "![p99 latency by offered rate](plots/rate-sweep.png)"
        echo
        echo "![MB/s by message size](plots/size-sweep.png)"
        echo
        echo "![messages/s by connections](plots/connections-sweep.png)"
    fi
    echo
    echo "## Relay with three upstreams"
    echo
    if [ -n "$quick" ]; then
        echo "\`Benchmarks/server-vs-peers.py --quick --only relay3\`"
        echo
        "$python" server-vs-peers.py --quick --only relay3
    else
        echo "\`Benchmarks/server-vs-peers.py --rounds 3 --seconds 5 --only relay3\`"
        echo
        "$python" server-vs-peers.py --rounds 3 --seconds 5 --only relay3
    fi
    if [ -z "$quick" ]; then
        echo
        echo "## Heap allocations per message and per connection"
        echo
        echo "\`Benchmarks/server-mallocs.sh\`"
        echo
        ./server-mallocs.sh 2>/dev/null
        echo
        echo "Beside the peers, counted the same way (\`Benchmarks/peer-mallocs.py\`):"
        echo
        "$python" peer-mallocs.py 2>/dev/null
        echo
        echo "## Memory per idle connection"
        echo
        echo "\`Benchmarks/idle-connections.py\`"
        echo
        "$python" idle-connections.py
        echo
        echo "## Buffer size"
        echo
        echo "\`Benchmarks/buffer-size.py\`"
        echo
        "$python" buffer-size.py
        if command -v perf >/dev/null; then
            echo
            echo "## Where the server's CPU goes"
            echo
            echo "\`Benchmarks/profile.sh\` (perf, 1 worker, 5 s)"
            echo
            ./profile.sh 5 2>/dev/null
        fi
    fi
} >"$out"
if [ -n "$quick" ]; then
    cat "$out"
    rm -f "$out"
    for plot in rate-sweep size-sweep connections-sweep; do
        [ -s "$plots/$plot.png" ] || { echo "bench.sh: no $plot.png was drawn" >&2; exit 1; }
    done
    rm -rf "$plots"
else
    echo "wrote Benchmarks/$out"
fi
