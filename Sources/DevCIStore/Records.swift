import DevCIWire
import Foundation

/// A stored job as the scheduler needs it: its id and build, what to run, and where.
public struct JobSpec: Equatable, Sendable {
    public var id: Int64
    public var build: Int64
    public var name: String
    public var repo: String
    public var commit: String
    public var branch: String
    public var job: NewJob

    public init(id: Int64, build: Int64, name: String, repo: String, commit: String, branch: String, job: NewJob? = nil) {
        self.id = id
        self.build = build
        self.name = name
        self.repo = repo
        self.commit = commit
        self.branch = branch
        self.job = job ?? NewJob(name: name)
    }
}

/// A job as a build is created with it, from its pipeline (or the default single job): not stored yet, no id.
public struct NewJob: Equatable, Sendable {
    public var name: String
    public var stage: String
    /// Jobs that must end first (resolved from `needs` and stage order).
    public var dependencies: [String]
    public var allowFailure: Bool
    /// `JobScript` JSON; nil runs the runner's own test command.
    public var script: String?
    public var retries: Int
    public var retryDelaySeconds: Double
    /// Created `queued` (it may start at once) rather than `pending`: saves a write per job on the hot path.
    public var startsQueued = false
    /// The queues whose runners may take it.
    public var queues: [String]
    /// Higher first; equal priorities keep arrival order.
    public var priority: Int

    public init(name: String, stage: String = "test", dependencies: [String] = [], allowFailure: Bool = false, script: String? = nil,
                retries: Int = 0, retryDelaySeconds: Double = 0, queues: [String] = [defaultQueue], priority: Int = 0) {
        self.queues = queues
        self.priority = priority
        self.name = name
        self.stage = stage
        self.dependencies = dependencies
        self.allowFailure = allowFailure
        self.script = script
        self.retries = retries
        self.retryDelaySeconds = retryDelaySeconds
    }
}

/// How a build came to be.
public enum BuildCause: String, Codable, Sendable, CaseIterable {
    /// A commit of a repository, from the observer or `devci dispatch`: one build per repository and commit.
    case commit
    /// A task run started by a GitHub push (one per task and commit).
    case push
    /// A task's `period` came round.
    case period
    /// A run of an upstream task succeeded.
    case upstream
    /// `POST /hooks/tasks/<name>`.
    case hook
    /// `devci add-job`.
    case adhoc
    /// Someone re-ran an earlier build from the reporter (all its jobs, or its failed ones).
    case rerun
    /// A build of a commit that was never built, made to find which commit broke a branch (its `upstream` is the
    /// failed build it bisects). Low priority; never notified about.
    case bisect
}

/// A build other than a commit's: a task run or an ad-hoc job, before it is stored.
public struct NewRun: Equatable, Sendable {
    public var task: String?
    public var cause: BuildCause
    /// Empty when the run has no commit (it then runs without a checkout).
    public var repo: String
    public var branch: String
    public var commit: String
    /// The build whose success started this one.
    public var upstream: Int64?
    /// When the trigger meant it to start (a period's due time); nil: when it was enqueued.
    public var scheduledAt: Date?
    public var tags: [String]
    /// For people: the task's description or the ad-hoc command.
    public var title: String
    /// Why it exists, for people (a re-run says of what and by whom).
    public var reason: String?

    public init(task: String?, cause: BuildCause, repo: String = "", branch: String = "", commit: String = "", upstream: Int64? = nil,
                scheduledAt: Date? = nil, tags: [String] = [], title: String = "") {
        self.task = task
        self.cause = cause
        self.repo = repo
        self.branch = branch
        self.commit = commit
        self.upstream = upstream
        self.scheduledAt = scheduledAt
        self.tags = tags
        self.title = title
    }
}

/// A stored job that was not finished when the dispatcher last stopped: its `JobSpec` and its lease state, to restore.
public struct ActiveJob: Equatable, Sendable {
    public var spec: JobSpec
    public var state: JobState
    public var attempt: Int
    public var reassignments: Int
    public var runner: String?
    public var retriesUsed: Int

