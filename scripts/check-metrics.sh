#!/usr/bin/env bash
# The stats endpoint checked by the real tools: `promtool check metrics` must accept /metrics with
# no warning, and a real Prometheus (Debian's `prometheus`) scraping every second must store the
# series, with rate(fastalloc_bytes_received_total) above 0 while load runs. The same for a relay
# in front of three upstreams (issue 16): the echo server, a second echo server (on [::1] when the
# machine has IPv6 loopback) and a port where nothing listens, so that every per-upstream family
# has series, up and down, and the connect-time histogram answers histogram_quantile in
# Prometheus. Bounded: every wait has a limit; everything started here is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-17700}
stats_port=${STATS_PORT:-19464}
prom_port=${PROM_PORT:-19090}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source scripts/servers.sh  # start_server, ipv6_or_ipv4_loopback, refused_address

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
        if key in ("reason", "outcome", "direction"):
            labelled[(name, label.strip('"'))] = labelled.get((name, label.strip('"')), 0) + float(value)
totals = json.load(open(sys.argv[2]))["totals"]
new = ["connections_closed", "client_resets", "accept_errors", "write_timeouts", "linger_timeouts", "stalled_evictions", "drain_connections",
       "access_log_dropped", "client_limit_rejections", "client_limit_table_full", "proxy_protocol_headers", "proxy_protocol_errors"]
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

echo "== a relay in front of three upstreams"
# The second upstream: an echo server on [::1] (an IPv6 label) when the machine has it; the
# third, a port where nothing listens.
start_server upstream2 echo --listen "$(ipv6_or_ipv4_loopback):0" --workers 1 --stats off
second=$listening
dead=$(refused_address)
start_server relay relay --listen 127.0.0.1:0 --workers 2 --stats 127.0.0.1:0 --balance roundrobin \
    --upstream 127.0.0.1:"$port" --upstream "$second weight=2" --upstream "$dead"
relay=$listening
relay_stats=$stats_at
wait_http "http://$relay_stats/healthz"
.build/release/fastalloc-load --target "$relay" --connections 16 --size 4096 --depth 2 --duration 1s --warmup 0s >"$work/relay-load.txt" 2>&1 || {
    cat "$work/relay-load.txt"; echo "check-metrics: the load through the relay failed" >&2; exit 1; }
curl -fsS "http://$relay_stats/metrics" >"$work/relay-metrics.txt"
curl -fsS "http://$relay_stats/stats" >"$work/relay-stats.json"
if ! promtool check metrics <"$work/relay-metrics.txt" >"$work/promtool-relay.txt" 2>&1 || [ -s "$work/promtool-relay.txt" ]; then
    cat "$work/promtool-relay.txt"
    echo "check-metrics: promtool did not accept the relay's /metrics silently" >&2
    exit 1
fi
echo "promtool: accepted, no warnings: $(grep -c '^# TYPE' "$work/relay-metrics.txt") metric families, $(grep -vc '^#' "$work/relay-metrics.txt") samples"
python3 - "$work/relay-metrics.txt" "$work/relay-stats.json" "127.0.0.1:$port" "$second" "$dead" <<'PY'
import json, re, sys
metrics, stats = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
live, dead = sys.argv[3:5], sys.argv[5]
types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics, re.M))
samples = {}
for line in metrics.splitlines():
    if line and not line.startswith("#"):
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        samples[(name, tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels))))] = float(value)
def value(name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))
families = {  # family: its type, and whether it has a series per upstream
    "fastalloc_upstream_up": "gauge", "fastalloc_upstream_weight": "gauge", "fastalloc_upstream_connections_active": "gauge",
    "fastalloc_upstream_selected_total": "counter", "fastalloc_upstream_member_connect_failures_total": "counter",
    "fastalloc_upstream_health_checks_total": "counter", "fastalloc_upstream_state_changes_total": "counter",
    "fastalloc_upstream_connect_seconds": "histogram", "fastalloc_upstream_unavailable_total": "counter",
    "fastalloc_upstream_connect_failures_total": "counter", "fastalloc_upstream_resolve_failures_total": "counter",
}
problems = [f"{f}: TYPE {types.get(f)}, expected {t}" for f, t in families.items() if types.get(f) != t]
addresses = live + [dead]
for family in families:
    if family in ("fastalloc_upstream_unavailable_total", "fastalloc_upstream_connect_failures_total",
                  "fastalloc_upstream_resolve_failures_total"):
        continue
    names = [family + s for s in ("_bucket", "_sum", "_count")] if families[family] == "histogram" else [family]
    for name in names:
        seen = {dict(labels).get("upstream") for (n, labels) in samples if n == name}
        if seen != set(addresses):
            problems.append(f"{name}: series for {sorted(seen, key=str)}, expected {addresses}")
