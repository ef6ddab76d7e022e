import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// One test's outcome, as a test report says it (issue 14): what the runner sends and the dispatcher stores.
public struct TestResult: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable {
        case passed, failed, skipped, error
    }

    /// The suite or class (`classname`, else the enclosing `testsuite`'s name).
    public var suite: String
    public var name: String
    public var status: Status
    /// Seconds.
    public var duration: Double
    /// The failure's, error's or skip's message and text, cut to `TestReports.maxMessage` bytes.
    public var message: String?

    public init(suite: String, name: String, status: Status, duration: Double, message: String? = nil) {
        self.suite = suite
        self.name = name
        self.status = status
        self.duration = duration
        self.message = message
    }
}

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
    public static let maxMessage = 4096

    /// The results of one JUnit XML document, in document order.
    public static func parseJUnit(_ data: Data) throws -> [TestResult] {
        guard data.count <= maxBytes else {
            throw Problem("the report is \(data.count) bytes; at most \(maxBytes) are read")
        }
        // UTF-8 only (what every JUnit writer emits), so that the byte search below sees every declaration.
        guard String(data: data, encoding: .utf8) != nil else {
            throw Problem("the report is not UTF-8 text")
        }
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
    static func cut(_ s: String, _ bytes: Int) -> String {
        guard s.utf8.count > bytes else { return s }
        var out = ""
        for ch in s {
            if out.utf8.count + String(ch).utf8.count > bytes - 3 { break }
            out.append(ch)
        }
        return out + "…"
    }
}
