/// A message a peer (runner or command-line client) sends to the dispatcher.
public enum ClientMessage: Equatable, Sendable {
    /// Proves the shared token; must come first when the dispatcher has one.
    case auth(token: String)
    /// A runner introduces itself; `slots` is how many jobs it runs at once, `queues` which queues it serves.
    case register(name: String, slots: Int, queues: [String] = [defaultQueue])
    /// Renews every lease the runner holds.
    case heartbeat
    /// After a reconnect: the runner is still working on this attempt and wants its lease back.
    case claim(job: Int64, attempt: Int)
    /// The runner has begun working on an assigned attempt.
    case started(job: Int64, attempt: Int)
    /// One line of a job's output.
    case log(job: Int64, attempt: Int, stream: LogStream, timestampMillis: Int64, text: String)
    /// How an attempt ended. `exitCode` is -1 when no process exited.
    /// `giveBack` (with `cancelled` only): the runner hands the job back unrun, and why.
    case result(job: Int64, attempt: Int, outcome: Outcome, exitCode: Int, reason: String, giveBack: GiveBack? = nil)
    /// Enqueue a build of one commit, with its `.devci.yml` as the dispatcher should see it.
    /// `title` and `author` (the commit's first line and author) are for people; empty when unknown.
    /// `mark`: whether the build also becomes the branch's last-dispatched commit, which the observer builds from.
    case dispatch(repo: String, commit: String, branch: String, pipeline: PipelineText, title: String = "", author: String = "",
                  mark: MarkUpdate = .always)
    /// Ask for the one-line summary of the dispatcher's state.
    case status
    /// Ask for the last commit dispatched for a repository and branch (empty when none).
    case lastDispatched(repo: String, branch: String)
    /// Queue a one-off shell command on the fleet (no checkout): answered `queued`.
    case addJob(AdHocJob)
    /// Cancel a build's unfinished jobs, or one job: queued ones end at once, running ones are stopped.
    /// `by`: who asked (the reporter names its signed-in user), recorded with the cancel.
    case cancel(CancelTarget, by: String = "")
    /// Run a build again as a new build: every job, or (`failedOnly`) only those that did not pass, the passed
    /// ones kept as they ended. Answered `queued` with the new build.
    case rerun(build: Int64, failedOnly: Bool, by: String)
    /// Reread the server configuration (`--config`): answered `ok` or `error code=config` with the problems.
    case reload
    /// An observer waits (at most `timeoutMillis`) for a webhook push to any of these repository addresses:
    /// answered `pushed`, at once when one came in since its last wait.
    case awaitPush(repos: [String], timeoutMillis: Int)
    /// One chunk of an artifact of an attempt in progress (`data` is base64, at most `ArtifactPath.chunkBytes`
    /// raw bytes); `size` is the whole file's. Answered `ok for=artifact_put` once written, or an error.
    case artifactPut(job: Int64, attempt: Int, path: String, size: Int64, offset: Int64, data: String)
    /// Ask which artifacts a build kept (of one job when named), from the `from`-th: answered `artifact_list`.
    case artifactList(build: Int64, job: String?, from: Int)
    /// Ask for a chunk of a kept artifact: answered `artifact_data`.
    case artifactGet(build: Int64, job: String, path: String, offset: Int64)
    /// Test results of an attempt in progress (its JUnit reports, or its log's test summary), sent before its
    /// `result`; at most `TestResultBatch.maxBytes` of JSON per line. Not answered.
    case tests(job: Int64, attempt: Int, results: [TestResult])
    /// A commit the observer left unbuilt (over its backlog cap), kept so that a failure can be bisected:
    /// answered `ok for=untested` once stored.
    case untested(UntestedCommit)
}

/// A commit that was not built when it came: it is older than `before` (dispatched in the same poll) and newer
/// than the branch's build before that. Its pipeline travels with it, as a dispatch's does.
public struct UntestedCommit: Equatable, Sendable {
    public var repo: String
    public var branch: String
    public var commit: String
    public var before: String
    public var pipeline: PipelineText
    public var title: String
    public var author: String
    /// The oldest commit sent of a backlog whose older part was not sent: what came before it is unknown.
    public var cut = false

    public init(repo: String, branch: String, commit: String, before: String, pipeline: PipelineText, title: String = "", author: String = "",
                cut: Bool = false) {
        self.cut = cut
        self.repo = repo
        self.branch = branch
        self.commit = commit
        self.before = before
        self.pipeline = pipeline
        self.title = title
        self.author = author
    }
}

/// A one-off job: `devci add-job "command"`.
public struct AdHocJob: Equatable, Sendable {
    public var command: String
    public var queue: String
    public var priority: Int
    public var timeoutSeconds: Double?

    public init(command: String, queue: String = defaultQueue, priority: Int = 0, timeoutSeconds: Double? = nil) {
        self.command = command
        self.queue = queue
        self.priority = priority
        self.timeoutSeconds = timeoutSeconds
    }
}

/// What a `cancel` names.
public enum CancelTarget: Equatable, Sendable, CustomStringConvertible {
    case build(Int64)
    case job(Int64)

