@testable import ServerCore
import Testing

/// Every transition of the session's state machine, with no socket: events in, actions out.
@Suite struct SessionStateMachineTests {
    typealias Action = SessionAction
    let timeouts = SessionTimeouts(idle: 60_000, connect: 5_000, write: 30_000, linger: 5_000)

    /// An echo session that is open and reading.
    func openEcho(now: UInt64 = 0) -> SessionStateMachine {
        var machine = SessionStateMachine(mode: .echo, now: now)
        #expect(machine.start() == Action(startReading: .client))
        return machine
    }

    /// A relay session whose upstream has connected; both sides reading.
    func openRelay(now: UInt64 = 0) -> SessionStateMachine {
        var machine = SessionStateMachine(mode: .relay, now: now)
        #expect(machine.start() == .none, "relay: nothing is read until the upstream connects")
        #expect(machine.upstreamConnected(now: now) == Action(startReading: .both, ready: .upstream))
        return machine
    }

    // MARK: Starting

    @Test func relay_readsNothingUntilTheUpstreamConnects() {
        var machine = SessionStateMachine(mode: .relay, now: 10)
        #expect(machine.phase == .connecting(since: 10))
        #expect(machine.start() == .none)
        #expect(machine.client.reading == false && machine.upstream.reading == false)
        #expect(machine.upstreamConnected(now: 20) == Action(startReading: .both, ready: .upstream))
        #expect(machine.phase == .open)
        #expect(machine.upstreamConnected(now: 30) == .none, "a second connect report changes nothing")
    }

    @Test func relay_connectRefused_closesUpstream_clientEndsCleanly() {
        var machine = SessionStateMachine(mode: .relay, now: 0)
        _ = machine.start()
        let action = machine.upstreamConnectFailed(now: 5)
        #expect(action == Action(startReading: .client, shutdown: .client, close: .upstream, count: .upstreamConnectFailure))
        #expect(machine.phase == .lingering(since: 5))
        #expect(machine.client.input == .discarding, "the client's input is drained, not forwarded")
        #expect(machine.bytesRead(from: .client, now: 6) == nil, "nothing is forwarded to a failed upstream")
        // The client's FIN goes out, then its EOF arrives: it closes; then the session ends.
        #expect(machine.shutdownCompleted(on: .client, failed: false, now: 9) == .none)
        #expect(machine.readEnded(on: .client) == Action(close: .client))
        #expect(machine.closed(.upstream) == .none)
        #expect(machine.closed(.client) == Action(ended: true))
        #expect(machine.phase == .ended)
    }

    @Test func relay_connectTimeout_isAConnectFailure() {
        var machine = SessionStateMachine(mode: .relay, now: 0)
        _ = machine.start()
        #expect(machine.tick(now: 4_999, timeouts: timeouts) { _ in 0 } == .none)
        let action = machine.tick(now: 5_000, timeouts: timeouts) { _ in 0 }
        #expect(action.count == .upstreamConnectFailure)
        #expect(action.close == .upstream && action.shutdown == .client)
        #expect(machine.upstreamConnected(now: 5_001) == .none, "a late connect is ignored")
    }

    // MARK: Forwarding

    @Test func echo_forwardsToItself_relayToTheOtherSide() {
        var echo = openEcho()
        #expect(echo.bytesRead(from: .client, now: 1) == .client)
        var relay = openRelay()
        #expect(relay.bytesRead(from: .client, now: 1) == .upstream)
        #expect(relay.bytesRead(from: .upstream, now: 1) == .client)
        #expect(relay.lastActivity == 1)
    }

