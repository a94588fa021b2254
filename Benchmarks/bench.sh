#!/usr/bin/env bash
# make bench: everything measured side by side, written to Benchmarks/RESULTS.md with the date,
# the machine and the commands. make bench-quick (QUICK=1): one short round of every server
# configuration, to prove the scripts still run and every byte still matches (CI runs it).
set -euo pipefail
cd "$(dirname "$0")"
quick=${QUICK:-}
out=${RESULTS:-RESULTS.md}
[ -n "$quick" ] && out=$(mktemp)

{
    echo "# Benchmark results"
    echo
    echo "Made by \`make bench\` (\`Benchmarks/bench.sh\`) on $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores,"
    echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr);"
    echo "$(swift --version 2>/dev/null | head -1); a shared VM, so every comparison below is one run, side by side."
    echo
    echo "## Servers and relays side by side"
    echo
    if [ -n "$quick" ]; then
        echo "\`Benchmarks/server-vs-peers.py --quick\`"
        echo
        python3 server-vs-peers.py --quick
    else
        echo "\`Benchmarks/server-vs-peers.py --rounds 3 --seconds 5\`"
        echo
        python3 server-vs-peers.py --rounds 3 --seconds 5
    fi
    if [ -z "$quick" ]; then
        echo
        echo "## Heap allocations per message and per connection"
        echo
        echo "\`Benchmarks/server-mallocs.sh\`"
        echo
        ./server-mallocs.sh 2>/dev/null
        echo
        echo "## Memory per idle connection"
        echo
        echo "\`Benchmarks/idle-connections.py\`"
        echo
        python3 idle-connections.py
        echo
        echo "## Buffer size"
        echo
        echo "\`Benchmarks/buffer-size.py\`"
        echo
        python3 buffer-size.py
    fi
} >"$out"
if [ -n "$quick" ]; then
    cat "$out"
    rm -f "$out"
else
    echo "wrote Benchmarks/$out"
fi
