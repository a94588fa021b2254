"""Prometheus (promtool check config, check rules, test rules; the Kubernetes scrape job) and the
Grafana dashboard: every query parses as PromQL and, like the alerts, names only metrics a live
server exposes."""
import json
import os
import re
import subprocess
import tempfile

import yaml

from .common import DEPLOY, LiveServer, check, section


def exposed_metrics(binary):
    server = LiveServer(binary, {"FASTALLOC_LISTEN": "127.0.0.1:0", "FASTALLOC_STATS": "127.0.0.1:0"}, ["echo"])
    status, text = server.get("/metrics")
    server.stop()
    names = {"up"}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            # A histogram is queried by its series: _bucket (with le), _sum and _count.
            names |= {family + suffix for suffix in ("_bucket", "_sum", "_count")} if kind == "histogram" else {family}
    return names


def metric_names(expr):
    """Metric names in a PromQL expression (identifiers that are neither functions, keywords nor labels)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", without_strings)  # label matchers, ranges
    without_grouping = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_grouping))
    functions = set(re.findall(r"\b([a-zA-Z_]+)\s*\(", without_grouping))
    keywords = {"and", "or", "unless", "sum", "max", "min", "avg", "count", "rate", "increase", "by", "on", "bool",
                "offset", "humanize", "humanizePercentage", "m", "s", "h", "d"}
    return {w for w in words - functions - keywords if not re.fullmatch(r"\d+[smhd]?", w)}


def check_prometheus_and_grafana(binary):
    section("Prometheus")
    directory = os.path.join(DEPLOY, "prometheus")
    for args, what in [(["check", "config", "prometheus.yml"], "promtool check config prometheus.yml"),
                       (["check", "rules", "alerts.yml"], "promtool check rules alerts.yml"),
                       (["test", "rules", "alerts-test.yml"], "promtool test rules alerts-test.yml")]:
        result = subprocess.run(["promtool", *args], cwd=directory, capture_output=True, text=True)
        check(what, result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:])
    job = yaml.safe_load(open(os.path.join(directory, "kubernetes-job.yml")))["scrape_configs"][0]
    keeps = {tuple(r["source_labels"]): r.get("regex") for r in job["relabel_configs"] if r.get("action") == "keep"}
    check("the Kubernetes job keeps annotated fastalloc-server endpoints on the metrics port",
          keeps.get(("__meta_kubernetes_service_annotation_prometheus_io_scrape",)) == "true" and
          keeps.get(("__meta_kubernetes_endpoint_port_name",)) == "metrics" and
          job["kubernetes_sd_configs"][0]["role"] == "endpoints")
    exposed = exposed_metrics(binary)
    rules = yaml.safe_load(open(os.path.join(directory, "alerts.yml")))
    alert_names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            alert_names |= metric_names(rule["expr"])
    check("the alerts name only metrics the server exposes", alert_names <= exposed, str(alert_names - exposed))
    tests = open(os.path.join(directory, "alerts-test.yml")).read()
    untested = [r["alert"] for g in rules["groups"] for r in g["rules"] if f"alertname: {r['alert']}" not in tests]
    check("every alert has a unit test", not untested, str(untested))

    section("Grafana")
    dashboard = json.load(open(os.path.join(DEPLOY, "grafana/fastalloc-server.json")))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    check("the dashboard has queries", len(exprs) >= 10, str(len(exprs)))
    names = set()
    for expr in exprs:
        names |= metric_names(expr)
    check("its queries name only metrics the server exposes", names and names <= exposed, str(names - exposed))
    typo = metric_names('sum by (instance) (rate(fastalloc_bufers_in_use{job=~"$job"}[$__rate_interval]))')
    check("a misspelt metric would be caught (control)", typo == {"fastalloc_bufers_in_use"} and not typo <= exposed)
    for family in ("fastalloc_buffers_in_use", "fastalloc_pool_growth_events_total", "fastalloc_lock_contended_total",
                   "fastalloc_connections_active", "fastalloc_bytes_sent_total", "fastalloc_buffers_high_water",
                   "fastalloc_connections_closed_total", "fastalloc_client_resets_total", "fastalloc_accept_errors_total",
                   "fastalloc_write_timeouts_total", "fastalloc_linger_timeouts_total", "fastalloc_drain_connections_total",
                   "fastalloc_upstream_up", "fastalloc_upstream_connections_active",
                   "fastalloc_upstream_member_connect_failures_total", "fastalloc_upstream_connect_seconds_bucket",
                   "fastalloc_upstream_unavailable_total"):
        check(f"it shows {family}", family in names)
    with tempfile.TemporaryDirectory() as work:  # PromQL syntax: as recording rules, for promtool
        concrete = [e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$job", ".*")
                    .replace("$instance", ".*") for e in exprs]
        path = os.path.join(work, "queries.yml")
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                                 for i, e in enumerate(concrete)]}]}, open(path, "w"))
        result = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        check("every query parses as PromQL", result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:])
