#!/usr/bin/env python3
"""The local fleet under load, with one upstream and then one relay killed mid-run (SIGKILL, a crash):

  1. starts deploy/local/fleet.py's fleet (3 relays behind haproxy, each relay in front of the
     same 2 upstream echo servers with active checks every 500 ms, fall 2, rise 2; Prometheus
     scraping the relays) on ports of its own, and waits until haproxy sends to all three relays
     and Prometheus sees all three up;
  2. an upstream dies: runs fastalloc-load through haproxy (30 connections, 1 KiB, depth 2, 5 s);
     a second in, kills upstream 2; at once opens 200 new connections through haproxy, one after
     another (each a connect, 256 bytes echoed and checked, a close): every one is served (a
     refused connect to the dead upstream is retried on the other); each relay marks it down
     within fall x interval (1 s; its /metrics `fastalloc_upstream_up{upstream="127.0.0.1:PORT"}`
     polled every 50 ms; 0.25 s allowed for the polling); no byte of the load run mismatches (the
     dead upstream's clients end early, cleanly); then restarts the upstream on the same port:
     each relay marks it up again within rise x interval, and it serves new connections again;
  3. a relay dies: runs fastalloc-load through haproxy (30 connections, 1 KiB messages, depth 2,
     8 s); two seconds in (its first progress line from 2 s on), kills relay 2;
  4. opens 60 new connections through haproxy (a fixed-count run) and checks that every one
     connects and echoes, served by the two survivors;
  5. checks that Prometheus sees the killed relay down (`up == 0`) and FastAllocInstanceDown pending;
  6. when the load run ends: no byte it received mismatched (the killed relay's connections end
     early, as they must; every byte acknowledged before that arrived intact), and once the
     clients are gone the survivors report 0 connections and 0 buffers in use;
  7. stops the fleet: the survivors drain (SIGTERM) with nothing left to cut (their summaries say
     "0 cut"; a drain resets what is still open at --drain-timeout) and exit 0.

    deploy/local/fleet-test.py        (about 25 s; 127.0.0.1 only; stops everything it started)
"""
import importlib.util
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
_spec = importlib.util.spec_from_file_location("fleet", os.path.join(HERE, "fleet.py"))
fleet_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fleet_module)
LOAD = os.path.join(ROOT, ".build/release/fastalloc-load")
failures = []


