#!/usr/bin/env python3
"""fastalloc-server beside its peers, same client, same run, interleaved rounds, as ratios.

Servers (each with 1 and 2 threads or workers):
  echo:  fastalloc-server echo; the C libuv echo server that mallocs per read (peers/uv-echo);
         a SwiftNIO echo server (peers/nio-echo, NIO's echo example's shape).
  relay: fastalloc-server relay; haproxy 2.6 in TCP mode (nbthread); both in front of
         peers/uv-echo with 1 worker.
Workloads, driven by the C epoll client (peers/epoll-client, which checks every byte):
  64 connections x 64 B ping-pong (messages/s), 16 connections x 16 KiB at depth 4 (MB/s).
For every run the server's CPU time (utime + stime from /proc/PID/stat) gives CPU seconds per
GB moved (bytes in + out of the server process, counted once per direction of the echo).
Each configuration runs ROUNDS times, interleaved with the others; the table gives the median
and the range, and the ratio of medians to the C libuv echo server (echo) or haproxy (relay).

    Benchmarks/server-vs-peers.py [--rounds 3] [--seconds 5] [--only echo|relay]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")
TICKS = os.sysconf("SC_CLK_TCK")


def build():
    """Builds the C peers and the release fastalloc-server; returns the server's path."""
    subprocess.run(["make", "-s", "-C", PEERS], check=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "fastalloc-server"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, ".build/release/fastalloc-server")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """CPU time of a process and its children: its own utime + stime, the reaped children's
    cutime + cstime, and the live children's utime + stime (nginx workers, socat's forks)."""
    fields = _stat_fields(pid)
    total = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            child = _stat_fields(int(entry))
        except OSError:
            continue
        if int(child[1]) == pid:  # ppid
            total += int(child[11]) + int(child[12])
    return total / TICKS


