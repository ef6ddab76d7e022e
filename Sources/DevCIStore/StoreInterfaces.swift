import DevCIWire
import Foundation

/// What the dispatcher, the only writer, needs of the database: record builds, job transitions, logs and
/// runners, and read back what it restores on start. SQLite implements it; a PostgreSQL store can too. No
/// business rule lives behind it: what a build's status is comes from `BuildStatus`, what runs next from the
/// dispatcher's `BuildCoordinator`.
public protocol BuildWriter: AnyObject, Sendable {
    /// Records a build of `commit` with these jobs (`queued` where `startsQueued`, else `pending`), or returns the
    /// existing build of that repository and commit. `mark` says whether the commit becomes the branch's
    /// last-dispatched mark (see `MarkUpdate`).
    func enqueue(repo: String, branch: String, commit: String, jobs: [NewJob], mark: MarkUpdate, at: Date) throws -> EnqueueResult
    /// Records a build whose pipeline file is invalid: one job, `pipeline`, failed at once with `details` as its log.
    func enqueueInvalid(repo: String, branch: String, commit: String, reason: String, details: [String], mark: MarkUpdate, at: Date) throws -> EnqueueResult
    /// Records a task run or an ad-hoc job with these jobs. A run caused by a push is recorded once per task,
    /// repository and commit: a second returns the first (`created` false).
    func enqueueRun(_ run: NewRun, jobs: [NewJob], at: Date) throws -> EnqueueResult
    /// Records a task run that does not run (`skipped`, ended at once), with why. Returns its build id.
    func recordSkipped(_ run: NewRun, reason: String, at: Date) throws -> Int64
    /// Whether a webhook delivery id was noted (handled) before.
    func deliverySeen(id: String) throws -> Bool
    /// Notes a webhook delivery id once its work is recorded; false when it was noted before (a redelivery).
    func noteDelivery(id: String, event: String, at: Date) throws -> Bool
    /// When each periodic task was last scheduled (or first seen).
    func taskSchedule() throws -> [String: Date]
    func setTaskSchedule(_ schedule: [String: Date]) throws
    /// Every active task run, and each task's latest run that was not skipped.
    func taskRuns() throws -> [TaskRun]
    /// Stores a build's commit title and author, for people.
    func describe(build: Int64, title: String, author: String) throws
    /// Writes a job's new state and an event row, and rolls the build's status up. A job already in a final
    /// state is never changed again: each job ends with exactly one recorded result. Returns false when refused.
    @discardableResult func record(_ transition: JobTransition) throws -> Bool
    /// Appends log lines in one transaction.
    func appendLogs(_ lines: [LogRecord]) throws
    /// Notes many runners' connection states and latest heartbeats in one transaction (a herd of runners
    /// registering costs one write, not one each).
    func recordRunners(_ changes: [RunnerChange], heartbeats: [String: Date]) throws
    /// Jobs that are pending, queued, assigned or running, oldest first (what a restart restores).
    func activeJobs() throws -> [ActiveJob]
    /// A build as the reporter shows it (for a re-run: what to run again).
    func build(_ id: Int64) throws -> BuildSummary?
    /// A build's jobs as they were defined (script, needs, retries, queues), each with its state, in order.
    func jobDefinitions(build: Int64) throws -> [(job: NewJob, state: JobState)]
    /// Ended builds whose notifications were not yet put in the outbox.
    func buildsAwaitingNotification() throws -> [Int64]
    /// What a notification about a build says: its summary, how its predecessor ended, its failing jobs' last lines.
    func notificationFacts(build: Int64, logLines: Int) throws -> NotificationFacts?
    /// Puts a build's messages in the outbox and marks it decided, in one transaction.
    func queueNotifications(build: Int64, _ messages: [OutboxMessage], at: Date) throws
    /// Pending messages due by `at`, oldest first.
    func dueNotifications(at: Date, limit: Int) throws -> [OutboxEntry]
    /// Notes an attempt: sent, or failed and retried at `retryAt` (nil: given up). A sent one is never sent again.
    func noteNotificationAttempt(id: Int64, sent: Bool, error: String?, retryAt: Date?, at: Date) throws
    /// Every job of a build, in creation order.
    func jobs(build: Int64) throws -> [JobSummary]
    /// The last commit dispatched on a repository's branch.
    func lastDispatched(repo: String, branch: String) throws -> String?
    /// Test results of an attempt (issue 14), and what bisection needs.
    func appendTestResults(build: Int64, job: Int64, attempt: Int, _ results: [TestResult]) throws
    func noteUntested(_ u: UntestedCommit, at: Date) throws
    func untested(repo: String, branch: String, before: String) throws -> (commits: [String], cut: Bool)
    func untestedCommit(repo: String, branch: String, commit: String) throws -> UntestedRecord?
    func previousCommitBuild(before build: BuildSummary) throws -> BuildSummary?
    func nextCommitBuild(after build: BuildSummary) throws -> BuildSummary?
    func recentFailedCommitBuilds(limit: Int) throws -> [BuildSummary]
    func saveBisection(_ b: BisectionRecord, at: Date) throws -> Int64
    func bisection(explaining build: Int64) throws -> BisectionRecord?
    func bisection(building build: Int64) throws -> BisectionRecord?
    func runningBisections() throws -> [BisectionRecord]
    func tests(build: Int64) throws -> [BuildTest]
    /// Throws when the store is no longer the one that was opened (its file deleted or replaced), so that
    /// nothing is acknowledged into a database that is gone.
    func verify() throws
    /// Runs `body`, and every store call it makes on this thread, in one transaction: all of it is written, or
    /// none (group commit: the dispatcher's writer turns a burst of writes into one commit).
    func batch<T>(_ body: () throws -> T) throws -> T
}

