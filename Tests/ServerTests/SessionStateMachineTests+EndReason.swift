@testable import ServerCore
import Testing

/// Why a session ended, as the state machine records it for the access log: the first terminal
/// cause (a failure, a timeout, a cut, a stop, an eviction, no upstream) wins; a FIN is the
/// reason only while no terminal cause has come; every cause is kept in `endCauses`.
extension SessionStateMachineTests {
    func causes(_ reasons: SessionEndReason...) -> SessionEndReasons {
        reasons.reduce(into: SessionEndReasons()) { $0.insert(SessionEndReasons($1)) }
    }

    @Test func endReason_echo_clientFIN() {
        var machine = openEcho(now: 7)
        #expect(machine.endReason == .unknown && machine.endCauses.isEmpty, "nothing ended yet")
        _ = machine.readEnded(on: .client)
        _ = machine.shutdownCompleted(on: .client, failed: false, now: 9)
        #expect(machine.closed(.client) == Action(ended: true))
        #expect(machine.endReason == .clientFIN)
        #expect(machine.endCauses == causes(.clientFIN))
        #expect(machine.startedAt == 7 && machine.connectedAt == nil, "echo connects nothing")
    }

    @Test func endReason_relay_firstFINWins_bothRecorded() {
        var machine = openRelay()
        _ = machine.readEnded(on: .upstream)
        _ = machine.readEnded(on: .client)
        #expect(machine.endReason == .upstreamFIN)
        #expect(machine.endCauses == causes(.clientFIN, .upstreamFIN))
    }

    @Test func endReason_relay_connectTime() {
        var machine = SessionStateMachine(mode: .relay, now: 100)
        _ = machine.start()
        _ = machine.upstreamConnected(now: 130)
        #expect(machine.startedAt == 100 && machine.connectedAt == 130)
    }

    @Test func endReason_aFailureAfterAFIN_isTheReason() {
        var machine = openEcho()
        _ = machine.bytesRead(from: .client, now: 1)
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        _ = machine.readEnded(on: .client)
        #expect(machine.endReason == .clientFIN)
        // The echo of what it sent could not be written: it reset.
        _ = machine.writeFailed(to: .client, wasQueued: true, now: 2)
        #expect(machine.endReason == .clientReset)
        #expect(machine.endCauses == causes(.clientFIN, .clientReset))
    }

    @Test func endReason_upstreamReset_wins_overTheLingeringClientsFIN() {
        var machine = openRelay()
        _ = machine.readFailed(on: .upstream, now: 2)
        #expect(machine.endReason == .upstreamReset)
        _ = machine.shutdownCompleted(on: .client, failed: false, now: 3)
        _ = machine.readEnded(on: .client)
        #expect(machine.endReason == .upstreamReset)
        #expect(machine.endCauses == causes(.clientFIN, .upstreamReset))
    }

    @Test func endReason_clientReset_inARelay() {
        var machine = openRelay()
        _ = machine.readFailed(on: .client, now: 2)
        #expect(machine.endReason == .clientReset)
    }

    @Test func endReason_lingerTimeout_isACause_afterTheFailure() {
        var machine = openRelay()
        _ = machine.readFailed(on: .upstream, now: 100)
        _ = machine.tick(now: 5_100, timeouts: timeouts) { _ in 0 }
        #expect(machine.endReason == .upstreamReset, "the failure came first")
        #expect(machine.endCauses == causes(.upstreamReset, .lingerTimeout))
    }

    @Test func endReason_idleTimeout() {
        var machine = openRelay()
        _ = machine.tick(now: 60_000, timeouts: timeouts) { _ in 0 }
        #expect(machine.endReason == .idleTimeout)
        // The sockets' ends that follow change nothing.
        _ = machine.closed(.client)
        _ = machine.closed(.upstream)
        #expect(machine.endReason == .idleTimeout && machine.endCauses == causes(.idleTimeout))
    }

    @Test func endReason_idleTimeout_afterAFIN_wins() {
        var machine = openRelay()
        _ = machine.readEnded(on: .client)  // half-closed; the upstream never answers
        _ = machine.tick(now: 60_000, timeouts: timeouts) { _ in 0 }
        #expect(machine.endReason == .idleTimeout)
    }

    @Test func endReason_writeTimeout() {
        var machine = openEcho()
        _ = machine.writeQueued(to: .client, share: 4, now: 1_000)
        _ = machine.tick(now: 31_000, timeouts: timeouts) { _ in 65_536 }
        #expect(machine.endReason == .writeTimeout)
    }

    @Test func endReason_drainCut_andStop() {
        var cut = openRelay()
        _ = cut.cut()
        #expect(cut.endReason == .drainCut)
        _ = cut.stop()
        #expect(cut.endReason == .drainCut && cut.endCauses == causes(.drainCut), "a stop of a closing session adds nothing")
        var stopped = openEcho()
        _ = stopped.stop()
        #expect(stopped.endReason == .stop)
    }

    @Test func endReason_cutOfASessionEndingByItself_keepsItsFIN() {
        var machine = openEcho()
        _ = machine.readEnded(on: .client)
        _ = machine.shutdownCompleted(on: .client, failed: false, now: 9)
        #expect(machine.cut() == .none)
        #expect(machine.endReason == .clientFIN && machine.endCauses == causes(.clientFIN))
    }

    @Test func endReason_stalledEviction() {
        var machine = openRelay()
        _ = machine.writeQueued(to: .client, share: 4, now: 20)
        _ = machine.evict(now: 100)
        #expect(machine.endReason == .stalledEviction)
    }

    @Test func endReason_noUpstream_whenEveryConnectFailed() {
        var machine = SessionStateMachine(mode: .relay, now: 0, connectRetries: 1)
        _ = machine.start()
        #expect(machine.upstreamConnectFailed(now: 5).retryConnect)
        #expect(machine.endReason == .unknown, "a retry is not an end")
        _ = machine.upstreamConnectFailed(now: 9)
        #expect(machine.endReason == .noUpstream)
        _ = machine.shutdownCompleted(on: .client, failed: false, now: 10)
        _ = machine.readEnded(on: .client)
        #expect(machine.endReason == .noUpstream && machine.endCauses == causes(.clientFIN, .noUpstream))
        #expect(machine.connectedAt == nil)
    }

    @Test func endReason_noUpstream_afterAConnectTimeout_orWithNoneLeft() {
        var timedOut = SessionStateMachine(mode: .relay, now: 0)
        _ = timedOut.start()
        _ = timedOut.tick(now: 5_000, timeouts: timeouts) { _ in 0 }
        #expect(timedOut.endReason == .noUpstream)
        var noneLeft = SessionStateMachine(mode: .relay, now: 0, connectRetries: 2)
        _ = noneLeft.start()
        _ = noneLeft.upstreamConnectGaveUp(now: 1)
        #expect(noneLeft.endReason == .noUpstream)
    }

    @Test func endReason_names_areTheAccessLogs() {
        #expect(SessionEndReason.allCases.map(\.description) == [
            "unknown", "client_fin", "upstream_fin", "client_reset", "upstream_reset", "idle_timeout", "write_timeout",
            "linger_timeout", "drain_cut", "stop", "stalled_eviction", "no_upstream", "client_limit", "connection_limit",
            "proxy_header",
        ])
        #expect(SessionEndReason.allCases.count <= 16, "a SessionEndReasons set holds them in 16 bits")
    }
}