def wait_port(port, process, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Server:
    def __init__(self, name, kind, threads, command, port, config=None):
        self.name, self.kind, self.threads, self.command, self.port, self.config = name, kind, threads, command, port, config


def servers(upstream_port, base_port, haproxy_dir):
    server = os.path.join(ROOT, ".build/release/fastalloc-server")
    nio = os.path.join(PEERS, "nio-echo/.build/release/nio-echo")
    result = []
    port = base_port
    for threads in (1, 2):
        result.append(Server("fastalloc-server echo", "echo", threads,
                             [server, "echo", "--listen", f"127.0.0.1:{port}", "--workers", str(threads)], port))
        port += 1
        result.append(Server("C libuv echo (malloc per read)", "echo", threads,
                             [os.path.join(PEERS, "uv-echo"), str(port), str(threads)], port))
        port += 1
        if os.path.exists(nio):
            result.append(Server("SwiftNIO echo", "echo", threads, [nio, str(port), str(threads)], port))
        port += 1
        result.append(Server("fastalloc-server relay", "relay", threads,
                             [server, "relay", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
                              "--workers", str(threads)], port))
        port += 1
        if shutil.which("nginx") and os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
            prefix = os.path.join(haproxy_dir, f"nginx-{threads}")
            os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
            config = os.path.join(prefix, "nginx.conf")
            with open(config, "w") as out:
                out.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {threads};
daemon off;
error_log stderr error;
pid {prefix}/nginx.pid;
events {{ worker_connections 8192; }}
stream {{
    server {{
        listen 127.0.0.1:{port + 10};
        proxy_pass 127.0.0.1:{upstream_port};
        tcp_nodelay on;
    }}
}}
""")
            result.append(Server("nginx stream proxy", "relay", threads, ["nginx", "-p", prefix, "-c", config], port + 10))
        if threads == 1 and shutil.which("socat"):
            result.append(Server("socat (a process per connection)", "relay", 1,
                                 ["socat", f"TCP-LISTEN:{port + 20},bind=127.0.0.1,reuseaddr,fork",
                                  f"TCP:127.0.0.1:{upstream_port},nodelay"], port + 20))
        if shutil.which("haproxy"):
            config = os.path.join(haproxy_dir, f"haproxy-{threads}.cfg")
            with open(config, "w") as out:
                out.write(f"""global
    nbthread {threads}
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen relay
    bind 127.0.0.1:{port}
    server upstream 127.0.0.1:{upstream_port}
""")
            result.append(Server("haproxy 2.6 (TCP mode)", "relay", threads, ["haproxy", "-f", config, "-db"], port))
        port += 1
    return result


WORKLOADS = [
    # name, connections, size, depth, which figure
    ("64 x 64 B, depth 1", 64, 64, 1, "msgs"),
    ("16 x 16 KiB, depth 4", 16, 16384, 4, "mbps"),
]


def run_one(server, workload, seconds):
    name, connections, size, depth, _ = workload
    process = subprocess.Popen(server.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(server.port, process)
        cpu_before = cpu_seconds(process.pid)
        wall_before = time.time()
        out = subprocess.run([os.path.join(PEERS, "epoll-client"), "127.0.0.1", str(server.port), str(connections),
                              str(size), str(depth), str(seconds), "1"], capture_output=True, text=True, timeout=seconds + 30)
        cpu = cpu_seconds(process.pid) - cpu_before
        wall = time.time() - wall_before
        fields = out.stdout.split()
        if out.returncode != 0 or len(fields) < 3:
            raise RuntimeError(f"client failed against {server.name}: {out.stdout} {out.stderr}")
        msgs, mbps, mismatched = float(fields[0]), float(fields[1]), int(fields[2])
        if mismatched:
            raise RuntimeError(f"{server.name}: {mismatched} mismatched bytes")
        # Bytes through the server during the whole client run (warm-up included, as the CPU is):
        # the client's rate over the run's wall time, in and out of the server.
        gigabytes = mbps * 1e6 * wall * 2 / 1e9
        return {"msgs": msgs, "mbps": mbps, "cpu": cpu / wall, "cpu_per_gb": cpu / gigabytes if gigabytes else 0}
    finally:
        stop(process)


def iperf3_ceiling(seconds, port=17590):
    """One iperf3 TCP stream over loopback: the byte rate this machine's loopback can carry."""
    if not shutil.which("iperf3"):
        return None
    import json
    server = subprocess.Popen(["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, server)  # iperf3 shrugs off the probe connection and keeps serving
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, timeout=seconds + 30)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
    except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None
    finally:
        stop(server)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", choices=["echo", "relay"])
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 1 s per configuration: checks that every configuration runs and matches every byte")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1

    build()
    nio_dir = os.path.join(PEERS, "nio-echo")
    if subprocess.run(["swift", "build", "-c", "release"], cwd=nio_dir, stdout=subprocess.DEVNULL).returncode != 0:
        print("(the SwiftNIO peer did not build; its rows are missing)", file=sys.stderr)

    upstream_port = 17500
    upstream = subprocess.Popen([os.path.join(PEERS, "uv-echo"), str(upstream_port), "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    haproxy_dir = tempfile.mkdtemp()
    try:
        wait_port(upstream_port, upstream)
        chosen = [s for s in servers(upstream_port, 17510, haproxy_dir) if not args.only or s.kind == args.only]
        results = {}
        ceilings = []
        for round_number in range(1, args.rounds + 1):
            ceiling = iperf3_ceiling(args.seconds)
            if ceiling:
                ceilings.append(ceiling)
                print(f"  round {round_number}: iperf3 loopback ceiling {ceiling:,.0f} MB/s", file=sys.stderr, flush=True)
            for workload in WORKLOADS:
                for server in chosen:
                    result = run_one(server, workload, args.seconds)
                    results.setdefault((server.name, server.threads, workload[0]), []).append(result)
                    print(f"  round {round_number}: {server.name}, {server.threads} thread(s), {workload[0]}: "
                          f"{result['msgs']:,.0f} msg/s, {result['mbps']:,.1f} MB/s, server CPU {result['cpu']:.2f}, "
                          f"{result['cpu_per_gb']:.2f} CPU s/GB", file=sys.stderr, flush=True)
    finally:
        stop(upstream)
        shutil.rmtree(haproxy_dir, ignore_errors=True)

    empty = [key for key, runs in results.items() if not runs or any(r["msgs"] <= 0 for r in runs)]
    expected = len(chosen) * len(WORKLOADS)
    if empty or len(results) != expected:
        print(f"FAILED: {expected - len(results) + len(empty)} configuration(s) without figures: {empty}", file=sys.stderr)
        sys.exit(1)
    print(f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}; client: peers/epoll-client "
          f"(1 thread); {args.rounds} interleaved rounds of {args.seconds} s (1 s warm-up); median [min-max]")
    if ceilings:
        print(f"loopback ceiling (iperf3, one TCP stream): {statistics.median(ceilings):,.0f} MB/s "
              f"[{min(ceilings):,.0f}-{max(ceilings):,.0f}]")
    for workload in WORKLOADS:
        field = workload[4]
        unit = "msg/s" if field == "msgs" else "MB/s"
        print()
        print(f"### {workload[0]}")
        print()
        print(f"| server | threads | {unit} | vs baseline | server CPU (cores) | server CPU s per GB |")
        print("|---|---:|---:|---:|---:|---:|")
        for kind, baseline in (("echo", "C libuv echo (malloc per read)"), ("relay", "haproxy 2.6 (TCP mode)")):
            for server in chosen:
                if server.kind != kind:
                    continue
                runs = results[(server.name, server.threads, workload[0])]
                values = [r[field] for r in runs]
                base = results.get((baseline, server.threads, workload[0]))
                ratio = statistics.median(values) / statistics.median([r[field] for r in base]) if base else float("nan")
                print(f"| {server.name} | {server.threads} | {statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}] "
                      f"| {ratio:.2f}x | {statistics.median(r['cpu'] for r in runs):.2f} "
                      f"| {statistics.median(r['cpu_per_gb'] for r in runs):.2f} |")


if __name__ == "__main__":
    main()
