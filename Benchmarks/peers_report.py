"""The Markdown tables and the PNG plots of Benchmarks/server-vs-peers.py."""
import os
import statistics

from peers_lib import ECHO_BASELINE, LATENCY_GOAL_US, RELAY_BASELINE, RELAY_MAX_CONNECTIONS


def print_table(chosen, results, workload, rounds, baselines=(ECHO_BASELINE, RELAY_BASELINE), groups=None, title=None):
    """One workload's table; the ratios are against baselines (the echo's, the relay's), or with
    groups, [(kind, baseline)], the servers of those kinds against those baselines. Nothing is
    printed for a workload without figures (not chosen, or not run by those kinds)."""
    echo_baseline, relay_baseline = baselines
    groups = groups or (("echo", echo_baseline), ("relay", relay_baseline))
    kinds = [kind for kind, _ in groups]
    if not any(results.get((s.name, s.threads, workload.name)) for s in chosen if s.kind in kinds):
        return
    print()
    print(f"### {title or workload.name}")
    print()
    if workload.note:
        print(workload.note)
        print()
    conns = workload.figure == "conns"
    if workload.figure == "latency":
        print("| server | msg/s | p50 (µs) | p99 (µs) | server CPU (cores) | client CPU | upstream CPU | peak RSS (MiB) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    else:
        unit, per = {"msgs": ("msg/s", "server CPU µs per message"), "mbps": ("MB/s", "server CPU s per GB"),
                     "conns": ("connections/s", "server CPU µs per connection")}[workload.figure]
        latency = "p50 / p99 (µs)" if conns else "p99 (µs)"
        # For new connections the CPU per connection has a ratio of its own (lower is better):
        # the client, not the server, limits the rate.
        per_ratio = " | CPU per connection vs baseline" if conns else ""
        print(f"| server | threads | {unit} | vs baseline | {latency} | server CPU (cores) | {per}{per_ratio} | client CPU "
              f"| upstream CPU | peak RSS (MiB) |")
        print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if conns else "") + "---:|---:|---:|")
    for kind, baseline in groups:
        for server in chosen:
            runs = results.get((server.name, server.threads, workload.name))
            if server.kind != kind or not runs:
                continue
            def med(field, of=runs):
                return statistics.median(r[field] for r in of)
            if workload.figure == "latency":
                p99 = [r["p99_us"] for r in runs]
                print(f"| {server.name} | {med('msgs'):,.0f} | {med('p50_us'):,.1f} | {med('p99_us'):,.1f} "
                      f"[{min(p99):,.1f}-{max(p99):,.1f}] | {med('cpu'):.2f} | {med('client_cpu'):.2f} "
                      f"| {med('upstream_cpu'):.2f} | {med('peak_rss_mib'):.1f} |")
                continue
            field = "msgs" if conns else workload.figure
            values = [r[field] for r in runs]
            base = results.get((baseline, server.threads, workload.name))
            ratio = med(field) / med(field, base) if base else float("nan")
            cost = f"{med('cpu_per_msg_us'):.2f}" if field == "msgs" else f"{med('cpu_per_gb'):.2f}"
            if conns:
                costs = [r["cpu_per_msg_us"] for r in runs]
                cost = f"{med('cpu_per_msg_us'):.1f} [{min(costs):.1f}-{max(costs):.1f}]"
                cost_ratio = med("cpu_per_msg_us") / med("cpu_per_msg_us", base) if base else float("nan")
                cost += f" | {cost_ratio:.2f}x"
            p99 = f"{med('p50_us'):,.0f} / {med('p99_us'):,.0f}" if conns else f"{med('p99_us'):,.0f}"
            print(f"| {server.name} | {server.threads} | {med(field):,.0f} [{min(values):,.0f}-{max(values):,.0f}] "
                  f"| {ratio:.2f}x | {p99} | {med('cpu'):.2f} | {cost} | {med('client_cpu'):.2f} "
                  f"| {med('upstream_cpu'):.2f} | {med('peak_rss_mib'):.1f} |")


def label(value):
    return f"{value // 1048576} MiB" if value >= 1048576 else f"{value // 1024} KiB" if value >= 1024 else f"{value} B"


