# The commands a newcomer needs. Each installs what is missing first (scripts/setup.sh).
SWIFT ?= swift
# fastalloc-server refuses to start as root unless told to. This development harness tells it
# to when you are root (a fresh VM, CI), and the server then logs a warning; deployments run it
# as its own user (deploy/) and never set this.
ifeq ($(shell id -u),0)
export FASTALLOC_ALLOW_ROOT ?= 1
endif
SANITIZER_FLAGS = --disable-xctest

.PHONY: setup run build test test-release test-tsan test-asan test-all bench-pools bench-client bench-mallocs bench bench-quick bench-servers bench-idle smoke check-metrics check-dashboard check-deploy fleet fleet-test soak fuzz load demo clean

setup:
	@scripts/setup.sh

## Build in release mode and start the echo server with its defaults (127.0.0.1:7000, one
## worker per core). Extra options: make run ARGS="--workers 1 --idle-timeout 10s". Ctrl-C drains and stops it.
run: setup
	$(SWIFT) build -c release --product fastalloc-server
	$(SWIFT) build -c release --product fastalloc-load
	exec .build/release/fastalloc-server echo $(ARGS)

## The tour of the pools and packet buffers.
demo: setup
	$(SWIFT) build -c release --product fastalloc-demo
	.build/release/fastalloc-demo

build: setup
	$(SWIFT) build

## The test suite (Swift Testing), debug build: debug-only checks (double release, bounds,
## thread confinement) are exercised too.
test: setup
	$(SWIFT) test $(SANITIZER_FLAGS)

## The suite in a release build: the optimised, inlined hot paths, and the release-only
## behaviour (a pool destroyed with handles out keeps its storage for them).
test-release: setup
	$(SWIFT) test $(SANITIZER_FLAGS) -c release --scratch-path .build-release

## The suite under ThreadSanitizer and AddressSanitizer (with LeakSanitizer), each in its own
## build folder so the three builds do not evict each other.
test-tsan: setup
	FASTALLOC_SANITIZER=thread $(SWIFT) test $(SANITIZER_FLAGS) --sanitize=thread --scratch-path .build-tsan

test-asan: setup
	FASTALLOC_SANITIZER=address $(SWIFT) test $(SANITIZER_FLAGS) --sanitize=address --scratch-path .build-asan

test-all: test test-release test-tsan test-asan

## The pool microbenchmarks, one run, as a table of ns and mallocs per pair with ratios to malloc.
bench-pools: setup
	cd Benchmarks && python3 compare.py

## fastalloc-load against the C epoll client, same C echo server, same run (ratios).
bench-client: setup
	Benchmarks/client-vs-c.sh

## Heap allocations per message in the server (echo and relay), from two runs of different
## lengths under a malloc-counting LD_PRELOAD; fails unless it is 0.
bench-mallocs: setup
	Benchmarks/server-mallocs.sh

## Everything side by side (servers and relays, allocations, idle memory, buffer size), written
## to Benchmarks/RESULTS.md with the date and the machine. Needs haproxy, nginx-light,
## libnginx-mod-stream, socat and iperf3 (Debian); the SwiftNIO peer builds from the mirror.
bench: setup
	Benchmarks/bench.sh

## One short round of every configuration: the scripts still run and every byte still matches.
bench-quick: setup
	QUICK=1 Benchmarks/bench.sh

## fastalloc-server beside the C libuv echo, a SwiftNIO echo and haproxy (relay), interleaved
## rounds, ratios and CPU per GB: make bench-servers ROUNDS=3 SECONDS=5
ROUNDS ?= 3
SECONDS ?= 5
bench-servers: setup
	Benchmarks/server-vs-peers.py --rounds $(ROUNDS) --seconds $(SECONDS)

## RSS growth of the server for 10,000 idle connections (budget: under 20 MB).
bench-idle: setup
	Benchmarks/idle-connections.py

## `make run` as a newcomer would use it: start it, drive it with fastalloc-load, SIGTERM, check the summary.
smoke: setup
	scripts/smoke.sh

## /metrics through promtool, and a real Prometheus scraping the server while load runs.
check-metrics: setup
	scripts/check-metrics.sh

## The dashboard in headless Chromium while load runs: the figures must appear on the page.
## SCREENSHOT=docs/dashboard.png make check-dashboard also saves a picture.
check-dashboard: setup
	scripts/check-dashboard.sh

## Everything in deploy/ checked offline: the Dockerfile's structure and its build command
## (static Swift runtime, libraries traced to Debian packages), systemd-analyze verify/security,
## kubernetes-validate, promtool check/test, the Grafana queries against the live /metrics.
check-deploy: setup
	@python3 -c 'import yaml, kubernetes_validate' 2>/dev/null || python3 -m pip install -q kubernetes-validate==1.31.0
	deploy/tests/check-deploy.py

## A fleet here: 3 relays behind haproxy, each in front of 2 echo upstreams, Prometheus scraping them (deploy/local/fleet.py). Ctrl-C stops it.
fleet: setup
	$(SWIFT) build -c release --product fastalloc-load
	deploy/local/fleet.py $(ARGS)

## The fleet under load with one upstream, then one relay killed mid-run (deploy/local/fleet-test.py).
fleet-test: setup
	deploy/local/fleet-test.py

## Soak with churn (scripts/soak.py): echo and relay, connections opening and closing, mixed sizes,
## a scraper; RSS, fds and buffers sampled every second. make soak DURATION=600 PLOT=soak.png
DURATION ?= 600
PLOT ?= /tmp/fastalloc-soak.png
soak: setup
	$$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 ) scripts/soak.py --duration $(DURATION) --plot $(PLOT)

## The libFuzzer fuzzers (Fuzz/run.sh): each runs FUZZ_SECONDS from its corpus in Fuzz/corpus.
FUZZ_SECONDS ?= 600
fuzz: setup
	Fuzz/run.sh $(FUZZ_SECONDS)

## Build the load client in release mode: .build/release/fastalloc-load --help
load: setup
	$(SWIFT) build -c release --product fastalloc-load

clean:
	rm -f Benchmarks/peers/uv-echo Benchmarks/peers/uv-echo-tuned Benchmarks/peers/churn Benchmarks/peers/conn-rate Benchmarks/peers/epoll-client Benchmarks/peers/libmalloc-count.so
	rm -rf .build .build-release .build-tsan .build-asan .build-static Benchmarks/.build Fuzz/.build
