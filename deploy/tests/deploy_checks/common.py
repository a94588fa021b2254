"""What the checks share: check() and the failures, the server built and started for real, free
ports, the units of the settings, the server's defaults and the pools' arithmetic, the alert's
connection limit."""
import os
import re
import signal
import socket
import subprocess

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.dirname(TESTS)
ROOT = os.path.dirname(DEPLOY)
failures = []


def check(what, ok, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(what)
    return ok


def section(title):
    print(f"== {title}", flush=True)


def build_server():
    subprocess.run(["swift", "build", "-c", "release", "--product", "fastalloc-server"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, ".build/release/fastalloc-server")


def known_variables(binary):
    """FASTALLOC_* variables the server reads, from its own --help."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"\(?(FASTALLOC_[A-Z_]+)\)?", text))


class LiveServer:
    """fastalloc-server started with an environment, on ports it picks, and stopped with SIGTERM."""

    def __init__(self, binary, environment, args=()):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTALLOC_")}
        env.update(environment)
        if os.geteuid() == 0:
            # The deployments run as uid 10001; this check may run as root (CI), which the
            # server refuses unless told.
            env["FASTALLOC_ALLOW_ROOT"] = "1"
        self.process = subprocess.Popen([binary, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.line = self.process.stdout.readline()
        match = re.search(r"listening on ([\d.]+:\d+).*stats on http://([\d.]+:\d+)/", self.line)
        self.data, self.stats = (match.group(1), match.group(2)) if match else (None, None)

    def get(self, path):
        host, port = self.stats.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


def free_listener():
    """A listening socket on 127.0.0.1 that stands in for an upstream a name would point at."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def for_this_machine(environment, upstream):
    """A deployment's settings with the addresses moved to free loopback ports (and the upstream
    to a local listener), so the rest of the values are checked by the server itself."""
    env = dict(environment)
    env["FASTALLOC_LISTEN"] = "127.0.0.1:0"
    env["FASTALLOC_STATS"] = "127.0.0.1:0"
    if "FASTALLOC_UPSTREAM" in env:
        env["FASTALLOC_UPSTREAM"] = f"127.0.0.1:{upstream.getsockname()[1]}"
    return env


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def seconds(text):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(text))
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def size_bytes(text):
    """A server byte count: 65536, 16K, 16KiB, 1M, 1MiB, 1G, 1GiB (powers of 1024)."""
    match = re.fullmatch(r"(\d+)\s*(KiB|MiB|GiB|K|M|G|B)?", str(text))
    return int(match.group(1)) * {None: 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20,
                                  "G": 1 << 30, "GiB": 1 << 30}[match.group(2)]


def quantity_bytes(text):
    """A Kubernetes memory quantity: 256Mi, 1Gi, 128M, 1000."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G)?", str(text))
    return int(match.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10 ** 3, "M": 10 ** 6,
                                  "G": 10 ** 9}[match.group(2)]


# The server's defaults (`fastalloc-server --help`) for the settings the checks below combine.
DEFAULTS = {"FASTALLOC_BUFFER_SIZE": "65536", "FASTALLOC_LOCAL_BUFFERS": "128", "FASTALLOC_OVERFLOW_MAX": "1024",
            "FASTALLOC_MAX_CONNECTIONS": "1024"}


def setting(environment, name):
    return environment.get(name, DEFAULTS[name])


def pools(environment, workers):
    """(buffers, bytes, fair connections) of a deployment's buffer pools with `workers` workers.
    Fair connections as Server.fairConnections: a client that stops reading holds one buffer, and
    each worker keeps a sixteenth of what it reaches (its local buffers + the overflow maximum),
    at least 2, for connections holding none."""
    local = int(setting(environment, "FASTALLOC_LOCAL_BUFFERS"))
    overflow = int(setting(environment, "FASTALLOC_OVERFLOW_MAX"))
    buffers = workers * local + overflow
    fair = max(0, buffers - max(2, (local + overflow) // 16))
    return buffers, buffers * size_bytes(setting(environment, "FASTALLOC_BUFFER_SIZE")), fair


def check_fair(environment, workers, where):
    connections = int(setting(environment, "FASTALLOC_MAX_CONNECTIONS"))
    buffers, memory, fair = pools(environment, workers)
    check(f"{where}: the pools serve FASTALLOC_MAX_CONNECTIONS fairly with {workers} worker(s)", connections <= fair,
          f"{connections} connections, room for {fair} ({buffers} buffers, {memory / (1 << 20):.0f} MiB)")
    print(f"       ({workers} worker(s): {buffers} buffers = {memory / (1 << 20):.0f} MiB, fair for {fair}, "
          f"max-connections {connections})")
    return connections


def check_no_fairness_warning(err, where):
    check(f"{where}: no start-up warning that the pools do not serve --max-connections fairly",
          "serve fairly" not in err, err[-800:])


ALERT_LIMIT = re.compile(r"fastalloc_connections_active\)\s*>\s*0\.9\s*\*\s*(\d+)")


def alerted_limit():
    """The --max-connections FastAllocConnectionsNearLimit assumes (its `> 0.9 * N`)."""
    match = ALERT_LIMIT.search(open(os.path.join(DEPLOY, "prometheus/alerts.yml")).read())
    return int(match.group(1)) if match else None


def option_names(binary):
    """The options the server reads, from its own --help (`--idle-timeout` -> `idle-timeout`)."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"^  --([a-z][a-z0-9-]*)", text, re.M)) - {"help"}


def yaml_text(value):
    """A config file's value as the option's text (PyYAML reads `2` as 2, `true` as True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(yaml_text(v) for v in value)
    if isinstance(value, dict):
        return " ".join([str(value["address"])] + ([f"weight={value['weight']}"] if "weight" in value else [])
                        + (["backup"] if value.get("backup") else []))
    return "" if value is None else str(value)


def as_variables(settings):
    """A config file's settings (option names) as the FASTALLOC_* variables the checks read."""
    return {"FASTALLOC_" + key.upper().replace("-", "_"): yaml_text(value) for key, value in settings.items()}


def server_check(binary, path, environment=None):
    """`fastalloc-server check --config path` with only `environment`'s FASTALLOC_* variables:
    (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTALLOC_")}
    env.update(environment or {})
    result = subprocess.run([binary, "check", "--config", path], env=env, capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout, result.stderr