    public init(spec: JobSpec, state: JobState, attempt: Int, reassignments: Int, runner: String?, retriesUsed: Int = 0) {
        self.spec = spec
        self.state = state
        self.attempt = attempt
        self.reassignments = reassignments
        self.runner = runner
        self.retriesUsed = retriesUsed
    }
}

/// The outcome of enqueueing a commit.
public struct EnqueueResult: Equatable, Sendable {
    public var build: Int64
    public var jobs: [JobSpec]
    /// False when the repository and commit already had a build (the dispatch is idempotent).
    public var created: Bool
}

/// What a recorded job event means, beyond its new state: stored with the event, so reports count them
/// without reading the reason's words.
public enum EventKind: String, Equatable, Sendable, Codable {
    /// The job's runner lost it (its connection closed, it went silent, or it came back without it).
    case lost
    /// The runner gave the job back (shutting down, or busy).
    case gaveBack = "gave_back"
    /// An attempt failed and the job waits for its next one.
    case retry
}

/// A change of a job's state, with everything the database keeps about it.
public struct JobTransition: Equatable, Sendable {
    public var job: Int64
    public var state: JobState
    public var attempt: Int
    public var runner: String?
    public var reason: String?
    /// Why a job went back to the queue or ended, typed (the reason says it for people).
    public var kind: EventKind?
    public var exitCode: Int?
    public var reassignments: Int?
    public var retriesUsed: Int?
    /// When it happened; nil: when it is written (the scheduler reads no clock).
    public var at: Date?

    public init(job: Int64, state: JobState, attempt: Int, runner: String? = nil, reason: String? = nil, kind: EventKind? = nil,
                exitCode: Int? = nil, reassignments: Int? = nil, retriesUsed: Int? = nil, at: Date? = nil) {
        self.kind = kind
        self.retriesUsed = retriesUsed
        self.job = job
        self.state = state
        self.attempt = attempt
        self.runner = runner
        self.reason = reason
        self.exitCode = exitCode
        self.reassignments = reassignments
        self.at = at
    }
}

/// One line of a job's output as stored.
public struct LogRecord: Codable, Equatable, Sendable {
    /// Its row id once stored (the cursor of live logs); nil before.
    public var id: Int64?
    public var job: Int64
    public var attempt: Int
    public var stream: LogStream
    public var timestampMillis: Int64
    public var text: String

    public init(id: Int64? = nil, job: Int64, attempt: Int, stream: LogStream, timestampMillis: Int64, text: String) {
        self.id = id
        self.job = job
        self.attempt = attempt
        self.stream = stream
        self.timestampMillis = timestampMillis
        self.text = text
    }
}

/// A build as `devci report` lists it.
public struct BuildSummary: Codable, Equatable, Sendable {
    public var id: Int64
    public var repo: String
    public var branch: String
    public var commit: String
    /// As stored: a pass with allowed failures is `success` (see `buildStatus`).
    public var status: BuildStatus
    public var runner: String?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var attempts: Int
    public var reason: String?
    /// Jobs allowed to fail that did.
    public var allowedFailures: Int
    /// The commit's first line and author, when the dispatching peer knew them.
    public var title: String = ""
    public var author: String = ""
    /// The task it is a run of, and that run's number (nil for a commit's build or an ad-hoc job).
    public var task: String? = nil
    public var runNumber: Int? = nil
    public var cause: BuildCause = .commit
    /// Its ancestor: the upstream run whose success started it.
    public var upstream: Int64? = nil
    /// When its trigger meant it to start (a period's due time; else when it was enqueued).
    public var scheduledAt: Date? = nil
    public var tags: [String] = []
    /// Its descendants: the runs its success started.
    public var descendants: [Int64] = []

    /// The status as people mean it: a stored `success` with allowed failures is `passedWithAllowedFailures`.
    public var buildStatus: BuildStatus {
        status == .success && allowedFailures > 0 ? .passedWithAllowedFailures : status
    }

