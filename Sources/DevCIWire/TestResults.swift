import Foundation

/// One test's outcome, as a test report (or a test runner's summary in the log) says it: what a runner sends
/// in `tests` lines and the dispatcher stores per attempt.
public struct TestResult: Codable, Equatable, Hashable, Sendable {
    public enum Status: String, Codable, Sendable, CaseIterable {
        case passed, failed, skipped, error

        /// Failed or error: what counts against a build.
        public var isFailure: Bool { self == .failed || self == .error }
    }

    /// The suite or class (`classname`, else the enclosing `testsuite`'s name).
    public var suite: String
    public var name: String
    public var status: Status
    /// Seconds.
    public var duration: Double
    /// The failure's, error's or skip's message and text, cut to `maxMessage` bytes.
    public var message: String?

    /// The bounds every side applies: suite and name 512 bytes, the message 4 KiB.
    public static let maxName = 512
    public static let maxMessage = 4096

    public init(suite: String, name: String, status: Status, duration: Double, message: String? = nil) {
        self.suite = suite
        self.name = name
        self.status = status
        self.duration = duration
        self.message = message
    }

    /// Within the bounds: names and message cut, NUL removed, the duration finite and not negative.
    public var bounded: TestResult {
        func clean(_ s: String, _ n: Int) -> String { Self.cut(s.replacingOccurrences(of: "\0", with: ""), n) }
        return TestResult(suite: clean(suite, Self.maxName), name: clean(name, Self.maxName), status: status,
                          duration: duration.isFinite && duration >= 0 ? min(duration, 1e9) : 0,
                          message: message.map { clean($0, Self.maxMessage) })
    }

    /// `suite::name` (or the name alone), how a test is shown in one line.
    public var fullName: String { suite.isEmpty ? name : "\(suite)::\(name)" }

    /// `s` cut to at most `bytes` bytes of UTF-8, on a character boundary, ending in `…` when cut.
    public static func cut(_ s: String, _ bytes: Int) -> String {
        guard s.utf8.count > bytes else { return s }
        var out = ""
        var used = 0
        for ch in s {
            let n = String(ch).utf8.count
            if used + n > bytes - 3 { break }
            out.append(ch)
            used += n
        }
        return out + "…"
    }
}

/// The JSON a `tests` line carries, and how an attempt's results are split into lines.
public enum TestResultBatch {
    /// The most bytes of JSON one line carries (the line bound, less room for the verb and percent-escapes).
    public static let maxBytes = 36_000
    /// The most results one attempt may send; the dispatcher keeps no more.
    public static let maxPerAttempt = 50_000

    public static func json(_ results: [TestResult]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(results)) ?? Data("[]".utf8), as: UTF8.self)
    }

    public static func results(_ json: String) -> [TestResult]? {
        try? JSONDecoder().decode([TestResult].self, from: Data(json.utf8))
    }

    /// The results in lines of at most `maxBytes` of JSON each (a result's message is cut further when one alone
    /// would not fit, which its bounds never allow).
    public static func batches(_ results: [TestResult]) -> [[TestResult]] {
        var out: [[TestResult]] = []
        var current: [TestResult] = []
        var bytes = 2
        for r in results.prefix(maxPerAttempt).map(\.bounded) {
            // Escaped quotes, control characters and non-ASCII take more once percent-encoded: count them thrice.
            let size = json([r]).utf8.count * 3
            if !current.isEmpty && bytes + size > maxBytes {
                out.append(current)
                current = []
                bytes = 2
            }
            current.append(r)
            bytes += size
        }
        if !current.isEmpty { out.append(current) }
        return out
    }
}
