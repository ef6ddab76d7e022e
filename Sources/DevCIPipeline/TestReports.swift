import DevCIWire
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// JUnit XML, the report format of pytest (`--junitxml`), Go (`go-junit-report`), Maven Surefire, Gradle and
/// `swift test --xunit-output`, read with a real XML parser (Foundation's `XMLParser`), never patterns. A report is
/// untrusted input: its size, nesting, test count and message lengths are bounded, and a document type declaration
/// (the way to entity expansion and external entities) is refused outright: no test report needs one.
public enum TestReports {
    public struct Problem: Error, CustomStringConvertible, Equatable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public static let maxBytes = 16 << 20
    public static let maxDepth = 64
    public static let maxTests = 50_000
    public static let maxMessage = TestResult.maxMessage

    /// The results of one JUnit XML document, in document order.
    public static func parseJUnit(_ data: Data) throws -> [TestResult] {
        guard data.count <= maxBytes else {
            throw Problem("the report is \(data.count) bytes; at most \(maxBytes) are read")
        }
        // UTF-8 only (what every JUnit writer emits), so that the byte search below sees every declaration.
        guard String(data: data, encoding: .utf8) != nil else {
            throw Problem("the report is not UTF-8 text")
        }
        // A NUL byte: UTF-16 or UTF-32 text (which XML parsers detect without a byte order mark) hides declarations
        // from the search below.
        if data.contains(0) { throw Problem("the report holds NUL bytes (UTF-16 or binary): only UTF-8 reports are read") }
        // `<!DOCTYPE` anywhere (before the root, where XML allows it) is refused before any parsing.
        if data.range(of: Data("<!DOCTYPE".utf8)) != nil || data.range(of: Data("<!doctype".utf8)) != nil {
            throw Problem("the report declares a document type (<!DOCTYPE …>), which test reports never need: refused (entity expansion)")
        }
        let reader = JUnitReader()
        let parser = XMLParser(data: data)
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        parser.delegate = reader
        let ok = parser.parse()
        if let problem = reader.problem { throw problem }
        guard ok else {
            let error = parser.parserError.map { "\($0.localizedDescription)" } ?? "unknown error"
            throw Problem("the report is not well-formed XML (line \(parser.lineNumber), column \(parser.columnNumber)): \(error)")
        }
        guard reader.sawRoot else { throw Problem("the report has no <testsuites> or <testsuite> element") }
        return reader.results
    }
}

/// The delegate that walks a JUnit document: `testsuite` elements give a suite name, `testcase` a result, and a
/// `failure`, `error` or `skipped` child its status and message.
private final class JUnitReader: NSObject, XMLParserDelegate {
    var results: [TestResult] = []
    var problem: TestReports.Problem?
    var sawRoot = false
    private var depth = 0
    private var suites: [String] = []
    private var current: TestResult?
    /// The text of the `failure`/`error`/`skipped` element being read.
    private var collecting = false
    private var text = ""

