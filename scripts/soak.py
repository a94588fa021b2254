#!/usr/bin/env python3
"""Soak with churn: an echo server and a relay in front of it (both fastalloc-server, release
build, 2 workers each, small pools so the overflow pool is used), driven for DURATION by:

  - two churn loops (one through the relay, one straight to the echo server) of fixed-count
    fastalloc-load runs: 1-40 connections, 64 B to 200 KiB messages, depth 1-4, 5-200 messages
    each, so connections open and close all the time; every byte is checked;
  - a steady load through the relay (64 connections, 10 s runs, back to back);
  - a scraper reading /metrics and /stats of both servers every 200 ms;
  - a probe that sends 1 KiB through the relay every second and must get it back within 2 s.

Every second it samples each server's RSS, open fds, buffers in use and active connections.
It fails if a load run mismatched a byte or failed, if a scrape or a probe failed (the server
stopped answering), if RSS kept growing (the last third's peak above the middle third's by more
than 16 MiB), or if, once the clients are gone, a server holds a connection, a buffer or a file
descriptor more than at the start. It prints a summary and draws the samples (--plot FILE).

    scripts/soak.py [--duration 600] [--plot soak.png]          (make soak DURATION=600)
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, ".build/release/fastalloc-server")
LOAD = os.path.join(ROOT, ".build/release/fastalloc-load")


class Server:
    def __init__(self, name, args, port, stats_port):
        self.name, self.port, self.stats_port = name, port, stats_port
        self.process = subprocess.Popen([SERVER, *args, "--listen", f"127.0.0.1:{port}", "--stats",
                                         f"127.0.0.1:{stats_port}", "--workers", "2", "--local-buffers", "16",
                                         "--overflow-initial", "8", "--overflow-max", "512", "--log-level", "warning"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"{name} did not start: {line}{self.process.stderr.read()[-500:]}")
        self.samples = []

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats", timeout=2) as response:
            return json.load(response)

    def sample(self, elapsed):
        with open(f"/proc/{self.process.pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
        fds = len(os.listdir(f"/proc/{self.process.pid}/fd"))
        totals = self.stats()["totals"]
        self.samples.append({"t": elapsed, "rss_mib": rss, "fds": fds, "buffers": totals["buffers_in_use"],
                             "connections": totals["connections_active"]})
        return self.samples[-1]

    def stop(self):
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return self.process.returncode, out


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.runs = self.connections = self.messages = self.scrapes = self.probes = 0
        self.failures = []

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(what)


def load_run(tally, target, args, timeout):
    out = subprocess.run([LOAD, "--target", target, "--threads", "1", "--json", *args], capture_output=True, text=True,
                         timeout=timeout)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        report = None
    if not report or not report["succeeded"] or report["mismatched_bytes"]:
        tally.fail(f"load {' '.join(args)} against {target}: status {out.returncode}: {out.stderr.strip()[-300:]}")
        return
    with tally.lock:
        tally.runs += 1
        tally.connections += report["connections"]
        tally.messages += report["messages"] + report["warmup_messages"]


def churn(tally, target, deadline, seed):
    rng = random.Random(seed)
    while time.time() < deadline:
        size = rng.choice([64, 512, 1024, 16384, 65536, 200000])
        messages = rng.randint(5, 200) if size <= 16384 else rng.randint(2, 20)
        load_run(tally, target, ["--connections", str(rng.randint(1, 40)), "--size", str(size),
                                 "--depth", str(rng.randint(1, 4)), "--messages", str(messages)], 120)


def steady(tally, target, deadline):
    while time.time() < deadline - 3:
        seconds = max(1, min(10, int(deadline - time.time()) - 2))
        load_run(tally, target, ["--connections", "64", "--size", "256", "--duration", f"{seconds}s",
                                 "--warmup", "0s"], seconds + 60)


def scraper(tally, servers, deadline):
    while time.time() < deadline:
        for server in servers:
            for path in ("/metrics", "/stats"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{server.stats_port}{path}", timeout=2) as response:
                        response.read()
                        ok = response.status == 200
                except OSError as error:
                    ok, path = False, f"{path} ({error})"
                if ok:
                    with tally.lock:
                        tally.scrapes += 1
                else:
                    tally.fail(f"scrape {server.name}{path} failed")
        time.sleep(0.2)


def probe(tally, port):
    payload = os.urandom(1024)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(2)
            s.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        ok = received == payload
    except OSError:
        ok = False
    if ok:
        with tally.lock:
            tally.probes += 1
    else:
        tally.fail(f"probe through 127.0.0.1:{port} did not come back intact within 2 s")


def plot(servers, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(3, 1, figsize=(8, 7), dpi=100, sharex=True)
    for server in servers:
        t = [s["t"] for s in server.samples]
        axes[0].plot(t, [s["rss_mib"] for s in server.samples], label=server.name)
        axes[1].plot(t, [s["fds"] for s in server.samples], label=server.name)
        axes[2].plot(t, [s["buffers"] for s in server.samples], label=f"{server.name} buffers in use")
        axes[2].plot(t, [s["connections"] for s in server.samples], linestyle=":", label=f"{server.name} connections")
    for axis, label in zip(axes, ["RSS (MiB)", "open fds", "in use"]):
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    axes[2].set_xlabel("seconds")
    axes[0].set_title("fastalloc-server soak with churn: echo and relay", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--plot", help="draw the samples into this PNG (needs matplotlib)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for product in ("fastalloc-server", "fastalloc-load"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    echo = Server("echo", ["echo"], 17900, 17901)
    relay = Server("relay", ["relay", "--upstream", "127.0.0.1:17900"], 17902, 17903)
    servers = [echo, relay]
    tally = Tally()
    start = time.time()
    deadline = start + args.duration
    base = {s.name: s.sample(0) for s in servers}
    threads = [threading.Thread(target=churn, args=(tally, "127.0.0.1:17902", deadline, args.seed)),
               threading.Thread(target=churn, args=(tally, "127.0.0.1:17900", deadline, args.seed + 1)),
               threading.Thread(target=steady, args=(tally, "127.0.0.1:17902", deadline)),
               threading.Thread(target=scraper, args=(tally, servers, deadline))]
    for thread in threads:
        thread.start()
    next_sample = start + 1
    while time.time() < deadline:
        time.sleep(max(0, next_sample - time.time()))  # the sampling period, not a wait for a result
        next_sample += 1
        probe(tally, relay.port)
        for server in servers:
            try:
                server.sample(time.time() - start)
            except OSError as error:
                tally.fail(f"{server.name} stopped answering /stats: {error}")
    for thread in threads:
        thread.join(timeout=180)
    # The clients are gone: wait (bounded) until the servers have closed every connection.
    settle = time.time() + 15
    while time.time() < settle and any(s.sample(time.time() - start)["connections"] for s in servers):
        time.sleep(0.2)
    end = {s.name: s.sample(time.time() - start) for s in servers}

    problems = list(tally.failures)
    for server in servers:
        samples = server.samples
        third = max(1, len(samples) // 3)
        middle = max(s["rss_mib"] for s in samples[third:2 * third] or samples)
        last = max(s["rss_mib"] for s in samples[2 * third:] or samples)
        if last > middle + 16:
            problems.append(f"{server.name}: RSS still growing ({middle:.1f} MiB peak in the middle third, "
                            f"{last:.1f} in the last)")
        b, e = base[server.name], end[server.name]
        if e["connections"] or e["buffers"]:
            problems.append(f"{server.name}: {e['connections']} connections and {e['buffers']} buffers still held")
        if e["fds"] > b["fds"]:
            problems.append(f"{server.name}: {e['fds'] - b['fds']} file descriptors more than at the start")
    totals = {s.name: s.stats()["totals"] for s in servers}
    statuses = {s.name: s.stop() for s in servers}
    for name, (status, _) in statuses.items():
        if status != 0:
            problems.append(f"{name}: exited with {status}")

    print(f"soak: {args.duration:.0f} s; {tally.runs} load runs, {tally.connections:,} client connections opened "
          f"and closed, {tally.messages:,} messages checked byte for byte; {tally.scrapes:,} scrapes; "
          f"{tally.probes} probes")
    print()
    print("| server | bytes received | bytes sent | RSS start / peak / end (MiB) | fds start / peak / end "
          "| buffers in use peak / end | connections accepted |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for server in servers:
        b, e, t = base[server.name], end[server.name], totals[server.name]
        print(f"| {server.name} | {t['bytes_received']:,} | {t['bytes_sent']:,} | {b['rss_mib']:.1f} / "
              f"{max(s['rss_mib'] for s in server.samples):.1f} / {e['rss_mib']:.1f} | {b['fds']} / "
              f"{max(s['fds'] for s in server.samples)} / {e['fds']} | {max(s['buffers'] for s in server.samples)} / "
              f"{e['buffers']} | {t['connections_accepted']:,} |")
    if args.plot:
        plot(servers, args.plot)
        print(f"\nplot: {args.plot}")
    print()
    if problems:
        print("soak: FAILED")
        for problem in problems:
            print(f"  - {problem}")
        sys.exit(1)
    print("soak: passed (nothing mismatched, nothing stopped answering, nothing leaked, RSS flat)")


if __name__ == "__main__":
    main()
