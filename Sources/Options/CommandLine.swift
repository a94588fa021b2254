/// A command line read against an `OptionTable`: `--name value`, `--name=value`, flags,
/// positional arguments and `--help`/`-h`.
public struct ParsedCommandLine: Sendable, Equatable {
    /// Option name (no dashes) to its text; a flag's text is `true`.
    public var values: [String: String] = [:]
    /// Arguments that are not options, in order (`echo`, `relay`).
    public var positional: [String] = []
    /// `--help` or `-h` was given.
    public var wantsHelp = false

    public init() {}
}

/// A command line that does not fit the table: the message says what and where.
public struct CommandLineError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension OptionTable {
    /// Reads `arguments` (without the program name). Every option is checked to exist and to
    /// have a value; values themselves are checked later, by `apply` and `validate`. An option
    /// given twice keeps its last value, as most tools do, unless it `repeats`: then the values
    /// are joined with commas. `--` ends the options.
    public func parse(commandLine arguments: [String]) throws(CommandLineError) -> ParsedCommandLine {
        var result = ParsedCommandLine()
        var index = 0
        var optionsEnded = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if optionsEnded || !argument.hasPrefix("-") || argument == "-" {
                result.positional.append(argument)
                continue
            }
            if argument == "--" { optionsEnded = true; continue }
            if argument == "--help" || argument == "-h" { result.wantsHelp = true; continue }
            guard argument.hasPrefix("--") else {
                throw CommandLineError(message: "unknown option '\(argument)' (options are long: --name VALUE; see --help)")
            }
            var name = String(argument.dropFirst(2))
            var inline: String?
            if let equals = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard let option = self[name] else {
                let near = options.map(\.name).filter { editDistance($0, name) <= 2 }
                let hint = near.isEmpty ? "" : " (did you mean " + listing(near.map { "--\($0)" }) + "?)"
                throw CommandLineError(message: "unknown option '--\(name)'\(hint); see --help")
            }
            if option.isFlag {
                if let inline { result.values[name] = inline } else { result.values[name] = "true" }
                continue
            }
            let value: String
            if let inline {
                value = inline
            } else {
                guard index < arguments.count else {
                    throw CommandLineError(message: "--\(name) needs a value (\(option.valueName))")
                }
                value = arguments[index]
                index += 1
            }
            if option.repeats, let earlier = result.values[name] {
                result.values[name] = earlier + "," + value
            } else {
                result.values[name] = value
            }
        }
        return result
    }
}

/// Levenshtein distance: edits (insert, delete, replace) from `a` to `b`; for "did you mean".
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in stride(from: 1, through: b.count, by: 1) {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return a.isEmpty ? b.count : previous[b.count]
}