    private func stop(_ parser: XMLParser, _ why: String) {
        if problem == nil { problem = TestReports.Problem(why) }
        parser.abortParsing()
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        depth += 1
        guard depth <= TestReports.maxDepth else {
            return stop(parser, "the report nests elements more than \(TestReports.maxDepth) deep")
        }
        switch name {
        case "testsuites":
            sawRoot = true
        case "testsuite":
            sawRoot = true
            suites.append(attributes["name"] ?? "")
        case "testcase":
            guard results.count < TestReports.maxTests else {
                return stop(parser, "the report has more than \(TestReports.maxTests) tests")
            }
            let suite = attributes["classname"].flatMap { $0.isEmpty ? nil : $0 } ?? suites.last ?? ""
            current = TestResult(suite: Self.cut(suite, 512), name: Self.cut(attributes["name"] ?? "", 512), status: .passed,
                                 duration: attributes["time"].flatMap { Double($0.replacingOccurrences(of: ",", with: "")) }.map { $0.isFinite && $0 >= 0 ? $0 : 0 } ?? 0)
        case "failure", "error", "skipped":
            guard current != nil else { break }
            // The first verdict counts (a testcase may carry several failure elements, as Surefire's reruns do).
            if current?.status == .passed {
                current?.status = name == "failure" ? .failed : name == "error" ? .error : .skipped
                collecting = true
                text = attributes["message"].map { $0 + "\n" } ?? ""
            }
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        guard collecting, text.utf8.count < TestReports.maxMessage else { return }
        text += string
    }

    func parser(_ parser: XMLParser, foundCDATA data: Data) {
        guard collecting, text.utf8.count < TestReports.maxMessage else { return }
        text += String(decoding: data, as: UTF8.self)
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        depth -= 1
        switch name {
        case "testsuite":
            _ = suites.popLast()
        case "testcase":
            if let done = current { results.append(done) }
            current = nil
        case "failure", "error", "skipped":
            if collecting {
                let message = Self.cut(text.trimmingCharacters(in: .whitespacesAndNewlines), TestReports.maxMessage)
                current?.message = message.isEmpty ? nil : message
                collecting = false
                text = ""
            }
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) {
        if problem == nil {
            problem = TestReports.Problem("the report is not well-formed XML (line \(parser.lineNumber), column \(parser.columnNumber)): \(parseError.localizedDescription)")
        }
    }

    func parser(_ parser: XMLParser, foundInternalEntityDeclarationWithName name: String, value: String?) {
        stop(parser, "the report declares entities: refused")
    }

    func parser(_ parser: XMLParser, foundExternalEntityDeclarationWithName name: String, publicID: String?, systemID: String?) {
        stop(parser, "the report declares entities: refused")
    }

    /// `s` cut to at most `bytes` bytes of UTF-8, on a character boundary.
    static func cut(_ s: String, _ bytes: Int) -> String { TestResult.cut(s, bytes) }
}

/// Test results read from a job's log when it wrote no report file: the lines Python's `unittest -v` prints for
/// each test (`test_add (tests.test_calc.TestCalc.test_add) ... ok`, and the `FAIL:`/`ERROR:` blocks after them
/// for messages), and pytest's short summary with `-rA` (`PASSED path::test`, `FAILED path::test - message`).
/// Fed one output line at a time; plain string matching on fixed shapes, bounded in what it keeps.
public struct LogTestScanner: Sendable {
    private var results: [TestResult] = []
    private var index: [String: Int] = [:]
    /// A unittest line whose verdict comes on a later line (the test printed in between, or had a docstring).
    private var pending: (suite: String, name: String)?
    private var inPytestSummary = false
    /// The unittest failure block being read: its test's key and its lines.
    private var block: (key: String, lines: [String], bytes: Int)?
    private var sawDashes = false

    public init() {}

    /// What was found, in the order the tests ran.
    public var found: [TestResult] { results }

    public mutating func feed(_ raw: String) {
        let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw
        if readBlock(line) { return }
        if line.hasPrefix("=") && line.contains(" short test summary info ") {
            inPytestSummary = true
            return
        }
        if inPytestSummary {
            if line.hasPrefix("=") { inPytestSummary = false; return }
            pytestSummary(line)
            return
        }
        unittestLine(line)
    }

    // MARK: unittest

    private static let verdicts: [(String, TestResult.Status)] = [
        ("ok", .passed), ("FAIL", .failed), ("ERROR", .error), ("expected failure", .skipped), ("unexpected success", .failed),
    ]

    private static func verdict(_ text: String) -> (TestResult.Status, String?)? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let v = verdicts.first(where: { $0.0 == t }) { return (v.1, v.1 == .failed && t == "unexpected success" ? t : nil) }
        if t.hasPrefix("skipped") { return (.skipped, String(t.dropFirst("skipped".count)).trimmingCharacters(in: .whitespaces)) }
        return nil
    }

    /// `name (dotted.id)`: the test's name and its suite, or nil when the line is not that shape.
    private static func testID(_ head: String) -> (suite: String, name: String)? {
        guard head.hasSuffix(")"), let open = head.firstIndex(of: "(") else { return nil }
        let name = head[..<open].trimmingCharacters(in: .whitespaces)
        let dotted = head[head.index(after: open)..<head.index(before: head.endIndex)]
        guard !name.isEmpty, !name.contains(" "), !dotted.isEmpty, !dotted.contains(" "),
              name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
        // Python 3.11+ ends the id with the test's name; older versions give the class alone.
        var suite = String(dotted)
        if suite.hasSuffix("." + name) { suite = String(suite.dropLast(name.count + 1)) }
        return (suite, name)
    }

    private mutating func unittestLine(_ line: String) {
        if let r = line.range(of: " ... ") ?? (line.hasSuffix(" ...") ? line.range(of: " ...", options: .backwards) : nil) {
            let head = String(line[..<r.lowerBound]), rest = String(line[r.upperBound...])
            // `name (id)` alone, or a docstring line after a `name (id)` line.
            let id = Self.testID(head) ?? pending
            guard let id else { return }
            if let (status, message) = Self.verdict(rest) {
                add(TestResult(suite: id.suite, name: id.name, status: status, duration: 0, message: message))
                pending = nil
            } else {
                pending = id  // the verdict follows on a later line
            }
            return
        }
        if let id = Self.testID(line) {
            pending = id  // a docstring's line comes next
            return
        }
        if let id = pending, let (status, message) = Self.verdict(line) {
            add(TestResult(suite: id.suite, name: id.name, status: status, duration: 0, message: message))
            pending = nil
        }
    }

    /// The `FAIL: name (id)` blocks after the run: their traceback becomes the test's message.
    private mutating func readBlock(_ line: String) -> Bool {
        for prefix in ["FAIL: ", "ERROR: "] where line.hasPrefix(prefix) {
            if let id = Self.testID(String(line.dropFirst(prefix.count))) {
                finishBlock()
                block = (Self.key(id.suite, id.name), [], 0)
                sawDashes = false
                return true
            }
        }
        guard var b = block else { return false }
        if line.hasPrefix("-----") || line.hasPrefix("=====") {
            if sawDashes {
                finishBlock()
                return true
            }
            sawDashes = true
            return true
        }
        if b.bytes < TestResult.maxMessage {
            b.lines.append(line)
            b.bytes += line.utf8.count + 1
        }
        block = b
        return true
    }

    private mutating func finishBlock() {
        guard let b = block else { return }
        block = nil
        sawDashes = false
        let text = b.lines.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        if let i = index[b.key], !text.isEmpty { results[i].message = TestResult.cut(text, TestResult.maxMessage) }
    }

    // MARK: pytest

    private mutating func pytestSummary(_ line: String) {
        let words: [(String, TestResult.Status)] = [("PASSED ", .passed), ("FAILED ", .failed), ("ERROR ", .error), ("XFAIL ", .skipped),
                                                    ("XPASS ", .passed), ("SKIPPED ", .skipped)]
        guard let (word, status) = words.first(where: { line.hasPrefix($0.0) }) else { return }
        var rest = Substring(line.dropFirst(word.count))
        var message: String?
        if let dash = rest.range(of: " - ") {
            message = String(rest[dash.upperBound...])
            rest = rest[..<dash.lowerBound]
        }
        // Only node ids (`path::Class::test`): a skip summary (`[1] path:12: reason`) names no test.
        guard let sep = rest.range(of: "::", options: .backwards), !rest.contains(" ") else { return }
        add(TestResult(suite: String(rest[..<sep.lowerBound]), name: String(rest[sep.upperBound...]), status: status, duration: 0, message: message))
    }

    // MARK: results

    private static func key(_ suite: String, _ name: String) -> String { suite + "\u{1}" + name }

    private mutating func add(_ result: TestResult) {
        let r = result.bounded  // keyed and kept within the bounds: a hostile log's endless names cost nothing
        let key = Self.key(r.suite, r.name)
        if let i = index[key] {
            results[i] = r  // a test reported twice: the last word counts
            return
        }
        guard results.count < TestResultBatch.maxPerAttempt else { return }
        index[key] = results.count
        results.append(r)
    }
}
