#!/usr/bin/env python3
"""What a PROXY protocol header costs the relay per connection, side by side in one run.

New connections per second from peers/conn-rate (16 at a time, each a connect, one 64-byte round
trip checked byte for byte, a close) through fastalloc-server relay (1 worker), and the relay's
CPU time per connection, in interleaved rounds:

- accepting: the relay straight in front of peers/uv-echo, without a header, and with
  --accept-proxy while conn-rate sends a v1 or a v2 header before its bytes (in the same write);
- sending: the relay in front of nginx's stream proxy (which passes to the same uv-echo), without
  a header, and with --proxy-protocol-upstream v1 or v2 while nginx listens with proxy_protocol.

Only the relay's CPU is compared (nginx and the echo run the same in each pair).

    Benchmarks/proxy-protocol-cost.py [--rounds 5] [--seconds 3]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from peers_lib import PEERS, ROOT, Server, build, measure, nginx_stream, stop, wait_port

ECHO_PORT = 17640
NGINX_PLAIN, NGINX_PROXY = 17641, 17642
RELAY_PORT = 17645
CONN_RATE = os.path.join(PEERS, "conn-rate")


def nginx_config(directory):
    """nginx's stream proxy to the echo: plain on one port, requiring a PROXY header on the other."""
    os.makedirs(os.path.join(directory, "logs"), exist_ok=True)
    path = os.path.join(directory, "nginx.conf")
    with open(path, "w") as out:
        out.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
error_log stderr error;
pid {directory}/nginx.pid;
events {{ worker_connections 4096; }}
stream {{
    server {{ listen 127.0.0.1:{NGINX_PLAIN}; proxy_pass 127.0.0.1:{ECHO_PORT}; }}
    server {{ listen 127.0.0.1:{NGINX_PROXY} proxy_protocol; proxy_pass 127.0.0.1:{ECHO_PORT}; }}
}}
""")
    return path


def relay(name, upstream, extra):
    server = os.path.join(ROOT, ".build/release/fastalloc-server")
    command = [server, "relay", "--listen", f"127.0.0.1:{RELAY_PORT}", "--upstream", f"127.0.0.1:{upstream}",
               "--workers", "1", "--stats", "off", "--health-check", "off", "--max-connections", "12000"] + extra
    return Server(name, "relay", 1, command, RELAY_PORT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    if not nginx_stream():
        sys.exit("proxy-protocol-cost.py: needs nginx with its stream module (nginx-light, libnginx-mod-stream)")
    build()
    os.environ.setdefault("FASTALLOC_ALLOW_ROOT", "1")
    trusted = ["--accept-proxy", "--trusted-proxies", "127.0.0.1"]
    # (label, server, conn-rate's header, pair): each pair's first row is its baseline.
    rows = [
        ("no header", relay("accept", ECHO_PORT, []), None, "accepting (relay -> uv-echo)"),
        ("--accept-proxy, v1 from the client", relay("accept", ECHO_PORT, trusted), "v1", "accepting (relay -> uv-echo)"),
        ("--accept-proxy, v2 from the client", relay("accept", ECHO_PORT, trusted), "v2", "accepting (relay -> uv-echo)"),
        ("no header", relay("send", NGINX_PLAIN, []), None, "sending (relay -> nginx -> uv-echo)"),
        ("--proxy-protocol-upstream v1", relay("send", NGINX_PROXY, ["--proxy-protocol-upstream", "v1"]), None,
         "sending (relay -> nginx -> uv-echo)"),
        ("--proxy-protocol-upstream v2", relay("send", NGINX_PROXY, ["--proxy-protocol-upstream", "v2"]), None,
         "sending (relay -> nginx -> uv-echo)"),
    ]
    echo = subprocess.Popen([os.path.join(PEERS, "uv-echo"), str(ECHO_PORT), "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    directory = tempfile.mkdtemp(prefix="fastalloc-pp-cost-")
    nginx = subprocess.Popen(["nginx", "-p", directory, "-c", nginx_config(directory)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {index: [] for index in range(len(rows))}
    try:
        wait_port(ECHO_PORT, echo)
        wait_port(NGINX_PLAIN, nginx)
        for round_number in range(args.rounds):
            for index, (label, server, header, _) in enumerate(rows):
                client = [CONN_RATE, "127.0.0.1", str(RELAY_PORT), "16", "64", str(args.seconds), "1"]
                if header:
                    client.append(header)
                out, figures = measure(server, client, args.seconds + 60, [echo, nginx])
                fields = out.stdout.split()
                if out.returncode != 0 or len(fields) != 7:
                    sys.exit(f"conn-rate failed ({label}): {out.stdout.strip()} {out.stderr.strip()[:300]}")
                rate, every = float(fields[0]), int(fields[6])
                results[index].append((rate, figures["cpu_seconds"] / every * 1e6))
                print(f"  round {round_number + 1}: {label} ({rows[index][3]}): {rate:,.0f} conn/s, "
                      f"{results[index][-1][1]:.1f} µs CPU per connection", file=sys.stderr, flush=True)
    finally:
        stop(nginx)
        stop(echo)
    print(f"PROXY protocol cost, fastalloc-server relay with 1 worker, {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s, medians; client peers/conn-rate (16 at a time, 64 B each, every byte checked).")
    baseline = None
    for index, (label, _, _, pair) in enumerate(rows):
        if index == 0 or rows[index - 1][3] != pair:
            print(f"\n### {pair}\n\n| relay | conn/s | relay CPU µs per connection | vs no header |\n|---|---:|---:|---:|")
            baseline = None
        rate = statistics.median(r for r, _ in results[index])
        cpu = statistics.median(c for _, c in results[index])
        baseline = baseline or cpu
        print(f"| {label} | {rate:,.0f} | {cpu:.1f} | {cpu / baseline:.2f}x |")


if __name__ == "__main__":
    main()
