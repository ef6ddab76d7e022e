import DevCIWire
import Foundation

/// What a job's steps run on. The runner and `devci run --local` hand a job to one and know nothing of where
/// it runs: the host (`HostExecutor`, a process group under a leader) today, a container through the
/// Docker Engine API next. Output streams line by line, stdout and stderr apart, with timestamps.
public protocol Executor: AnyObject, Sendable {
    /// Runs `job` to its end and returns how it ended. Blocks the calling thread, which must live until this
    /// returns (the job's leader dies with it).
    func run(_ job: ExecutorJob, onOutput: @escaping @Sendable ([OutputLine]) -> Void) -> JobExecutor.Result
    /// Ends the job now (a cancel, a lost lease, the runner stopping): `run` then returns with `stopped`.
    /// Before `run` has started, it keeps the job from starting at all.
    func cancel(grace: TimeInterval)
}

/// One job as an executor takes it: its steps (or, without a pipeline, the fallback command as one step),
/// where it runs, and its environment.
public struct ExecutorJob: Sendable {
    public var script: JobScript?
    public var fallbackCommand: String
    public var directory: String
    public var environment: [String: String]
    /// Labels for what the job runs in (a container's), so its leftovers can be found.
    public var labels: [String: String]
    /// The secrets the job may see, as variables over everything else (its own `env` included).
    public var secrets: [String: String]

    public init(script: JobScript?, fallbackCommand: String, directory: String, environment: [String: String], labels: [String: String] = [:],
                secrets: [String: String] = [:]) {
        self.secrets = secrets
        self.script = script
        self.fallbackCommand = fallbackCommand
        self.directory = directory
        self.environment = environment
        self.labels = labels
    }
}

/// The host executor: the job's steps under one process-group leader on this machine (see `JobExecutor`).
public final class HostExecutor: Executor {
    private let process = ChildProcess()

    public init() {}

    public func run(_ job: ExecutorJob, onOutput: @escaping @Sendable ([OutputLine]) -> Void) -> JobExecutor.Result {
        JobExecutor.run(script: job.script, fallbackCommand: job.fallbackCommand, in: job.directory, environment: job.environment,
                        secrets: job.secrets, process: process, onOutput: onOutput)
    }

    public func cancel(grace: TimeInterval) {
        process.stop(grace: grace)
    }
}

/// Runs one job's steps in a workspace, the same way on a runner and in `devci run --local`: all steps under
/// one process-group leader (so a service started by one step lives on for the next), each step through
/// `/bin/sh -e -c`, stopping at the first that fails; the timeout takes down the whole group.
public enum JobExecutor {
    public struct Result: Equatable, Sendable {
        public var termination: Termination
        public var timedOut: Bool
        public var stopped: Bool
        /// The engine killed a process of the job for going over its memory limit.
        public var outOfMemory = false
        /// The steps passed but what follows them did not (its artifacts could not be kept): the job fails so.
        public var failure: String?

        public init(termination: Termination, timedOut: Bool, stopped: Bool, outOfMemory: Bool = false) {
            self.termination = termination
            self.timedOut = timedOut
            self.stopped = stopped
            self.outOfMemory = outOfMemory
        }

        /// Nothing ran, for this reason: the job ends `error`.
        public static func failedToStart(_ why: String) -> Result { Result(termination: .failedToStart(why), timedOut: false, stopped: false) }
        /// Stopped on request before anything ran.
        public static let stoppedBeforeStart = Result(termination: .exited(-1), timedOut: false, stopped: true)

        /// How the attempt ended, and why, as a runner reports it.
        public var outcome: (Outcome, String) {
            if timedOut { return (.timedOut, "timed out") }
            if stopped { return (.cancelled, "stopped on request") }
            if outOfMemory, termination != .exited(0) { return (.failed, "out of memory") }
            if let failure { return (.failed, failure) }
            switch termination {
            case .exited(0): return (.success, "")
            case .exited(let code): return (.failed, "exit status \(code)")
            case .signaled(let sig): return (.failed, "killed by signal \(sig)")
            case .failedToStart(let why): return (.error, why)
            }
        }
    }

