"""The relays in front of THREE upstreams, for Benchmarks/server-vs-peers.py (`--only relay3`):
fastalloc-server relay with `--balance roundrobin` (the setting haproxy's and nginx's match) and
with its default `random`; haproxy 2.6 in TCP mode, `balance roundrobin` over three `server`
lines (the baseline); nginx's stream proxy, an `upstream` block of three servers (round robin,
its default). The upstreams are three peers/uv-echo, 1 thread each, on ports of their own.
Neither haproxy nor nginx checks its servers here; fastalloc-server runs its default active
check (`--health-check tcp`, a connect to each upstream every 2 s: 1.5 connects a second), with
`--stats off` (no port to clash with another run's; its counters are kept all the same).

Rows: 64 x 64 B and 16 x 16 KiB (fastalloc-load, as the single-upstream table), and new
connections per second from peers/conn-rate (16 at a time, closed loop, each a connect, one
64-byte round trip checked byte for byte, and a close; p50/p99 from connect() to the echo's
first byte)."""
import os
import shutil
import subprocess

from peers_lib import (PEERS, ROOT, TABLE_WORKLOADS, Server, haproxy_config, nginx_command, nginx_config,
                       nginx_stream, wait_port)
from peers_report import print_table

RELAY3_BASELINE = "haproxy 2.6 (TCP mode), balance roundrobin"
UPSTREAM_PORTS = [17551, 17552, 17553]
BASE_PORT = 17560
RELAY3_WORKLOADS = [w for w in TABLE_WORKLOADS if "relay3" in w.kinds]


def start_upstreams():
    """Starts the three uv-echo upstreams; returns their processes once each accepts."""
    processes = []
    try:
        for port in UPSTREAM_PORTS:
            processes.append(subprocess.Popen([os.path.join(PEERS, "uv-echo"), str(port), "1"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port, processes[-1])
    except Exception:
        for process in processes:
            process.kill()
            process.wait()
        raise
    return processes


def servers3(config_dir):
    """The relays in front of the three upstreams, with 1 and 2 threads or workers."""
    server = os.path.join(ROOT, ".build/release/fastalloc-server")
    upstreams = [f"127.0.0.1:{port}" for port in UPSTREAM_PORTS]
    result = []
    port = BASE_PORT
    for threads in (1, 2):
        for method, name in (("roundrobin", "fastalloc-server relay, --balance roundrobin"),
                             ("random", "fastalloc-server relay, --balance random (default)")):
            command = [server, "relay", "--listen", f"127.0.0.1:{port}"]
            for upstream in upstreams:
                command += ["--upstream", upstream]
            # --stats off: no stats port to clash with another run's (nothing scrapes it here, and
            # the counters, per upstream too, are kept either way).
            command += ["--balance", method, "--workers", str(threads), "--max-connections", "12000", "--stats", "off"]
            result.append(Server(name, "relay3", threads, command, port))
            port += 1
        if shutil.which("haproxy"):
            config = haproxy_config(os.path.join(config_dir, f"haproxy3-{threads}.cfg"), threads, port, upstreams,
                                    balance="roundrobin")
            result.append(Server(RELAY3_BASELINE, "relay3", threads, ["haproxy", "-f", config, "-db"], port))
        port += 1
        if nginx_stream():
            config = nginx_config(os.path.join(config_dir, f"nginx3-{threads}"), threads, port, upstreams)
            result.append(Server("nginx stream proxy, upstream block (round robin)", "relay3", threads,
                                 nginx_command(config), port))
        port += 1
    return result


def print_relay3(chosen, results, rounds, baseline=RELAY3_BASELINE):
    print()
    print(f"Three upstreams (peers/uv-echo, 1 thread each, ports {UPSTREAM_PORTS[0]}-{UPSTREAM_PORTS[-1]}); ratios "
          f"against {baseline} with as many threads. Upstream CPU is the three upstreams' together. "
          f"fastalloc-server runs its default active check (a connect to each upstream every 2 s), "
          f"haproxy and nginx none.")
    for workload in RELAY3_WORKLOADS:
        print_table(chosen, results, workload, rounds, groups=(("relay3", baseline),),
                    title=f"Three upstreams: {workload.name}")
