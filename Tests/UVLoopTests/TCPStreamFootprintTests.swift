import Testing
import UVLoop

/// glibc's `malloc_usable_size` (malloc.h, not in the Glibc module): the bytes of the chunk
/// `malloc` gave for `pointer`.
@_silgen_name("malloc_usable_size")
private func mallocUsableSize(_ pointer: UnsafeMutableRawPointer?) -> Int

/// Every socket of every idle connection is a `TCPStream` (and its `uv_tcp_t`, which libuv
/// sizes). The stream's own fields take 80 bytes, a malloc chunk of 96: its first two fill the
/// padding after `Handle`'s flags. Before, they took 89 and a chunk of 112 (a word-sized depth
/// counter, the connect flag last), on every connection: that layout fails this test.
@Suite struct TCPStreamFootprintTests {
    @Test func aStream_fitsItsAllocation() throws {
        let loop = try EventLoop()
        let stream = try TCPStream(loop: loop)
        // Safe: the pointer is the live object's start (Swift objects are malloc'd), and it is
        // only measured, not read.
        let bytes = mallocUsableSize(UnsafeMutableRawPointer(Unmanaged.passUnretained(stream).toOpaque()))
        #expect(bytes <= 88)
        stream.close()
        while !stream.isClosed { loop.runOnce() }
    }
}
