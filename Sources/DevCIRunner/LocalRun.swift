import DevCIPipeline
import DevCIProcess
import DevCIWire
import Foundation

/// The saved record of one `devci run --local`.
public struct LocalRunReport: Codable, Equatable, Sendable {
    public struct LogLine: Codable, Equatable, Sendable {
        public var ts: Int64
        public var stream: String
        public var text: String
    }

    public struct Attempt: Codable, Equatable, Sendable {
        public var number: Int
        public var status: String
        public var exitCode: Int
        public var reason: String
        public var startedAt: Date
        public var finishedAt: Date
        public var log: [LogLine]
    }

    public struct Job: Codable, Equatable, Sendable {
        public var name: String
        public var stage: String
        public var status: String
        public var allowFailure: Bool
        public var reason: String?
        public var startedAt: Date?
        public var finishedAt: Date?
        public var attempts: [Attempt]
    }

    public var repository: String
    public var pipeline: String
    public var run: Int
    public var commit: String?
    public var directory: String
    public var startedAt: Date
    public var finishedAt: Date
    /// A `BuildStatus` raw value: `success`, `passed_with_allowed_failures`, `failed`, `timed_out`, …
    public var status: String
    public var stages: [String]
    public var jobs: [Job]

    /// Reports written before the statuses were typed said `passed with allowed failures`.
    public var passed: Bool { BuildStatus(rawValue: status)?.passed ?? (status == "passed with allowed failures") }
}

/// Runs a pipeline on this machine, no dispatcher: jobs in plan order, one at a time, each with the same
/// executor as a runner's (steps, timeout, retries), in the current checkout.
public final class LocalRun {
    public let pipeline: Pipeline
    public let file: String
    public let directory: String
    let say: (String) -> Void

    public init(pipeline: Pipeline, file: String, directory: String, say: @escaping (String) -> Void) {
        self.pipeline = pipeline
        self.file = file
        self.directory = directory
        self.say = say
    }

    public func run(repository: String, runNumber: Int, commit: String?) -> LocalRunReport {
        let started = Date()
        var plan = BuildPlan(pipeline: pipeline)
        var jobs: [String: LocalRunReport.Job] = [:]
        for def in pipeline.jobs {
            jobs[def.name] = LocalRunReport.Job(name: def.name, stage: def.stage, status: JobState.pending.rawValue, allowFailure: def.allowFailure,
                                                reason: nil, startedAt: nil, finishedAt: nil, attempts: [])
        }
        var ready: [String] = []
        func take(_ actions: [BuildPlan.Action]) {
            for action in actions {
                switch action {
                case .start(let name): ready.append(name)
                case .skip(let name, let reason):
                    jobs[name]?.status = JobState.skipped.rawValue
                    jobs[name]?.reason = reason
                    say("↷ \(name) \(reason)")
                }
            }
        }
        take(plan.next())
        while !ready.isEmpty {
            let name = ready.removeFirst()
            guard let def = pipeline.job(name) else { continue }
            let job = runJob(def)
            jobs[name] = job
            take(plan.update(name, to: JobState(rawValue: job.status) ?? .error))
        }
        let outcome = plan.outcome
        let report = LocalRunReport(repository: repository, pipeline: file, run: runNumber, commit: commit, directory: directory,
                                    startedAt: started, finishedAt: Date(), status: outcome.rawValue, stages: pipeline.stages,
                                    jobs: pipeline.jobs.compactMap { jobs[$0.name] })
        let seconds = report.finishedAt.timeIntervalSince(started)
        say("\(report.passed ? "✓" : "✗") pipeline \(outcome.display) in \(Self.format(seconds))")
        return report
    }

    private func runJob(_ def: JobDefinition) -> LocalRunReport.Job {
        var job = LocalRunReport.Job(name: def.name, stage: def.stage, status: JobState.running.rawValue, allowFailure: def.allowFailure,
                                     reason: nil, startedAt: Date(), finishedAt: nil, attempts: [])
        let script = def.script(pipelineEnv: pipeline.env)
        for attempt in 1...(def.retries + 1) {
            say("▶ \(def.name) (\(def.stage))\(attempt > 1 ? " attempt \(attempt)" : "")")
            let log = LogCollector()
            let begun = Date()
            var env = ProcessInfo.processInfo.environment
            env["DEVCI_LOCAL"] = "1"
            env["DEVCI_JOB_NAME"] = def.name
            env["DEVCI_ATTEMPT"] = String(attempt)
            let result = JobExecutor.run(script: script, fallbackCommand: "", in: directory, environment: env, process: ChildProcess()) {
                log.add($0)
            }
            let (outcome, reason) = result.outcome
            let lines = log.lines.map { LocalRunReport.LogLine(ts: $0.timestampMillis, stream: $0.stream.rawValue, text: $0.text) }
            job.attempts.append(LocalRunReport.Attempt(number: attempt, status: outcome.state.rawValue, exitCode: result.termination.exitCode,
                                                       reason: reason, startedAt: begun, finishedAt: Date(), log: lines))
            job.status = outcome.state.rawValue
            job.reason = reason.isEmpty ? nil : reason
            let took = Self.format(Date().timeIntervalSince(begun))
            if outcome == .success {
                say("✓ \(def.name) passed in \(took)")
                break
            }
            say("✗ \(def.name) \(outcome.state.rawValue.replacingOccurrences(of: "_", with: " "))\(reason.isEmpty ? "" : " (\(reason))") in \(took)\(def.allowFailure ? ", allowed to fail" : "")")
            for line in lines { say("    \(line.stream == "err" ? "!" : "|") \(line.text)") }
            if attempt <= def.retries {
                let delay = def.retryDelay.seconds
                say("↻ \(def.name): retry \(attempt) of \(def.retries)\(delay > 0 ? " in \(Self.format(delay))" : "")")
                if delay > 0 { Thread.sleep(forTimeInterval: delay) }
            }
        }
        job.finishedAt = Date()
        return job
    }

    static func format(_ seconds: Double) -> String {
        seconds < 60 ? String(format: "%.1fs", seconds) : String(format: "%dm%02ds", Int(seconds) / 60, Int(seconds) % 60)
    }

    final class LogCollector: @unchecked Sendable {
        private let lock = NSLock()
        private var collected: [OutputLine] = []
        func add(_ l: [OutputLine]) { lock.withLock { collected += l } }
        var lines: [OutputLine] { lock.withLock { collected } }
    }
}

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
