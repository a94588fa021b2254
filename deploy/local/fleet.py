#!/usr/bin/env python3
"""A fleet of fastalloc-server relays on this machine, the way a real deployment runs them:

    clients -> haproxy (TCP mode, 127.0.0.1:7100) -> N relays (127.0.0.1:7101...) -> M upstreams
    (127.0.0.1:7199, 7198...). Prometheus (127.0.0.1:9590) scrapes every relay's stats port
    (127.0.0.1:9501...) with deploy/prometheus/alerts.yml loaded.

haproxy health-checks each relay's /readyz on its stats port, so a relay that drains (SIGTERM) or
dies leaves the rotation, and a connection refused by a dead relay is redispatched to another.
Each relay has every upstream (`--upstream` once for each, the default `--balance random`) and
checks them itself: a TCP connect every 500 ms, down after 2 failures (checks or clients'
connects), up again after 2 passes; a refused connect is retried on the other upstream, so a
client never sees a dead one. The upstreams are fastalloc-servers in echo mode (stats on
127.0.0.1:9599, 9598...), so `fastalloc-load --target 127.0.0.1:7100` checks every byte end to end.

    deploy/local/fleet.py [--relays 3] [--upstreams 2] [--base-port 7100] [--stats-base-port 9500]
                          [--prometheus-port 9590]
Runs until Ctrl-C (or SIGTERM), then stops everything it started: each relay drains (stops
accepting, /readyz 503; its connections go on until they end or its --drain-timeout of 5 s
passes, when the rest are reset on both sides) and exits 0.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ALERTS = os.path.join(ROOT, "deploy/prometheus/alerts.yml")


def wait_port(port, process=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{' '.join(process.args[:2])} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Fleet:
    # The relays' active checks of their upstreams: short, so that a dead upstream leaves within
    # FALL x INTERVAL (1 s) and a returning one is back within RISE x INTERVAL.
    HEALTH_INTERVAL_S, FALL, RISE = 0.5, 2, 2

    def __init__(self, relays=3, base_port=7100, stats_base_port=9500, prometheus_port=9590, quiet=False, upstreams=2):
        self.count = relays
        self.front = base_port
        self.upstream_ports = [base_port + 99 - i for i in range(upstreams)]
        self.upstream_stats_ports = [stats_base_port + 99 - i for i in range(upstreams)]
        self.relay_ports = [base_port + 1 + i for i in range(relays)]
        self.stats_ports = [stats_base_port + 1 + i for i in range(relays)]
        self.prometheus_port = prometheus_port
        self.work = tempfile.mkdtemp(prefix="fastalloc-fleet-")
        self.relays = []
        self.upstreams = []
        self.processes = []
        self.output = subprocess.DEVNULL if quiet else None
        self.server = None

    def binary(self):
        subprocess.run(["swift", "build", "-c", "release", "--product", "fastalloc-server"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        return os.path.join(ROOT, ".build/release/fastalloc-server")

    def _log_path(self, program, port):
        return os.path.join(self.work, f"{os.path.basename(program)}-{port}.log")

    def _start(self, command, port):
        log = open(self._log_path(command[0], port), "a")  # a restarted upstream logs on
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        wait_port(port, process)
        return process

    def start(self):
        for tool in ("haproxy", "prometheus"):
            if not shutil.which(tool):
                sys.exit(f"fleet: {tool} not found (apt-get install haproxy prometheus)")
        server = self.server = self.binary()
        for index in range(len(self.upstream_ports)):
            self.upstreams.append(None)
            self.start_upstream(index)
        upstreams = [argument for port in self.upstream_ports for argument in ("--upstream", f"127.0.0.1:{port}")]
        for port, stats in zip(self.relay_ports, self.stats_ports):
            self.relays.append(self._start([server, "relay", "--listen", f"127.0.0.1:{port}", *upstreams,
                                            "--health-check", "tcp", "--health-check-interval",
                                            f"{int(self.HEALTH_INTERVAL_S * 1000)}ms", "--fall", str(self.FALL),
                                            "--rise", str(self.RISE), "--stats", f"127.0.0.1:{stats}",
                                            "--workers", "1", "--drain-timeout", "5s"], port))
        self._start(["haproxy", "-f", self._haproxy_config(), "-db"], self.front)
        self._start(["prometheus", f"--config.file={self._prometheus_config()}",
                     f"--storage.tsdb.path={os.path.join(self.work, 'tsdb')}",
                     f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--log.level=warn"], self.prometheus_port)
        self._wait_ready(f"http://127.0.0.1:{self.prometheus_port}/-/ready", self.processes[-1])
        return self

    def start_upstream(self, index):
        """Starts upstream `index` (an echo server) on its port, again after it died."""
        port = self.upstream_ports[index]
        self.upstreams[index] = self._start([self.server, "echo", "--listen", f"127.0.0.1:{port}", "--stats",
                                             f"127.0.0.1:{self.upstream_stats_ports[index]}", "--workers", "1"], port)
        return self.upstreams[index]

    @staticmethod
    def _wait_ready(url, process, timeout=30):
        """Prometheus listens before it can answer (503 until its storage is open): wait for 200."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # URLError and HTTPError (503) are OSErrors
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer 200 within {timeout} s")

    def _haproxy_config(self):
        path = os.path.join(self.work, "haproxy.cfg")
        servers = "\n".join(
            f"    server relay{i + 1} 127.0.0.1:{port} check port {stats} inter 500ms fall 1 rise 2"
            for i, (port, stats) in enumerate(zip(self.relay_ports, self.stats_ports)))
        with open(path, "w") as out:
            out.write(f"""global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
listen relays
    bind 127.0.0.1:{self.front}
    balance roundrobin
    option httpchk GET /readyz
{servers}
""")
        return path

    def _prometheus_config(self):
        path = os.path.join(self.work, "prometheus.yml")
        targets = ", ".join(f'"127.0.0.1:{port}"' for port in self.stats_ports)
        with open(path, "w") as out:
            out.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: fastalloc
    static_configs:
      - targets: [{targets}]
        labels:
          service: fastalloc-server
