"""What Benchmarks/server-vs-peers.py measures with, and what the other benchmark scripts share
(buffer-size.py, idle-connections.py, peer-mallocs.py, scrape-overhead.py import it): the build,
CPU time and peak RSS from /proc, the servers and relays of a run, the workloads, one
fastalloc-load run against a server, the iperf3 loopback ceiling and the sweeps."""
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")
LOAD = os.path.join(ROOT, ".build/release/fastalloc-load")
TICKS = os.sysconf("SC_CLK_TCK")
ECHO_BASELINE = "C libuv echo (malloc per read)"
RELAY_BASELINE = "haproxy 2.6 (TCP mode)"
# The hard limit on open files here is 20,000 and cannot be raised in this container: a relay
# holds two descriptors per connection, so relays stop at 5,000 connections in the sweep.
RELAY_MAX_CONNECTIONS = 5000


def build():
    """Builds the C peers and the release fastalloc-server and fastalloc-load; returns the server's path."""
    subprocess.run(["make", "-s", "-C", PEERS], check=True)
    for product in ("fastalloc-server", "fastalloc-load"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, ".build/release/fastalloc-server")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _children(pid):
    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            if int(_stat_fields(int(entry))[1]) == pid:  # ppid
                result.append(int(entry))
        except OSError:
            continue
    return result


def cpu_seconds(pid):
    """CPU time of a process and its children: its own utime + stime, the reaped children's
    cutime + cstime, and the live children's utime + stime (nginx workers, socat's forks)."""
    fields = _stat_fields(pid)
    total = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    for child in _children(pid):
        try:
            fields = _stat_fields(child)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(pid):
    """Peak resident memory (VmHWM) of a process plus its live children (nginx's workers)."""
    return (_status_kib(pid, "VmHWM") + sum(_status_kib(child, "VmHWM") for child in _children(pid))) / 1024


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


def pin_all_threads(pid, cpus):
    """Sets the CPU affinity of every thread of a running process (taskset -a -p)."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, stdout=subprocess.DEVNULL)

class Server:
    def __init__(self, name, kind, threads, command, port, config=None):
        self.name, self.kind, self.threads, self.command, self.port, self.config = name, kind, threads, command, port, config


def haproxy_config_text(threads, port, upstreams, balance=None, stats_socket=None):
    """haproxy's TCP-mode config: a `listen` on 127.0.0.1:port in front of upstreams (HOST:PORT
    each); with stats_socket, a stats socket that hands its listeners to a reload's -x."""
    if len(upstreams) == 1:
        servers = f"    server upstream {upstreams[0]}\n"
    else:
        servers = "".join(f"    server upstream{i + 1} {upstream}\n" for i, upstream in enumerate(upstreams))
    stats = f"    stats socket {stats_socket} mode 600 level admin expose-fd listeners\n" if stats_socket else ""
    return (f"""global
    nbthread {threads}
    maxconn 9000
{stats}defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen relay
    bind 127.0.0.1:{port}
""" + (f"    balance {balance}\n" if balance else "") + servers)


def haproxy_config(path, threads, port, upstreams, balance=None):
    """Writes haproxy_config_text(...) to path; returns path."""
    with open(path, "w") as out:
        out.write(haproxy_config_text(threads, port, upstreams, balance))
    return path


def nginx_stream():
    return shutil.which("nginx") and os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so")


def nginx_config(prefix, threads, port, upstreams):
    """Writes the config of nginx's stream proxy on 127.0.0.1:port under prefix: proxy_pass to the
    one upstream, or to an `upstream` block (round robin) of several; returns its path."""
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    config = os.path.join(prefix, "nginx.conf")
    if len(upstreams) == 1:
        block, target = "", upstreams[0]
    else:
        servers = "".join(f"        server {upstream};\n" for upstream in upstreams)
        block, target = f"    upstream echoes {{\n{servers}    }}\n", "echoes"
    with open(config, "w") as out:
        out.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {threads};
