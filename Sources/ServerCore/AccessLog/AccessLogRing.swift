import Synchronization

/// A bounded single-producer, single-consumer ring of access log records: one per worker (the
/// producer, once per ended connection) and read by the access log's writer thread (the
/// consumer). A push is a copy into a preallocated slot and two atomic accesses (an acquire
/// load of the reader's index, a release store of the writer's); it never blocks and never
/// allocates. A full ring refuses the record: the worker counts it as dropped.
final class AccessLogRing: @unchecked Sendable {
    // @unchecked: `slots` is shared by exactly two threads. A slot is written by the producer
    // only between `head` (acquire: the consumer is done with it) and its release of `tail`;
    // read by the consumer only below `tail` (acquire) and before its release of `head`.
    let capacity: Int
    private let mask: Int
    private let slots: UnsafeMutablePointer<AccessLogRecord>
    /// The next slot to read (written by the consumer only).
    private let head = Atomic<Int>(0)
    /// The next slot to write (written by the producer only).
    private let tail = Atomic<Int>(0)

    /// A ring of `capacity` records (rounded up to a power of two, at least 2).
    init(capacity: Int) {
        var size = 2
        while size < capacity { size <<= 1 }
        self.capacity = size
        mask = size - 1
        // Safe: `slots` is owned by the ring: allocated and initialised here for `capacity`
        // records, indexed only with `& mask` (always below capacity), freed only in deinit.
        slots = .allocate(capacity: size)
        slots.initialize(repeating: AccessLogRecord(), count: size)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
    }

    /// Producer only. Copies `record` in; returns the records waiting afterwards (the writer
    /// is woken when that passes a threshold), or nil when the ring is full (nothing written).
    @inline(__always)
    func push(_ record: AccessLogRecord) -> Int? {
        let tail = self.tail.load(ordering: .relaxed)  // its own index
        let head = self.head.load(ordering: .acquiring)  // the consumer has finished reading below it
        guard tail &- head < capacity else { return nil }
        slots[tail & mask] = record
        self.tail.store(tail &+ 1, ordering: .releasing)
        return tail &+ 1 &- head
    }

    /// Consumer only. Hands every record waiting now to `body`, oldest first, then frees their
    /// slots; returns how many there were.
    @discardableResult
    func drain(_ body: (borrowing AccessLogRecord) -> Void) -> Int {
        let head = self.head.load(ordering: .relaxed)  // its own index
        let tail = self.tail.load(ordering: .acquiring)  // the producer has written below it
        var index = head
        while index != tail {
            body(slots[index & mask])
            index &+= 1
        }
        if tail != head { self.head.store(tail, ordering: .releasing) }
        return tail &- head
    }

    /// Records waiting (any thread; a snapshot).
    var count: Int { tail.load(ordering: .acquiring) &- head.load(ordering: .acquiring) }
}
