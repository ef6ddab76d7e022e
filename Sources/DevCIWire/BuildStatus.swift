/// A build's status, rolled up from its jobs': the one definition the dispatcher's plans, every store, the
/// reporter and `devci run --local` use.
public enum BuildStatus: String, Sendable, CaseIterable, Codable {
    /// Nothing has started yet.
    case queued
    /// A runner has taken its first job, which has not begun running yet.
    case started
    /// Some job is under way, or some have ended and others wait.
    case running
    case success
    /// Only jobs allowed to fail failed (stored as `success` with a count of allowed failures).
    case passedWithAllowedFailures = "passed_with_allowed_failures"
    case failed, error, cancelled
    case timedOut = "timed_out"
    /// A task run that never ran: another run of the task was active, or its debounce window was open.
    case skipped

    /// A job as the roll-up sees it.
    public struct Job: Sendable, Equatable {
        public var state: JobState
        public var allowFailure: Bool

        public init(state: JobState, allowFailure: Bool) {
            self.state = state
            self.allowFailure = allowFailure
        }
    }

    /// Active while any job is, else the worst final state among the jobs not allowed to fail (a skipped job
    /// means something upstream failed); `passedWithAllowedFailures` when only allowed failures failed.
    public static func rollUp(_ jobs: [Job]) -> BuildStatus {
        if jobs.contains(where: { $0.state == .running }) { return .running }
        if jobs.contains(where: { $0.state == .assigned }) { return jobs.contains(where: { $0.state.isFinal }) ? .running : .started }
        if jobs.contains(where: { !$0.state.isFinal }) {
            return jobs.contains(where: { $0.state.isFinal }) ? .running : .queued
        }
        let counted = jobs.filter { !$0.allowFailure }.map(\.state)
        let worst: [(JobState, BuildStatus)] = [(.error, .error), (.timedOut, .timedOut), (.failed, .failed), (.cancelled, .cancelled)]
        if let (_, status) = worst.first(where: { counted.contains($0.0) }) { return status }
        if counted.contains(.skipped) { return .failed }
        return allowedFailures(jobs) > 0 ? .passedWithAllowedFailures : .success
    }

    /// Jobs allowed to fail that ended otherwise than in success.
    public static func allowedFailures(_ jobs: [Job]) -> Int {
        jobs.filter { $0.allowFailure && $0.state.isFinal && $0.state != .success }.count
    }

    /// No job will change any more.
    public var isFinal: Bool { self != .queued && self != .started && self != .running }

    /// Passed, with or without allowed failures.
    public var passed: Bool { self == .success || self == .passedWithAllowedFailures }
    /// Failed, errored or timed out: what notifications call a failure and a bisection looks for.
    public var isFailure: Bool { self == .failed || self == .error || self == .timedOut }

    /// How people read it: `passed with allowed failures`, `timed out`.
    public var display: String { DisplayName.of(rawValue) }
}

/// The one way a state's raw value (`timed_out`) becomes words (`timed out`).
public enum DisplayName {
    public static func of(_ raw: String) -> String { raw.replacingOccurrences(of: "_", with: " ") }
}

extension JobState {
    /// How people read it: `timed out`.
    public var display: String { DisplayName.of(rawValue) }
}
