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

    /// Pretty, sorted JSON with ISO 8601 dates, as every `--json` prints it.
    public static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