expect = [
    *[(f"up {a}", value("fastalloc_upstream_up", upstream=a), lambda v: v == 1) for a in live],
    (f"up {dead}", value("fastalloc_upstream_up", upstream=dead), lambda v: v == 0),
    *[(f"selected {a}", value("fastalloc_upstream_selected_total", upstream=a), lambda v: v > 0) for a in live],
    *[(f"connect_seconds_count {a}", value("fastalloc_upstream_connect_seconds_count", upstream=a), lambda v: v > 0) for a in live],
    *[(f"+Inf bucket = count {a}", value("fastalloc_upstream_connect_seconds_bucket", upstream=a, le="+Inf"),
       lambda v, a=a: v == value("fastalloc_upstream_connect_seconds_count", upstream=a)) for a in addresses],
    (f"refused {dead}", value("fastalloc_upstream_member_connect_failures_total", upstream=dead, reason="refused"), lambda v: v >= 1),
    (f"went down {dead}", value("fastalloc_upstream_state_changes_total", upstream=dead, to="down"), lambda v: v == 1),
    (f"weight {live[1]}", value("fastalloc_upstream_weight", upstream=live[1], entry=live[1], backup="false"), lambda v: v == 2),
    ("no client lost an upstream", sum(v for (n, _), v in samples.items() if n == "fastalloc_upstream_unavailable_total"), lambda v: v == 0),
]
problems += [f"{what}: {got}" for what, got, ok in expect if got is None or not ok(got)]
# /stats: the same upstreams, in configuration order, with the same figures.
upstreams = stats.get("upstreams", [])
if [u.get("address") for u in upstreams] != addresses:
    problems.append(f"/stats upstreams {[u.get('address') for u in upstreams]}, expected {addresses}")
for u in upstreams:
    a = u["address"]
    pairs = [("up", float(u["up"]), value("fastalloc_upstream_up", upstream=a)),
             ("selected", u["selected"], value("fastalloc_upstream_selected_total", upstream=a)),
             ("connect_failures.refused", u["connect_failures"]["refused"],
              value("fastalloc_upstream_member_connect_failures_total", upstream=a, reason="refused")),
             ("connect_seconds.count", u["connect_seconds"]["count"], value("fastalloc_upstream_connect_seconds_count", upstream=a)),
             ("connect_seconds.counts", sum(u["connect_seconds"]["counts"]), value("fastalloc_upstream_connect_seconds_count", upstream=a))]
    problems += [f"/stats {a} {key} {got}, /metrics {want}" for key, got, want in pairs if got != want]
print("relay: " + "; ".join(f"{u['address']} up={u['up']} selected={u['selected']} refused={u['connect_failures']['refused']} "
                            f"connects={u['connect_seconds']['count']}" for u in upstreams))
if problems:
    sys.exit("check-metrics: the relay's upstream families: " + "; ".join(problems))
print(f"{len(families)} upstream families checked, {len(addresses)} upstreams, /stats agrees")
PY

echo "== a real Prometheus scrape"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fastalloc
    static_configs:
      - targets: ["127.0.0.1:$stats_port", "$relay_stats"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address=127.0.0.1:"$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$prom_port/-/ready"
query() {
    curl -fsS --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
        python3 -c "import json,sys; r=json.load(sys.stdin)['data']['result']; print(sum(float(s['value'][1]) for s in r) if r else 'none')"
}
# Prometheus scrapes a new target only some seconds after it is ready: wait (bounded) until it
# has scraped both, so that the relay's connects below land in the window of
# rate(fastalloc_upstream_connect_seconds_bucket[15s]).
for _ in $(seq 100); do
    [ "$(query 'count(up{job="fastalloc"} == 1)')" = "2.0" ] && break
    sleep 0.2
done
.build/release/fastalloc-load --target "$relay" --connections 8 --size 512 --duration 6s --warmup 0s >/dev/null 2>&1 &
relay_load=$!
pids+=($relay_load)
.build/release/fastalloc-load --target 127.0.0.1:"$port" --connections 16 --size 512 --duration 8s --warmup 0s >/dev/null 2>&1
wait "$relay_load" || true
up=$(query 'up{job="fastalloc"}')
rate=$(query 'sum(rate(fastalloc_bytes_received_total[15s]))')
series=$(query 'count({job="fastalloc",__name__=~"fastalloc_.*"})')
echo "up=$up (2 targets), fastalloc series=$series, rate(fastalloc_bytes_received_total[15s])=$rate bytes/s"
upstreams_up=$(query 'sum(fastalloc_upstream_up)')
upstreams_known=$(query 'count(fastalloc_upstream_up)')
p99=$(query 'max(histogram_quantile(0.99, sum by (instance, upstream, le) (rate(fastalloc_upstream_connect_seconds_bucket[15s]))))')
echo "upstreams up=$upstreams_up of $upstreams_known, connect time p99 (the slowest upstream, histogram_quantile)=$p99 s"
python3 -c "import sys; sys.exit(0 if '$up' == '2.0' and '$rate' != 'none' and float('$rate') > 0 else 1)" || {
    tail -5 "$work/prometheus.log"
    echo "check-metrics: Prometheus did not see the series or the rate" >&2
    exit 1
}
python3 -c "import math, sys; sys.exit(0 if '$upstreams_up' == '2.0' and '$upstreams_known' == '3.0' and '$p99' != 'none'
             and math.isfinite(float('$p99')) and 0 < float('$p99') <= 5 else 1)" || {
    tail -5 "$work/prometheus.log"
    curl -fsS --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=fastalloc_upstream_connect_seconds_count[20s]'
    echo
    echo "check-metrics: Prometheus did not see the relay's upstreams (2 of 3 up) or a connect-time p99" >&2
    exit 1
}
echo "check-metrics: ok"
