import Options
import UVLoop

/// One `--upstream` entry, as configured: `HOST:PORT [weight=N] [backup] [proxy-protocol=V]`,
/// the form of a haproxy `server` line. The host may be an IPv4 address, an IPv6 address in brackets, or a
/// name, which stands for every A and AAAA record it resolves to: each becomes a member of the
/// pool with this entry's weight and role.
public struct UpstreamSpec: Sendable, Hashable, CustomStringConvertible {
    /// `HOST:PORT` as given.
    public var address: String
    /// The member's share relative to the others, 1 to 256 (haproxy's range, without 0).
    public var weight: Int
    /// Used only when no other upstream is up.
    public var backup: Bool
    /// Its own PROXY protocol setting (nil: `--proxy-protocol-upstream`'s).
    public var proxyProtocol: ProxyProtocolSetting?
    /// What `address` stood for when it was last resolved (at start; then every
    /// `--resolve-interval`, off the data path).
    public var resolved: [SocketAddress]

    public static let weightRange = 1...256

    /// A numeric address, one member.
    public init(_ address: SocketAddress, weight: Int = 1, backup: Bool = false, proxyProtocol: ProxyProtocolSetting? = nil) {
        self.address = address.description
        self.weight = weight
        self.backup = backup
        self.proxyProtocol = proxyProtocol
        resolved = [address]
    }

    /// Parses `HOST:PORT [weight=N] [backup] [proxy-protocol=V]` and resolves the host now.
    public init(parsing text: String) throws(OptionRuleError) {
        let words = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let first = words.first else { throw OptionRuleError(UpstreamSpec.rule) }
        address = first
        weight = 1
        backup = false
        proxyProtocol = nil
        for word in words.dropFirst() {
            if word == "backup" {
                backup = true
            } else if word.hasPrefix("weight="), let value = Int(word.dropFirst("weight=".count)) {
                weight = value
            } else if word.hasPrefix("proxy-protocol="),
                      let value = ProxyProtocolSetting(rawValue: String(word.dropFirst("proxy-protocol=".count))) {
                proxyProtocol = value
            } else {
                throw OptionRuleError("\(UpstreamSpec.rule); '\(word)' is not weight=N, backup or proxy-protocol=v1|v2|off")
            }
        }
        do throws(AddressError) {
            resolved = try SocketAddress.resolve(first)
        } catch {
            throw OptionRuleError("\(UpstreamSpec.rule) (\(error.reason))")
        }
    }

    static let rule = "HOST:PORT with an IPv4 address, an [IPv6] address or a name that resolves to one, "
        + "like 127.0.0.1:7001, [::1]:7001 or upstream.internal:7001, then optionally weight=N, backup and "
        + "proxy-protocol=v1|v2|off"

    /// `HOST:PORT`, then `weight=N` unless 1, `backup` when set and its own `proxy-protocol=V`:
    /// what `init(parsing:)` reads.
    public var description: String {
        address + (weight == 1 ? "" : " weight=\(weight)") + (backup ? " backup" : "")
            + (proxyProtocol.map { " proxy-protocol=\($0.rawValue)" } ?? "")
    }
}

extension UpstreamSpec {
    /// Resolves every entry again: an entry whose lookup fails keeps the addresses it had (and
    /// is reported), so a resolver outage never empties the pool.
    static func resolveAgain(_ specs: [UpstreamSpec]) -> (specs: [UpstreamSpec], failures: [(address: String, reason: AddressError.Reason)]) {
        var next = specs
        var failures: [(address: String, reason: AddressError.Reason)] = []
        for index in next.indices {
            do throws(AddressError) {
                next[index].resolved = try SocketAddress.resolve(next[index].address)
            } catch {
                failures.append((next[index].address, error.reason))
            }
        }
        return (next, failures)
    }
}

extension ServerConfig {
    /// The relay's first upstream address (the only one, for a single-upstream relay). Setting
    /// it makes it the only upstream.
    public var upstream: SocketAddress? {
        get { upstreams.first?.resolved.first }
        set { upstreams = newValue.map { [UpstreamSpec($0)] } ?? [] }
    }

    /// Parses a comma-separated list of upstream entries (the form a repeated `--upstream`, the
    /// variable and the config file all come to).
    static func parseUpstreams(_ text: String) throws(OptionRuleError) -> [UpstreamSpec] {
        var specs: [UpstreamSpec] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: true) {
            specs.append(try UpstreamSpec(parsing: String(entry)))
        }
        guard !specs.isEmpty else { throw OptionRuleError(UpstreamSpec.rule) }
        return specs
    }

    /// The checks of the upstream list that validate() makes (`nil`: it keeps them).
    func upstreamViolation() -> ConfigErrorParts? {
        switch mode {
        case .echo:
            if let first = upstreams.first { return ConfigErrorParts(value: "\(first)", rule: "no upstream in echo mode (use relay)") }
        case .relay:
            guard !upstreams.isEmpty else {
                return ConfigErrorParts(value: "(none)", rule: "HOST:PORT of the upstream, required in relay mode")
            }
            for spec in upstreams {
                if let address = spec.resolved.first(where: { $0.port == 0 }) {
                    return ConfigErrorParts(value: "\(address)", rule: "a port from 1 to 65535")
                }
                if !UpstreamSpec.weightRange.contains(spec.weight) {
                    return ConfigErrorParts(value: "\(spec)", rule: "weight=N with N from 1 to 256")
                }
            }
            if upstreams.allSatisfy(\.backup) {
                return ConfigErrorParts(value: upstreams.map(\.description).joined(separator: ", "),
                                        rule: "at least one upstream that is not a backup")
            }
        }
        return nil
    }

    struct ConfigErrorParts {
        let value: String
        let rule: String
    }
}
