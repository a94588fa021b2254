#!/usr/bin/env python3
"""Checks everything in deploy/ offline, against the real server where it can:

  Config files `fastalloc-server check --config` on every example in config/ (exit 0; what it
               prints checks again to itself) and on broken copies (exit 64, with the line).
  Dockerfile   stages, base images, non-root user, ports (from its ENV and its default config
               file, which must be in the build context), entrypoint, healthcheck; the build
               stage's `swift build` line run here (--static-swift-stdlib) and the binary's shared
               libraries traced to the Debian packages the runtime stage installs; the
               HEALTHCHECK command run against a live server.
  systemd      `systemd-analyze verify`, `systemd-analyze security --offline` (exposure <= 2.0),
               the hardening the unit must keep, stop timeout > drain, descriptors, pools that
               serve --max-connections fairly, and the environment file started for real (with
               no fairness warning).
  Kubernetes   `kubernetes-validate --strict` (Kubernetes 1.31 schemas) on every resource of the
               kustomization (and a broken copy, which must fail), then what a schema cannot see:
               the ConfigMap's config file passes `fastalloc-server check` and is mounted where the
               container's --config reads it; probes, ports and grace period agree with it, the pod runs as the image's
               user with a read-only root, selectors match, the pools serve --max-connections
               fairly and fit the memory request; the ConfigMap started for real (no fairness
               warning). The connection alert's threshold is both deployments' --max-connections.
  Prometheus   `promtool check config`, `check rules`, `test rules`; the Kubernetes scrape job's shape.
  Grafana      every query parses as PromQL (promtool) and names only metrics the server exposes
               (read from a live server's /metrics), as do the alert rules.

    deploy/tests/check-deploy.py [--skip-static-build]
Needs: systemd (systemd-analyze), prometheus (promtool), kubernetes-validate and PyYAML (PyPI).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import kubernetes_validate  # noqa: F401 (pip install kubernetes-validate; brings PyYAML)
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
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


# ---------------------------------------------------------------------------------------------
def dockerfile_instructions(path):
    lines, current = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        current = ""
    return lines


def check_dockerfile(binary, variables, skip_static):
    section("Dockerfile")
    path = os.path.join(DEPLOY, "Dockerfile")
    instructions = dockerfile_instructions(path)
    args = {}
    stages = []
    for keyword, rest in instructions:
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image, _, alias = rest.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image.strip())
            stages.append({"image": image, "alias": alias.strip(), "body": []})
        elif stages:
            stages[-1]["body"].append((keyword, rest))
    check("two stages or more", len(stages) >= 2, f"{len(stages)}")
    build, runtime = stages[0], stages[-1]
    check("the build stage uses the official Swift image", build["image"].startswith("swift:"), build["image"])
    check("the runtime stage is a slim Debian", re.fullmatch(r"debian:[\w.-]+-slim", runtime["image"]) is not None,
          runtime["image"])

    def all_of(stage, keyword):
        return [rest for k, rest in stage["body"] if k == keyword]

    build_runs = " ".join(all_of(build, "RUN"))
    check("the build stage builds the release server with the Swift runtime linked in",
          "swift build -c release --static-swift-stdlib --product fastalloc-server" in build_runs)
    for source in all_of(build, "COPY"):
        for item in source.split()[:-1]:
            check(f"COPY {item} exists in the repository", os.path.exists(os.path.join(ROOT, item)))
    ignored = [line.strip() for line in open(os.path.join(ROOT, ".dockerignore")) if line.strip() and not line.startswith("#")]
    check(".dockerignore keeps the package in the context",
          not any(entry in ("Sources", "Tests", "Package.swift", "*") for entry in ignored), str(ignored))
    runtime_runs = " ".join(all_of(runtime, "RUN"))
    installed = set(re.findall(r"install -y --no-install-recommends ([\w\s.+-]+?)(?:&&|$)", runtime_runs)[0].split())
    check("the runtime stage installs no -dev package", not any(p.endswith("-dev") for p in installed), str(installed))
    copies = all_of(runtime, "COPY")
    check("the runtime stage copies the binary from the build stage",
          any(c.startswith(f"--from={build['alias']}") and c.endswith("/usr/local/bin/fastalloc-server") for c in copies))
    users = all_of(runtime, "USER")
    uid = users[-1].split(":")[0] if users else "root"
    check("the runtime stage runs as a non-root user", users and uid not in ("0", "root"), str(users))
    useradd = re.search(r"useradd .*--uid (\d+)", runtime_runs)
    check("that user is created with the same uid", bool(useradd) and useradd.group(1) == uid)
    entry = json.loads(all_of(runtime, "ENTRYPOINT")[-1])
    check("ENTRYPOINT is fastalloc-server (exec form)", entry == ["/usr/local/bin/fastalloc-server"], str(entry))
    env = {}
    for rest in all_of(runtime, "ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            env[key] = value
    check("ENV names only options the server reads", set(env) <= variables, str(set(env) - variables))
    # The image's defaults: its config file (FASTALLOC_CONFIG, copied from the build context),
    # under its ENV.
    settings = {}
    copied = {c.split()[-1]: c.split()[0] for c in all_of(runtime, "COPY") if not c.startswith("--from=")}
    if "FASTALLOC_CONFIG" in env:
        source = copied.get(env["FASTALLOC_CONFIG"])
        check("FASTALLOC_CONFIG names a file the runtime stage copies", source is not None, env["FASTALLOC_CONFIG"])
        if source:
            check(f"{source} exists", os.path.exists(os.path.join(ROOT, source)))
            check(f".dockerignore keeps {source} in the build context", f"!{source}" in ignored, str(ignored))
            status, _, err = server_check(binary, os.path.join(ROOT, source))
            check(f"fastalloc-server check --config {source}", status == 0, err)
            settings = as_variables(yaml.safe_load(open(os.path.join(ROOT, source))) or {})
    settings.update(env)
    exposed = {int(p.split("/")[0]) for rest in all_of(runtime, "EXPOSE") for p in rest.split()}
    check("EXPOSE has the data port the image listens on", port_of(settings.get("FASTALLOC_LISTEN", ":7000")) in exposed, str(exposed))
    check("EXPOSE has the stats port", port_of(settings.get("FASTALLOC_STATS", ":9464")) in exposed, str(exposed))
    check("the image listens beyond its own loopback", settings.get("FASTALLOC_LISTEN", "").startswith("0.0.0.0:"))
    env = settings
    check("STOPSIGNAL SIGTERM (the drain)", all_of(runtime, "STOPSIGNAL") == ["SIGTERM"])
    health = all_of(runtime, "HEALTHCHECK")
    check("a HEALTHCHECK", len(health) == 1)
    command = json.loads(health[0].split("CMD", 1)[1].strip())
    script = command[-1]
    check("the HEALTHCHECK asks /healthz on the stats port", "/healthz" in script and
          f"/{port_of(env['FASTALLOC_STATS'])}" in script, script)

    # The healthcheck command, for real: against a live server, then against a closed port.
    server = LiveServer(binary, {"FASTALLOC_LISTEN": "127.0.0.1:0", "FASTALLOC_STATS": "127.0.0.1:0"}, ["echo"])
    live = script.replace(f"/{port_of(env['FASTALLOC_STATS'])}", f"/{port_of(server.stats)}")
    result = subprocess.run(command[:-1] + [live], capture_output=True, timeout=10)
    check("the HEALTHCHECK command passes against a live server", result.returncode == 0, result.stderr.decode())
    server.stop()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = script.replace(f"/{port_of(env['FASTALLOC_STATS'])}", f"/{closed.getsockname()[1]}")
    result = subprocess.run(command[:-1] + [dead], capture_output=True, timeout=10)
    closed.close()
    check("the HEALTHCHECK command fails when nothing answers", result.returncode != 0)

    if skip_static:
        print("  (skipped: the --static-swift-stdlib build)")
        return
    # The build stage's command, here, and what the result needs at run time.
    scratch = os.path.join(ROOT, ".build-static")
    built = subprocess.run(["swift", "build", "-c", "release", "--static-swift-stdlib", "--product", "fastalloc-server",
                            "--scratch-path", scratch], cwd=ROOT, capture_output=True, text=True)
    check("swift build -c release --static-swift-stdlib --product fastalloc-server", built.returncode == 0,
          built.stderr[-2000:])
    if built.returncode != 0:
        return
    static_binary = os.path.join(scratch, "release", "fastalloc-server")
    ldd = subprocess.run(["ldd", static_binary], capture_output=True, text=True).stdout
    libraries = re.findall(r"=> (/\S+)", ldd)
    check("no Swift runtime library is needed at run time", not any("swift" in lib for lib in libraries), ldd)
    packages = set()
    for library in libraries:
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(library)], capture_output=True, text=True).stdout
        if not owner:
            owner = subprocess.run(["dpkg", "-S", library], capture_output=True, text=True).stdout
        packages.add(owner.split(":")[0])
    # What debian:bookworm-slim already has (libc6; libgcc-s1 and libstdc++6 come with apt).
    in_slim = {"libc6", "libgcc-s1", "libstdc++6"}
    missing = packages - installed - in_slim
    check("the runtime stage installs every package the binary's libraries come from", not missing,
          f"needs {sorted(packages)}; missing {sorted(missing)}")
    version = subprocess.run([static_binary, "--help"], capture_output=True, text=True)
    check("the statically linked binary runs", version.returncode == 0)


# ---------------------------------------------------------------------------------------------
def parse_env_file(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def check_systemd(binary, variables):
    section("systemd")
    unit_path = os.path.join(DEPLOY, "systemd/fastalloc-server.service")
    unit = {}
    for line in open(unit_path):
        line = line.strip()
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            unit.setdefault(key, []).append(value)
    with tempfile.TemporaryDirectory() as work:
        # verify needs ExecStart to exist: point it at the binary just built.
        copy = os.path.join(work, "fastalloc-server.service")
        with open(copy, "w") as out:
            out.write(open(unit_path).read().replace("ExecStart=/usr/local/bin/fastalloc-server", f"ExecStart={binary}"))
        verify = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True)
        check("systemd-analyze verify", verify.returncode == 0 and not verify.stderr.strip(), verify.stderr)
        # --threshold counts on the 0-100 scale the printed 0.0-10.0 level is a tenth of.
        security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", copy],
                                  capture_output=True, text=True)
        overall = re.search(r"Overall exposure level for .*: ([\d.]+)", security.stdout)
        check("systemd-analyze security --offline: exposure <= 2.0", security.returncode == 0,
              overall.group(1) if overall else security.stdout[-500:])
        if overall:
            print(f"       (exposure {overall.group(1)})")
    one = lambda key: unit.get(key, [""])[-1]
    check("a dedicated user", one("User") not in ("", "root", "0"))
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("KillSignal", "SIGTERM")]:
        check(f"{key}={value}", one(key) == value, one(key))
    check("CapabilityBoundingSet= empty", "CapabilityBoundingSet" in unit and one("CapabilityBoundingSet") == "")
    check("RestrictAddressFamilies set", bool(one("RestrictAddressFamilies")))
    env_path = os.path.join(DEPLOY, "systemd/fastalloc-server.env")
    env = parse_env_file(env_path)
    check("EnvironmentFile= names the installed example", one("EnvironmentFile").endswith("/fastalloc-server.env"))
    check("the environment file names only options the server reads", set(env) <= variables, str(set(env) - variables))
    drain = seconds(env.get("FASTALLOC_DRAIN_TIMEOUT", "10s"))
    check("TimeoutStopSec is longer than the drain timeout", seconds(one("TimeoutStopSec")) > drain,
          f"{one('TimeoutStopSec')} vs {drain}s")
    limit = int(one("LimitNOFILE") or 0)
    connections = int(setting(env, "FASTALLOC_MAX_CONNECTIONS"))
    check("LimitNOFILE holds two descriptors per connection (relay)", limit >= 2 * connections + 100,
          f"{limit} for {connections}")
    # Without FASTALLOC_WORKERS the server runs one worker per core: fewer workers own fewer
    # buffers, so 1 worker is the case to check; a set value is checked as it is.
    check_fair(env, int(env.get("FASTALLOC_WORKERS", "1")), "environment file")
    check("FastAllocConnectionsNearLimit assumes the environment file's FASTALLOC_MAX_CONNECTIONS",
          alerted_limit() == connections, f"alerts.yml: {alerted_limit()}, environment file: {connections}")
    upstream = free_listener()
    server = LiveServer(binary, for_this_machine(env, upstream))
    check("the environment file starts the server", server.data is not None, server.line)
    status, err = server.stop() if server.data else (None, "")
    check("and SIGTERM drains it with status 0", status == 0, err[-500:])
    check_no_fairness_warning(err, "environment file")
    upstream.close()


# ---------------------------------------------------------------------------------------------
def check_kubernetes(binary, variables):
    section("Kubernetes")
    directory = os.path.join(DEPLOY, "kubernetes")
    kustomization = yaml.safe_load(open(os.path.join(directory, "kustomization.yaml")))
    resources = kustomization["resources"]
    on_disk = sorted(f for f in os.listdir(directory) if f.endswith(".yaml"))
    check("every resource of the kustomization exists", all(r in on_disk for r in resources))
    unlisted = set(on_disk) - set(resources) - {"kustomization.yaml", "podmonitor.yaml"}
    check("every manifest is in the kustomization (but the optional PodMonitor)", not unlisted, str(unlisted))
    validate = [sys.executable, "-m", "kubernetes_validate"]  # imported at the top: installed
    paths = [os.path.join(directory, r) for r in resources]
    result = subprocess.run([*validate, "--strict", "-k", "1.31.0", *paths], capture_output=True, text=True)
    check("kubernetes-validate --strict (Kubernetes 1.31) passes every resource", result.returncode == 0,
          result.stdout + result.stderr)
    with tempfile.TemporaryDirectory() as work:  # the validator must be able to fail
        broken = yaml.safe_load(open(os.path.join(directory, "deployment.yaml")))
        broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
        path = os.path.join(work, "deployment.yaml")
        yaml.safe_dump(broken, open(path, "w"))
        result = subprocess.run([*validate, "--strict", "-k", "1.31.0", path], capture_output=True, text=True)
        check("kubernetes-validate rejects a misspelt field (control)", result.returncode != 0)

    docs = {}
    for resource in resources + ["podmonitor.yaml"]:
        for doc in yaml.safe_load_all(open(os.path.join(directory, resource))):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    data = docs[("ConfigMap", "fastalloc-server")]["data"]
    deployment = docs[("Deployment", "fastalloc-server")]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    check("the ConfigMap holds one config file", list(data) == ["fastalloc-server.yaml"], str(list(data)))
    file_text = data.get("fastalloc-server.yaml", "")
    settings = yaml.safe_load(file_text) or {}
    check("its keys are options the server reads", set(settings) <= option_names(binary),
          str(set(settings) - option_names(binary)))
    config = as_variables(settings)
    # The container reads it where the ConfigMap volume puts it.
    args = container.get("args", [])
    path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = [m for m in container.get("volumeMounts", [])
              if volumes.get(m["name"], {}).get("configMap", {}).get("name") == "fastalloc-server"]
    check("the container runs --config on the ConfigMap's file, mounted read-only",
          path is not None and len(mounts) == 1 and mounts[0].get("readOnly") is True
          and path == mounts[0]["mountPath"].rstrip("/") + "/fastalloc-server.yaml", f"args {args}, mounts {mounts}")
    check("no FASTALLOC_* variable in the pod overrides the file", not container.get("env") and not container.get("envFrom"))
    upstream = free_listener()
    with tempfile.TemporaryDirectory() as work:
        file_path = os.path.join(work, "fastalloc-server.yaml")
        with open(file_path, "w") as out:
            out.write(file_text)
        # The upstream's Service name does not resolve here: a variable moves it (variables win over the file).
        status, out, err = server_check(binary, file_path, {"FASTALLOC_UPSTREAM": f"127.0.0.1:{upstream.getsockname()[1]}"})
        check("fastalloc-server check --config passes the ConfigMap's file (upstream moved here)", status == 0, err)
        check("and prints the relay it configures", "mode: relay" in out and "max-connections: 4000" in out, out[-500:])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check("the data port is the one the ConfigMap listens on", ports.get("data") == port_of(config["FASTALLOC_LISTEN"]))
    check("the metrics port is the ConfigMap's stats port", ports.get("metrics") == port_of(config["FASTALLOC_STATS"]))
    readiness, liveness = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    check("readiness asks /readyz on the metrics port", readiness == {"path": "/readyz", "port": "metrics"}, str(readiness))
    check("liveness asks /healthz on the metrics port", liveness == {"path": "/healthz", "port": "metrics"}, str(liveness))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    sleep = float(pre_stop[1]) if pre_stop[0] == "sleep" else 0
    drain = seconds(config.get("FASTALLOC_DRAIN_TIMEOUT", "10s"))
    grace = spec["terminationGracePeriodSeconds"]
    check("terminationGracePeriodSeconds covers preStop + the drain", grace > sleep + drain,
          f"{grace} vs {sleep} + {drain}")
    security = spec["securityContext"]
    dockerfile_uid = re.search(r"^USER (\d+)", open(os.path.join(DEPLOY, "Dockerfile")).read(), re.M).group(1)
    check("runAsNonRoot with the image's uid", security.get("runAsNonRoot") is True and
          str(security.get("runAsUser")) == dockerfile_uid)
    csc = container["securityContext"]
    check("read-only root filesystem, no privilege escalation, no capabilities",
          csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False and
          csc.get("capabilities", {}).get("drop") == ["ALL"])
    resources_ = container["resources"]
    check("CPU and memory requests and a memory limit", "cpu" in resources_["requests"] and
          "memory" in resources_["requests"] and "memory" in resources_.get("limits", {}))
    cpu = float(str(resources_["requests"]["cpu"]).rstrip("m")) / (1000 if str(resources_["requests"]["cpu"]).endswith("m") else 1)
    workers = int(config.get("FASTALLOC_WORKERS", "0"))
    check("FASTALLOC_WORKERS fits the CPU request", 0 < workers <= max(1, round(cpu)), f"{workers} for {cpu} cores")
    connections = check_fair(config, max(1, workers), "ConfigMap")
    _, pool_memory, _ = pools(config, max(1, workers))
    # The pools at their most, the process (~30 MiB: code, stacks, heap) and ~1.1 KiB per relayed
    # connection (make bench-idle) must fit the memory request, so the limit is never reached by
    # the server's own memory; what is above is for the kernel's socket buffers.
    request, limit = quantity_bytes(resources_["requests"]["memory"]), quantity_bytes(resources_["limits"]["memory"])
    needed = pool_memory + (32 << 20) + connections * 2048
    check("the pools at their most + 32 MiB + 2 KiB per connection fit the memory request", needed <= request <= limit,
          f"{needed / (1 << 20):.0f} MiB needed, request {request / (1 << 20):.0f} MiB, limit {limit / (1 << 20):.0f} MiB")
    check("FastAllocConnectionsNearLimit assumes the ConfigMap's FASTALLOC_MAX_CONNECTIONS",
          alerted_limit() == connections, f"alerts.yml: {alerted_limit()}, ConfigMap: {connections}")
    labels = pod["metadata"]["labels"]
    for (kind, name), doc in docs.items():
        if kind == "Service":
            check(f"Service {name} selects the pods", doc["spec"]["selector"].items() <= labels.items())
            check(f"Service {name} targets named container ports",
                  all(p["targetPort"] in ports for p in doc["spec"]["ports"]))
        if kind in ("PodDisruptionBudget", "PodMonitor"):
            check(f"{kind} {name} selects the pods", doc["spec"]["selector"]["matchLabels"].items() <= labels.items())
    podmonitor = docs[("PodMonitor", "fastalloc-server")]
    check("the PodMonitor scrapes the metrics port", podmonitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics")
    hpa = docs[("HorizontalPodAutoscaler", "fastalloc-server")]
    check("the HPA scales the Deployment", hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"] and
          hpa["spec"]["minReplicas"] >= 2)
    with tempfile.TemporaryDirectory() as work:
        # Started for real from the file, the addresses moved to this machine by variables.
        file_path = os.path.join(work, "fastalloc-server.yaml")
        with open(file_path, "w") as out:
            out.write(file_text)
        moved = {k: v for k, v in for_this_machine(config, upstream).items()
                 if k in ("FASTALLOC_LISTEN", "FASTALLOC_STATS", "FASTALLOC_UPSTREAM")}
        server = LiveServer(binary, moved, ["--config", file_path])
        check("the ConfigMap's file starts the server", server.data is not None, server.line)
        if server.data:
            check("/readyz answers 200 while serving", server.get("/readyz")[0] == 200)
        status, err = server.stop() if server.data else (None, "")
        check("and SIGTERM drains it with status 0", status == 0, err[-500:])
        check_no_fairness_warning(err, "ConfigMap")
    upstream.close()


# ---------------------------------------------------------------------------------------------
def check_config_files(binary):
    section("Config files")
    directory = os.path.join(DEPLOY, "config")
    names = sorted(f for f in os.listdir(directory) if f.endswith(".yaml"))
    check("examples in deploy/config", {"relay.yaml", "echo.yaml"} <= set(names), str(names))
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            path = os.path.join(directory, name)
            status, out, err = server_check(binary, path)
            check(f"fastalloc-server check --config config/{name}", status == 0 and not err, err)
            if status != 0:
                continue
            # What check prints is a config file: checked again, it prints itself.
            effective = os.path.join(work, "effective-" + name)
            with open(effective, "w") as f:
                f.write(out)
            again, out2, err2 = server_check(binary, effective)
            check(f"config/{name}: the configuration check prints checks again to itself",
                  again == 0 and out2.splitlines()[1:] == out.splitlines()[1:], err2 or out2[-500:])
            settings = yaml.safe_load(open(path))
            check(f"config/{name} names its mode", settings.get("mode") in ("echo", "relay"), str(settings.get("mode")))
            # The control: a misspelt key in a copy is refused, with its line (the last one).
            lines = open(path).read().rstrip("\n").split("\n")
            broken = os.path.join(work, "broken-" + name)
            with open(broken, "w") as f:
                f.write("\n".join(lines + ["worker: 2"]) + "\n")
            status, _, err = server_check(binary, broken)
            check(f"a copy of config/{name} with a misspelt key fails: exit 64, with its line",
                  status == 64 and f"{broken}:{len(lines) + 1}: worker: unknown key" in err, f"{status}: {err}")
    relay = yaml.safe_load(open(os.path.join(directory, "relay.yaml")))
    upstreams = relay.get("upstream", [])
    check("config/relay.yaml: three upstreams, weights and a backup, health checks",
          len(upstreams) == 3 and any(isinstance(u, dict) and u.get("backup") for u in upstreams)
          and any(isinstance(u, dict) and int(u.get("weight", 1)) > 1 for u in upstreams)
          and "health-check" in relay and "health-check-interval" in relay, str(relay))


# ---------------------------------------------------------------------------------------------
def exposed_metrics(binary):
    server = LiveServer(binary, {"FASTALLOC_LISTEN": "127.0.0.1:0", "FASTALLOC_STATS": "127.0.0.1:0"}, ["echo"])
    status, text = server.get("/metrics")
    server.stop()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")} | {"up"}


def metric_names(expr):
    """Metric names in a PromQL expression (identifiers that are neither functions, keywords nor labels)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", without_strings)  # label matchers, ranges
    without_grouping = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_grouping))
    functions = set(re.findall(r"\b([a-zA-Z_]+)\s*\(", without_grouping))
    keywords = {"and", "or", "unless", "sum", "max", "min", "avg", "count", "rate", "increase", "by", "on", "bool",
                "offset", "humanize", "humanizePercentage", "m", "s", "h", "d"}
    return {w for w in words - functions - keywords if not re.fullmatch(r"\d+[smhd]?", w)}


