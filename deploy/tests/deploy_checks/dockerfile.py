"""The Dockerfile: its stages, base images, user, ports, entrypoint and healthcheck (run against a
live server), and the build stage's --static-swift-stdlib build with its libraries traced to the
Debian packages the runtime stage installs."""
import json
import os
import re
import shlex
import socket
import subprocess

import yaml

from .common import DEPLOY, ROOT, LiveServer, as_variables, check, port_of, section, server_check


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