    @Test func backpressure_pausesTheSourceAtItsShare_resumesAtTheLowWatermark() {
        var machine = openRelay()
        // Writes to the client queue up; the upstream (their source) pauses at the share.
        #expect(machine.writeQueued(to: .client, share: 3, now: 1) == .none)
        #expect(machine.writeQueued(to: .client, share: 3, now: 1) == .none)
        #expect(machine.writeQueued(to: .client, share: 3, now: 1) == Action(stopReading: .upstream, count: .backpressurePause))
        #expect(machine.upstream.reading == false)
        #expect(machine.client.reading == true, "the other direction goes on")
        // Completions: at 2 and 1 queued (low watermark 1, paused at 3) it resumes at 1.
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 1, now: 2) == .none)
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 1, now: 3) == Action(startReading: .upstream))
        #expect(machine.lastActivity == 3, "a reader taking bytes is not idle")
    }

    @Test func share_ofOne_pausesAtTheFirstQueuedWrite_andResumesOnlyWhenEmpty() {
        var machine = openEcho()
        #expect(machine.writeQueued(to: .client, share: 1, now: 1) == Action(stopReading: .client, count: .backpressurePause))
        // Low watermark 1 would resume at once; paused at 1, it waits for an empty queue.
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 1, now: 2) == Action(startReading: .client))
        #expect(machine.client.queued == 0)
    }

    @Test func share_zeroOrNegative_countsAsOne() {
        var machine = openEcho()
        #expect(machine.writeQueued(to: .client, share: 0, now: 1).stopReading == .client)
    }

    @Test func declinedBuffer_holdsBackAHolder_untilOneOfItsOwnWritesGoesOut() {
        var machine = openEcho()
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        // The pools are down to the reserve: this connection holds 2 buffers, so it waits.
        #expect(machine.declinedBuffer(on: .client) == Action(stopReading: .client))
        #expect(machine.client.heldBack)
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 0, now: 2) == Action(startReading: .client))
    }

    @Test func declinedBuffer_inRelay_eitherDirectionsHoldingCounts() {
        var machine = openRelay()
        // The client-to-upstream direction holds a buffer; the other direction is refused one.
        _ = machine.writeQueued(to: .upstream, share: 4, now: 1)
        #expect(machine.declinedBuffer(on: .upstream) == Action(stopReading: .upstream))
        // A write of the session's other direction completing lets it try again.
        #expect(machine.writeCompleted(to: .upstream, cancelled: false, lowWatermark: 0, now: 2) == Action(startReading: .upstream))
    }

    @Test func declinedBuffer_withNothingQueued_waitsForABuffer() {
        var machine = openEcho()
        #expect(machine.declinedBuffer(on: .client) == Action(stopReading: .client, waitForBuffer: .client))
    }

    @Test func outOfBuffers_waits_thenResumesWhenWoken() {
        var machine = openRelay()
        #expect(machine.outOfBuffers(on: .upstream) == Action(stopReading: .upstream, waitForBuffer: .upstream))
        #expect(machine.outOfBuffers(on: .upstream) == .none, "already waiting: not queued twice")
        #expect(machine.buffersAvailable(for: .upstream) == Action(startReading: .upstream))
        #expect(machine.buffersAvailable(for: .upstream) == .none, "a stale wake-up changes nothing")
    }

    @Test func bufferWaitAndBackpressure_bothMustClear() {
        var machine = openEcho()
        _ = machine.outOfBuffers(on: .client)
        _ = machine.writeQueued(to: .client, share: 1, now: 1)  // paused as well
        #expect(machine.buffersAvailable(for: .client) == .none, "still paused by its queue")
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 0, now: 2) == Action(startReading: .client))
    }

    // MARK: Half-close and normal ends

    @Test func echo_clientEOF_shutsDownAfterTheQueue_thenCloses() {
        var machine = openEcho()
        _ = machine.writeQueued(to: .client, share: 4, now: 1)  // an echo still on its way
        #expect(machine.readEnded(on: .client) == Action(stopReading: .client, shutdown: .client))
        #expect(machine.bytesRead(from: .client, now: 1) == nil)
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 0, now: 2) == .none)
        #expect(machine.shutdownCompleted(on: .client, failed: false, now: 9) == Action(close: .client))
        #expect(machine.closed(.client) == Action(ended: true))
    }

    @Test func echo_clientEOF_withNothingQueued_closesAtOnce() {
        // Its end of stream read, nothing queued to it: close() sends the FIN (no shutdown first).
        var machine = openEcho()
        #expect(machine.readEnded(on: .client) == Action(close: .client))
        #expect(machine.phase == .closing)
        #expect(machine.closed(.client) == Action(ended: true))
    }

    @Test func relay_halfClose_eachDirectionEndsOnItsOwn() {
        var machine = openRelay()
        // The client finishes sending: the upstream gets a FIN; the upstream may still answer.
        #expect(machine.readEnded(on: .client) == Action(stopReading: .client, shutdown: .upstream))
        #expect(machine.bytesRead(from: .upstream, now: 1) == .client, "the other direction still flows")
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        #expect(machine.shutdownCompleted(on: .upstream, failed: false, now: 9) == .none)
        // The upstream finishes: the client gets its FIN after its queue; the upstream socket is
        // done both ways. (A closing handle stops reading by itself: no separate stop.)
        #expect(machine.readEnded(on: .upstream) == Action(shutdown: .client, close: .upstream))
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 0, now: 10) == .none)
        #expect(machine.shutdownCompleted(on: .client, failed: false, now: 11) == Action(close: .client))
        #expect(machine.closed(.upstream) == .none)
        #expect(machine.closed(.client) == Action(ended: true))
    }

    @Test func relay_bothFINs_nothingQueued_closesBoth() {
        // The usual end of a request and its answer: the second FIN finds the first side with
        // its input ended and nothing queued to it, so both sockets close at once.
        var machine = openRelay()
        #expect(machine.readEnded(on: .client) == Action(stopReading: .client, shutdown: .upstream))
        #expect(machine.shutdownCompleted(on: .upstream, failed: false, now: 9) == .none)
        #expect(machine.readEnded(on: .upstream) == Action(close: .both))
        #expect(machine.closed(.upstream) == .none)
        #expect(machine.closed(.client) == Action(ended: true))
        #expect(machine.endReason == .clientFIN)
    }

    @Test func shutdownFailure_closesThatSide() {
        var machine = openEcho()
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        _ = machine.readEnded(on: .client)
        #expect(machine.shutdownCompleted(on: .client, failed: true, now: 9) == Action(close: .client, count: .clientFailure))
    }

    @Test func relay_shutdownFailure_isThatSidesFailure_theOtherLingers() {
        // The upstream went away while it was not being read; the client's EOF asks for a FIN
        // to it, which fails. The client must still get its own FIN (it used to wait for the
        // idle timeout, or for ever with --idle-timeout 0): after its queue, or at once.
        for queuedToClient in [true, false] {
            var machine = openRelay()
            _ = machine.outOfBuffers(on: .upstream)  // not reading the upstream
            if queuedToClient { _ = machine.writeQueued(to: .client, share: 4, now: 1) }
            #expect(machine.readEnded(on: .client) == Action(stopReading: .client, shutdown: .upstream))
            let action = machine.shutdownCompleted(on: .upstream, failed: true, now: 9)
            if queuedToClient {
                #expect(action == Action(shutdown: .client, close: .upstream, count: .upstreamFailure))
                #expect(machine.phase == .lingering(since: 9))
                #expect(machine.shutdownCompleted(on: .client, failed: false, now: 10) == Action(close: .client))
            } else {
                #expect(action == Action(close: .both, count: .upstreamFailure))
                #expect(machine.phase == .closing)
            }
        }
    }

    @Test func writeFailure_ofAQueuedWrite_countsDown_andFails() {
        var machine = openRelay()
        _ = machine.writeQueued(to: .client, share: 1, now: 1)  // the upstream pauses
        let action = machine.writeFailed(to: .client, wasQueued: true, now: 2)
        #expect(machine.client.queued == 0)
        #expect(action == Action(startReading: .upstream, shutdown: .upstream, close: .client, count: .clientFailure),
                "one transition: the paused upstream lingers, reading to discard")
        #expect(machine.upstream.reading && machine.upstream.input == .discarding)
    }

    @Test func evict_resetsTheLongestStalledSide() {
        var machine = openRelay()
        #expect(machine.stalledSince == nil)
        _ = machine.writeQueued(to: .upstream, share: 4, now: 50)
        _ = machine.writeQueued(to: .client, share: 4, now: 20)
        #expect(machine.stalledSince == 20)
        #expect(machine.evict(now: 100) == Action(shutdown: .upstream, reset: .client, count: .stalledEviction))
        #expect(machine.stalledSince == 50 || machine.stalledSince == nil)
    }

    @Test func evict_withNothingQueued_doesNothing() {
        var machine = openEcho()
        #expect(machine.evict(now: 100) == .none)
    }

    // MARK: Failures

    @Test func echo_clientReset_closes_andCounts() {
        var machine = openEcho()
        #expect(machine.readFailed(on: .client, now: 1) == Action(close: .client, count: .clientFailure))
        #expect(machine.readFailed(on: .client, now: 1) == .none, "a second failure report is ignored")
        #expect(machine.phase == .closing)
    }

    @Test func relay_upstreamReset_clientGetsWhatItIsOwed_thenFIN_andLingers() {
        var machine = openRelay()
        _ = machine.writeQueued(to: .client, share: 4, now: 1)  // bytes owed to the client
        let action = machine.readFailed(on: .upstream, now: 2)
        #expect(action == Action(shutdown: .client, close: .upstream, count: .upstreamFailure))
        #expect(machine.phase == .lingering(since: 2))
        #expect(machine.client.input == .discarding && machine.client.reading, "reads go on, dropped")
        #expect(machine.bytesRead(from: .client, now: 3) == nil)
        // The queued write completes, the FIN goes out, the client closes its end: done.
        #expect(machine.writeCompleted(to: .client, cancelled: false, lowWatermark: 1, now: 4) == .none)
        #expect(machine.shutdownCompleted(on: .client, failed: false, now: 9) == .none)
        #expect(machine.readEnded(on: .client) == Action(close: .client))
    }

    @Test func relay_clientWriteFails_upstreamLingers() {
        var machine = openRelay()
        let action = machine.writeFailed(to: .client, wasQueued: false, now: 1)
        #expect(action == Action(shutdown: .upstream, close: .client, count: .clientFailure))
    }

    @Test func cancelledWrites_afterAClose_onlyCountDown() {
        var machine = openEcho()
        _ = machine.bytesRead(from: .client, now: 1)
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        _ = machine.writeQueued(to: .client, share: 4, now: 1)
        _ = machine.readFailed(on: .client, now: 2)
        #expect(machine.writeCompleted(to: .client, cancelled: true, lowWatermark: 1, now: 3) == .none)
        #expect(machine.writeCompleted(to: .client, cancelled: true, lowWatermark: 1, now: 3) == .none)
        #expect(machine.client.queued == 0)
        #expect(machine.lastActivity == 1, "a cancelled write is not activity")
    }

    // MARK: Time

    @Test func idleTimeout_closesEverySide() {
        var machine = openRelay()
        #expect(machine.tick(now: 59_999, timeouts: timeouts) { _ in 0 } == .none)
        #expect(machine.tick(now: 60_000, timeouts: timeouts) { _ in 0 } == Action(close: .both, count: .idleTimeout))
        #expect(machine.tick(now: 70_000, timeouts: timeouts) { _ in 0 } == .none, "closing: nothing more to time out")
    }

    @Test func idleTimeoutZero_neverCloses() {
        var machine = openEcho()
        let none = SessionTimeouts(idle: 0, connect: timeouts.connect, write: timeouts.write, linger: timeouts.linger)
        #expect(machine.tick(now: .max, timeouts: none) { _ in 0 } == .none)
    }

    @Test func writeStall_resetsTheStalledSide_andCounts() {
        var machine = openEcho()
        _ = machine.writeQueued(to: .client, share: 4, now: 1_000)
        #expect(machine.tick(now: 20_000, timeouts: timeouts) { _ in 65_536 } == .none)
        #expect(machine.tick(now: 31_000, timeouts: timeouts) { _ in 65_536 } == Action(reset: .client, count: .writeTimeout))
    }

    @Test func writeStall_progressInsideABuffer_isProgress() {
        var machine = openEcho()
        _ = machine.writeQueued(to: .client, share: 4, now: 0)
        _ = machine.tick(now: 10_000, timeouts: timeouts) { _ in 60_000 }
        _ = machine.tick(now: 20_000, timeouts: timeouts) { _ in 50_000 }  // the reader took 10 kB
        #expect(machine.tick(now: 45_000, timeouts: timeouts) { _ in 50_000 } == .none, "30 s from the progress at 20 s, not from 0")
        #expect(machine.tick(now: 50_000, timeouts: timeouts) { _ in 50_000 }.count == .writeTimeout)
    }

    @Test func writeStall_inRelay_resetsTheStalledClient_upstreamLingers() {
        var machine = openRelay()
        _ = machine.writeQueued(to: .client, share: 4, now: 0)
        let action = machine.tick(now: 30_000, timeouts: timeouts) { _ in 1 }
        #expect(action == Action(shutdown: .upstream, reset: .client, count: .writeTimeout))
        #expect(machine.phase == .lingering(since: 30_000))
    }

    @Test func lingering_hasItsOwnDeadline_evenWithNoIdleTimeout() {
        var machine = openRelay()
        _ = machine.readFailed(on: .upstream, now: 100)
        let noIdle = SessionTimeouts(idle: 0, connect: 5_000, write: 0, linger: 5_000)
        #expect(machine.tick(now: 5_099, timeouts: noIdle) { _ in 0 } == .none)
        #expect(machine.tick(now: 5_100, timeouts: noIdle) { _ in 0 } == Action(close: .client, count: .lingerTimeout))
    }

    // MARK: Drain and stop

    @Test func drain_cut_resetsBothSides_andCountsOnce() {
        var machine = openRelay()
        #expect(machine.cut() == Action(reset: .both, count: .drainCut))
        #expect(machine.wasCut)
        #expect(machine.cut() == .none, "already closing")
        #expect(machine.closed(.client) == .none)
        #expect(machine.closed(.upstream) == Action(ended: true))
    }

    @Test func drain_cut_whileConnecting_resetsBoth() {
        var machine = SessionStateMachine(mode: .relay, now: 0)
        _ = machine.start()
        #expect(machine.cut() == Action(reset: .both, count: .drainCut))
        #expect(machine.upstreamConnected(now: 1) == .none)
    }

    @Test func drain_cut_ofASessionEndingByItself_isNotACut() {
        var machine = openEcho()
        _ = machine.readEnded(on: .client)
        _ = machine.shutdownCompleted(on: .client, failed: false, now: 9)  // closing by itself
        #expect(machine.cut() == .none)
        #expect(!machine.wasCut)
    }

    @Test func drain_cut_ofALingeringSurvivor_resetsIt() {
        var machine = openRelay()
        _ = machine.readFailed(on: .upstream, now: 1)
        #expect(machine.cut() == Action(reset: .client, count: .drainCut))
    }

    @Test func stop_resetsEverythingOpen() {
        var machine = openRelay()
        #expect(machine.stop() == Action(reset: .both))
        #expect(machine.stop() == .none)
    }

    @Test func closedDuringConnect_endsTheClientCleanly() {
        var machine = SessionStateMachine(mode: .relay, now: 0)
        _ = machine.start()
        // The upstream handle closed before it connected.
        let action = machine.closed(.upstream)
        #expect(action.count == .upstreamConnectFailure)
        #expect(action.shutdown == .client)
    }
}
