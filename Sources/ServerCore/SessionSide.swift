/// One side of a session: the client connection, or the relay's upstream connection.
enum SessionSide: Int, Sendable, CaseIterable, CustomStringConvertible {
    case client = 0
    case upstream = 1

    var other: SessionSide { self == .client ? .upstream : .client }
    var description: String { self == .client ? "client" : "upstream" }
}

/// A set of sides, for actions that apply to one, both or neither.
struct SessionSides: OptionSet, Sendable, Hashable, CustomStringConvertible {
    let rawValue: UInt8
    static let client = SessionSides(rawValue: 1)
    static let upstream = SessionSides(rawValue: 2)
    static let both: SessionSides = [.client, .upstream]

    init(rawValue: UInt8) { self.rawValue = rawValue }
    init(_ side: SessionSide) { rawValue = side == .client ? 1 : 2 }

    func contains(_ side: SessionSide) -> Bool { contains(SessionSides(side)) }

    var description: String {
        switch self {
        case []: return "[]"
        case .client: return "[client]"
        case .upstream: return "[upstream]"
        default: return "[client, upstream]"
        }
    }
}