    /// The status as people read it: `passed with allowed failures`, `timed out`.
    public var displayStatus: String { buildStatus.display }

    /// What it is a run of, for people: `task nightly #3 (period)`, `ad-hoc job`; empty for a commit's build.
    public var runDescription: String {
        if let task { return "task \(task)\(runNumber.map { " #\($0)" } ?? "") (\(cause.rawValue))" }
        return cause == .adhoc ? "ad-hoc job" : cause == .rerun ? "re-run" : cause == .bisect ? "bisection" : ""
    }

    /// Seconds from the first start to the end, or to now while running.
    public var duration: Double? {
        guard let s = startedAt else { return nil }
        return (finishedAt ?? Date()).timeIntervalSince(s)
    }
}

/// One recorded state change of a job.
public struct JobEvent: Codable, Equatable, Sendable {
    public var job: Int64
    public var state: JobState
    public var attempt: Int
    public var runner: String?
    public var reason: String?
    public var at: Date
}

/// One stored job of a build as `devci report` and the reporter show it: states, times, runner, reason.
public struct JobSummary: Codable, Equatable, Sendable {
    public var id: Int64
    public var build: Int64
    public var name: String
    public var stage: String
    public var status: JobState
    public var allowFailure: Bool
    public var dependencies: [String]
    public var runner: String?
    public var attempt: Int
    public var reassignments: Int
    public var retriesUsed: Int
    public var startedAt: Date?
    public var finishedAt: Date?
    public var exitCode: Int?
    public var reason: String?
}

/// Which builds a listing shows; nil fields match everything.
public struct BuildFilter: Equatable, Sendable {
    public var repo: String?
    public var branch: String?
    public var status: String?
    public var id: Int64?
    public var task: String?
    public var tag: String?
    /// Builds started by this one's success (its descendants).
    public var upstream: Int64?
    /// Runs of these tasks are left out (the viewer may not see them).
    public var hiddenTasks: [String] = []
    /// Bisection builds (of older commits) are left out: for a branch's badge and pass rate.
    public var withoutBisections = false

    public init(repo: String? = nil, branch: String? = nil, status: String? = nil, id: Int64? = nil, task: String? = nil, tag: String? = nil,
                upstream: Int64? = nil) {
        self.task = task
        self.tag = tag
        self.upstream = upstream
        self.repo = repo
        self.branch = branch
        self.status = status
        self.id = id
    }
}

/// A runner as the reporter shows it.
public struct RunnerSummary: Codable, Equatable, Sendable {
    public var name: String
    public var state: RunnerState
    public var host: String?
    public var connectedAt: Date?
    public var lastHeartbeat: Date?
    public var currentJobs: [Int64]
    public var jobsRun: Int
    /// Jobs taken away from it (lease expired) in the last day.
    public var lostRecently: [Int64]
    /// The queues it serves.
    public var queues: [String] = [defaultQueue]
}

/// Queued and running jobs and connected runners, for the dashboard's summary.
public struct SystemSummary: Codable, Equatable, Sendable {
    public var queued: Int
    public var running: Int
    public var runners: Int
    /// Queues with queued jobs that no connected runner serves.
    public var waiting: [String] = []

    /// `waiting for a runner on queue 'gpu'`, or nil when no queue waits.
    public var waitingText: String? { WaitingQueues.describe(waiting) }
}


/// A task's run as the trigger logic restores it: each task's active runs (whose end may start downstream
/// tasks) and its latest run (whose start opens the debounce window).
public struct TaskRun: Equatable, Sendable {
    public var build: Int64
    public var task: String
    /// Queued or running.
    public var active: Bool
    /// When it started running, else when it was enqueued.
    public var startedAt: Date
    public var run: NewRun

    public init(build: Int64, task: String, active: Bool, startedAt: Date, run: NewRun) {
        self.build = build
        self.task = task
        self.active = active
        self.startedAt = startedAt
        self.run = run
    }
}
