#!/usr/bin/env python3
"""Which --buffer-size: fastalloc-server echo (1 worker) with 4, 16, 64 and 256 KiB buffers,
interleaved rounds, on the bulk workload (16 connections x 16 KiB at depth 4, where read size
matters) and on 64-byte ping-pong (where it should not). Reports MB/s or msg/s and the server's
CPU seconds per GB moved, the figure that separates settings when the client is the limit.

    Benchmarks/buffer-size.py [--rounds 3] [--seconds 5]
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers_lib as peers  # noqa: E402 (beside this script, shared with server-vs-peers.py)

SIZES = [4096, 16384, 65536, 262144]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    binary = peers.build()
    servers = [peers.Server(f"--buffer-size {size // 1024} KiB", "echo", 1,
                            [binary, "echo", "--listen", f"127.0.0.1:{17600 + index}", "--workers", "1",
                             "--buffer-size", str(size)], 17600 + index)
               for index, size in enumerate(SIZES)]
    results = {}
    for round_number in range(1, args.rounds + 1):
        for workload in peers.WORKLOADS:
            for server in servers:
                result = peers.run_one(server, workload, args.seconds)
                results.setdefault((server.name, workload.name), []).append(result)
                print(f"  round {round_number}: {server.name}, {workload.name}: {result['msgs']:,.0f} msg/s, "
                      f"{result['mbps']:,.1f} MB/s, {result['cpu_per_gb']:.3f} CPU s/GB", file=sys.stderr, flush=True)
    print(f"fastalloc-server echo, 1 worker; client fastalloc-load; {args.rounds} interleaved rounds of "
          f"{args.seconds} s; median [min-max]")
    for workload in peers.WORKLOADS:
        field = workload.figure
        print()
        print(f"### {workload.name}")
        print()
        print(f"| buffer size | {'msg/s' if field == 'msgs' else 'MB/s'} | server CPU s per GB |")
        print("|---|---:|---:|")
        for server in servers:
            runs = results[(server.name, workload.name)]
            values = [r[field] for r in runs]
            cpu = [r["cpu_per_gb"] for r in runs]
            print(f"| {server.name} | {statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}] "
                  f"| {statistics.median(cpu):.3f} [{min(cpu):.3f}-{max(cpu):.3f}] |")


if __name__ == "__main__":
    main()