def check(what, ok, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(what)
    return ok


def wait_for(what, condition, timeout):
    """Polls a condition on another process's state until it holds or the deadline passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def accepted(fleet, index):
    return sum(v for k, v in fleet.metrics(index).items() if k.startswith("fastalloc_connections_accepted_total"))


def gauge(fleet, index, name):
    return sum(v for k, v in fleet.metrics(index).items() if k.startswith(name + "{") or k == name)


def load(fleet, *args):
    return [LOAD, "--target", f"127.0.0.1:{fleet.front}", "--threads", "1", "--json", *args]


def start_load(fleet, *args):
    """A fastalloc-load run in the background, its progress lines collected: (process, lines)."""
    run = subprocess.Popen(load(fleet, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = []
    threading.Thread(target=lambda: progress.extend(iter(run.stderr.readline, "")), daemon=True).start()
    return run, progress


def wait_seconds_in(run, progress, seconds):
    """Waits for the load's progress line from `seconds` on; returns the second it shows."""
    def reached():
        if run.poll() is not None:  # it ended early: say how, not just "timed out"
            raise RuntimeError(f"the load run ended early, status {run.returncode}: {''.join(progress[-5:]).strip()}")
        # The progress line comes about once a second ("2s  ... msg/s"), but a busy machine can
        # delay one past the next second and skip it: any line from `seconds` on will do.
        return any(int(match.group(1)) >= seconds for line in progress if (match := re.match(r"(\d+)s ", line)))
    try:
        wait_for(f"{seconds} s of load", reached, 20)
    except RuntimeError as error:
        raise RuntimeError(f"{error}; the load printed: {''.join(progress[-5:]).strip()!r}") from None
    return max(int(m.group(1)) for line in list(progress) if (m := re.match(r"(\d+)s ", line)))


def upstream_metric(fleet, index, name, port):
    """Relay `index`'s /metrics family `name` for upstream 127.0.0.1:port, summed over its other
    labels; None when the relay has no such series."""
    label = f'upstream="127.0.0.1:{port}"'
    values = [v for k, v in fleet.metrics(index).items() if k.startswith(name + "{") and label in k]
    return sum(values) if values else None


def watch_upstream(fleet, relays, port, want, since, timeout=10):
    """Polls each relay's fastalloc_upstream_up for upstream `port` every 50 ms until it is
    `want`; returns {relay: seconds after `since`}, missing the relays that never showed it."""
    seen = {}
    deadline = time.time() + timeout
    while len(seen) < len(relays) and time.time() < deadline:
        for i in relays:
            if i not in seen and upstream_metric(fleet, i, "fastalloc_upstream_up", port) == want:
                seen[i] = time.perf_counter() - since
        time.sleep(0.05)
    return seen


def exchange(fleet, size=256):
    """One short connection through haproxy: connect, `size` random bytes, their echo, close;
    None when every byte came back, else what went wrong."""
    data = random.randbytes(size)
    try:
        with socket.create_connection(("127.0.0.1", fleet.front), timeout=5) as connection:
            connection.sendall(data)
            echoed = b""
            while len(echoed) < size:
                chunk = connection.recv(size - len(echoed))
                if not chunk:
                    return f"closed after {len(echoed)} of {size} bytes"
                echoed += chunk
            return None if echoed == data else "bytes mismatched"
    except OSError as error:
        return str(error)


def check_load_run(run, whose):
    """Waits for a background load run of 30 connections that lost `whose` connections mid-run;
    checks that no byte mismatched and that those ended early while the others ran on."""
    out, _ = run.communicate(timeout=60)
    result = json.loads(out)
    print(f"  load run: {result['messages']:,} messages ({result['megabytes_per_second']:.1f} MB/s), "
          f"{result['early_closes']} connections ended early, {result['connect_failures']} connect failures, "
          f"{result['mismatched_bytes']} bytes mismatched")
    check("no byte of the load run mismatched", result["mismatched_bytes"] == 0 and result["first_mismatch"] is None)
    check(f"{whose} connections ended early, the others ran on",
          0 < result["early_closes"] < 30 and result["messages"] > 0, f"{result['early_closes']} of 30")


def upstream_phase(fleet):
    """Kills upstream 2 under load, checks that nothing is lost and that every relay marks it
    down, restarts it, checks that every relay marks it up and that it serves again."""
    dead = 1
    port = fleet.upstream_ports[dead]
    relays = list(range(fleet.count))
    fall_s, rise_s = fleet.FALL * fleet.HEALTH_INTERVAL_S, fleet.RISE * fleet.HEALTH_INTERVAL_S
    slack = 0.25  # the 50 ms polling, an HTTP scrape and a busy machine's scheduling
    states = [upstream_metric(fleet, i, "fastalloc_upstream_up", port) for i in relays]
    check(f"every relay shows upstream 127.0.0.1:{port} up (fastalloc_upstream_up 1)", states == [1] * len(relays),
          str(states))
    failed_before = sum(upstream_metric(fleet, i, "fastalloc_upstream_member_connect_failures_total", port) or 0
                        for i in relays)
    run, progress = start_load(fleet, "--connections", "30", "--size", "1024", "--depth", "2",
                               "--duration", "5s", "--warmup", "0s")
    seen = wait_seconds_in(run, progress, 1)
    fleet.upstreams[dead].send_signal(signal.SIGKILL)
    fleet.upstreams[dead].wait(timeout=10)
    killed_at = time.perf_counter()
    print(f"  killed upstream 2 (127.0.0.1:{port}, pid {fleet.upstreams[dead].pid}) with SIGKILL, {seen} s into the load run")
    down = {}
    watcher = threading.Thread(target=lambda: down.update(watch_upstream(fleet, relays, port, 0, killed_at)), daemon=True)
    watcher.start()
    errors = [e for e in (exchange(fleet) for _ in range(200)) if e]
    took = time.perf_counter() - killed_at
    retried = sum(upstream_metric(fleet, i, "fastalloc_upstream_member_connect_failures_total", port) or 0
                  for i in relays) - failed_before
    unavailable = sum(gauge(fleet, i, "fastalloc_upstream_unavailable_total") for i in relays)
    check("200 new connections, one after another, all served, every byte echoed", not errors and unavailable == 0,
          f"{len(errors)} failed: {sorted(set(errors))[:3]}" if errors else
          f"in {took:.1f} s; the relays' failed connects to the dead upstream, each retried on the other: {retried:.0f}; "
          f"clients left without an upstream: {unavailable:.0f}")
    watcher.join(timeout=15)
    for i in relays:
        when = down.get(i)
        check(f"relay {i + 1} shows it down (fastalloc_upstream_up 0) within fall x interval ({fall_s:.1f} s)",
              when is not None and when <= fall_s + slack, f"after {when:.2f} s" if when is not None else "not within 10 s")
    check_load_run(run, "the dead upstream's")

    fleet.start_upstream(dead)
    restarted_at = time.perf_counter()
    print(f"  restarted upstream 2 on 127.0.0.1:{port} (pid {fleet.upstreams[dead].pid})")
    up = watch_upstream(fleet, relays, port, 1, restarted_at)
    for i in relays:
        when = up.get(i)
        check(f"relay {i + 1} shows it up again (fastalloc_upstream_up 1) within rise x interval ({rise_s:.1f} s)",
              when is not None and when <= rise_s + slack, f"after {when:.2f} s" if when is not None else "not within 10 s")
    fresh = subprocess.run(load(fleet, "--connections", "30", "--messages", "20", "--size", "512"),
                           capture_output=True, text=True, timeout=60)
    report = json.loads(fresh.stdout)
    served = accepted_by(fleet, fleet.upstream_stats_ports[dead])
    check("30 new connections echo every byte, and the restarted upstream takes some",
          fresh.returncode == 0 and report["mismatched_bytes"] == 0 and report["messages"] == 30 * 20 and served > 0,
          f"{report['messages']} messages, {report['mismatched_bytes']} mismatched; it accepted {served:.0f}")


def accepted_by(fleet, stats_port):
    return sum(v for k, v in fleet.metrics(None, stats_port).items() if k.startswith("fastalloc_connections_accepted_total"))


def main():
    subprocess.run(["swift", "build", "-c", "release", "--product", "fastalloc-load"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    fleet = fleet_module.Fleet(relays=3, base_port=17100, stats_base_port=19500, prometheus_port=19590, quiet=True,
                               upstreams=2)
    killed = 1
    try:
        fleet.start()
        print(f"fleet: haproxy 127.0.0.1:{fleet.front}, relays {fleet.relay_ports}, upstreams {fleet.upstream_ports}, "
              f"Prometheus {fleet.prometheus_port}")
        wait_for("Prometheus to see 3 relays up",
                 lambda: len([v for _, v in fleet.query('up{job="fastalloc"}') if v == 1]) == 3, 30)
        # haproxy marks a relay up after two good /readyz checks: wait until it sends to each.
        def all_serving():
            subprocess.run(load(fleet, "--connections", "6", "--messages", "2"), capture_output=True, timeout=30)
            return all(accepted(fleet, i) > 0 for i in range(3))
        wait_for("haproxy to send to all 3 relays", all_serving, 20)
        check("haproxy spreads connections over all 3 relays", True,
              ", ".join(f"relay {i + 1}: {accepted(fleet, i):.0f}" for i in range(3)))

        print("an upstream dies:")
        upstream_phase(fleet)

        print("a relay dies:")
        run, progress = start_load(fleet, "--connections", "30", "--size", "1024", "--depth", "2",
                                   "--duration", "8s", "--warmup", "0s")
        seen = wait_seconds_in(run, progress, 2)
        before = [accepted(fleet, i) for i in range(3) if i != killed]
        fleet.relays[killed].send_signal(signal.SIGKILL)
        fleet.relays[killed].wait(timeout=10)
        killed_at = time.time()
        print(f"  killed relay {killed + 1} (pid {fleet.relays[killed].pid}) with SIGKILL, {seen} s into the load run")

        fresh = subprocess.run(load(fleet, "--connections", "60", "--messages", "50", "--size", "512"),
                               capture_output=True, text=True, timeout=60)
        report = json.loads(fresh.stdout)
        check("60 new connections after the kill all connect and echo every byte",
              fresh.returncode == 0 and report["connect_failures"] == 0 and report["early_closes"] == 0
              and report["mismatched_bytes"] == 0 and report["messages"] == 60 * 50,
              f"{report['messages']} messages, {report['connect_failures']} connect failures, "
              f"{report['mismatched_bytes']} mismatched")
        after = [accepted(fleet, i) for i in range(3) if i != killed]
        check("the survivors took them", sum(after) - sum(before) >= 60,
              f"accepted {before} -> {after}")

        target = f"127.0.0.1:{fleet.stats_ports[killed]}"
        wait_for("Prometheus to see the killed relay down",
                 lambda: any(v == 0 for _, v in fleet.query(f'up{{instance="{target}"}}')), 20)
        check("Prometheus sees the killed relay down (up == 0)", True, f"after {time.time() - killed_at:.1f} s")
        alerts = wait_for("FastAllocInstanceDown to be pending",
                          lambda: fleet.query(f'ALERTS{{alertname="FastAllocInstanceDown", instance="{target}"}}'), 20)
        check("FastAllocInstanceDown is pending for it", alerts[0][0].get("alertstate") in ("pending", "firing"),
              alerts[0][0].get("alertstate"))
        still_up = [labels["instance"] for labels, v in fleet.query('up{job="fastalloc"}') if v == 1]
        check("and the two others up", len(still_up) == 2, str(still_up))

        check_load_run(run, "the killed relay's")

        survivors = [i for i in range(3) if i != killed]
        wait_for("the survivors to close every connection",
                 lambda: all(gauge(fleet, i, "fastalloc_connections_active") == 0 for i in survivors), 20)
        for i in survivors:
            check(f"relay {i + 1}: 0 connections and 0 buffers in use",
                  gauge(fleet, i, "fastalloc_connections_active") == 0 and gauge(fleet, i, "fastalloc_buffers_in_use") == 0)
    except Exception as error:  # a timeout or a crash is a failure with its reason, not a traceback
        check("the fleet test ran to the end", False, str(error))
    finally:
        relays = list(fleet.relays)
        fleet.stop()
        logs = getattr(fleet, "relay_logs", [""] * len(relays))
        for i, relay in enumerate(relays):
            if i != killed:
                check(f"relay {i + 1} drained and exited 0", relay.returncode == 0, f"status {relay.returncode}")
                drain = re.search(r"drain: (\d+) ended by themselves, (\d+) cut", logs[i])
                check(f"relay {i + 1}'s drain cut nothing (its clients were gone)", drain and drain.group(2) == "0",
                      drain.group(0) if drain else "no drain summary in its log")
    print()
    if failures:
        print(f"FAILED: {failures}")
        sys.exit(1)
    print("fleet test: passed")


if __name__ == "__main__":
    main()
