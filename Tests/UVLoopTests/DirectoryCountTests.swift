import Foundation
import Testing
import UVLoop

/// `countDirectoryEntries` reads each record's name where it lies: copying a whole `dirent`
/// read past the end of readdir's buffer on a large directory (AddressSanitizer caught it in
/// the stats endpoint's `process_open_fds` with 10,000 connections open).
@Suite struct DirectoryCountTests {
    @Test func countsEveryEntry_ofALargeDirectory_withoutReadingPastARecord() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fastalloc-dir-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Names of every length, so that records of every size end readdir's buffers.
        for index in 0..<3000 {
            let name = "f\(index)-" + String(repeating: "x", count: index % 200)
            FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: nil)
        }
        FileManager.default.createFile(atPath: directory.appendingPathComponent(".hidden").path, contents: nil)
        #expect(countDirectoryEntries(directory.path) == 3000, "dot entries (., .., .hidden) are not counted")
        #expect(countDirectoryEntries(directory.path + "/missing") == nil)
    }
}
