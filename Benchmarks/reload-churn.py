#!/usr/bin/env python3
"""Failed connections and connect-time p99 while a relay is reloaded, side by side.

The same churn, peers/churn (short connections, each a connect, 200 patterned bytes written,
exactly 200 read back and compared, a close; paced to --rate a second, --concurrency at most in
flight; beside them --long streams sending and verifying 4 KiB every 10 ms for the whole run),
through each target while it is reloaded every --interval seconds, each reload switching its
upstream between two backends, `fastalloc-server echo` on 18110 and 18111 (set A, then B, then
A...; their /stats count the connections each accepted, so the script checks that every target
really moved its new connections to the new set after each reload):

- fastalloc-server relay: the --config file rewritten, SIGHUP (the same process re-reads it);
- fastalloc-upgrade: the file rewritten, SIGUSR2 (a binary upgrade: a new process takes over and
  the old one drains), the new PID followed from the server's log; "not available" when this
  build does not handle SIGUSR2;
- haproxy 2.6, TCP mode: the config rewritten, a new `haproxy -f CFG -db -x STATS_SOCK -sf OLD`
  (it takes the listening sockets from the old process through the stats socket, `expose-fd
  listeners`, and tells the old one to finish its connections and leave);
- nginx stream proxy: the config rewritten, SIGHUP to the master (new workers, the old ones shut
  down gracefully).

Each target also runs once per round without reloads (the baseline, cut at the same moments).
A reload window is the --window seconds after each reload signal (the 100 ms slices that overlap
it, by when the exchange's connect() was called); "outside" is every other slice. After the churn
ends (and the long streams close) the script waits --grace seconds and counts the target's
processes still alive and their RSS: old processes should have left. The most processes alive
at once during the run (sampled before each reload) shows the old ones that the long streams
keep alive meanwhile.

    Benchmarks/reload-churn.py [--rounds 1] [--seconds 20] [--interval 2] [--window 0.5]
        [--rate 3000] [--concurrency 64] [--long 4] [--workers 1] [--only fastalloc,haproxy,...]
        [--json FILE]

--only haproxy-no-x adds haproxy reloaded with -sf alone (no -x: the new process binds its own
listening socket, the old one closes its own), the case haproxy's management guide says may
reset a connection that was in the old socket's queue.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from peers_lib import PEERS, ROOT, haproxy_config_text, wait_port

CHURN = os.path.join(PEERS, "churn")
SERVER = os.path.join(ROOT, ".build/release/fastalloc-server")
ECHO_PORTS = (18110, 18111)  # upstream set A, set B
ECHO_STATS = (18112, 18113)  # their stats endpoints
PORTS = {"fastalloc": 18120, "fastalloc-upgrade": 18121, "haproxy": 18122, "nginx": 18123, "haproxy-no-x": 18124}
KINDS = ("refused", "reset", "timeout", "wrong", "eof", "other")
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


def log(text):
    print(text, file=sys.stderr, flush=True)


def alive(pid):
    """A live process (a zombie is not: it has exited and waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def signal_mask(pid, field):
    """A signal mask of /proc/PID/status (SigCgt, SigIgn) as an int."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


def end_pid(pid, process=None, timeout=15):
    """SIGTERM, then SIGKILL, to one process this script started (by PID, never by name)."""
    if not alive(pid):
        if process:
            process.poll()
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process:
            process.poll()
        if not alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process:
        process.wait()


def wait_free(port, timeout=20):
    """Until nothing listens on port (the previous target's last process has gone)."""
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"something still listens on {port}")


class Unavailable(Exception):
    pass


class Target:
    """One relay. start(set) starts it in front of upstream set 0 or 1; reload(set) switches it
    to that set (returns once the signal is sent or the new process started); processes() are
    its live PIDs; stop() ends them all."""
    name = ""
    steady = 1  # processes of a target at rest (nginx: the master and its workers)

    def __init__(self, directory, port, workers):
        self.directory, self.port, self.workers = directory, port, workers
        os.makedirs(directory, exist_ok=True)
        self.log_path = os.path.join(directory, "server.log")
        self.reloads_confirmed = 0

    def upstream(self, index):
        return f"127.0.0.1:{ECHO_PORTS[index]}"

    def write_atomically(self, path, text):
        with open(path + ".tmp", "w") as out:
            out.write(text)
        os.replace(path + ".tmp", path)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class FastAlloc(Target):
    name = "fastalloc-server relay (SIGHUP)"

    def config(self, index):
        return (f"mode: relay\nlisten: 127.0.0.1:{self.port}\nupstream:\n  - {self.upstream(index)}\n"
                f"workers: {self.workers}\nhealth-check: 'off'\nstats: 'off'\ndrain-timeout: 5s\n")

    def start(self, index):
        self.path = os.path.join(self.directory, "relay.yaml")
        self.write_atomically(self.path, self.config(index))
        self.logfile = open(self.log_path, "w")
        env = dict(os.environ, FASTALLOC_ALLOW_ROOT="1")
        self.process = subprocess.Popen([SERVER, "--config", self.path], stdout=self.logfile, stderr=subprocess.STDOUT,
                                        env=env)
        self.pids = [self.process.pid]
        wait_port(self.port, self.process)

    def reload(self, index):
        self.write_atomically(self.path, self.config(index))
        os.kill(self.pids[-1], signal.SIGHUP)

    def confirm(self):
        self.reloads_confirmed = self.log_text().count("reload: --upstream applied")

    def processes(self):
        self.process.poll()
        return [pid for pid in self.pids if alive(pid)]

    def stop(self):
        for pid in reversed(self.pids):
            end_pid(pid, self.process if pid == self.process.pid else None)
        self.logfile.close()


class FastAllocUpgrade(FastAlloc):
    """A binary upgrade on SIGUSR2 (being written): the running process starts the binary again
    and hands over; the old one drains and leaves. The new PID comes from the log lines written
    after the signal ("pid N" in any form), else from a fastalloc-server child of the old one."""
    name = "fastalloc-server upgrade (SIGUSR2)"

    def check(self):
        """Raises Unavailable unless this build takes over on SIGUSR2, tried once without load."""
        pid = self.pids[0]
        bit = 1 << (signal.SIGUSR2 - 1)
        if signal_mask(pid, "SigIgn") & bit:
            raise Unavailable("this build ignores SIGUSR2")
        if not signal_mask(pid, "SigCgt") & bit:
            raise Unavailable("this build does not handle SIGUSR2 (its default action would end the process)")
        if not self.upgrade():
            raise Unavailable("SIGUSR2 started no new process within 10 s" + self.unknown_line())

    def unknown_line(self):
        for line in self.log_text().splitlines()[::-1]:
            if "USR2" in line or "upgrade" in line.lower():
                return f" (log: {line.strip()[:160]})"
        return ""

    def upgrade(self, timeout=10.0):
        """SIGUSR2 to the process that serves; the new PID from the old one's "upgrade: PID N is
        ready" line (None if it logs a failure or a refusal, or says nothing in time)."""
        old = self.pids[-1]
        seen = len(self.log_text())
        os.kill(old, signal.SIGUSR2)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log_text()[seen:]
            ready = re.search(r"upgrade: PID (\d+) is ready", text)
            if ready:
                pid = int(ready.group(1))
                self.pids.append(pid)
                return pid
            if "upgrade failed" in text or "SIGUSR2:" in text:
                return None
            time.sleep(0.02)
        return None

    def config(self, index):
        # The old processes keep the long streams until the run ends: a drain timeout shorter
        # than the run would cut them (a restart's cut, not the upgrade's).
        return super().config(index).replace("drain-timeout: 5s", "drain-timeout: 300s")

    @staticmethod
    def is_server(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"fastalloc-server" in f.read().split(b"\0")[0]
        except OSError:
            return False

    def reload(self, index):
        self.write_atomically(self.path, self.config(index))
        if self.upgrade():
            self.reloads_confirmed += 1

    def confirm(self):
        pass


class _Alive:
    """Enough of a Popen for wait_port: a process this script did not start itself."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        return None if alive(self.pid) else 1


class HAProxy(Target):
    name = "haproxy 2.6 (-sf, -x)"

    def config(self, index):
        return haproxy_config_text(self.workers, self.port, [self.upstream(index)], stats_socket=self.socket)

    def start(self, index):
        self.socket = os.path.join(self.directory, "stats.sock")
        self.path = os.path.join(self.directory, "haproxy.cfg")
        self.write_atomically(self.path, self.config(index))
        self.logfile = open(self.log_path, "w")
        self.started = [subprocess.Popen(["haproxy", "-f", self.path, "-db"], stdout=self.logfile,
                                         stderr=subprocess.STDOUT)]
        wait_port(self.port, self.started[0])
        deadline = time.time() + 10
        while not os.path.exists(self.socket) and time.time() < deadline:
            time.sleep(0.02)

    def reload(self, index):
        self.write_atomically(self.path, self.config(index))
        old = self.started[-1]
        # -sf must come last: the PIDs follow it.
        self.started.append(subprocess.Popen(["haproxy", "-f", self.path, "-db", "-x", self.socket, "-sf", str(old.pid)],
                                             stdout=self.logfile, stderr=subprocess.STDOUT))

    def confirm(self):
        # A new process that kept running took over; one that exited at once failed to start.
        self.reloads_confirmed = sum(1 for p in self.started[1:] if p.poll() is None or p.returncode == 0)

    def processes(self):
        return [p.pid for p in self.started if p.poll() is None]

    def stop(self):
        for p in reversed(self.started):
            end_pid(p.pid, p)
        self.logfile.close()


class HAProxyWithoutX(HAProxy):
    """For comparison (not run unless asked): the reload without -x, so the new process binds
    listening sockets of its own (SO_REUSEPORT) and the old one closes its own."""
    name = "haproxy 2.6 (-sf only, no -x)"

    def reload(self, index):
        self.write_atomically(self.path, self.config(index))
        old = self.started[-1]
        self.started.append(subprocess.Popen(["haproxy", "-f", self.path, "-db", "-sf", str(old.pid)],
                                             stdout=self.logfile, stderr=subprocess.STDOUT))


class Nginx(Target):
    name = "nginx 1.22 stream (HUP)"

    @property
    def steady(self):
        return 1 + self.workers

    def config(self, index):
        return f"""load_module {NGINX_STREAM};
worker_processes {self.workers};
daemon off;
error_log {self.log_path} notice;
pid {self.directory}/nginx.pid;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
stream {{
    upstream backends {{ server {self.upstream(index)}; }}
    server {{
        listen 127.0.0.1:{self.port};
        proxy_pass backends;
        tcp_nodelay on;
    }}
}}
"""

    def start(self, index):
        self.path = os.path.join(self.directory, "nginx.conf")
        self.write_atomically(self.path, self.config(index))
        open(self.log_path, "w").close()
        self.process = subprocess.Popen(["nginx", "-p", self.directory, "-e", self.log_path, "-c", self.path],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process)
        self.workers_seen = set(children(self.process.pid))

    def reload(self, index):
        self.write_atomically(self.path, self.config(index))
        os.kill(self.process.pid, signal.SIGHUP)

    def confirm(self):
        self.reloads_confirmed = self.log_text().count("(SIGHUP) received")

    def processes(self):
        if self.process.poll() is not None:
            return []
        return [self.process.pid] + children(self.process.pid)

    def stop(self):
        workers = children(self.process.pid)
        end_pid(self.process.pid, self.process)
        for pid in workers:  # normally gone with their master
            end_pid(pid)


def start_echoes():
    echoes = []
    env = dict(os.environ, FASTALLOC_ALLOW_ROOT="1")
    for port, stats in zip(ECHO_PORTS, ECHO_STATS):
        process = subprocess.Popen([SERVER, "echo", "--listen", f"127.0.0.1:{port}", "--stats", f"127.0.0.1:{stats}",
                                    "--workers", "1", "--max-connections", "1024"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        echoes.append(process)
        wait_port(port, process)
    return echoes


def accepted():
    """Connections each backend has accepted so far (set A's, set B's)."""
    counts = []
    for stats in ECHO_STATS:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats}/stats", timeout=5) as answer:
            counts.append(json.load(answer)["totals"]["connections_accepted"])
    return counts


def routed_right(snapshots, reloading):
    """Of the intervals between snapshots (start, each reload, end), how many sent at least 90 %
    of their new upstream connections to the set in effect (set A first, then alternating)."""
    right = 0
    for k in range(len(snapshots) - 1):
        expected = k % 2 if reloading else 0
        delta = [snapshots[k + 1][i] - snapshots[k][i] for i in (0, 1)]
        if sum(delta) and delta[expected] >= 0.9 * sum(delta):
            right += 1
    return right, len(snapshots) - 1


def interval_counts(snapshots):
    return [[snapshots[k + 1][i] - snapshots[k][i] for i in (0, 1)] for k in range(len(snapshots) - 1)]


def percentile(values, fraction):
    if not values:
        return None
    values = sorted(values)
    return values[int((len(values) - 1) * fraction)]


def run_once(target, args, reloading):
    """One churn run against a fresh target; returns its figures."""
    target.start(0)
    reload_times, schedule = [], []
    try:
        client = subprocess.Popen([CHURN, "127.0.0.1", str(target.port), str(args.concurrency), str(args.long),
                                   str(args.seconds), "1", str(args.timeout_ms), str(args.rate)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        begin = time.monotonic()
        snapshots = [accepted()]
        peak = (0, 0.0)
        at, index = args.interval, 0
        while at < args.seconds - 0.25:
            schedule.append(begin + at)
            at += args.interval
        for moment in schedule:
            delay = moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            snapshots.append(accepted())
            running = target.processes()  # just before the reload: the most there have been
            peak = max(peak, (len(running), sum(rss_kib(pid) for pid in running) / 1024))
            if reloading:
                index = 1 - index
                reload_times.append(time.monotonic())
                target.reload(index)
        out, err = client.communicate(timeout=args.seconds + 60)
        snapshots.append(accepted())
        time.sleep(args.grace)  # the long streams have closed: old processes should leave now
        target.confirm()
        left = target.processes()
        rss = sum(rss_kib(pid) for pid in left) / 1024
    finally:
        target.stop()
    wait_free(target.port)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    if not lines or "summary" not in lines[-1]:
        raise RuntimeError(f"churn against {target.name} printed no summary: {err.strip()[:400]}")
    summary, slices = lines[-1]["summary"], lines[:-1]
    # The baseline is cut at the moments the reloads would have come.
    marks = reload_times if reloading else schedule

    def in_window(s):
        return any(s["t"] + 0.1 > m and s["t"] < m + args.window for m in marks)

    inside = [s for s in slices if in_window(s)]
    outside = [s for s in slices if not in_window(s)]
    connect_in = [v for s in inside for v in s["connect_us"]]
    connect_out = [v for s in outside for v in s["connect_us"]]
    exchange_in = [v for s in inside for v in s["exchange_us"]]
    exchange_out = [v for s in outside for v in s["exchange_us"]]
    streams = summary["long_streams"]
    return {
        "target": target.name, "reloading": reloading, "reloads": len(reload_times),
        "reloads_confirmed": target.reloads_confirmed if reloading else 0,
        "routed_right": routed_right(snapshots, reloading), "per_interval_a_b": interval_counts(snapshots),
        "exchanges_per_s": summary["exchanges_per_s"], "exchanges": summary["exchanges"],
        "failures": summary["failures"], "failed": summary["failed"],
        "failed_in_windows": sum(s[k] for s in inside for k in KINDS),
        "connect_p99_out": percentile(connect_out, 0.99), "connect_p99_in": percentile(connect_in, 0.99),
        "connect_max": summary["connect_us"]["max"],
        "exchange_p99_out": percentile(exchange_out, 0.99), "exchange_p99_in": percentile(exchange_in, 0.99),
        "exchange_max": summary["exchange_us"]["max"],
        "streams_intact": sum(1 for s in streams if s["intact"]), "streams": len(streams),
        "streams_broken": [s["broken"] for s in streams if s["broken"]],
        "stream_stall_ms": max((s["max_stall_ms"] for s in streams), default=0),
        "processes_left": len(left), "steady": target.steady, "rss_mib": rss,
        "peak_processes": peak[0], "peak_rss_mib": peak[1],
    }


def describe(r):
    kinds = ", ".join(f"{k} {r['failures'][k]}" for k in KINDS if r["failures"][k]) or "none"
    return (f"{r['exchanges_per_s']:,.0f} exchanges/s, failed {r['failed']} ({kinds}; {r['failed_in_windows']} in windows), "
            f"connect p99 {r['connect_p99_out']} / {r['connect_p99_in']} µs (outside / in windows), exchange p99 "
            f"{r['exchange_p99_out']} / {r['exchange_p99_in']} µs, streams intact {r['streams_intact']}/{r['streams']} "
            f"(longest stall {r['stream_stall_ms']:.0f} ms), up to {r['peak_processes']} processes ({r['peak_rss_mib']:.1f} MiB) "
            f"during the run, {r['processes_left']} left after it, {r['rss_mib']:.1f} MiB, "
            f"reloads {r['reloads_confirmed']}/{r['reloads']} confirmed, intervals routed to the set in effect "
            f"{r['routed_right'][0]}/{r['routed_right'][1]}")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def us(value):
    return "–" if value is None else f"{value:,.0f}"


def table(results, unavailable, args):
    print(f"Reload churn: {args.rounds} interleaved round(s) of {args.seconds:g} s per target and mode; "
          f"{args.rate:g} short exchanges/s (200 B, at most {args.concurrency} in flight, timeout {args.timeout_ms} ms) "
          f"and {args.long} long streams (4 KiB every 10 ms); a reload every {args.interval:g} s, switching between two "
          f"fastalloc-server echo upstreams; window = {args.window * 1000:.0f} ms after each reload signal; {args.workers} worker(s)/thread(s) "
          f"per relay. Failures are summed over the rounds, the other figures are medians.\n")
    print("| target | reloads | intervals routed to the set in effect | exchanges/s | failed (refused / reset / timeout / wrong / eof / other) | failed in reload windows "
          "| connect p99 outside / in windows, µs | connect max, µs | exchange p99 outside / in windows, µs "
          "| long streams intact | longest stream stall, ms | most processes during the run / their RSS MiB "
          "| processes left (at rest) / RSS MiB |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---|---:|---|---|")
    for name in [n for n in results if results[n]]:
        for reloading in (False, True):
            runs = [r for r in results[name] if r["reloading"] == reloading]
            if not runs:
                continue
            failures = {k: sum(r["failures"][k] for r in runs) for k in KINDS}
            reloads = "none (baseline)" if not reloading else (
                f"{sum(r['reloads'] for r in runs)} ({sum(r['reloads_confirmed'] for r in runs)} confirmed)")
            broken = sorted({b for r in runs for b in r["streams_broken"]})
            print(f"| {name} | {reloads} | {sum(r['routed_right'][0] for r in runs)}/{sum(r['routed_right'][1] for r in runs)} "
                  f"| {median(r['exchanges_per_s'] for r in runs):,.0f} "
                  f"| {sum(failures.values())} ({' / '.join(str(failures[k]) for k in KINDS)}) "
                  f"| {sum(r['failed_in_windows'] for r in runs)} "
                  f"| {us(median(r['connect_p99_out'] for r in runs))} / {us(median(r['connect_p99_in'] for r in runs))} "
                  f"| {us(max(r['connect_max'] or 0 for r in runs))} "
                  f"| {us(median(r['exchange_p99_out'] for r in runs))} / {us(median(r['exchange_p99_in'] for r in runs))} "
                  f"| {sum(r['streams_intact'] for r in runs)}/{sum(r['streams'] for r in runs)}"
                  f"{' (' + ', '.join(broken) + ')' if broken else ''} "
                  f"| {median(r['stream_stall_ms'] for r in runs):.0f} "
                  f"| {max(r['peak_processes'] for r in runs)} / {median(r['peak_rss_mib'] for r in runs):.1f} "
                  f"| {max(r['processes_left'] for r in runs)} ({runs[0]['steady']}) / "
                  f"{median(r['rss_mib'] for r in runs):.1f} |")
    for name, why in unavailable.items():
        print(f"| {name} | not available: {why} | | | | | | | | | | | |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20, help="length of each churn run")
    parser.add_argument("--interval", type=float, default=2, help="seconds between reloads")
    parser.add_argument("--window", type=float, default=0.5, help="seconds after a reload counted as its window")
    parser.add_argument("--rate", type=float, default=3000, help="short exchanges started a second (0: closed loop)")
    parser.add_argument("--concurrency", type=int, default=64, help="short exchanges in flight at most")
    parser.add_argument("--long", type=int, default=4, help="long streams")
    parser.add_argument("--timeout-ms", type=int, default=2000, help="a short exchange not done by then is a timeout")
    parser.add_argument("--workers", type=int, default=1, help="workers (fastalloc, nginx) or threads (haproxy) per relay")
    parser.add_argument("--grace", type=float, default=2, help="seconds after the churn before counting processes left")
    parser.add_argument("--only", default="fastalloc,fastalloc-upgrade,haproxy,nginx",
                        help="a comma list of fastalloc, fastalloc-upgrade, haproxy, nginx and haproxy-no-x (the reload "
                             "without -x, for comparison; not run by default)")
    parser.add_argument("--no-build", action="store_true", help="use the built binaries as they are")
    parser.add_argument("--json", help="also write every run's figures to this file")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    for name in chosen:
        if name not in PORTS:
            sys.exit(f"reload-churn.py: --only takes {', '.join(PORTS)}, not {name}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every process started here
    subprocess.run(["make", "-s", "-C", PEERS], check=True)
    if not args.no_build:
        subprocess.run(["swift", "build", "-c", "release", "--product", "fastalloc-server"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    directory = tempfile.mkdtemp(prefix="fastalloc-reload-churn-")
    kinds = {"fastalloc": FastAlloc, "fastalloc-upgrade": FastAllocUpgrade, "haproxy": HAProxy, "nginx": Nginx,
             "haproxy-no-x": HAProxyWithoutX}
    unavailable = {}
    for name in ("haproxy", "haproxy-no-x"):
        if name in chosen and not shutil.which("haproxy"):
            unavailable[kinds[name].name] = "haproxy is not installed"
    if "nginx" in chosen and not (shutil.which("nginx") and os.path.exists(NGINX_STREAM)):
        unavailable[Nginx.name] = "needs nginx with its stream module (nginx-light, libnginx-mod-stream)"
    chosen = [n for n in chosen if kinds[n].name not in unavailable]
    results = {kinds[n].name: [] for n in chosen}
    echoes = start_echoes()
    try:
        if "fastalloc-upgrade" in chosen:
            probe = FastAllocUpgrade(os.path.join(directory, "upgrade-probe"), PORTS["fastalloc-upgrade"], args.workers)
            probe.start(0)
            try:
                probe.check()
            except Unavailable as why:
                unavailable[probe.name] = str(why)
                chosen.remove("fastalloc-upgrade")
                del results[probe.name]
                log(f"{probe.name}: not available: {why}")
            finally:
                probe.stop()
                wait_free(probe.port)
        for round_number in range(args.rounds):
            order = chosen if round_number % 2 == 0 else chosen[::-1]
            for name in order:
                for reloading in ((False, True) if round_number % 2 == 0 else (True, False)):
                    target = kinds[name](os.path.join(directory, f"{name}-{round_number}-{int(reloading)}"),
                                         PORTS[name], args.workers)
                    result = run_once(target, args, reloading)
                    results[target.name].append(result)
                    log(f"  round {round_number + 1}: {target.name}, {'reloads' if reloading else 'baseline'}: "
                        f"{describe(result)}")
    finally:
        for echo in echoes:
            end_pid(echo.pid, echo)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"arguments": vars(args), "results": results, "unavailable": unavailable}, out, indent=1)
    table(results, unavailable, args)
    log(f"(configs and logs in {directory})")


if __name__ == "__main__":
    main()