def check_prometheus_and_grafana(binary):
    section("Prometheus")
    directory = os.path.join(DEPLOY, "prometheus")
    for args, what in [(["check", "config", "prometheus.yml"], "promtool check config prometheus.yml"),
                       (["check", "rules", "alerts.yml"], "promtool check rules alerts.yml"),
                       (["test", "rules", "alerts-test.yml"], "promtool test rules alerts-test.yml")]:
        result = subprocess.run(["promtool", *args], cwd=directory, capture_output=True, text=True)
        check(what, result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:])
    job = yaml.safe_load(open(os.path.join(directory, "kubernetes-job.yml")))["scrape_configs"][0]
    keeps = {tuple(r["source_labels"]): r.get("regex") for r in job["relabel_configs"] if r.get("action") == "keep"}
    check("the Kubernetes job keeps annotated fastalloc-server endpoints on the metrics port",
          keeps.get(("__meta_kubernetes_service_annotation_prometheus_io_scrape",)) == "true" and
          keeps.get(("__meta_kubernetes_endpoint_port_name",)) == "metrics" and
          job["kubernetes_sd_configs"][0]["role"] == "endpoints")
    exposed = exposed_metrics(binary)
    rules = yaml.safe_load(open(os.path.join(directory, "alerts.yml")))
    alert_names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            alert_names |= metric_names(rule["expr"])
    check("the alerts name only metrics the server exposes", alert_names <= exposed, str(alert_names - exposed))
    tests = open(os.path.join(directory, "alerts-test.yml")).read()
    untested = [r["alert"] for g in rules["groups"] for r in g["rules"] if f"alertname: {r['alert']}" not in tests]
    check("every alert has a unit test", not untested, str(untested))

    section("Grafana")
    dashboard = json.load(open(os.path.join(DEPLOY, "grafana/fastalloc-server.json")))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    check("the dashboard has queries", len(exprs) >= 10, str(len(exprs)))
    names = set()
    for expr in exprs:
        names |= metric_names(expr)
    check("its queries name only metrics the server exposes", names and names <= exposed, str(names - exposed))
    typo = metric_names('sum by (instance) (rate(fastalloc_bufers_in_use{job=~"$job"}[$__rate_interval]))')
    check("a misspelt metric would be caught (control)", typo == {"fastalloc_bufers_in_use"} and not typo <= exposed)
    for family in ("fastalloc_buffers_in_use", "fastalloc_pool_growth_events_total", "fastalloc_lock_contended_total",
                   "fastalloc_connections_active", "fastalloc_bytes_sent_total", "fastalloc_buffers_high_water",
                   "fastalloc_connections_closed_total", "fastalloc_client_resets_total", "fastalloc_accept_errors_total",
                   "fastalloc_write_timeouts_total", "fastalloc_linger_timeouts_total", "fastalloc_drain_connections_total"):
        check(f"it shows {family}", family in names)
    with tempfile.TemporaryDirectory() as work:  # PromQL syntax: as recording rules, for promtool
        concrete = [e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$job", ".*")
                    .replace("$instance", ".*") for e in exprs]
        path = os.path.join(work, "queries.yml")
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                                 for i, e in enumerate(concrete)]}]}, open(path, "w"))
        result = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        check("every query parses as PromQL", result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:])


def check_never_root():
    section("No root")
    shipped = []
    for folder in ("config", "kubernetes", "systemd", "prometheus", "grafana"):
        for name in sorted(os.listdir(os.path.join(DEPLOY, folder))):
            shipped.append(os.path.join(folder, name))
    shipped.append("Dockerfile")
    allowing = [name for name in shipped if "ALLOW_ROOT" in open(os.path.join(DEPLOY, name)).read()
                or "allow-root" in open(os.path.join(DEPLOY, name)).read()]
    check("no deployment tells the server to run as root (FASTALLOC_ALLOW_ROOT, --allow-root)", not allowing, str(allowing))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-static-build", action="store_true")
    args = parser.parse_args()
    binary = build_server()
    variables = known_variables(binary) | {"FASTALLOC_MODE"}
    check_config_files(binary)
    check_dockerfile(binary, variables, args.skip_static_build)
    check_systemd(binary, variables)
    check_kubernetes(binary, variables)
    check_prometheus_and_grafana(binary)
    check_never_root()
    print()
    if failures:
        print(f"FAILED: {len(failures)} check(s): {failures}")
        sys.exit(1)
    print("deploy/: every check passed")


if __name__ == "__main__":
    main()
