#!/usr/bin/env python3
"""Checks everything in deploy/ offline, against the real server where it can:

  Dockerfile   stages, base images, non-root user, ports, entrypoint, healthcheck; the build
               stage's `swift build` line run here (--static-swift-stdlib) and the binary's shared
               libraries traced to the Debian packages the runtime stage installs; the
               HEALTHCHECK command run against a live server.
  systemd      `systemd-analyze verify`, `systemd-analyze security --offline` (exposure <= 2.0),
               the hardening the unit must keep, stop timeout > drain, descriptors, pools that
               serve --max-connections fairly, and the environment file started for real (with
               no fairness warning).
  Kubernetes   `kubernetes-validate --strict` (Kubernetes 1.31 schemas) on every resource of the
               kustomization (and a broken copy, which must fail), then what a schema cannot see:
               probes, ports and grace period agree with the ConfigMap, the pod runs as the image's
               user with a read-only root, selectors match, the pools serve --max-connections
               fairly and fit the memory request; the ConfigMap started for real (no fairness
               warning). The connection alert's threshold is both deployments' --max-connections.
  Prometheus   `promtool check config`, `check rules`, `test rules`; the Kubernetes scrape job's shape.
  Grafana      every query parses as PromQL (promtool) and names only metrics the server exposes
               (read from a live server's /metrics), as do the alert rules.

    deploy/tests/check-deploy.py [--skip-static-build]
Needs: systemd (systemd-analyze), prometheus (promtool), kubernetes-validate and PyYAML (PyPI).
The checks are in deploy_checks/ beside this script, a module for each part of deploy/.
"""
import argparse
import os
import sys

import kubernetes_validate  # noqa: F401 (pip install kubernetes-validate; brings PyYAML)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploy_checks.common import DEPLOY, build_server, check, failures, known_variables, section  # noqa: E402
from deploy_checks.config_files import check_config_files  # noqa: E402
from deploy_checks.dockerfile import check_dockerfile  # noqa: E402
from deploy_checks.kubernetes import check_kubernetes  # noqa: E402
from deploy_checks.monitoring import check_prometheus_and_grafana  # noqa: E402
from deploy_checks.systemd import check_systemd  # noqa: E402


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
