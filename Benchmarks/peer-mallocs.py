#!/usr/bin/env python3
"""Heap allocations per message, fastalloc-server beside its peers, counted the same way for all:
each server runs under LD_PRELOAD=peers/libmalloc-count.so (every malloc, calloc, realloc,
posix_memalign and aligned_alloc of the process, and of nginx's workers, printed at exit), twice,
with the same 64 connections and 2,000 or 10,000 64-byte messages each (fastalloc-load
--messages); (mallocs long - mallocs short) / (messages long - messages short) is the
allocations per message in steady state. 1 thread or worker each; relays in front of
peers/uv-echo (not counted). socat is left out: it forks a process per connection.

    Benchmarks/peer-mallocs.py [SHORT LONG]      (default 2000 10000 messages per connection)
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers_lib as peers  # noqa: E402 (beside this script, shared with server-vs-peers.py)
SHIM = os.path.join(HERE, "peers/libmalloc-count.so")
CONNECTIONS = 64


def count(server, messages):
    """Runs the server under the counting shim for one fixed-count load; returns (mallocs, messages)."""
    env = dict(os.environ, LD_PRELOAD=SHIM)
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(server.command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        peers.wait_port(server.port, process)
        out = subprocess.run([peers.LOAD, "--target", f"127.0.0.1:{server.port}", "--connections", str(CONNECTIONS),
                              "--size", "64", "--messages", str(messages), "--json"],
                             capture_output=True, text=True, timeout=300)
        report = json.loads(out.stdout)
        if not report["succeeded"]:
            raise RuntimeError(f"{server.name}: {out.stderr.strip()[:300]}")
    finally:
        peers.stop(process)
    log.seek(0)
    counts = [int(n) for n in re.findall(r"malloc-count: (\d+)", log.read())]
    if not counts:
        raise RuntimeError(f"{server.name}: the shim printed no count")
    return sum(counts), report["messages"]


def main():
    short, long = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (2000, 10000)
    peers.build()
    nio_dir = os.path.join(HERE, "peers/nio-echo")
    subprocess.run(["swift", "build", "-c", "release"], cwd=nio_dir, stdout=subprocess.DEVNULL, check=False)
    upstream = subprocess.Popen([os.path.join(HERE, "peers/uv-echo"), "17709", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config_dir = tempfile.mkdtemp()
    rows = []
    try:
        peers.wait_port(17709, upstream)
        for server in peers.servers(17709, 17710, config_dir):
            if server.threads != 1 or server.name.startswith("socat"):
                continue
            if not os.path.exists(server.command[0]) and not shutil.which(server.command[0]):
                continue
            m1, n1 = count(server, short)
            m2, n2 = count(server, long)
            per = (m2 - m1) / (n2 - n1)
            rows.append((server.name, n1, n2, m1, m2, per))
            print(f"  {server.name}: {m1} / {m2} mallocs for {n1} / {n2} messages", file=sys.stderr, flush=True)
    finally:
        peers.stop(upstream)
        shutil.rmtree(config_dir, ignore_errors=True)
    print(f"{CONNECTIONS} connections x 64 B ping-pong, 1 thread each; mallocs counted in the whole process")
    print()
    print("| server | messages (short / long run) | mallocs (short / long) | mallocs per message |")
    print("|---|---:|---:|---:|")
    for name, n1, n2, m1, m2, per in rows:
        print(f"| {name} | {n1:,} / {n2:,} | {m1:,} / {m2:,} | {abs(per) if abs(per) < 5e-4 else per:.3f} |")


if __name__ == "__main__":
    main()