daemon off;
error_log stderr error;
pid {prefix}/nginx.pid;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
stream {{
{block}    server {{
        listen 127.0.0.1:{port};
        proxy_pass {target};
        tcp_nodelay on;
    }}
}}
""")
    return config


def nginx_command(config):
    return ["nginx", "-p", os.path.dirname(config), "-c", config]


def servers(upstream_port, base_port, haproxy_dir, compare=None):
    """Every server and relay of the run. compare: (path, label) of another fastalloc-server
    build (an earlier commit's, say), run beside this one with the same options."""
    server = os.path.join(ROOT, ".build/release/fastalloc-server")
    nio = os.path.join(PEERS, "nio-echo/.build/release/nio-echo")
    result = []
    port = base_port
    if compare:
        other, label = compare
        for threads in (1, 2):
            result.append(Server(f"fastalloc-server echo ({label})", "echo", threads,
                                 [other, "echo", "--listen", f"127.0.0.1:{port}", "--workers", str(threads),
                                  "--max-connections", "12000"], port))
            port += 1
            result.append(Server(f"fastalloc-server relay ({label})", "relay", threads,
                                 [other, "relay", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
                                  "--workers", str(threads), "--max-connections", "12000"], port))
            port += 1
    for threads in (1, 2):
        result.append(Server("fastalloc-server echo", "echo", threads,
                             [server, "echo", "--listen", f"127.0.0.1:{port}", "--workers", str(threads),
                              "--max-connections", "12000"], port))
        port += 1
        result.append(Server("C libuv echo (malloc per read)", "echo", threads,
                             [os.path.join(PEERS, "uv-echo"), str(port), str(threads)], port))
        port += 1
        result.append(Server("C libuv echo (tuned)", "echo", threads,
                             [os.path.join(PEERS, "uv-echo-tuned"), str(port), str(threads)], port))
        port += 1
        if os.path.exists(nio):
            result.append(Server("SwiftNIO echo", "echo", threads, [nio, str(port), str(threads)], port))
        port += 1
        result.append(Server("fastalloc-server relay", "relay", threads,
                             [server, "relay", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
                              "--workers", str(threads), "--max-connections", "12000"], port))
        port += 1
        if nginx_stream():
            config = nginx_config(os.path.join(haproxy_dir, f"nginx-{threads}"), threads, port + 10,
                                  [f"127.0.0.1:{upstream_port}"])
            result.append(Server("nginx stream proxy", "relay", threads, nginx_command(config), port + 10))
        if threads == 1 and shutil.which("socat"):
            result.append(Server("socat (a process per connection)", "relay", 1,
                                 ["socat", f"TCP-LISTEN:{port + 20},bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay",
                                  f"TCP:127.0.0.1:{upstream_port},nodelay"], port + 20))
        if shutil.which("haproxy"):
            config = haproxy_config(os.path.join(haproxy_dir, f"haproxy-{threads}.cfg"), threads, port,
                                    [f"127.0.0.1:{upstream_port}"])
            result.append(Server("haproxy 2.6 (TCP mode)", "relay", threads, ["haproxy", "-f", config, "-db"], port))
        port += 1
    return result


class Workload:
    """One fastalloc-load run. figure: what the table ranks by ("latency", "msgs" or "mbps");
    pin: None, "shared" (server, upstream and client on CPU 0) or "split" (the client on CPU 1).
    key: its short name for server-vs-peers.py --workloads; kinds: the kinds of servers whose
    table has it; quick: whether --quick runs it; note: a line printed under its table's title."""

    def __init__(self, name, connections, size, depth, figure, pin=None, rate=None, key=None,
                 kinds=("echo", "relay"), quick=True, note=None):
        self.name, self.connections, self.size, self.depth = name, connections, size, depth
        self.figure, self.pin, self.rate = figure, pin, rate
        self.key, self.kinds, self.quick, self.note = key, kinds, quick, note

    @property
    def warmup(self):  # connecting thousands of sockets takes part of the warm-up
        return 1.0 + self.connections / 2500


CONN_RATE = os.path.join(PEERS, "conn-rate")


class ConnectWorkload:
    """New connections from peers/conn-rate: `connections` at a time, each one `size`-byte round trip."""
    figure, pin, rate, depth, warmup, quick = "conns", None, None, 1, 1.0, True

    def __init__(self, connections, size, key="conn", kinds=("echo", "relay", "relay3"), note=None):
        self.connections, self.size, self.key, self.kinds, self.note = connections, size, key, kinds, note
        self.name = (f"New connections: {connections} at a time, each a connect, one {size} B round trip and a close "
                     f"(p50/p99: connect() to the echo's first byte)")


PING_PONG = "fastalloc-load, closed loop, one message in flight per connection"
CONNECT = ConnectWorkload(16, 64, note=(
    "Client: peers/conn-rate (C, one thread, every byte checked), not fastalloc-load. On 2 cores that one "
    "client thread (and a relay's upstream) shares the machine with the server, so most servers reach about "
    "the same rate (~13-14k connections/s with 1 thread; see the client's CPU column) and the figure that "
    "separates them is the server's CPU per connection (with its children: nginx's workers, socat's forks), "
    "over every connection of the run, warm-up included; it has a ratio of its own (lower is better)."))
THROUGHPUT = [
    Workload("64 x 64 B, depth 1", 64, 64, 1, "msgs", key="64", kinds=("echo", "relay", "relay3")),
    Workload("16 x 16 KiB, depth 4", 16, 16384, 4, "mbps", key="16k", kinds=("echo", "relay", "relay3")),
]
TABLE_WORKLOADS = [
    Workload("1 x 64 B ping-pong, pinned shared (server, upstream and client on CPU 0)", 1, 64, 1, "latency",
             pin="shared", key="shared"),
    Workload("1 x 64 B ping-pong, pinned split (server and upstream on CPU 0, client on CPU 1)", 1, 64, 1, "latency",
             pin="split", key="split"),
    Workload("1 x 64 B, depth 1", 1, 64, 1, "msgs", key="1", kinds=("relay",), note=PING_PONG + (
        ", not pinned: on 2 cores the scheduler puts the client beside the server or not, so the rounds "
        "are bimodal (the pinned rows show both cases); compare the medians with care.")),
    THROUGHPUT[0],
    Workload("100 x 64 B, depth 1", 100, 64, 1, "msgs", key="100", kinds=("relay",), note=PING_PONG + "."),
    Workload("5000 x 64 B, depth 1", 5000, 64, 1, "msgs", key="5000", kinds=("relay",), quick=False, note=(
        PING_PONG + "; 5,000 client descriptors, 10,000 in a relay, 5,000 in the upstream, each process under "
        "its limit of 20,000; haproxy's maxconn and nginx's worker_connections are set above that. socat (a "
        "process per connection) is left out. Not run by --quick.")),
    THROUGHPUT[1],
    CONNECT,
]
WORKLOADS = THROUGHPUT  # the throughput pair, also used by buffer-size.py and scrape-overhead.py
SWEEP_SIZES = [64, 1024, 16384, 262144, 1048576]
SWEEP_CONNECTIONS = [1, 10, 100, 1000, 5000, 10000]
SWEEP_RATES = [5000, 10000, 20000, 40000, 60000, 80000, 100000, 120000, 150000, 200000]
LATENCY_GOAL_US = 1000


def measure(server, client, timeout, upstream=None, pin=None):
    """Starts the server, runs the client command against it once, stops it; returns the client's
    completed process and the figures every row has (CPU of the server, the upstreams and the
    client, in cores over the run; the server's peak RSS). upstream: a process, a list of them
    (their CPU is added up) or None; pin as a Workload's."""
    upstreams = [] if upstream is None else list(upstream) if isinstance(upstream, (list, tuple)) else [upstream]
    command = server.command
    if pin:
        command = ["taskset", "-c", "0"] + command
        client = ["taskset", "-c", "0" if pin == "shared" else "1"] + client
        if server.kind != "echo":
            for process in upstreams:
                pin_all_threads(process.pid, "0")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(server.port, process)
        cpu_before = cpu_seconds(process.pid)
        upstream_before = sum(cpu_seconds(p.pid) for p in upstreams)
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall_before = time.time()
        out = subprocess.run(client, capture_output=True, text=True, timeout=timeout)
        wall = time.time() - wall_before
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_seconds(process.pid) - cpu_before
        upstream_cpu = sum(cpu_seconds(p.pid) for p in upstreams) - upstream_before
        peak = peak_rss_mib(process.pid)
    finally:
        stop(process)
        if pin and server.kind != "echo":
            for upstream_process in upstreams:
                pin_all_threads(upstream_process.pid, f"0-{os.cpu_count() - 1}")
    client_cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    return out, {"cpu_seconds": cpu, "cpu": cpu / wall, "client_cpu": client_cpu / wall,
                 "upstream_cpu": upstream_cpu / wall, "peak_rss_mib": peak}


def run_one(server, workload, seconds, upstream=None):
    """Starts the server, runs fastalloc-load against it once, stops it; returns the figures.
    upstream: the upstream process (or a list of them) whose CPU the row shows."""
    client = [LOAD, "--target", f"127.0.0.1:{server.port}", "--connections", str(workload.connections),
              "--size", str(workload.size), "--depth", str(workload.depth), "--duration", f"{seconds}s",
              "--warmup", f"{workload.warmup}s", "--threads", "1", "--json"]
    if workload.rate:
        client += ["--rate", str(workload.rate)]
    out, figures = measure(server, client, seconds + workload.warmup + 60, upstream, workload.pin)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        report = None
    if out.returncode != 0 or not report or not report["succeeded"] or report["mismatched_bytes"]:
        raise RuntimeError(f"fastalloc-load failed against {server.name} ({server.threads} thread(s), {workload.name}): "
                           f"status {out.returncode}: {out.stderr.strip()[:400]}")
    # CPU is counted over the whole client run (warm-up included), so divide it by every message
    # of the run, warm-up included; the rates come from the measured window only.
    cpu = figures.pop("cpu_seconds")
    messages = report["messages"] + report["warmup_messages"]
    gigabytes = messages * workload.size * 2 / 1e9  # in and out of the server
    latency = report["latency_ns"]
    return {
        "msgs": report["messages_per_second"], "mbps": report["megabytes_per_second"],
        "p50_us": (latency["p50"] or 0) / 1000, "p99_us": (latency["p99"] or 0) / 1000,
        "cpu_per_msg_us": cpu / messages * 1e6 if messages else 0,
        "cpu_per_gb": cpu / gigabytes if gigabytes else 0, **figures,
    }


def run_connections(server, workload, seconds, upstream=None):
    """Starts the server, runs peers/conn-rate against it once (a ConnectWorkload), stops it;
    returns the figures (msgs: connections per second; cpu_per_msg_us: server CPU per connection)."""
    client = [CONN_RATE, "127.0.0.1", str(server.port), str(workload.connections), str(workload.size),
              str(seconds), str(workload.warmup)]
    out, figures = measure(server, client, seconds + workload.warmup + 60, upstream)
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 7:
        raise RuntimeError(f"conn-rate failed against {server.name} ({server.threads} thread(s)): status "
                           f"{out.returncode}: {out.stdout.strip()} {out.stderr.strip()[:400]}")
    rate, p50, p99, mismatched, failures, _, every = float(fields[0]), float(fields[1]), float(fields[2]), \
        int(fields[3]), int(fields[4]), int(fields[5]), int(fields[6])
    cpu = figures.pop("cpu_seconds")
    return {"msgs": rate, "mbps": rate * workload.size * 2 / 1e6, "p50_us": p50, "p99_us": p99,
            "cpu_per_msg_us": cpu / every * 1e6 if every else 0, "cpu_per_gb": 0, "mismatched": mismatched,
            "failures": failures, **figures}


def run_workload(server, workload, seconds, upstream=None):
    """run_connections for a ConnectWorkload, run_one for the others."""
    if workload.figure == "conns":
        return run_connections(server, workload, seconds, upstream)
    return run_one(server, workload, seconds, upstream)


def iperf3_ceiling(seconds, port=17590):
    """One iperf3 TCP stream over loopback: the byte rate this machine's loopback can carry."""
    if not shutil.which("iperf3"):
        return None
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


def log(text):
    print(text, file=sys.stderr, flush=True)


def describe(result):
    unit = "connections/s" if "failures" in result else "msg/s"  # run_connections's
    return (f"{result['msgs']:,.0f} {unit}, {result['mbps']:,.1f} MB/s, p99 {result['p99_us']:,.0f} us, "
            f"server CPU {result['cpu']:.2f}, client {result['client_cpu']:.2f}, upstream {result['upstream_cpu']:.2f}, "
            f"peak RSS {result['peak_rss_mib']:.1f} MiB")


def sweeps(chosen, upstream, seconds, quick, rate_rounds):
    """The size, connections and rate sweeps over the 1-thread configurations (socat, a process
    per connection, is left out): one run per size or connection count, `rate_rounds` per rate."""
    servers_1 = [s for s in chosen if s.threads == 1 and not s.name.startswith("socat")]
    sizes = [64, 1048576] if quick else SWEEP_SIZES
    counts = [1, 1000] if quick else SWEEP_CONNECTIONS
    rates = [10000] if quick else SWEEP_RATES
    found = {"size": {}, "connections": {}, "rate": {}}
    for size in sizes:
        for server in servers_1:
            workload = Workload(f"8 x {size} B", 8, size, 1, "mbps")
            result = run_one(server, workload, seconds, upstream)
            found["size"].setdefault(server.name, {})[size] = result
            log(f"  size sweep: {server.name}, {workload.name}: {describe(result)}")
    for count in counts:
        for server in servers_1:
            if server.kind == "relay" and count > RELAY_MAX_CONNECTIONS:
                continue
            workload = Workload(f"{count} x 64 B", count, 64, 1, "msgs")
            result = run_one(server, workload, seconds, upstream)
            found["connections"].setdefault(server.name, {})[count] = result
            log(f"  connections sweep: {server.name}, {workload.name}: {describe(result)}")
    for server in servers_1:
        for rate in rates:
            # A p99 from one short run on a shared machine is noisy: each point is the run with
            # the median p99 of `rate_rounds` runs.
            workload = Workload(f"64 x 64 B at {rate}/s", 64, 64, 1, "latency", rate=rate)
            runs = []
            for _ in range(rate_rounds):
                runs.append(run_one(server, workload, seconds, upstream))
                log(f"  rate sweep: {server.name}, {workload.name}: {describe(runs[-1])}")
            result = sorted(runs, key=lambda r: r["p99_us"])[len(runs) // 2]
            found["rate"].setdefault(server.name, {})[rate] = result
            if result["p99_us"] > LATENCY_GOAL_US:
                break  # past the goal: higher rates only queue more
    return found
