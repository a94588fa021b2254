#!/usr/bin/env python3
"""Runs the pool and packet-buffer microbenchmarks once and prints a side-by-side table:
nanoseconds and mallocs per operation (an acquire+release pair, a take+release), and each row's
speed as a ratio to malloc+free of the same size (2KiB or 64KiB, from the row's name) measured
in the same run (this machine is shared and noisy: compare within a run only).

    cd Benchmarks && python3 compare.py [--filter REGEX]

It runs `swift package benchmark --format jmh` and reads the JSON it writes. Every benchmark
measures 1000 pairs per sample (scalingFactor .kilo); throughput is the median over samples.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

def baseline_for(label, results):
    """The malloc+free row of the same size as `label`, if the run has one."""
    size = re.search(r"(\d+KiB)", label)
    name = f"malloc+free {size.group(1)}" if size else None
    return results.get(name, (None, None))[0], name


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filter", default=None, help="regular expression passed to swift package benchmark")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as out:
        command = ["swift", "package", "--allow-writing-to-directory", out, "benchmark",
                   "--format", "jmh", "--path", out, "--no-progress"]
        if args.filter:
            command += ["--filter", args.filter]
        print("$ " + " ".join(command), file=sys.stderr)
        run = subprocess.run(command, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in run.stdout.splitlines():
            if "lock acquisitions" in line and "Progress" not in line:
                print(line)
        if run.returncode != 0:
            print(run.stdout[-4000:], file=sys.stderr)
            sys.exit(run.returncode)
        results = {}
        for name in os.listdir(out):
            if name.endswith(".json"):
                with open(os.path.join(out, name)) as f:
                    for entry in json.load(f):
                        label = entry["benchmark"].split(".", 3)[-1].replace("_", " ")
                        kilo_per_second = entry["primaryMetric"]["score"]
                        mallocs = entry.get("secondaryMetrics", {}).get("Malloc (total)", {}).get("score", float("nan"))
                        results[label] = (1e6 / kilo_per_second, mallocs / 1000.0)
    if not results:
        sys.exit("no results")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}")
    print()
    print("| benchmark | ns per op | mallocs per op | speed vs malloc+free of the same size |")
    print("|---|---:|---:|---:|")
    for label, (ns, mallocs) in sorted(results.items(), key=lambda item: (re.search(r"\d+KiB", item[0]).group(0) if re.search(r"\d+KiB", item[0]) else "", item[1][0])):
        base, name = baseline_for(label, results)
        ratio = f"{base / ns:.1f}x" if base else "n/a"
        print(f"| {label} | {ns:.2f} | {mallocs:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
