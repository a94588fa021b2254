#!/usr/bin/env bash
# The stats endpoint checked by the real tools: `promtool check metrics` must accept /metrics with
# no warning, and a real Prometheus (Debian's `prometheus`) scraping every second must store the
# series, with rate(fastalloc_bytes_received_total) above 0 while load runs. Bounded: every wait
# has a limit; everything started here is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-17700}
stats_port=${STATS_PORT:-19464}
prom_port=${PROM_PORT:-19090}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

command -v promtool >/dev/null && command -v prometheus >/dev/null || { echo "check-metrics: needs Debian's prometheus package" >&2; exit 1; }
swift build -c release --product fastalloc-server >/dev/null
swift build -c release --product fastalloc-load >/dev/null

wait_http() {  # url: bounded wait until it answers 200
    for _ in $(seq 200); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "check-metrics: $1 never answered" >&2
    return 1
}

.build/release/fastalloc-server echo --listen 127.0.0.1:"$port" --workers 2 --stats 127.0.0.1:"$stats_port" \
    --local-buffers 2 --overflow-initial 1 --overflow-growth linear:4 --overflow-max 64 >"$work/server.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$stats_port/healthz"
# Our server, not something else on the port: it must still be running.
kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/server.log"; echo "check-metrics: the server did not start" >&2; exit 1; }

# Some traffic first (with pools small enough that the overflow pool grows), then the text.
.build/release/fastalloc-load --target 127.0.0.1:"$port" --connections 32 --size 20000 --depth 4 --duration 1s --warmup 0s >/dev/null 2>&1
curl -fsS "http://127.0.0.1:$stats_port/metrics" >"$work/metrics.txt"
echo "== promtool check metrics"
if ! promtool check metrics <"$work/metrics.txt" >"$work/promtool.txt" 2>&1 || [ -s "$work/promtool.txt" ]; then
    cat "$work/promtool.txt"
    echo "check-metrics: promtool did not accept /metrics silently" >&2
    exit 1
fi
echo "accepted, no warnings: $(grep -c '^# TYPE' "$work/metrics.txt") metric families, $(grep -vc '^#' "$work/metrics.txt") samples"

echo "== /metrics and /stats give the same figures"
# Every /stats total against its family summed in Prometheus, from a /stats read between
# two identical /metrics reads (bounded retries while the load's connections finish closing).
agree=""
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$stats_port/metrics" >"$work/before.txt"
    curl -fsS "http://127.0.0.1:$stats_port/stats" >"$work/stats.json"
    curl -fsS "http://127.0.0.1:$stats_port/metrics" >"$work/after.txt"
    if cmp -s <(grep '^fastalloc_' "$work/before.txt") <(grep '^fastalloc_' "$work/after.txt"); then agree=1; break; fi
    sleep 0.1
done
[ -n "$agree" ] || { echo "check-metrics: /metrics never held still" >&2; exit 1; }
python3 - "$work/after.txt" "$work/stats.json" <<'PY'
import json, sys
sums, labelled = {}, {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    series, value = line.rsplit(" ", 1)
    name, _, labels = series.partition("{")
    sums[name] = sums.get(name, 0) + float(value)
    for pair in labels.rstrip("}").split(","):
        key, _, label = pair.partition("=")
        if key in ("reason", "outcome"):
            labelled[(name, label.strip('"'))] = labelled.get((name, label.strip('"')), 0) + float(value)
totals = json.load(open(sys.argv[2]))["totals"]
new = ["connections_closed", "client_resets", "accept_errors", "write_timeouts", "linger_timeouts", "stalled_evictions", "drain_connections",
       "access_log_dropped", "client_limit_rejections", "client_limit_table_full"]
missing = [key for key in new if key not in totals]
wrong, compared = [], 0
for key, value in totals.items():
    family = next((f for f in (f"fastalloc_{key}_total", f"fastalloc_{key}") if f in sums), None)
    if family is None:
        continue
    parts = value.items() if isinstance(value, dict) else [(None, value)]
    for part, number in parts:
        got = sums[family] if part is None else labelled.get((family, part))
        compared += 1
        if got != number:
            wrong.append(f"{key}{'.' + part if part else ''}: /stats {number}, /metrics {got}")
print(f"{compared} totals compared; the new counters: {', '.join(f'{k}={totals.get(k)}' for k in new)}")
if missing or wrong or compared < 19:
    sys.exit(f"check-metrics: missing from /stats totals {missing}; disagreeing {wrong}; compared {compared}")
PY

echo "== a real Prometheus scrape"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fastalloc
    static_configs:
      - targets: ["127.0.0.1:$stats_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address=127.0.0.1:"$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$prom_port/-/ready"
.build/release/fastalloc-load --target 127.0.0.1:"$port" --connections 16 --size 512 --duration 8s --warmup 0s >/dev/null 2>&1
query() {
    curl -fsS --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
        python3 -c "import json,sys; r=json.load(sys.stdin)['data']['result']; print(sum(float(s['value'][1]) for s in r) if r else 'none')"
}
up=$(query 'up{job="fastalloc"}')
rate=$(query 'sum(rate(fastalloc_bytes_received_total[15s]))')
series=$(query 'count({job="fastalloc",__name__=~"fastalloc_.*"})')
echo "up=$up, fastalloc series=$series, rate(fastalloc_bytes_received_total[15s])=$rate bytes/s"
python3 -c "import sys; sys.exit(0 if '$up' == '1.0' and '$rate' != 'none' and float('$rate') > 0 else 1)" || {
    tail -5 "$work/prometheus.log"
    echo "check-metrics: Prometheus did not see the series or the rate" >&2
    exit 1
}
echo "check-metrics: ok"
