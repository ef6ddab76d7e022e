/// The state of a job or a build. Every transition is recorded by the dispatcher with its time and runner.
public enum JobState: String, Sendable, CaseIterable, Codable {
    /// Waiting for the jobs it depends on (its `needs`, or the earlier stages).
    case pending
    case queued, assigned, running, success, failed, error, cancelled, skipped
    case timedOut = "timed_out"

    /// A state that no further transition leaves.
    public var isFinal: Bool {
        switch self {
        case .pending, .queued, .assigned, .running: return false
        default: return true
        }
    }

    /// Held by a runner under a lease.
    public var isLeased: Bool { self == .assigned || self == .running }
}

/// A runner's connection as the dispatcher sees it.
public enum RunnerState: String, Sendable, CaseIterable, Codable {
    case connected
    /// Connected but silent for longer than a lease: no new work until it heartbeats again.
    case lost
    case disconnected
}

/// How a job attempt ended, as the runner reports it.
public enum Outcome: String, Sendable, CaseIterable {
    /// The test command exited 0.
    case success
    /// The test command exited non-zero: the commit is broken.
    case failed
    /// The job could not be run (checkout failed, command could not start): the infrastructure is broken.
    case error
    /// The runner stopped the job because it was told to.
    case cancelled
    /// The job ran past its timeout and its process group was killed.
    case timedOut = "timed_out"

    public var state: JobState {
        switch self {
        case .success: return .success
        case .failed: return .failed
        case .error: return .error
        case .cancelled: return .cancelled
        case .timedOut: return .timedOut
        }
    }
}

/// Which output stream a log line came from.
public enum LogStream: String, Sendable, Codable {
    case out, err, system
}

/// The words every surface (status line, reporter, `devci status`) uses for queues nobody serves.
public enum WaitingQueues {
    public static func describe(_ queues: [String]) -> String? {
        guard !queues.isEmpty else { return nil }
        return "waiting for a runner on queue\(queues.count == 1 ? "" : "s") " + queues.map { "'\($0)'" }.joined(separator: ", ")
    }
}