/// What the reporter and `devci report` read, never write: pages of builds, a build's jobs, events and logs,
/// runners and repositories. They hold `any BuildReader`, opened with `openReader(at:)`.
public protocol BuildReader: AnyObject, Sendable {
    /// Queued and running jobs and connected runners, for the header of every page.
    func summary() throws -> SystemSummary
    /// A page of builds, newest first.
    func builds(_ filter: BuildFilter, offset: Int, limit: Int) throws -> [BuildSummary]
    /// The newest builds, newest first.
    func recentBuilds(limit: Int) throws -> [BuildSummary]
    func build(_ id: Int64) throws -> BuildSummary?
    /// Every job of a build, in creation order.
    func jobs(build: Int64) throws -> [JobSummary]
    func job(_ id: Int64) throws -> JobSummary?
    /// The recorded transitions of a build's jobs, oldest first.
    func events(build: Int64) throws -> [JobEvent]
    /// The recorded transitions of a job, oldest first.
    func events(job: Int64) throws -> [JobEvent]
    /// The whole log of a job, oldest first.
    func logs(job: Int64) throws -> [LogRecord]
    /// A job's log lines after the line id `after`, at most `limit`.
    func logs(job: Int64, after: Int64, limit: Int) throws -> [LogRecord]
    /// A build's log lines (all jobs) after the line id `after`, at most `limit`.
    func logs(build: Int64, after: Int64, limit: Int) throws -> [LogRecord]
    /// The last `limit` lines of a job's log, oldest first.
    func logTail(job: Int64, limit: Int) throws -> [LogRecord]
    /// The id of a build's newest log line (0 when none).
    func lastLogID(build: Int64) throws -> Int64
    func runners() throws -> [RunnerSummary]
    /// Every repository with a dispatched branch.
    func repositories() throws -> [String]
    /// Every task with a run.
    func tasks() throws -> [String]
    /// The last commit dispatched on a repository's branch.
    func lastDispatched(repo: String, branch: String) throws -> String?
    /// Tests (issue 14): a build's, a repository's flaky ones, one test's runs, a branch's timings, bisections.
    func tests(build: Int64) throws -> [BuildTest]
    func flakyTests(repo: String) throws -> [FlakyTest]
    func flakyTests(repo: String, names: [String]?) throws -> [FlakyTest]
    func testHistory(repo: String, suite: String, name: String, limit: Int) throws -> [TestRun]
    func testTimings(repo: String, branch: String, builds: Int) throws -> [TestTiming]
    func bisection(explaining build: Int64) throws -> BisectionRecord?
    func bisection(building build: Int64) throws -> BisectionRecord?
}

/// Opens the store at `location` (a SQLite file's path or a `postgres://` address) for reading only. Throws
/// `StoreError` when there is none yet or this version cannot read it.
public func openReader(at location: String) throws -> any BuildReader {
    if PostgresAddress.isAddress(location) {
        return try SQLStore(postgres: PostgresAddress(location), readOnly: true, connections: 4, applicationName: "devci reader")
    }
    return try SQLStore(path: location, readOnly: true)
}

/// Whether the store at `location` exists but its writer has not made its tables yet (a dispatcher started a
/// moment ago): "not yet", not "another version".
public func storeIsBeingCreated(at location: String) -> Bool {
    if PostgresAddress.isAddress(location) { return false }
    return SQLiteDriver.isBeingCreated(path: location)
}

/// `location` as messages may show it: a PostgreSQL address loses its password.
public func storeName(_ location: String) -> String {
    PostgresAddress.isAddress(location) ? PostgresAddress.redacted(location) : location
}