    /// Runs `script` (or, without one, `fallbackCommand` as a single step) in `directory`.
    /// Blocks the calling thread, which must live until this returns.
    public static func run(script: JobScript?, fallbackCommand: String, in directory: String, environment: [String: String],
                           secrets: [String: String] = [:], process: ChildProcess, onOutput: @escaping @Sendable ([OutputLine]) -> Void) -> Result {
        let driver = StepDriver(script: script, fallbackCommand: fallbackCommand, environment: environment, secrets: secrets)
        let cwd: String
        switch driver.workingDirectory(in: directory) {
        case .success(let dir): cwd = dir
        case .failure(let why): return .failedToStart(why.description)
        }
        let timedOut = OnceFlag(), finished = OnceFlag()
        if let seconds = script?.timeoutSeconds {
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
                guard !finished.isSet else { return }
                timedOut.set()
                process.stop(grace: 2)  // before the spawn, this keeps it from happening at all
            }
        }
        defer { finished.set() }
        let termination = process.run(["/bin/sh", "-c", StepDriver.source], in: cwd, environment: driver.environment) { lines in
            onOutput(driver.label(lines))
        }
        return Result(termination: termination, timedOut: timedOut.isSet, stopped: process.wasStopped && !timedOut.isSet)
    }
}

/// How a job's steps are driven, the same on the host and in a container: one `/bin/sh` runs the fixed `source`,
/// which takes the steps from the environment and prints a marker line before each; `label` turns those markers
/// into system lines naming the step.
public struct StepDriver: Sendable {
    /// The driver: fixed text. Step names and commands reach it only through the environment, never spliced
    /// into shell source; the marker line lets the executor tell step boundaries from the steps' own output.
    public static let source = """
        n=0
        while [ "$n" -lt "$DEVCI_STEP_COUNT" ]; do
          n=$((n+1))
          eval "step_name=\\"\\${DEVCI_STEP_NAME_$n}\\" step_run=\\"\\${DEVCI_STEP_RUN_$n}\\""
          printf '%s %s %s\\n' "$DEVCI_STEP_MARK" "$n" "$step_name"
          /bin/sh -e -c "$step_run" || exit $?
        done
        """

    /// The given environment, the script's `env` over it, the secrets over both, and the steps.
    public let environment: [String: String]
    public let mark: String
    public let total: Int
    public let workdir: String?

    public init(script: JobScript?, fallbackCommand: String, environment: [String: String], secrets: [String: String] = [:]) {
        let steps = script?.steps ?? [JobScript.Step(name: "test", run: fallbackCommand)]
        var env = environment.merging(script?.env ?? [:]) { $1 }.merging(secrets) { $1 }
        mark = "\u{1}devci-step-\(UInt64.random(in: 0...UInt64.max))"
        env["DEVCI_STEP_COUNT"] = String(steps.count)
        env["DEVCI_STEP_MARK"] = mark
        for (i, step) in steps.enumerated() {
            env["DEVCI_STEP_NAME_\(i + 1)"] = step.name
            env["DEVCI_STEP_RUN_\(i + 1)"] = step.run
        }
        self.environment = env
        total = steps.count
        workdir = script?.workdir
    }

    public struct Escape: Error, CustomStringConvertible {
        public var description: String
    }

    /// The folder the steps start in: the workspace, or `workdir` inside it.
    public func workingDirectory(in workspace: String) -> Swift.Result<String, Escape> {
        guard let dir = workdir else { return .success(workspace) }
        guard !dir.hasPrefix("/"), !dir.split(separator: "/").contains("..") else {
            return .failure(Escape(description: "workdir '\(dir)' leaves the workspace"))
        }
        return .success((workspace as NSString).appendingPathComponent(dir))
    }

    /// "<mark> 2 unit tests" → a system line "step 2/3: unit tests"; other lines as they are.
    public func label(_ lines: [OutputLine]) -> [OutputLine] {
        lines.map { line in
            guard line.stream == .out, line.text.hasPrefix(mark + " ") else { return line }
            let rest = line.text.dropFirst(mark.count + 1)
            let number = rest.prefix { $0 != " " }
            return OutputLine(stream: .system, timestampMillis: line.timestampMillis,
                              text: "step \(number)/\(total): \(rest.dropFirst(number.count + 1))")
        }
    }
}
