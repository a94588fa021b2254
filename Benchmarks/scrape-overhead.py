#!/usr/bin/env python3
"""What scraping costs the data path: echo throughput (64 connections x 64 B, C epoll client)
with and without a scraper fetching /metrics 10 times a second over one keep-alive
connection, alternating, in one run. Budget: under 1 % change.

    Benchmarks/scrape-overhead.py [--rounds 6] [--seconds 5]
"""
import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers_lib as peers  # noqa: E402 (beside this script, shared with server-vs-peers.py)


def scrape(port, stop, counter):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    next_time = time.monotonic()
    while not stop.is_set():
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or b"fastalloc_bytes_sent_total" not in body:
            raise RuntimeError("bad scrape")
        counter[0] += 1
        next_time += 0.1
        time.sleep(max(0, next_time - time.monotonic()))
    connection.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    binary = peers.build()
    port, stats_port = 17950, 19470
    server = subprocess.Popen([binary, "echo", "--listen",
                               f"127.0.0.1:{port}", "--workers", "1", "--stats", f"127.0.0.1:{stats_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"without": [], "with": []}
    cpu = {"without": [], "with": []}
    scrapes = 0
    try:
        peers.wait_port(port, server)
        for round_number in range(args.rounds):
            order = ["without", "with"] if round_number % 2 == 0 else ["with", "without"]
            for mode in order:
                stop, counter, scraper = threading.Event(), [0], None
                if mode == "with":
                    scraper = threading.Thread(target=scrape, args=(stats_port, stop, counter))
                    scraper.start()
                cpu_before, wall_before = peers.cpu_seconds(server.pid), time.monotonic()
                out = subprocess.run([os.path.join(peers.PEERS, "epoll-client"), "127.0.0.1", str(port), "64", "64", "1",
                                      str(args.seconds), "1"], capture_output=True, text=True, check=True)
                cpu_used, wall = peers.cpu_seconds(server.pid) - cpu_before, time.monotonic() - wall_before
                stop.set()
                if scraper:
                    scraper.join()
                    scrapes += counter[0]
                rate = float(out.stdout.split()[0])
                results[mode].append(rate)
                # Server CPU per message over the whole client run (its warm-up included).
                cpu[mode].append(cpu_used / (rate * wall) * 1e6)
                print(f"  round {round_number + 1}, {mode} scraping: {rate:,.0f} msg/s"
                      + (f" ({counter[0]} scrapes)" if mode == "with" else ""), file=sys.stderr, flush=True)
    finally:
        peers.stop(server)
    without, with_ = statistics.median(results["without"]), statistics.median(results["with"])
    change = (with_ - without) / without * 100
    print(f"echo, 1 worker, 64 x 64 B, C epoll client; {args.rounds} alternating rounds of {args.seconds} s; "
          f"scraper: /metrics every 100 ms on one keep-alive connection ({scrapes} scrapes)")
    print()
    print("| | msg/s, median [min-max] | server CPU µs per message, median |")
    print("|---|---:|---:|")
    print(f"| no scraping | {without:,.0f} [{min(results['without']):,.0f}-{max(results['without']):,.0f}] "
          f"| {statistics.median(cpu['without']):.3f} |")
    print(f"| /metrics 10 times a second | {with_:,.0f} [{min(results['with']):,.0f}-{max(results['with']):,.0f}] "
          f"| {statistics.median(cpu['with']):.3f} |")
    print()
    cpu_change = (statistics.median(cpu["with"]) - statistics.median(cpu["without"])) / statistics.median(cpu["without"]) * 100
    print(f"change with scraping: throughput {change:+.2f} %, server CPU per message {cpu_change:+.2f} % (budget: within 1 %)")


if __name__ == "__main__":
    main()
