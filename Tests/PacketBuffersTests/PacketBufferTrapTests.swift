import PacketBuffers
import Testing

@Suite struct PacketBufferTrapTests {
    private func expectMessage(_ result: ExitTest.Result?, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains(expected), "stderr: \(stderr.prefix(400))", sourceLocation: sourceLocation)
    }

    @Test func lengthBeyondCapacity_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 1))
            let pool = pools.makeWorkerPool()
            var buffer = pool.take()!
            buffer.length = 65
        }
        expectMessage(result, "PacketBuffer: length 65 is outside 0...64")
    }

    #if DEBUG
    @Test func reclaimTwice_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 2))
            let pool = pools.makeWorkerPool()
            let lent = pool.take()!.unsafeLend()
            let first = PacketBuffer.unsafeReclaim(lent.baseAddress!)
            let second = PacketBuffer.unsafeReclaim(lent.baseAddress!)
            first.release()
            second.release()
        }
        expectMessage(result, "reclaimed while held by a handle")
    }

    @Test func reclaimAfterRelease_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 2))
            let pool = pools.makeWorkerPool()
            let lent = pool.take()!.unsafeLend()
            PacketBuffer.unsafeReclaim(lent.baseAddress!).release()
            PacketBuffer.unsafeReclaim(lent.baseAddress!).release()
        }
        expectMessage(result, "reclaimed while already back in its pool")
    }

    @Test func reclaimForeignAddress_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let memory = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 64)
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: 256)
            _ = PacketBuffer.unsafeReclaim(memory + 128)
        }
        expectMessage(result, "is not the base address of a packet buffer")
    }

    @Test func poolsDestroyedWithBufferOut_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var pools: PacketBufferPools? = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 2))
            let lent = pools!.takeShared()!.unsafeLend()
            pools = nil
            _ = lent
        }
        expectMessage(result, "PacketBufferPools destroyed while 1 buffer(s) are out")
    }
    #endif
}