""")
        return path

    def query(self, promql):
        """An instant query against the fleet's Prometheus: [(labels, value)]."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def metrics(self, index, port=None):
        """One relay's /metrics (or, with port, that stats port's) as {name{labels}: value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port or self.stats_ports[index]}/metrics", timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # What each relay logged (its drain summary last), kept for the caller: the logs go with work.
        self.relay_logs = []
        for relay, port in zip(self.relays, self.relay_ports):
            try:
                self.relay_logs.append(open(self._log_path(relay.args[0], port)).read())
            except OSError:
                self.relay_logs.append("")
        shutil.rmtree(self.work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relays", type=int, default=3)
    parser.add_argument("--upstreams", type=int, default=2)
    parser.add_argument("--base-port", type=int, default=7100)
    parser.add_argument("--stats-base-port", type=int, default=9500)
    parser.add_argument("--prometheus-port", type=int, default=9590)
    args = parser.parse_args()
    fleet = Fleet(args.relays, args.base_port, args.stats_base_port, args.prometheus_port, upstreams=args.upstreams)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        fleet.start()
        print(f"fleet: haproxy on 127.0.0.1:{fleet.front} -> relays "
              + ", ".join(f"127.0.0.1:{p} (stats http://127.0.0.1:{s}/)" for p, s in zip(fleet.relay_ports, fleet.stats_ports))
              + " -> upstream echoes " + ", ".join(f"127.0.0.1:{p}" for p in fleet.upstream_ports))
        print(f"fleet: Prometheus on http://127.0.0.1:{fleet.prometheus_port}/ (alerts: /alerts)")
        print(f"fleet: try  .build/release/fastalloc-load --target 127.0.0.1:{fleet.front} --duration 10s")
        print("fleet: Ctrl-C stops everything", flush=True)
        while not stopping:
            time.sleep(0.5)
            for process in fleet.processes:
                if process.poll() is not None and process not in fleet.relays:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
        print("fleet: stopped")


if __name__ == "__main__":
    main()
