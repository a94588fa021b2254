import FastAlloc
import PacketBuffers
import ServerCore

extension Metric {
    /// Every metric the endpoint reports, once each, in the order `/metrics` lists them; the
    /// `/stats` document places each sample where its helper says (see MetricInputs' helpers).
    /// Names are in base units and counters end in `_total`. A field added to the statistics
    /// needs a line here: MetricsTests fails until every field is rendered in both.
    package static let all: [Metric] = [
        // The packet-buffer pools.
        Metric(.gauge, "fastalloc_buffer_size_bytes", "Size of every packet buffer in bytes.") { f in
            f.server("buffer_size_bytes", value: f.stats.buffers.bufferSize)
        },
        Metric(.gauge, "fastalloc_buffers_capacity", "Packet buffers a pool holds.") { f in
            f.localPools("capacity", \.capacity) + f.overflowPool("capacity", \.capacity)
        },
        // A local pool never grows: its maximum is its capacity.
        Metric(.gauge, "fastalloc_buffers_max_capacity", "Packet buffers a pool may grow to.") { f in
            f.localPools("max_capacity", \.capacity) + f.overflowPool("max_capacity", \.maxCapacity)
        },
        Metric(.gauge, "fastalloc_buffers_in_use", "Packet buffers taken and not yet returned.") { f in
            f.localPools("in_use", \.inUse) + f.overflowPool("in_use", \.inUse)
        },
        Metric(.gauge, "fastalloc_buffers_high_water", "Most packet buffers in use at once.") { f in
            f.localPools("high_water", \.highWater) + f.overflowPool("high_water", \.highWater)
        },
        Metric(.counter, "fastalloc_buffers_taken_total", "Packet buffers a pool handed out.") { f in
            f.localPools("taken", \.takes) + f.overflowPool("draws", \.draws)
        },
        Metric(.counter, "fastalloc_buffers_take_failures_total",
               "Takes a pool could not serve: it was at its maximum with no buffer free (per worker: fastalloc_overflow_draw_failures_total).") { f in
            f.overflowPool("draw_failures", \.failedDraws)
        },
        Metric(.counter, "fastalloc_buffers_remote_returns_total", "Buffers released on another thread into a local pool's return ring.") { f in
            f.localPools("remote_returns", \.remoteReturns)
        },
        Metric(.gauge, "fastalloc_buffers_pending_returns", "Buffers released on another thread that the pool's worker has not taken back yet.") { f in
            f.localPools("pending_returns", \.pendingReturns)
        },
        Metric(.counter, "fastalloc_overflow_draws_total", "Buffers a worker drew from the shared overflow pool.") { f in
            f.workerBuffers("overflow_draws", \.overflowDraws)
        },
        Metric(.counter, "fastalloc_overflow_draw_failures_total", "Draws that found the overflow pool at its maximum.") { f in
            f.workerBuffers("overflow_draw_failures", \.failedDraws)
        },
        Metric(.counter, "fastalloc_pool_growth_events_total", "Times a pool grew.") { f in
            f.overflowPool("growth_events", \.growthEvents)
        },
        Metric(.counter, "fastalloc_lock_acquisitions_total", "Times the lock was taken.") { f in
            f.overflowLock("acquisitions", \.acquisitions)
        },
        Metric(.counter, "fastalloc_lock_contended_total", "Acquisitions that found the lock busy and waited.") { f in
            f.overflowLock("contended", \.contended)
        },
        Metric(.counter, "fastalloc_lock_wait_seconds_total", "Time spent waiting for the lock.") { f in
            f.overflowLock("wait_seconds") { Double($0.waitNanoseconds) / 1e9 }
        },
        // Workers: the data path.
        Metric(.counter, "fastalloc_backpressure_pauses_total",
               "Times a write queue passed the high watermark and its source stopped reading.") { f in
            f.workers("backpressure_pauses", \.backpressurePauses)
        },
        Metric(.counter, "fastalloc_buffer_waits_total", "Reads that found no buffer and waited for one.") { f in
            f.workers("buffer_waits", \.bufferWaits)
        },
        Metric(.counter, "fastalloc_bytes_received_total", "Bytes read and forwarded (from clients and upstreams).") { f in
            f.workers("bytes_received", \.bytesReceived)
        },
        Metric(.counter, "fastalloc_bytes_sent_total", "Bytes written (to clients and upstreams).") { f in
            f.workers("bytes_sent", \.bytesSent)
        },
        // Workers: connections.
        Metric(.gauge, "fastalloc_connections_active", "Client connections open now.") { f in
            f.workers("connections_active", \.connectionsActive)
        },
        Metric(.counter, "fastalloc_connections_accepted_total", "Client connections accepted.") { f in
            f.workers("connections_accepted", \.connectionsAccepted)
        },
        Metric(.counter, "fastalloc_connections_closed_total", "Accepted client connections that have since closed, for any reason.") { f in
            f.workers("connections_closed", \.connectionsClosed)
        },
        Metric(.counter, "fastalloc_connections_rejected_total", "Connections closed at once because of --max-connections.") { f in
            f.server("totals", "connections_rejected", value: f.stats.connectionsRejected)
        },
        Metric(.counter, "fastalloc_accept_errors_total",
               "accept() failures by reason: out of descriptors (process or system), out of memory, other; the listener keeps listening.") { f in
            f.workers("accept_errors", by: "reason", [
                "process_file_limit": { $0.acceptErrors.processFileLimit },
                "system_file_limit": { $0.acceptErrors.systemFileLimit },
                "memory": { $0.acceptErrors.memory },
                "other": { $0.acceptErrors.other },
            ])
        },
        // Workers: how connections fail.
        Metric(.counter, "fastalloc_client_resets_total", "Client connections that failed mid-stream (reset, broken pipe, keepalive timeout).") { f in
            f.workers("client_resets", \.clientResets)
        },
        Metric(.counter, "fastalloc_idle_timeouts_total", "Connections closed by the idle timeout.") { f in
            f.workers("idle_timeouts", \.idleTimeouts)
        },
        Metric(.counter, "fastalloc_write_timeouts_total",
               "Connections reset because a queued write made no progress for --write-timeout (a peer that stopped reading).") { f in
            f.workers("write_timeouts", \.writeTimeouts)
        },
        Metric(.counter, "fastalloc_stalled_evictions_total",
               "Connections reset because the buffer pools ran out while a connection holding none needed one (the longest-stalled first).") { f in
            f.workers("stalled_evictions", \.stalledEvictions)
        },
        Metric(.counter, "fastalloc_linger_timeouts_total",
               "Lingering closes after a failure that --linger-timeout ended (the peer did not close in time).") { f in
            f.workers("linger_timeouts", \.lingerTimeouts)
        },
        Metric(.counter, "fastalloc_upstream_connect_failures_total", "Upstream connections refused or timed out.") { f in
            f.workers("upstream_connect_failures", \.upstreamConnectFailures)
        },
        Metric(.counter, "fastalloc_upstream_unavailable_total",
               "Client connections closed because no upstream could be connected (every try failed).") { f in
            f.workers("upstream_unavailable", \.upstreamUnavailable)
        },
        Metric(.counter, "fastalloc_upstream_resets_total", "Upstream connections that failed mid-stream.") { f in
            f.workers("upstream_resets", \.upstreamResets)
        },
        // The relay's upstreams: label `upstream` (the address), one series each; none in echo
        // mode. The failed connects per upstream are `fastalloc_upstream_member_connect_failures_total`:
        // `fastalloc_upstream_connect_failures_total` is the older per-worker family (alerts and
        // dashboards sum it), and a family keeps one set of labels.
        Metric(.counter, "fastalloc_upstream_resolve_failures_total",
               "Lookups of --upstream names that failed; each kept its last good addresses.") { f in
            f.server("totals", "upstream_resolve_failures", value: f.stats.upstreamResolveFailures)
        },
        Metric(.gauge, "fastalloc_upstream_up", "1 while the upstream is up (the balancer picks it), 0 while it is down.") { f in
            f.upstreams("up", \.up)
        },
        Metric(.gauge, "fastalloc_upstream_weight",
               "The upstream's weight (--upstream ... weight=N); labels: the --upstream entry it came from, and whether it is a backup.") { f in
            f.upstreams("weight", labelled: ["entry": \.entry, "backup": { $0.backup ? "true" : "false" }], \.weight)
        },
        Metric(.gauge, "fastalloc_upstream_connections_active", "Connections to the upstream now, connecting or open (all workers).") { f in
            f.upstreams("connections_active", \.active)
        },
        Metric(.counter, "fastalloc_upstream_selected_total", "Times the balancer picked the upstream for a client's connect.") { f in
            f.upstreams("selected", \.selected)
        },
        Metric(.counter, "fastalloc_upstream_member_connect_failures_total",
               "Failed connects to the upstream by reason (per worker: fastalloc_upstream_connect_failures_total).") { f in
            f.upstreams("connect_failures", by: "reason", [
                "refused": { $0.connectRefused },
                "timeout": { $0.connectTimedOut },
                "other": { $0.connectOther },
            ])
        },
        Metric(.counter, "fastalloc_upstream_health_checks_total", "Active health checks of the upstream by result.") { f in
            f.upstreams("health_checks", by: "result", [
                "passed": { $0.checksPassed },
                "failed": { $0.checksFailed },
            ])
        },
        Metric(.counter, "fastalloc_upstream_state_changes_total", "Times the upstream was marked down, and up again.") { f in
            f.upstreams("state_changes", by: "to", [
                "down": { $0.wentDown },
                "up": { $0.cameUp },
            ])
        },
        Metric(.histogram, "fastalloc_upstream_connect_seconds", "Time a successful connect to the upstream took.") { f in
            f.upstreamHistograms("connect_seconds", \.connectTimes)
        },
        // Per-client limits and the access log.
        Metric(.counter, "fastalloc_client_limit_rejections_total",
               "Connections closed at accept because their client IP address had --max-connections-per-client open.") { f in
            f.workers("client_limit_rejections", \.clientLimitRejections)
        },
        Metric(.counter, "fastalloc_client_limit_table_full_total",
               "Connections admitted without a per-client count because the per-client table had no room for their address.") { f in
            f.workers("client_limit_table_full", \.clientLimitTableFull)
        },
        // PROXY protocol.
        Metric(.counter, "fastalloc_proxy_protocol_headers_total",
               "PROXY protocol headers written to upstreams (sent) and accepted from clients (received, --accept-proxy).") { f in
            f.workers("proxy_protocol_headers", by: "direction", [
                "sent": { $0.proxyHeadersSent },
                "received": { $0.proxyHeadersReceived },
            ])
        },
        Metric(.counter, "fastalloc_proxy_protocol_errors_total",
               "Client connections closed, with nothing forwarded, for their PROXY header: none within --proxy-protocol-timeout, "
                   + "an address outside --trusted-proxies, bytes that are not a header, or a malformed one (by what was wrong).") { f in
            f.workers("proxy_protocol_errors", by: "reason", ProxyProtocolFailure.allCases.map { reason in
                (reason.rawValue, { (worker: WorkerStatistics) in worker.proxyProtocolErrors[reason] })
            })
        },
        Metric(.counter, "fastalloc_access_log_dropped_total",
               "Access log lines lost because the worker's ring was full (the writer fell behind; the worker never waits).") { f in
            f.workers("access_log_dropped", \.accessLogDropped)
        },
        // Drain (SIGTERM/SIGINT).
        // 1 in both later phases, draining and stopping (as /readyz's 503); a stop of the process
        // itself never shows here (a second signal exits).
        // Reloads (SIGHUP).
        Metric(.counter, "fastalloc_config_reloads_total", "Reloads (SIGHUP) applied, to new connections (one that changed nothing included).") { f in
            f.server("config", "reloads", value: f.stats.reloads.reloads)
        },
        Metric(.counter, "fastalloc_config_reload_failures_total",
               "Reloads refused: a config file or value that does not validate, or a change that needs a restart; the running configuration stayed.") { f in
            f.server("config", "reload_failures", value: f.stats.reloads.failures)
        },
        Metric(.gauge, "fastalloc_config_generation", "The configuration's generation: 1 at start, one more for each reload that changed something.") { f in
            f.server("config", "generation", value: f.stats.reloads.generation)
        },
        Metric(.gauge, "fastalloc_config_last_reload_timestamp_seconds",
               "When the configuration in effect was loaded (the start, or the last reload applied), seconds since the Unix epoch.") { f in
            f.server("config", "last_reload_timestamp_seconds", value: f.stats.reloads.loadedAt)
        },
        // Binary upgrades (SIGUSR2).
        Metric(.counter, "fastalloc_upgrades_total",
               "Binary upgrades (SIGUSR2) by result: handed_over (the new process took the listening sockets; this one drains), "
                   + "failed (the new process did not start or say it was ready; this one kept serving).") { f in
            [("handed_over", f.stats.upgrades.handedOver), ("failed", f.stats.upgrades.failures)].map { result, value in
                MetricSample(labels: [MetricLabel(name: "result", value: result)], value: .unsigned(value), place: .root(["upgrades", result]))
            }
        },
        Metric(.gauge, "fastalloc_upgrade_inherited", "1 when this process took its listening sockets from the process it replaced (an upgrade), else 0.") { f in
            f.server("upgrades", "inherited", value: f.stats.upgrades.inherited)
        },
        Metric(.gauge, "fastalloc_draining", "1 while the server drains (after SIGTERM), else 0.") { f in
            f.server("draining", value: f.stats.shutdownPhase != .serving)
        },
        Metric(.counter, "fastalloc_drain_connections_total",
               "Connections open during a drain by how they ended: completed by themselves, or cut (reset on both sides) at --drain-timeout.") { f in
            f.workers("drain_connections", by: "outcome", [
                "completed": { $0.drainCompleted },
                "cut": { $0.drainCut },
            ])
        },
        // The process (the standard names).
        Metric(.gauge, "process_resident_memory_bytes", "Resident memory size in bytes.") { f in
            f.process("resident_memory_bytes", \.residentMemoryBytes)
        },
        Metric(.counter, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.") { f in
            f.process("cpu_seconds", \.cpuSeconds)
        },
        Metric(.gauge, "process_open_fds", "Number of open file descriptors.") { f in
            f.process("open_fds", \.openFileDescriptors)
        },
        Metric(.gauge, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.") { f in
            f.process("start_time_seconds", \.startTimeSeconds)
        },
    ]
}
