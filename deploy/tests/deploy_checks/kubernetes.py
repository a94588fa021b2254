"""The Kubernetes manifests: kubernetes-validate --strict (and a broken copy, which must fail), then
what a schema cannot see, and the ConfigMap started for real."""
import os
import re
import subprocess
import sys
import tempfile

import yaml

from .common import (DEPLOY, LiveServer, alerted_limit, check, check_fair, check_no_fairness_warning, for_this_machine,
                     free_listener, pools, port_of, quantity_bytes, seconds, section, as_variables, option_names, server_check)


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
    check("--watch-config: a ConfigMap change reloads the server", "--watch-config" in args, f"args {args}")
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
