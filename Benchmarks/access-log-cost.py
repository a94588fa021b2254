#!/usr/bin/env python3
"""What the access log costs per connection: fastalloc-server echo (1 worker) under connection
churn (peers/conn-rate, the connection rows' client: THREADS connections at a time, each a
connect, 64 B sent and checked back, a close),
the log off, then to a file (text), then to a file (json), in interleaved rounds. Reports the
server's CPU per connection (its threads' schedstat run time over the round / connections
served), and the access log writer thread's own share,
the connection rate, and the lines written against the connections made.

    Benchmarks/access-log-cost.py [--rounds 5] [--seconds 4] [--threads 4]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from importlib import import_module  # noqa: E402

peers = import_module("server-vs-peers")


def thread_cpu_seconds(pid, name=None):
    """CPU time of the process's threads (only those called `name`, /proc/PID/task/*/comm, when
    given), from /proc/PID/task/*/schedstat: nanoseconds, where /proc/PID/stat counts 10 ms ticks."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            if name is not None:
                with open(f"/proc/{pid}/task/{task}/comm") as comm:
                    if comm.read().strip() != name:
                        continue
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except OSError:
            continue
    return total / 1e9


def round_once(server, port, extra, seconds, threads, log_path):
    env = dict(os.environ, FASTALLOC_ALLOW_ROOT="1")
    process = subprocess.Popen([server, "echo", "--listen", f"127.0.0.1:{port}", "--workers", "1", "--stats", "off"] + extra,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        peers.wait_port(port, process)
        time.sleep(0.2)
        before = thread_cpu_seconds(process.pid)
        writer_before = thread_cpu_seconds(process.pid, "access-log")
        # conn-rate prints: rate p50 p99 mismatched failures connections all_connections; no
        # warm-up here, so all_connections are the round's.
        out = subprocess.run([os.path.join(HERE, "peers/conn-rate"), "127.0.0.1", str(port), str(threads), "64", str(seconds), "0"],
                             check=True, capture_output=True, text=True).stdout.split()
        after = thread_cpu_seconds(process.pid)
        writer_after = thread_cpu_seconds(process.pid, "access-log")
    finally:
        peers.stop(process)
    connections, rate, failures = int(out[6]), float(out[0]), int(out[4])
    lines = None
    if log_path:
        with open(log_path) as log:
            lines = sum(1 for _ in log)
        os.unlink(log_path)
    return {"cpu_us": (after - before) / max(1, connections) * 1e6, "rate": rate, "connections": connections,
            "writer_us": (writer_after - writer_before) / max(1, connections) * 1e6,
            "failures": failures, "lines": lines}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=17400)
    args = parser.parse_args()
    server = peers.build()
    directory = tempfile.mkdtemp(prefix="fastalloc-alog-cost-")
    configurations = [("off", []), ("text file", ["--access-log", f"{directory}/a.log"]),
                      ("json file", ["--access-log", f"{directory}/a.log", "--access-log-format", "json"])]
    results = {name: [] for name, _ in configurations}
    for index in range(args.rounds):
        for name, extra in configurations:
            result = round_once(server, args.port, extra, args.seconds, args.threads, f"{directory}/a.log" if extra else None)
            results[name].append(result)
            print(f"round {index + 1} {name:9}: {result['connections']} connections ({result['rate']:.0f}/s, "
                  f"{result['failures']} failed), server CPU {result['cpu_us']:.2f} us per connection "
                  f"(writer thread {result['writer_us']:.2f})"
                  + (f", {result['lines']} lines" if result["lines"] is not None else ""), flush=True)
    print()
    print("| access log | connections/s (median) | server CPU per connection, µs (median) | vs off | of which the writer thread, µs | a line per connection |")
    print("|---|---:|---:|---:|---:|---|")
    base = statistics.median(r["cpu_us"] for r in results["off"])
    for name, _ in configurations:
        rows = results[name]
        cpu = statistics.median(r["cpu_us"] for r in rows)
        # One more line than the exchanges conn-rate completed, for wait_port's probe connection,
        # and up to --threads more: the connections still in flight when its time ran out, which
        # it drops uncounted (the server logs them too).
        exact = "" if name == "off" else ("yes" if all(
            0 <= r["lines"] - (r["connections"] + r["failures"] + 1) <= args.threads for r in rows) else "NO")
        writer = statistics.median(r["writer_us"] for r in rows)
        print(f"| {name} | {statistics.median(r['rate'] for r in rows):,.0f} | {cpu:.2f} | {(cpu / base - 1) * 100:+.1f} % | {writer:.2f} | {exact} |")
    os.rmdir(directory)


if __name__ == "__main__":
    main()