    /// `build 12`, `job 34`.
    public var description: String {
        switch self {
        case .build(let id): return "build \(id)"
        case .job(let id): return "job \(id)"
        }
    }
}

/// The queue a runner serves and a job goes to when nobody says otherwise.
public let defaultQueue = "default"

/// The range of a job's priority (higher runs first).
public let priorityRange = -1000...1000

/// A message the dispatcher sends to a peer.
public enum ServerMessage: Equatable, Sendable {
    /// The greeting, sent first on every connection.
    case hello(protocolVersion: Int, authRequired: Bool)
    /// A request succeeded and has nothing more to say.
    case ok(what: String)
    /// A request failed; the connection stays open unless the peer keeps failing.
    case error(code: ErrorCode, message: String)
    /// The runner is registered under this name, and must heartbeat at this interval.
    case registered(name: String, heartbeatMillis: Int, leaseMillis: Int)
    /// Run this attempt of a job.
    case assign(JobAssignment)
    /// Stop this attempt: its lease is gone (it expired, or a claim or `started` came for a lease the runner no longer holds).
    case cancel(job: Int64, attempt: Int, reason: String)
    /// The result of this attempt is recorded.
    case accepted(job: Int64, attempt: Int)
    /// The result of this attempt came from a lease that was already taken away and is not recorded.
    case discarded(job: Int64, attempt: Int, reason: String)
    /// A build was enqueued (`created`) or already existed for this repository and commit.
    case queued(build: Int64, jobs: [Int64], created: Bool)
    /// The dispatcher's view, one readable line. `waiting`: queues with queued jobs that no connected runner serves.
    case status(queued: Int, running: Int, runners: Int, waiting: [String] = [])
    /// The last commit dispatched for a repository and branch; empty when none was.
    case last(repo: String, branch: String, commit: String)
    /// The answer to `awaitPush`: the repository addresses a webhook push named since the last wait (empty
    /// when the wait timed out).
    case pushed(repos: [String])
    /// Kept artifacts, as many as fit in the line; `next` is the index to ask `from` for the rest, 0 when none are left.
    case artifactList(entries: [ArtifactEntry], next: Int)
    /// A chunk of an artifact (base64) at `offset`, and the file's whole size.
    case artifactData(size: Int64, offset: Int64, data: String)
}

/// A commit's pipeline file as the dispatching peer found it.
/// The name of the pipeline file at a repository's root.
public let pipelineFileName = ".devci.yml"

/// The largest pipeline file sent with a dispatch: it must fit in one line of the wire once percent-encoded.
public let pipelineFileLimit = 24_576

public enum PipelineText: Equatable, Sendable {
    /// The commit has no pipeline file: the runner's default test command runs as one job.
    case none
    case text(String)
    /// The file is there but could not be read (too large, not text): the build fails with this reason.
    case unreadable(String)
}

/// Everything a runner needs to run one attempt of a job: what an `assign` line carries.
public struct JobAssignment: Equatable, Sendable {
    public var job: Int64
    public var attempt: Int
    public var build: Int64
    /// The job's name in its pipeline (`test` for a build without one).
    public var name: String
    /// Empty (with `commit` and `branch`) for a job that runs without a checkout: a task run without a
    /// commit, or an ad-hoc job. It then runs in an empty folder.
    public var repo: String
    public var commit: String
    public var branch: String
    /// What to run, as `JobScript` JSON; nil: the runner's own test command.
    public var script: String?
    /// The secrets this job may see (server configuration `secrets:`), by environment variable; filled in by the
    /// dispatcher as the assignment is sent, never stored.
    public var secrets: [String: String] = [:]

    public init(job: Int64, attempt: Int, build: Int64, name: String = "test", repo: String, commit: String, branch: String,
                script: String? = nil) {
        self.job = job
        self.attempt = attempt
        self.build = build
        self.name = name
        self.repo = repo
        self.commit = commit
        self.branch = branch
        self.script = script
    }

    /// Whether the job runs in a checkout of `repo` at `commit`.
    public var hasCheckout: Bool { !repo.isEmpty }
}

/// What a dispatch does to its branch's last-dispatched mark (the commit the observer builds onwards from).
/// On the wire: `mark=1` (the default, omitted), `mark=0`, or `mark=<commit id>`.
public enum MarkUpdate: Equatable, Sendable {
    /// The commit becomes the mark (the observer: it dispatches each branch's commits oldest first).
    case always
    /// The mark stays; the commit becomes the mark only where the branch has none yet.
    case never
    /// The commit becomes the mark only while the mark is still this commit (its ancestor, checked by the
    /// sender): a compare-and-set, so a newer mark set meanwhile by the observer is never moved backwards.
    case ifStill(String)
}

/// Why a runner gives a job back (a `cancelled` result with `give_back=`): the dispatcher queues it again at
/// once, and a runner that is shutting down gets no more work.
public enum GiveBack: String, Equatable, Sendable, CaseIterable {
    /// The runner is stopping.
    case shutdown
    /// Every slot of the runner was busy.
    case busy
}

