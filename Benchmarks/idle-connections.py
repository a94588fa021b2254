#!/usr/bin/env python3
"""Server memory per idle connection: RSS of fastalloc-server and of each peer (the C libuv echo
server, SwiftNIO's echo, haproxy, nginx's stream proxy) before and after N connections that each
made one 1-byte round trip and then sit idle. Relays hold two descriptors per connection and this
machine's hard limit on open files is 20,000, so relays get at most 5,000 connections; the table
gives bytes per connection, which is what compares. The upstream (peers/uv-echo) is not counted.
Budget: under 20 MB of RSS growth for 10,000 connections.

    Benchmarks/idle-connections.py [CONNECTIONS]      (default 10000)
"""
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers_lib as peers  # noqa: E402 (beside this script, shared with server-vs-peers.py)
wait_port = peers.wait_port
ROOT = os.path.dirname(HERE)
COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000


def rss_kib(pid):
    """Resident memory of a process and its live children (nginx's workers)."""
    return peers._status_kib(pid, "VmRSS") + sum(peers._status_kib(child, "VmRSS") for child in peers._children(pid))


def measure(name, command, port, count=COUNT):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, process)
        time.sleep(0.2)  # let the probe connection's close settle
        before = rss_kib(process.pid)
        sockets = []
        for index in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"x")
            if s.recv(1) != b"x":  # accepted and served: the server holds its state now
                raise RuntimeError(f"connection {index} not echoed")
            sockets.append(s)
        after = rss_kib(process.pid)
        growth_mib = (after - before) / 1024
        print(f"| {name} | {count:,} | {before / 1024:.1f} | {after / 1024:.1f} | {growth_mib:.1f} | {(after - before) * 1024 / count:,.0f} |")
        for s in sockets:
            s.close()
        return growth_mib
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < COUNT + 100:
        sys.exit(f"the file descriptor limit ({hard}) is below {COUNT + 100}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = peers.build()
    print(f"machine: {os.cpu_count()} cores; {COUNT} idle connections, each after one 1-byte round trip")
    print()
    print("| server | connections | RSS before (MiB) | RSS after (MiB) | growth (MiB) | bytes per connection |")
    print("|---|---:|---:|---:|---:|---:|")
    ours = measure("fastalloc-server echo, 1 worker", [server, "echo", "--listen", "127.0.0.1:17400", "--workers", "1",
                                                       "--max-connections", str(COUNT + 10)], 17400)
    measure("fastalloc-server echo, 2 workers", [server, "echo", "--listen", "127.0.0.1:17401", "--workers", "2",
                                                 "--max-connections", str(COUNT + 10)], 17401)
    measure("C libuv echo (peers/uv-echo), 1 worker", [os.path.join(HERE, "peers/uv-echo"), "17402", "1"], 17402)
    nio = os.path.join(HERE, "peers/nio-echo/.build/release/nio-echo")
    if subprocess.run(["swift", "build", "-c", "release"], cwd=os.path.join(HERE, "peers/nio-echo"),
                      stdout=subprocess.DEVNULL).returncode == 0:
        measure("SwiftNIO echo, 1 thread", [nio, "17403", "1"], 17403)
    relays = min(COUNT, peers.RELAY_MAX_CONNECTIONS)
    upstream = subprocess.Popen([os.path.join(HERE, "peers/uv-echo"), "17409", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config_dir = tempfile.mkdtemp()
    try:
        wait_port(17409, upstream)
        for relay in peers.servers(17409, 17410, config_dir):
            if relay.kind == "relay" and relay.threads == 1 and not relay.name.startswith("socat"):
                command = relay.command + (["--max-connections", str(relays + 10)] if "fastalloc" in relay.name else [])
                measure(f"{relay.name}, 1 thread", command, relay.port, relays)
    finally:
        peers.stop(upstream)
        shutil.rmtree(config_dir, ignore_errors=True)
    budget = 20
    print()
    print(f"budget: under {budget} MiB growth for 10,000 connections: {'met' if ours * 10_000 / COUNT < budget else 'MISSED'}")
    sys.exit(0 if ours * 10_000 / COUNT < budget else 1)


if __name__ == "__main__":
    main()
