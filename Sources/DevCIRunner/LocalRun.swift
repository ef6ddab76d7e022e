import DevCIContainer
import DevCIPipeline
import DevCIProcess
import DevCIWire
import Foundation
import NIOConcurrencyHelpers

public final class LocalRun {
    public let pipeline: Pipeline
    public let file: String
    public let directory: String
    let say: (String) -> Void
    /// The engine for jobs with `image:`, as on a runner.
    public var dockerHost = DockerEngine.defaultAddress()

    public init(pipeline: Pipeline, file: String, directory: String, say: @escaping (String) -> Void) {
        self.pipeline = pipeline
        self.file = file
        self.directory = directory
        self.say = say
    }

    /// The same executor a runner would pick: a container for a job with an image.
    func executor(for def: JobDefinition) -> any Executor {
        guard def.container != nil, let engine = try? DockerEngine(address: dockerHost) else { return HostExecutor() }
        return ContainerExecutor(engine: engine)
    }

    public func run(repository: String, runNumber: Int, commit: String?) -> LocalRunReport {
        let started = Date()
        var plan = BuildPlan(pipeline: pipeline)
        var jobs: [String: LocalRunReport.Job] = [:]
        for def in pipeline.jobs {
            jobs[def.name] = LocalRunReport.Job(name: def.name, stage: def.stage, status: .pending, allowFailure: def.allowFailure,
                                                reason: nil, startedAt: nil, finishedAt: nil, attempts: [])
        }
        var ready: [String] = []
        func take(_ actions: [BuildPlan.Action]) {
            for action in actions {
                switch action {
                case .start(let name): ready.append(name)
                case .skip(let name, let reason):
                    jobs[name]?.status = .skipped
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
            take(plan.update(name, to: job.status))
        }
        let outcome = plan.outcome
        let report = LocalRunReport(repository: repository, pipeline: file, run: runNumber, commit: commit, directory: directory,
                                    startedAt: started, finishedAt: Date(), status: outcome, stages: pipeline.stages,
                                    jobs: pipeline.jobs.compactMap { jobs[$0.name] })
        let seconds = report.finishedAt.timeIntervalSince(started)
        say("\(report.passed ? "✓" : "✗") pipeline \(outcome.display) in \(Self.format(seconds))")
        return report
    }

    private func runJob(_ def: JobDefinition) -> LocalRunReport.Job {
        var job = LocalRunReport.Job(name: def.name, stage: def.stage, status: .running, allowFailure: def.allowFailure,
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
            if let image = def.container?.image { say("  in image \(image) on the engine at \(dockerHost)") }
            let result = executor(for: def).run(ExecutorJob(script: script, fallbackCommand: "", directory: directory, environment: env,
                                                            labels: ["devci.local": directory])) {
                log.add($0)
            }
            let (outcome, reason) = result.outcome
            let lines = log.lines.map { LocalRunReport.LogLine(ts: $0.timestampMillis, stream: $0.stream.rawValue, text: $0.text) }
            job.attempts.append(LocalRunReport.Attempt(number: attempt, status: outcome.state, exitCode: result.termination.exitCode,
                                                       reason: reason, startedAt: begun, finishedAt: Date(), log: lines))
            job.status = outcome.state
            job.reason = reason.isEmpty ? nil : reason
            let took = Self.format(Date().timeIntervalSince(begun))
            if outcome == .success {
                say("✓ \(def.name) passed in \(took)")
                break
            }
            say("✗ \(def.name) \(outcome.state.display)\(reason.isEmpty ? "" : " (\(reason))") in \(took)\(def.allowFailure ? ", allowed to fail" : "")")
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

    final class LogCollector: Sendable {
        private let collected = NIOLockedValueBox<[OutputLine]>([])
        func add(_ l: [OutputLine]) { collected.withLockedValue { $0 += l } }
        var lines: [OutputLine] { collected.withLockedValue { $0 } }
    }
}
