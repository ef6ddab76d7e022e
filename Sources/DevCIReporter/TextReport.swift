import DevCIStore
import DevCIWire
import Foundation

/// `devci report` as text: the builds, or the jobs, of the database in columns.
public enum TextReport {
    public static func builds(_ builds: [BuildSummary]) -> String {
        guard !builds.isEmpty else { return "no builds yet" }
        return TextTable.render(["BUILD", "STATUS", "COMMIT", "BRANCH", "RUNNER", "DURATION", "ATTEMPTS", "REPOSITORY", "REASON"], builds.map { b in
            [String(b.id), b.displayStatus, String(b.commit.prefix(12)), b.branch, b.runner ?? "-",
             b.duration.map { String(format: "%.1fs", $0) } ?? "-", String(b.attempts),
             [b.runDescription, b.repo].filter { !$0.isEmpty }.joined(separator: " "), b.reason ?? ""]
        })
    }

    public static func jobs(_ jobs: [JobSummary]) -> String {
        TextTable.render(["BUILD", "JOB", "STAGE", "STATUS", "RUNNER", "ATTEMPT", "DURATION", "REASON"], jobs.map { j in
            [String(j.build), j.name, j.stage, j.status.display + (j.allowFailure && j.status != .success ? " (allowed)" : ""), j.runner ?? "-",
             String(j.attempt), TextTable.duration(j.startedAt, j.finishedAt), j.reason ?? ""]
        })
    }

    /// A build's tests and its bisection, for `devci report --tests`.
    public struct BuildTests: Encodable {
        public var build: Int64
        public var status: BuildStatus
        public var tests: [BuildTest]
        public var bisection: BisectionRecord?

        public init(build: Int64, status: BuildStatus, tests: [BuildTest], bisection: BisectionRecord?) {
            self.build = build
            self.status = status
            self.tests = tests
            self.bisection = bisection
        }
    }

    /// Each build's tests, failed ones first with their message's first line, then a count of the rest.
    public static func tests(_ reports: [BuildTests]) -> String {
        guard !reports.isEmpty else { return "no builds yet" }
        return reports.map { r in
            var out = "build \(r.build) \(r.status.display): "
            let failed = r.tests.filter { $0.status.isFailure }
            out += r.tests.isEmpty ? "no test results" : "\(failed.count) failed, \(r.tests.filter { $0.status == .passed }.count) passed, \(r.tests.filter { $0.status == .skipped }.count) skipped"
            if r.tests.onlyKnownFlakyFailures { out += " (every failure is a known-flaky test)" }
            if let line = culprit(r.bisection) { out += "\n  " + line }
            if !failed.isEmpty {
                out += "\n" + TextTable.render(["STATUS", "TEST", "JOB", "TIME", "MESSAGE"], failed.map { t in
                    [t.status.rawValue + (t.knownFlaky ? " (flaky)" : ""), TextTable.clean(t.fullName), t.job, String(format: "%.3fs", t.duration),
                     String(TextTable.clean(t.message?.split(separator: "\n").first.map(String.init) ?? "").prefix(120))]
                })
            }
            return out
        }.joined(separator: "\n\n")
    }

    /// One line per build whose breaking commit a bisection named (or tried to).
    public static func culprits(_ bisections: [BisectionRecord]) -> String {
        let lines = bisections.compactMap { b in culprit(b).map { "build \(b.badBuild): \($0)" } }
        return lines.isEmpty ? "" : "\n\n" + lines.joined(separator: "\n")
    }

    static func culprit(_ b: BisectionRecord?) -> String? {
        guard let b else { return nil }
        switch b.state {
        case .found:
            let who = [b.culpritTitle.isEmpty ? nil : "“\(TextTable.clean(b.culpritTitle))”", b.culpritAuthor.isEmpty ? nil : TextTable.clean(b.culpritAuthor)]
                .compactMap { $0 }.joined(separator: " by ")
            return "broken by \(b.culprit?.prefix(12) ?? "?")\(who.isEmpty ? "" : " \(who)") (\(TextTable.clean(b.reason ?? "bisection")))"
        case .running: return "bisecting \(b.candidates.count) commit(s) not built since build \(b.goodBuild): \(b.buildsRun) build(s) so far"
        case .stopped: return "bisection stopped: \(TextTable.clean(b.reason ?? ""))"
        }
    }

    /// Pretty, sorted JSON with ISO 8601 dates, as every `--json` prints it.
    public static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
