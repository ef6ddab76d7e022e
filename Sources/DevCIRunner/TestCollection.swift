import DevCIPipeline
import DevCIWire
import Foundation

/// A job's test results after it ends: its JUnit reports (`reports: {junit: […]}`), else what its log's test
/// summary said. A report that cannot be read is said in the job's log and left out; it never fails the job.
enum TestCollection {
    /// At most this many report files are read per job.
    static let maxFiles = 200

    static func results(_ spec: ReportSpec?, workspace: String, log: [TestResult], mask: SecretMask, say: (String) -> Void) -> [TestResult] {
        read(spec, workspace: workspace, log: log, say: say).map { r in
            // A secret the job was given never leaves in a test's name or message (masked before any cut).
            TestResult(suite: mask.mask(r.suite), name: mask.mask(r.name), status: r.status, duration: r.duration, message: r.message.map(mask.mask))
        }
    }

    private static func read(_ spec: ReportSpec?, workspace: String, log: [TestResult], say: (String) -> Void) -> [TestResult] {
        guard let spec, !spec.junit.isEmpty else { return log }
        let files = WorkspaceFiles.collect(spec.junit, in: workspace)
        guard !files.isEmpty else {
            say("tests: no report matched \(spec.junit.joined(separator: ", "))\(log.isEmpty ? "" : "; \(log.count) test(s) read from the log instead")")
            return log
        }
        if files.count > maxFiles { say("tests: \(files.count) report files matched; reading the first \(maxFiles)") }
        var out: [TestResult] = []
        for (path, file) in files.prefix(maxFiles) {
            do {
                let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.intValue ?? 0
                guard size <= TestReports.maxBytes else { throw TestReports.Problem("the report is \(size) bytes; at most \(TestReports.maxBytes) are read") }
                guard let data = FileManager.default.contents(atPath: file) else { throw TestReports.Problem("cannot be read") }
                let found = try TestReports.parseJUnit(data)
                out += found.prefix(TestResultBatch.maxPerAttempt - out.count)
                say("tests: \(path): \(found.count) test(s), \(found.filter { $0.status.isFailure }.count) failed")
            } catch {
                say("tests: \(path) was not read: \(error)")
            }
            if out.count >= TestResultBatch.maxPerAttempt {
                say("tests: at most \(TestResultBatch.maxPerAttempt) results are kept per job; the rest were left out")
                break
            }
        }
        return out
    }
}
