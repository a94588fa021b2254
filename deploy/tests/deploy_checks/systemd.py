"""The systemd unit and its environment file: systemd-analyze verify and security, the hardening,
the timeouts, descriptors and pools, and the environment file started for real."""
import os
import re
import subprocess
import tempfile

from .common import (DEPLOY, LiveServer, alerted_limit, check, check_fair, check_no_fairness_warning, for_this_machine,
                     free_listener, seconds, section, setting)


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
    check("Type=notify with NotifyAccess=all (an upgrade's new process says MAINPID=)",
          one("Type") == "notify" and one("NotifyAccess") == "all", f"Type={one('Type')} NotifyAccess={one('NotifyAccess')}")
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
