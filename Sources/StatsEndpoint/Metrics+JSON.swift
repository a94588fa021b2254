/// The `/stats` document while it is built from the metric samples: objects keep their keys in
/// the order they were first set, `workers[]` is ordered by worker number and `upstreams[]` as
/// the statistics list them (configuration order).
struct StatsDocument {
    /// The root's keys in this order first (readers find the summary at the top); others after.
    static let rootOrder = ["draining", "monotonic_seconds", "buffer_size_bytes", "totals", "workers", "upstreams", "overflow", "process"]

    var root = JSONObject()
    var workers: [Int: JSONObject] = [:]
    /// One entry per upstream (empty in echo mode: the document then has `"upstreams":[]`).
    var upstreams: [JSONObject] = []

    mutating func insert(_ sample: MetricSample) {
        guard let place = sample.place else { return }  // Prometheus only
        insert(sample.value, at: place)
    }

    mutating func insert(_ value: MetricValue, at place: JSONPlace) {
        switch place {
        case .root(let path):
            root.set(path[...], to: .value(value))
        case .worker(let worker, let path, let totalled):
            workers[worker, default: JSONObject(["worker": .value(.signed(worker))])].set(path[...], to: .value(value))
            if totalled { root.add(["totals"] + path[...], value) }
        case .upstream(let index, let path, let element):
            while upstreams.count <= index { upstreams.append(JSONObject()) }
            if element {
                upstreams[index].update(path[...]) { existing in
                    if case .array(let items)? = existing { return .array(items + [.value(value)]) }
                    return .array([.value(value)])
                }
            } else {
                upstreams[index].set(path[...], to: .value(value))
            }
        }
    }

    /// Sets a node inside a worker's entry (figures that are not metrics, like a utilisation).
    mutating func setInWorker(_ worker: Int, _ path: [String], to node: JSONNode) {
        workers[worker, default: JSONObject(["worker": .value(.signed(worker))])].set(path[...], to: node)
    }

    var text: String {
        var document = root
        document.set(["workers"], to: .array(workers.keys.sorted().map { .object(workers[$0]!) }))
        document.set(["upstreams"], to: .array(upstreams.map { .object($0) }))
        let rank = { (key: String) in Self.rootOrder.firstIndex(of: key) ?? Self.rootOrder.count }
        document.entries = document.entries.enumerated()
            .sorted { (rank($0.element.key), $0.offset) < (rank($1.element.key), $1.offset) }
            .map(\.element)
        var out = ""
        out.reserveCapacity(4096 + 1024 * workers.count + 1024 * upstreams.count)
        JSONNode.object(document).write(into: &out)
        return out
    }
}

indirect enum JSONNode {
    case value(MetricValue)
    /// A string (an upstream's address and entry).
    case text(String)
    case object(JSONObject)
    case array([JSONNode])

    func write(into out: inout String) {
        switch self {
        case .value(let value):
            out += value.json
        case .text(let text):
            out += "\"" + JSONNode.escaped(text) + "\""
        case .array(let items):
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .object(let object):
            out += "{"
            for (index, entry) in object.entries.enumerated() {
                if index > 0 { out += "," }
                out += "\"" + JSONNode.escaped(entry.key) + "\":"
                entry.node.write(into: &out)
            }
            out += "}"
        }
    }

    /// Keys are our own identifiers, texts are addresses and `--upstream` entries; escaped all the
    /// same, so that the document always parses.
    static func escaped(_ text: String) -> String {
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// A JSON object whose keys keep their insertion order (a handful of keys: a linear search).
struct JSONObject {
    var entries: [(key: String, node: JSONNode)] = []

    init(_ entries: KeyValuePairs<String, JSONNode> = [:]) {
        self.entries = entries.map { ($0.key, $0.value) }
    }

    /// Sets the node at `path`, making the objects on the way.
    mutating func set(_ path: ArraySlice<String>, to node: JSONNode) {
        update(path) { _ in node }
    }

    /// Adds `value` to the number at `path` (0 when there is none yet).
    mutating func add(_ path: ArraySlice<String>, _ value: MetricValue) {
        update(path) { existing in
            if case .value(let current)? = existing { return .value(current + value) }
            return .value(value)
        }
    }

    /// Replaces the node at `path` with `change(old node)`, making the objects on the way. Each
    /// child is moved out while it changes, so that it is the only reference and changes in place.
    mutating func update(_ path: ArraySlice<String>, _ change: (JSONNode?) -> JSONNode) {
        guard let key = path.first else { return }
        let found = entries.firstIndex { $0.key == key }
        if path.count == 1 {
            if let found { entries[found].node = change(entries[found].node) } else { entries.append((key, change(nil))) }
            return
        }
        var child = JSONObject()
        let index: Int
        if let found {
            index = found
            if case .object(let existing) = entries[found].node { child = existing }
            entries[found].node = .array([])  // drop the entry's reference to the child while it changes
        } else {
            index = entries.count
            entries.append((key, .array([])))
        }
        child.update(path.dropFirst(), change)
        entries[index].node = .object(child)
    }
}
