#!/usr/bin/env python3
"""fastalloc-server beside its peers: same client, same run, interleaved rounds, as ratios.

Servers (each with 1 and 2 threads or workers where it has them):
  echo:  fastalloc-server echo; the C libuv echo server that mallocs per read (peers/uv-echo, the
         baseline); a tuned C libuv echo (peers/uv-echo-tuned: one 64 KiB buffer per connection,
         uv_try_write first), the fastest echo we have; a SwiftNIO echo server (peers/nio-echo,
         NIO's echo example's shape).
  relay: fastalloc-server relay; haproxy 2.6 in TCP mode (the baseline); nginx's stream proxy;
         socat (a process per connection, 1 only). All in front of peers/uv-echo, 1 worker.
  relay3: the relays in front of three peers/uv-echo (peers_relay3.py): fastalloc-server relay
         with --balance roundrobin and random (its default); haproxy, balance roundrobin (the
         baseline); nginx's stream proxy, an upstream block (round robin). Rows: 64 x 64 B,
         16 x 16 KiB and new connections per second; no sweeps.
Client: fastalloc-load (checks every byte; latency from an HdrHistogram; open loop with --rate).
Workloads (the table; --workloads picks them by the key in brackets): 1 x 64 B ping-pong pinned
with taskset (server and upstream on CPU 0, the client on CPU 0 as well, [shared], or on CPU 1,
[split]); 64 x 64 B ping-pong [64]; 16 x 16 KiB at depth 4 [16k]; new connections [conn] (peers/
conn-rate, a C client: 16 at a time, each a connect, one 64 B round trip and a close; connections
per second and the server's CPU per connection); relays only: 1, 100 and 5,000 connections of
64 B ping-pong, not pinned [1, 100, 5000] (socat not at 5,000; --quick leaves 5,000 out unless
--workloads names it). Sweeps (1-thread configurations, 1 round each): message size 64 B to 1 MiB, connections
1 to 10,000, and an open-loop --rate sweep that finds the highest rate whose p99 stays <= 1 ms.
Every row gives the CPU of the server (with its children), of the upstream and of the client, and
the server's peak RSS (VmHWM, with its children), so a run limited by the client shows as such.

    Benchmarks/server-vs-peers.py [--rounds 3] [--seconds 5] [--only echo,relay,relay3] [--no-sweeps]
                                  [--workloads shared,split,1,64,100,5000,16k,conn] [--plots DIR]
                                  [--json FILE] [--quick]
e.g. the relays' connection counts and rate only:
    Benchmarks/server-vs-peers.py --only relay --no-sweeps --rounds 5 --workloads 1,100,5000,conn
The measuring (servers, workloads, runs, sweeps) is in peers_lib.py, the tables and plots in
peers_report.py, the three-upstream relays in peers_relay3.py, all beside this script.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers_lib import (ECHO_BASELINE, PEERS, RELAY_BASELINE, TABLE_WORKLOADS, build, describe,  # noqa: E402
                       iperf3_ceiling, log, run_workload, servers, stop, sweeps, wait_port)
from peers_relay3 import print_relay3, servers3, start_upstreams  # noqa: E402
from peers_report import plot, print_sweeps, print_table  # noqa: E402
KINDS = ("echo", "relay", "relay3")


def kinds(text):
    chosen = text.split(",")
    if not chosen or any(kind not in KINDS for kind in chosen):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(KINDS)}")
    return chosen


WORKLOAD_KEYS = [w.key for w in TABLE_WORKLOADS]
ALIASES = {"pinned": ["shared", "split"]}
# socat forks a process per connection: 5,000 of them at once is not a relay's row any more.
SOCAT_MAX_CONNECTIONS = 100


def workload_keys(text):
    chosen = []
    for key in text.split(","):
        if key not in WORKLOAD_KEYS and key not in ALIASES:
            raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(WORKLOAD_KEYS + list(ALIASES))}")
        chosen += ALIASES.get(key, [key])
    return chosen


def workloads_for(server, selected):
    """The workloads (of `selected`) a server runs: those of its kind (the pinned ones with 1
    thread only: pinned to one CPU, a second thread has nowhere to run); socat, a process per
    connection, not the 5,000-connection row."""
    return [w for w in selected if server.kind in w.kinds and (not w.pin or server.threads == 1)
            and not (server.name.startswith("socat") and w.connections > SOCAT_MAX_CONNECTIONS)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--sweep-seconds", type=int, default=3, help="seconds per sweep point")
    parser.add_argument("--only", type=kinds, metavar="KINDS",
                        help="only these kinds of rows, comma-separated: echo, relay (one upstream), relay3 "
                             "(three upstreams)")
    parser.add_argument("--workloads", type=workload_keys, metavar="KEYS",
                        help="only these table rows, comma-separated: shared and split (1 x 64 B pinned; "
                             "pinned: both), 1, 64, 100 and 5000 (that many connections x 64 B, depth 1), 16k "
                             "(16 x 16 KiB, depth 4), conn (new connections, peers/conn-rate)")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--plots", metavar="DIR", help="write the sweeps' plots (PNG, needs matplotlib) to DIR")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--compare", metavar="PATH[:LABEL]",
                        help="also run another fastalloc-server build (e.g. the previous commit's release "
                             "binary) beside this one, with the same options, to show a change side by side")
    parser.add_argument("--only-fastalloc", action="store_true",
                        help="only fastalloc-server rows (with --compare: this build against the other one)")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 1 s per configuration and a few sweep points: checks that every "
                             "configuration runs and matches every byte")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.sweep_seconds = 1, 1, 1
    # --quick leaves out the 5,000-connection row unless --workloads names it.
    selected = [w for w in TABLE_WORKLOADS if (w.key in args.workloads if args.workloads else not args.quick or w.quick)]

    build()
    nio_dir = os.path.join(PEERS, "nio-echo")
    if args.only_fastalloc or (args.only and "echo" not in args.only):
        pass  # no SwiftNIO row: no need to build it
    elif subprocess.run(["swift", "build", "-c", "release"], cwd=nio_dir, stdout=subprocess.DEVNULL).returncode != 0:
        log("(the SwiftNIO peer did not build; its rows are missing)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 connections; children inherit it

    upstream_port = 17500
    upstream, upstreams3 = None, []
    config_dir = tempfile.mkdtemp()
    results, ceilings, found = {}, [], None
    baselines = (ECHO_BASELINE, RELAY_BASELINE)
    try:
        if not args.only or "echo" in args.only or "relay" in args.only:
            upstream = subprocess.Popen([os.path.join(PEERS, "uv-echo"), str(upstream_port), "1"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(upstream_port, upstream)
        if not args.only or "relay3" in args.only:
            upstreams3 = start_upstreams()
        compare = None
        if args.compare:
            path, _, label = args.compare.partition(":")
            compare = (os.path.abspath(path), label or "compared")
            if args.only_fastalloc:
                # The ratios are then this build against the other one.
                baselines = (f"fastalloc-server echo ({compare[1]})", f"fastalloc-server relay ({compare[1]})")
        chosen = [s for s in servers(upstream_port, 17510, config_dir, compare) + servers3(config_dir)
                  if (not args.only or s.kind in args.only) and (not args.only_fastalloc or s.name.startswith("fastalloc-server"))]
        for round_number in range(1, args.rounds + 1):
            ceiling = iperf3_ceiling(args.seconds)
            if ceiling:
                ceilings.append(ceiling)
                log(f"  round {round_number}: iperf3 loopback ceiling {ceiling:,.0f} MB/s")
            for workload in selected:
                for server in chosen:
                    if workload not in workloads_for(server, selected):
                        continue
                    result = run_workload(server, workload, args.seconds, upstreams3 if server.kind == "relay3" else upstream)
                    results.setdefault((server.name, server.threads, workload.name), []).append(result)
                    log(f"  round {round_number}: {server.name}, {server.threads} thread(s), {workload.name}: {describe(result)}")
        swept = [s for s in chosen if s.kind != "relay3"]
        if not args.no_sweeps and swept:
            found = sweeps(swept, upstream, args.sweep_seconds, args.quick, 1 if args.quick else args.rounds)
    finally:
        for process in ([upstream] if upstream else []) + upstreams3:
            stop(process)
        shutil.rmtree(config_dir, ignore_errors=True)

    expected = sum(len(workloads_for(s, selected)) for s in chosen)
    empty = [key for key, runs in results.items() if not runs or any(r["msgs"] <= 0 for r in runs)]
    if empty or len(results) != expected:
        log(f"FAILED: {expected - len(results) + len(empty)} configuration(s) without figures: {empty}")
        sys.exit(1)
    print(f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}; client: fastalloc-load "
          f"(1 thread, every byte checked); {args.rounds} interleaved rounds of {args.seconds} s after a warm-up; "
          f"median [min-max]. CPU columns are cores busy over the run (1.00 = one core); the client's and the "
          f"upstream's show when they, not the server, were the limit.")
    if ceilings:
        print(f"loopback ceiling (iperf3, one TCP stream): {statistics.median(ceilings):,.0f} MB/s "
              f"[{min(ceilings):,.0f}-{max(ceilings):,.0f}]")
    if any(s.kind in ("echo", "relay") for s in chosen):
        for workload in selected:
            print_table(chosen, results, workload, args.rounds, baselines)
    if any(s.kind == "relay3" for s in chosen) and any("relay3" in w.kinds for w in selected):
        print_relay3(chosen, results, args.rounds)
    if found:
        print_sweeps(found)
        if args.plots:
            for path in plot(found, args.plots, baselines):
                log(f"  wrote {path}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"table": [{"server": k[0], "threads": k[1], "workload": k[2], "runs": v} for k, v in results.items()],
                       "sweeps": found, "iperf3_mbps": ceilings}, out, indent=1)


if __name__ == "__main__":
    main()
