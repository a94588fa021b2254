"""The example config files: `fastalloc-server check --config` on each, its output read back, and
a broken copy refused with its line."""
import os
import tempfile

import yaml

from .common import DEPLOY, check, section, server_check


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
