import PacketBuffers
import Testing

/// The packet-buffer example of docs/LIBRARY.md ("Packet buffers"), compiled and run.
@Suite struct PacketBufferReadmeExampleTests {
    @Test func example() throws {
        let buffers = try PacketBufferPools(config: PacketBufferConfig(
            bufferSize: 64 * 1024, localBuffers: 128,
            overflowInitial: 64, overflowGrowth: .exponential(2), overflowMax: 1024))
        let pool = buffers.makeWorkerPool()
        guard var buffer = pool.take() else {
            Issue.record("no buffer")
            return
        }
        buffer.withUnsafeMutableBytes { bytes in bytes[0] = 1 }
        buffer.length = 1200
        let raw = buffer.unsafeLend()
        let again = PacketBuffer.unsafeReclaim(raw.baseAddress!)
        #expect(again.length == 1200)
        again.release()
        let stats = buffers.statistics()
        #expect(stats.workers[0].inUse == 0 && stats.overflow.draws == 0 && stats.totalInUse == 0)
        #expect(stats.overflow.lock.contended == 0)
    }
}