def print_sweeps(found):
    sizes = sorted({size for points in found["size"].values() for size in points})
    print()
    print("### Message size sweep: 8 connections, depth 1 (MB/s; server CPU s per GB)")
    print()
    print("| server | " + " | ".join(label(size) for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name, points in found["size"].items():
        print(f"| {name} | " + " | ".join(f"{points[s]['mbps']:,.0f} ({points[s]['cpu_per_gb']:.2f})" if s in points else "–"
                                          for s in sizes) + " |")
    counts = sorted({count for points in found["connections"].values() for count in points})
    print()
    print("### Connections sweep: 64 B ping-pong, depth 1 (msg/s; p99 in µs)")
    print()
    print("| server | " + " | ".join(f"{count:,}" for count in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    for name, points in found["connections"].items():
        print(f"| {name} | " + " | ".join(f"{points[c]['msgs']:,.0f} ({points[c]['p99_us']:,.0f})" if c in points else "–"
                                          for c in counts) + " |")
    print()
    print(f"Relays stop at {RELAY_MAX_CONNECTIONS:,} connections: a relay holds two descriptors per connection and "
          "this machine's hard limit on open files is 20,000.")
    print()
    print("### Open-loop rate sweep: 64 connections x 64 B, latency from each message's intended send time "
          "(each point: the median p99 of as many runs as rounds)")
    print()
    print(f"| server | highest rate with p99 <= {LATENCY_GOAL_US} µs | its p99 (µs) | next rate tried | its p99 (µs) |")
    print("|---|---:|---:|---:|---:|")
    for name, points in found["rate"].items():
        good = [rate for rate, r in points.items() if r["p99_us"] <= LATENCY_GOAL_US]
        bad = [rate for rate, r in points.items() if r["p99_us"] > LATENCY_GOAL_US]
        best = max(good) if good else None
        over = min(bad) if bad else None
        best_text = f"{best:,}/s | {points[best]['p99_us']:,.0f}" if best else "none | –"
        over_text = f"{over:,}/s | {points[over]['p99_us']:,.0f}" if over else "none past the goal | –"
        print(f"| {name} | {best_text} | {over_text} |")


def plot(found, directory, baselines=(ECHO_BASELINE, RELAY_BASELINE)):
    """Three PNGs from the sweeps: MB/s by message size, msg/s by connections, p99 by offered rate;
    the baselines (the echo's, the relay's) are drawn in grey and red."""
    echo_baseline, relay_baseline = baselines
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(directory, exist_ok=True)
    style = {"fastalloc-server echo": ("tab:blue", "-"), "fastalloc-server relay": ("tab:blue", "--"),
             echo_baseline: ("tab:gray", "-"), "SwiftNIO echo": ("tab:orange", "-"),
             relay_baseline: ("tab:red", "--"), "nginx stream proxy": ("tab:green", "--")}
    charts = [
        ("size", "size-sweep.png", "Message size (bytes, 8 connections, depth 1)", "MB/s", "mbps", False),
        ("connections", "connections-sweep.png", "Connections (64 B ping-pong)", "messages/s", "msgs", False),
        ("rate", "rate-sweep.png", "Offered rate (messages/s, 64 connections x 64 B, open loop)", "p99 latency (µs)",
         "p99_us", True),
    ]
    written = []
    for key, filename, xlabel, ylabel, field, log_y in charts:
        figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
        for name, points in found[key].items():
            xs = sorted(points)
            color, line = style.get(name, ("black", ":"))
            axes.plot(xs, [points[x][field] for x in xs], marker="o", color=color, linestyle=line, label=f"{name} (1 thread)")
        axes.set_xscale("log")
        if log_y:
            axes.set_yscale("log")
            axes.axhline(LATENCY_GOAL_US, color="black", linewidth=0.8, linestyle=":")
            axes.text(axes.get_xlim()[0], LATENCY_GOAL_US * 1.1, " 1 ms", fontsize=8)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=7)
        axes.set_title(f"{ylabel} by {xlabel.split(' (')[0].lower()}, {os.cpu_count()} cores, loopback", fontsize=9)
        figure.tight_layout()
        path = os.path.join(directory, filename)
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
