import FastAlloc
import Synchronization
import TestSupport

/// Counts values made and destroyed, and proves each was destroyed exactly once.
final class LifetimeTracker: Sendable {
    let made = Atomic<Int>(0)
    let destroyed = Atomic<Int>(0)
    let doubleDestroys = Atomic<Int>(0)
    private let alive = Locked<Set<Int>>([])

    var live: Int { made.load(ordering: .relaxed) - destroyed.load(ordering: .relaxed) }

    func make() -> Tracked { Tracked(Token(tracker: self)) }

    fileprivate func born(_ id: Int) {
        made.add(1, ordering: .relaxed)
        alive.withLock { _ = $0.insert(id) }
    }

    fileprivate func died(_ id: Int) {
        let wasAlive = alive.withLock { $0.remove(id) != nil }
        if !wasAlive { doubleDestroys.add(1, ordering: .relaxed) }
        destroyed.add(1, ordering: .relaxed)
    }
}

private let nextTokenID = Atomic<Int>(0)

/// Whose deinit tells the tracker: a value of `Tracked` is alive while its token is.
final class Token: Sendable {
    let id: Int
    let tracker: LifetimeTracker
    init(tracker: LifetimeTracker) {
        self.tracker = tracker
        id = nextTokenID.add(1, ordering: .relaxed).newValue
        tracker.born(id)
    }
    deinit { tracker.died(id) }
}

/// A pooled value whose lifetime the tracker observes.
struct Tracked: Sendable {
    var token: Token
    var payload = 0
    init(_ token: Token) { self.token = token }
}

