import DevCIPipeline
import DevCIProcess
import DevCIWire
import Foundation

/// Saved local runs: `~/.devci/reports/<repository>/<run number>.json`.
public struct LocalReports {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public static func defaultRoot(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        (environment["HOME"] ?? NSHomeDirectory()) + "/.devci/reports"
    }

    /// The next run number for a repository: one more than the highest saved.
    public func nextRun(repository: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(repository)")) ?? []
        return (names.compactMap { Int($0.replacingOccurrences(of: ".json", with: "")) }.max() ?? 0) + 1
    }

    public func save(_ report: LocalRunReport) throws -> String {
        let dir = "\(root)/\(report.repository)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = "\(dir)/\(report.run).json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(report).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Every saved report, oldest first per repository.
    public func all() -> [LocalRunReport] {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        var out: [LocalRunReport] = []
        for repo in ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted() {
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(repo)")) ?? []).filter { $0.hasSuffix(".json") }
            for f in files.sorted(by: { (Int($0.dropLast(5)) ?? 0) < (Int($1.dropLast(5)) ?? 0) }) {
                if let data = FileManager.default.contents(atPath: "\(root)/\(repo)/\(f)"),
                   let report = try? decoder.decode(LocalRunReport.self, from: data) {
                    out.append(report)
                }
            }
        }
        return out
    }
}

/// `devci report --local` as text: the runs, or their jobs, in columns.
public enum LocalReportTable {
    public static func runs(_ reports: [LocalRunReport]) -> String {
        guard !reports.isEmpty else { return "no local runs yet" }
        return TextTable.render(["REPOSITORY", "RUN", "STATUS", "COMMIT", "JOBS", "DURATION", "PIPELINE"], reports.map { r in
            [r.repository, String(r.run), r.status.display, String((r.commit ?? "-").prefix(12)), String(r.jobs.count),
             TextTable.duration(r.startedAt, r.finishedAt), r.pipeline]
        })
    }

    public static func jobs(_ jobs: [(LocalRunReport, LocalRunReport.Job)]) -> String {
        TextTable.render(["REPOSITORY", "RUN", "JOB", "STAGE", "STATUS", "ATTEMPTS", "DURATION", "REASON"], jobs.map { r, j in
            [r.repository, String(r.run), j.name, j.stage, j.status.display + (j.allowFailure && j.status != .success ? " (allowed)" : ""),
             String(j.attempts.count), TextTable.duration(j.startedAt, j.finishedAt), j.reason ?? ""]
        })
    }
}

