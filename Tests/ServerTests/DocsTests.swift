import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The documentation against the code: every option and variable that `--help` of the two
/// executables names is documented (README.md or docs/*.md), the README stays a user's page,
/// and every relative link in the documentation leads to a file of the repository (and to a
/// heading that exists, when it names one).
@Suite struct DocsTests {
    /// The package root: this file is Tests/ServerTests/DocsTests.swift.
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// README.md and every Markdown file in docs/, as (path relative to the root, text).
    static func documents() throws -> [(path: String, text: String)] {
        var paths = ["README.md"]
        let docs = root.appendingPathComponent("docs")
        let names = try FileManager.default.contentsOfDirectory(atPath: docs.path)
        paths += names.filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
        return try paths.map { ($0, try String(contentsOf: root.appendingPathComponent($0), encoding: .utf8)) }
    }

    /// `name --help`, run from the directory the test binary was built in. Fails (never
    /// skips) when the executable is not there.
    static func help(of name: String) throws -> String {
        let path = ChildProcess.path(of: name)
        try #require(access(path, X_OK) == 0,
                     "\(name) not found at \(path): it is built beside the test binary (swift build --build-tests builds every product)")
        let process = try ChildProcess(name, ["--help"])
        let status = process.waitForExit()
        try #require(status == 0, "\(name) --help exited with \(String(describing: status)); stderr: \(process.errors)")
        try #require(process.output.contains("--help"), "\(name) --help printed no options: \(process.output)")
        return process.output
    }

    /// Every `--option` name in `text` (without the dashes).
    static func optionNames(in text: String) -> Set<String> {
        Set(text.matches(of: /--([a-z0-9][a-z0-9-]*[a-z0-9])/).map { String($0.output.1) })
    }

    /// Every `FASTALLOC_…` variable named in `text`.
    static func variables(in text: String) -> Set<String> {
        Set(text.matches(of: /FASTALLOC_[A-Z0-9_]*[A-Z0-9]/).map { String($0.output) })
    }

    /// Whether `text` contains `word` not followed by a character that would make it a longer
    /// name (`--overflow` must not count as `--overflow-max`, nor the other way round).
    static func mentions(_ text: String, _ word: String) -> Bool {
        var rest = text[...]
        while let range = rest.range(of: word) {
            let next = rest[range.upperBound...].first
            if next.map({ !($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) ?? true { return true }
            rest = rest[range.upperBound...]
        }
        return false
    }

    @Test(arguments: ["fastalloc-server", "fastalloc-load"])
    func everyOptionInHelp_isDocumented(executable: String) throws {
        let help = try DocsTests.help(of: executable)
        let options = DocsTests.optionNames(in: help)
        #expect(options.count > 5, "only \(options.sorted()) found in \(executable) --help:\n\(help)")
        let documentation = try DocsTests.documents().map(\.text).joined(separator: "\n")
        // (Plain `if`s rather than #expect, so that a failure names the option and does not
        // print the whole documentation.)
        for option in options.sorted() where !DocsTests.mentions(documentation, "--" + option) {
            Issue.record("\(executable) --help names --\(option), which neither README.md nor docs/*.md mentions")
        }
        for variable in DocsTests.variables(in: help).sorted() where !DocsTests.mentions(documentation, variable) {
            Issue.record("\(executable) --help names \(variable), which neither README.md nor docs/*.md mentions")
        }
    }

    @Test func readme_staysShort() throws {
        let text = try String(contentsOf: DocsTests.root.appendingPathComponent("README.md"), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).count - (text.hasSuffix("\n") ? 1 : 0)
        #expect(lines < 400, "README.md has \(lines) lines; it is the user's page: move details to docs/")
    }

    /// Lines outside fenced code blocks (a `#` comment in a shell example is not a heading).
    static func prose(_ text: String) -> [Substring] {
        var inFence = false
        var result: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingPrefix(while: { $0 == " " }).hasPrefix("```") {
                inFence.toggle()
                continue
            }
            if !inFence { result.append(line) }
        }
        return result
    }

    /// GitHub's anchors for the headings of a Markdown text: lower case, punctuation other than
    /// `-` and `_` dropped, spaces to `-`; a repeated anchor gets `-1`, `-2`, ...
    static func anchors(_ text: String) -> Set<String> {
        var seen: [String: Int] = [:]
        var result: Set<String> = []
        for line in prose(text) where line.hasPrefix("#") {
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces)
            var slug = ""
            for character in title.lowercased() {
                if character.isLetter || character.isNumber || character == "-" || character == "_" {
                    slug.append(character)
                } else if character == " " {
                    slug.append("-")
                }
            }
            let count = seen[slug, default: 0]
            seen[slug] = count + 1
            result.insert(count == 0 ? slug : "\(slug)-\(count)")
        }
        return result
    }

    @Test func everyRelativeLink_resolvesInsideTheRepository() throws {
        let root = DocsTests.root.standardizedFileURL.path
        var checked = 0
        for document in try DocsTests.documents() {
            let directory = DocsTests.root.appendingPathComponent(document.path).deletingLastPathComponent()
            let text = DocsTests.prose(document.text).joined(separator: "\n")
            // [text](target) and ![alt](target); a target ends at the first space or ')'.
            for match in text.matches(of: /\]\(([^)\s]+)(?:\s+"[^"]*")?\)/) {
                let target = String(match.output.1)
                if target.hasPrefix("http://") || target.hasPrefix("https://") || target.hasPrefix("mailto:") { continue }
                checked += 1
                if target.hasPrefix("/") {
                    Issue.record("\(document.path): \(target) is an absolute path; link inside the repository")
                }
                let parts = target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)
                let file = String(parts[0])
                let anchor = parts.count > 1 ? String(parts[1]) : nil
                let url = file.isEmpty ? DocsTests.root.appendingPathComponent(document.path)
                                       : directory.appendingPathComponent(file).standardizedFileURL
                let path = url.standardizedFileURL.path
                if path != root && !path.hasPrefix(root + "/") {
                    Issue.record("\(document.path): \(target) points outside the repository (\(path))")
                }
                guard FileManager.default.fileExists(atPath: path) else {
                    Issue.record("\(document.path): \(target) leads to \(path), which does not exist")
                    continue
                }
                if let anchor, path.hasSuffix(".md") {
                    let targetText = try String(contentsOfFile: path, encoding: .utf8)
                    if !DocsTests.anchors(targetText).contains(anchor) {
                        Issue.record("\(document.path): \(target): no heading with the anchor #\(anchor) in \(file.isEmpty ? document.path : file)")
                    }
                }
            }
        }
        #expect(checked > 10, "only \(checked) relative links found: is the pattern still right?")
    }
}
