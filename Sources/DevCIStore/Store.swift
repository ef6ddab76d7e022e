import DevCIWire
import Foundation

/// Why the store cannot be used.
public struct StoreError: Error, CustomStringConvertible {
    public var description: String
    /// The database is locked by someone else: the same call may succeed later.
    public var isBusy = false
    /// The database has no tables yet: a dispatcher is about to create them ("not yet", not "another version").
    public var isNotCreated = false
    /// The database refused a write from a dispatcher that no longer leads (its epoch is not the current one).
    public var isFenced = false
    public init(_ d: String, busy: Bool = false, notCreated: Bool = false, fenced: Bool = false) {
        description = d
        isBusy = busy
        isNotCreated = notCreated
        isFenced = fenced
    }
}

/// A runner's connection state, for the runners table.
public struct RunnerChange: Equatable, Sendable {
    public var name: String
    public var state: RunnerState
    /// The runner's address, on connecting.
    public var host: String?
    public var at: Date
    /// The queues it serves, on connecting.
    public var queues: [String]?

    public init(name: String, state: RunnerState, host: String?, at: Date, queues: [String]? = nil) {
        self.queues = queues
        self.name = name
        self.state = state
        self.host = host
        self.at = at
    }
}

/// The SQLite store, through GRDB, in WAL mode.
/// The store: every build, job, log line and runner, in SQLite (the embedded default) or PostgreSQL. Its SQL is
/// written once, in what both databases accept; a driver runs it (`SQLiteDriver`, `PostgresDriver`).
public final class SQLStore: BuildWriter, BuildReader, @unchecked Sendable {
    // @unchecked: the driver serializes or pools its connections; `batchConnection` and `batchThread` are
    // guarded by `batchLock`; the rest is immutable.
    let driver: any SQLDriver
    /// The database, as messages name it: a file's path, or a server's address without its password.
    public var path: String { driver.name }

    /// The transaction a `batch` holds open, and the thread running it: store calls made inside the batch
    /// join it.
    private let batchLock = NSLock()
    private var batchConnection: (any SQLConnection)?
    private var batchThread: pthread_t?
    /// The states of the jobs of builds this process is writing, so that recording a transition needs no read
    /// first (a round trip per job state on PostgreSQL). Cleared whenever a write fails (its transaction rolled
    /// back), and read again from the database on a miss.
    let jobStates = JobStateCache()

    /// Opens (creating and migrating when `readOnly` is false) the SQLite database at `path`.
    public convenience init(path: String, readOnly: Bool = false) throws {
        self.init(driver: try SQLiteDriver(path: path, readOnly: readOnly))
    }

    init(driver: any SQLDriver) {
        self.driver = driver
    }

    /// A read of the database, for the reporter's queries (Store+Reads.swift); inside a batch, in its transaction.
    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        if let open = openBatch() { return try body(open) }
        return try driver.read(body)
    }

    /// A write transaction; inside a batch, part of the batch's.
    func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        if let open = openBatch() { return try body(open) }
        do {
            return try driver.write(body)
        } catch {
            jobStates.clear()
            throw error
        }
    }

    private func openBatch() -> (any SQLConnection)? {
        batchLock.withLock {
            guard let thread = batchThread, pthread_equal(thread, pthread_self()) != 0 else { return nil }
            return batchConnection
        }
    }

    public func batch<T>(_ body: () throws -> T) throws -> T {
        if openBatch() != nil { return try body() }
        do {
            return try driver.write { db in
                batchLock.withLock { (batchConnection, batchThread) = (db, pthread_self()) }
                defer { batchLock.withLock { (batchConnection, batchThread) = (nil, nil) } }
                return try body()
            }
        } catch {
            jobStates.clear()
            throw error
        }
    }

    public func verify() throws {
        try driver.verify()
    }

    /// Where the database lives when no flag says: `DEVCI_DB`, else `~/.devci/devci.sqlite`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let p = environment["DEVCI_DB"], !p.isEmpty { return p }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return home + "/.devci/devci.sqlite"
    }

    public func enqueueRun(_ run: NewRun, jobs newJobs: [NewJob], at: Date) throws -> EnqueueResult {
        try write { db in
            if run.cause == .push, let id = try db.one(as: Int64.self, """
                SELECT id FROM builds WHERE cause = 'push' AND task = ? AND repo = ? AND commit_id = ?
                """, [run.task, run.repo, run.commit]) {
                return EnqueueResult(build: id, jobs: try Self.jobSpecs(db, build: id, repo: run.repo, commit: run.commit, branch: run.branch),
                                     created: false)
            }
            let build = try Self.insertRun(db, run, status: .queued, reason: run.reason, at: at)
            var specs: [JobSpec] = []
            for job in newJobs {
                let id = try Self.insertJob(db, build: build, job: job, at: at)
                specs.append(JobSpec(id: id, build: build, name: job.name, repo: run.repo, commit: run.commit, branch: run.branch, job: job))
            }
            jobStates.note(build: build, specs)
            return EnqueueResult(build: build, jobs: specs, created: true)
        }
    }

    public func recordSkipped(_ run: NewRun, reason: String, at: Date) throws -> Int64 {
        try write { db in try Self.insertRun(db, run, status: .skipped, reason: reason, at: at) }
    }

    private static func insertRun(_ db: any SQLConnection, _ run: NewRun, status: BuildStatus, reason: String?, at: Date) throws -> Int64 {
        let number = try run.task.map { try db.one(as: Int.self, "SELECT COALESCE(MAX(run_number), 0) + 1 FROM builds WHERE task = ?", [$0]) ?? 1 }
        let t = at.timeIntervalSince1970
        return try db.insert("""
            INSERT INTO builds(repo, branch, commit_id, status, created_at, finished_at, cause, task, run_number, upstream_build, scheduled_at, tags, title, reason)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [run.repo, run.branch, run.commit, status.rawValue, t, status.isFinal ? t : nil as Double?, run.cause.rawValue, run.task, number,
                  run.upstream, (run.scheduledAt ?? at).timeIntervalSince1970, Self.tagList(run.tags), String(run.title.prefix(200)), reason])
    }

    /// Tags stored as `,a,b,` so that one tag matches with `LIKE '%,a,%'`.
    static func tagList(_ tags: [String]) -> String { tags.isEmpty ? "" : "," + tags.joined(separator: ",") + "," }

    public func deliverySeen(id: String) throws -> Bool {
        try read { db in try db.one(as: Bool.self, "SELECT 1 FROM webhook_deliveries WHERE id = ?", [id]) ?? false }
    }

    public func noteDelivery(id: String, event: String, at: Date) throws -> Bool {
        try write { db in
            try db.execute("INSERT INTO webhook_deliveries(id, at, event) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           [id, at.timeIntervalSince1970, event]) > 0
        }
    }

    public func taskSchedule() throws -> [String: Date] {
        try read { db in
            var out: [String: Date] = [:]
            for r in try db.rows("SELECT task, last_scheduled FROM task_schedule") {
                out[r["task"]] = Date(timeIntervalSince1970: r["last_scheduled"])
            }
            return out
        }
    }

    public func setTaskSchedule(_ schedule: [String: Date]) throws {
        guard !schedule.isEmpty else { return }
        try write { db in
            for (task, at) in schedule.sorted(by: { $0.key < $1.key }) {
                try db.send("""
                    INSERT INTO task_schedule(task, last_scheduled) VALUES (?, ?)
                    ON CONFLICT(task) DO UPDATE SET last_scheduled = excluded.last_scheduled
                    """, [task, at.timeIntervalSince1970])
            }
        }
    }

    public func taskRuns() throws -> [TaskRun] {
        try read { db in
            try db.rows("""
                SELECT * FROM builds WHERE task IS NOT NULL
                AND (status IN ('queued', 'started', 'running') OR id IN (SELECT MAX(id) FROM builds WHERE task IS NOT NULL AND status != 'skipped' GROUP BY task))
                ORDER BY id
                """).map { r in
                let b = Self.buildSummaryFields(r)
                return TaskRun(build: b.id, task: b.task ?? "", active: !b.status.isFinal, startedAt: b.startedAt ?? b.createdAt,
                               run: NewRun(task: b.task, cause: b.cause, repo: b.repo, branch: b.branch, commit: b.commit, upstream: b.upstream,
                                           scheduledAt: b.scheduledAt, tags: b.tags, title: b.title))
            }
        }
    }

    public func enqueue(repo: String, branch: String, commit: String, jobs newJobs: [NewJob], mark: MarkUpdate = .always, at: Date) throws -> EnqueueResult {
        try write { db in
            let head = Self.branchHeadStatement(repo: repo, branch: branch, commit: commit, move: mark, at: at)
            guard let (build, ids) = try Self.insertBuild(db, repo: repo, branch: branch, commit: commit, jobs: newJobs, head: head, at: at) else {
                return try existingBuild(db, repo: repo, commit: commit)
            }
            let specs = zip(ids, newJobs).map { id, job in
                JobSpec(id: id, build: build, name: job.name, repo: repo, commit: commit, branch: branch, job: job)
            }
            jobStates.note(build: build, specs)
            return EnqueueResult(build: build, jobs: specs, created: true)
        }
    }

    public func enqueueInvalid(repo: String, branch: String, commit: String, reason: String, details: [String], mark: MarkUpdate = .always,
                               at: Date) throws -> EnqueueResult {
        try write { db in
            try Self.noteBranchHead(db, repo: repo, branch: branch, commit: commit, move: mark, at: at)
            guard let build = try Self.insertBuild(db, repo: repo, branch: branch, commit: commit, at: at) else {
                return try existingBuild(db, repo: repo, commit: commit)
            }
            let job = NewJob(name: "pipeline", stage: "pipeline")
            let id = try Self.insertJob(db, build: build, job: job, at: at)
            let ms = Int64(at.timeIntervalSince1970 * 1000)
            for line in details {
                try db.send("INSERT INTO log_lines(job_id, attempt, stream, ts, text) VALUES (?, 0, 'system', ?, ?)", [id, ms, line])
            }
            _ = try Self.transition(db, JobTransition(job: id, state: .failed, attempt: 0, reason: reason, at: at), cache: jobStates)
            return EnqueueResult(build: build, jobs: [JobSpec(id: id, build: build, name: job.name, repo: repo, commit: commit, branch: branch, job: job)],
                                 created: true)
        }
    }

    private func existingBuild(_ db: any SQLConnection, repo: String, commit: String) throws -> EnqueueResult {
        guard let row = try db.row("SELECT id, branch FROM builds WHERE repo = ? AND commit_id = ? AND cause = 'commit'",
                                         [repo, commit]) else {
            throw StoreError("the build of \(repo) \(commit) was there a moment ago and is gone")
        }
        let id: Int64 = row["id"]
        return EnqueueResult(build: id, jobs: try Self.jobSpecs(db, build: id, repo: repo, commit: commit, branch: row["branch"]), created: false)
    }

    private static func jobSpecs(_ db: any SQLConnection, build: Int64, repo: String, commit: String, branch: String) throws -> [JobSpec] {
        try db.rows("SELECT id, name FROM jobs WHERE build_id = ? ORDER BY id", [build]).map {
            JobSpec(id: $0["id"], build: build, name: $0["name"], repo: repo, commit: commit, branch: branch)
        }
    }

    private static func noteBranchHead(_ db: any SQLConnection, repo: String, branch: String, commit: String, move: MarkUpdate, at: Date) throws {
        let head = branchHeadStatement(repo: repo, branch: branch, commit: commit, move: move, at: at)
        try db.send(head.sql, head.arguments)
    }

    /// The statement that notes a dispatched commit as its branch's mark (see `MarkUpdate`).
    private static func branchHeadStatement(repo: String, branch: String, commit: String, move: MarkUpdate,
                                            at: Date) -> (sql: String, arguments: [any SQLValueConvertible]) {
        let onConflict: String
        var args: [any SQLValueConvertible] = [repo, branch, commit, at.timeIntervalSince1970]
        switch move {
        case .always: onConflict = "UPDATE SET commit_id = excluded.commit_id, at = excluded.at"
        case .never: onConflict = "NOTHING"
        case .ifStill(let expected):
            onConflict = "UPDATE SET commit_id = excluded.commit_id, at = excluded.at WHERE branch_heads.commit_id = ?"
            args.append(expected)
        }
        return ("""
            INSERT INTO branch_heads(repo, branch, commit_id, at) VALUES (?, ?, ?, ?)
            ON CONFLICT(repo, branch) DO \(onConflict)
            """, args)
    }

    /// A new commit build's id, or nil when the repository's commit has one (one build per repository and commit:
    /// the partial unique index `builds_commit` decides, in the same statement).
    private static func insertBuild(_ db: any SQLConnection, repo: String, branch: String, commit: String, at: Date) throws -> Int64? {
        try db.one(as: Int64.self, """
            INSERT INTO builds(repo, branch, commit_id, status, created_at) VALUES (?, ?, ?, 'queued', ?)
            ON CONFLICT (repo, commit_id) WHERE cause = 'commit' DO NOTHING RETURNING id
            """, [repo, branch, commit, at.timeIntervalSince1970])
    }

    private static let jobColumns = "name, status, queued_at, stage, dependencies, allow_failure, script, retries, retry_delay, queues, priority"

    /// A job's values for `jobColumns`, and its first state.
    private static func jobValues(_ job: NewJob, at: Date) throws -> (values: [any SQLValueConvertible], state: String) {
        let deps = String(decoding: try JSONEncoder().encode(job.dependencies), as: UTF8.self)
        let state = job.startsQueued ? JobState.queued.rawValue : JobState.pending.rawValue
        return ([job.name, state, at.timeIntervalSince1970, job.stage, deps, job.allowFailure, job.script, job.retries,
                 job.retryDelaySeconds, job.queues.joined(separator: ","), job.priority], state)
    }

    private static func insertJob(_ db: any SQLConnection, build: Int64, job: NewJob, at: Date) throws -> Int64 {
        let (values, state) = try jobValues(job, at: at)
        let id = try db.insert("INSERT INTO jobs(build_id, \(jobColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [build] + values)
        try db.send("INSERT INTO job_events(job_id, at, state, attempt) VALUES (?, ?, ?, 0)", [id, at.timeIntervalSince1970, state])
        return id
    }

    /// Notes the branch's mark (`head`), and records a new commit build and its jobs: their ids, or nil when the
    /// repository's commit has a build. On PostgreSQL one statement writes all of it (one round trip); on SQLite,
    /// one after the other.
    private static func insertBuild(_ db: any SQLConnection, repo: String, branch: String, commit: String, jobs: [NewJob],
                                    head: (sql: String, arguments: [any SQLValueConvertible]), at: Date) throws -> (build: Int64, jobs: [Int64])? {
        guard db.dialect == .postgres, !jobs.isEmpty, jobs.count <= 4 else {
            try db.send(head.sql, head.arguments)
            guard let build = try insertBuild(db, repo: repo, branch: branch, commit: commit, at: at) else { return nil }
            return (build, try jobs.map { try insertJob(db, build: build, job: $0, at: at) })
        }
        let rows = try jobs.map { try jobValues($0, at: at) }
        let tuple = "(" + Array(repeating: "?", count: 12).joined(separator: ", ") + ")"
        let t = at.timeIntervalSince1970
        let inserted = try db.rows("""
            WITH h AS (\(head.sql)),
                 b AS (INSERT INTO builds(repo, branch, commit_id, status, created_at) VALUES (?, ?, ?, 'queued', ?)
                       ON CONFLICT (repo, commit_id) WHERE cause = 'commit' DO NOTHING RETURNING id),
                 v(ord, \(jobColumns)) AS (VALUES \(rows.map { _ in tuple }.joined(separator: ", "))),
                 j AS (INSERT INTO jobs(build_id, \(jobColumns))
                       SELECT b.id, \(jobColumns.split(separator: ",").map { "v." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", "))
                       FROM b, v ORDER BY v.ord RETURNING id, build_id, status),
                 e AS (INSERT INTO job_events(job_id, at, state, attempt) SELECT id, ?, status, 0 FROM j)
            SELECT id, build_id FROM j ORDER BY id
            """, head.arguments + [repo, branch, commit, t] + rows.enumerated().flatMap { [$0.offset] + $0.element.values } + [t])
        guard let build: Int64 = inserted.first?["build_id"] else { return nil }
        return (build, inserted.map { $0["id"] as Int64 })
    }

    @discardableResult
    public func record(_ tr: JobTransition) throws -> Bool {
        try write { db in try Self.transition(db, tr, cache: jobStates) }
    }

    private static func transition(_ db: any SQLConnection, _ tr: JobTransition, cache: JobStateCache) throws -> Bool {
        // The job and the other jobs of its build: whether it may change, and what the build rolls up to once it
        // has. Known from the cache, or read in one query. The writes that follow need no answer (on PostgreSQL
        // they go out without a wait).
        let known: JobStateCache.Build
        if let cached = cache.build(of: tr.job) {
            known = cached
        } else {
            let rows = try db.rows("SELECT id, build_id, status, allow_failure FROM jobs WHERE build_id = (SELECT build_id FROM jobs WHERE id = ?) ORDER BY id",
                                   [tr.job])
            guard let first = rows.first else { return false }
            known = JobStateCache.Build(id: first["build_id"], jobs: rows.map {
                JobStateCache.Job(id: $0["id"], state: typed($0["status"], or: JobState.error), allowFailure: $0["allow_failure"])
            })
            cache.note(known)
        }
        guard let current = known.jobs.first(where: { $0.id == tr.job })?.state else { return false }
        if current.isFinal { return false }
        let t = (tr.at ?? Date()).timeIntervalSince1970
        var sets = ["status = ?", "attempt = ?"]
        var args: [any SQLValueConvertible] = [tr.state.rawValue, tr.attempt]
        if tr.state != .queued && tr.state != .skipped { sets.append("runner = ?"); args.append(tr.runner) }
        if tr.state == .running { sets.append("started_at = COALESCE(started_at, ?)"); args.append(t) }
        if tr.state.isFinal { sets.append("finished_at = ?"); args.append(t) }
        if let code = tr.exitCode { sets.append("exit_code = ?"); args.append(code) }
        if let r = tr.reassignments { sets.append("reassignments = ?"); args.append(r) }
        if let r = tr.retriesUsed { sets.append("retries_used = ?"); args.append(r) }
        if let reason = tr.reason, !reason.isEmpty { sets.append("reason = ?"); args.append(reason) }
        args.append(tr.job)
        let jobs = known.jobs.map { BuildStatus.Job(state: $0.id == tr.job ? tr.state : $0.state, allowFailure: $0.allowFailure) }
        try db.send(together: [
            ("UPDATE jobs SET \(sets.joined(separator: ", ")) WHERE id = ?", args),
            ("INSERT INTO job_events(job_id, at, state, attempt, runner, reason, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
             [tr.job, t, tr.state.rawValue, tr.attempt, tr.runner, tr.reason, tr.kind?.rawValue]),
            rollUpStatement(build: known.id, jobs: jobs, at: t),
        ])
        cache.set(job: tr.job, of: known.id, to: tr.state)
        return true
    }

    /// The statement that writes a build's status from its jobs' (`BuildStatus.rollUp`, the one definition). Stored
    /// as the schema has it: passed with allowed failures is `success` with a count of `allowed_failures`.
    static func rollUpStatement(build: Int64, jobs: [BuildStatus.Job], at t: Double) -> (sql: String, arguments: [any SQLValueConvertible]) {
        let rolled = BuildStatus.rollUp(jobs)
        let status = rolled == .passedWithAllowedFailures ? BuildStatus.success.rawValue : rolled.rawValue
        let allowedFailures = BuildStatus.allowedFailures(jobs)
        return ("""
            UPDATE builds SET status = ?, allowed_failures = ?,
                started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?) ELSE started_at END,
                finished_at = CASE WHEN CAST(? AS bigint) = 1 THEN ? ELSE NULL END
            WHERE id = ?
            """, [status, allowedFailures, status, t, rolled.isFinal, t, build])
    }

    public func appendLogs(_ lines: [LogRecord]) throws {
        guard !lines.isEmpty else { return }
        try write { db in
            try db.sendRows(into: "log_lines", columns: ["job_id", "attempt", "stream", "ts", "text"],
                            lines.map { [$0.job, $0.attempt, $0.stream.rawValue, $0.timestampMillis, $0.text] }, perStatement: 500)
        }
    }

    public func activeJobs() throws -> [ActiveJob] {
        try read { db in
            try db.rows("""
                SELECT j.*, b.repo, b.commit_id, b.branch
                FROM jobs j JOIN builds b ON b.id = j.build_id
                WHERE j.status IN ('pending', 'queued', 'assigned', 'running') ORDER BY j.id
                """).map { r in
                ActiveJob(spec: JobSpec(id: r["id"], build: r["build_id"], name: r["name"], repo: r["repo"], commit: r["commit_id"],
                                        branch: r["branch"], job: Self.newJob(r)),
                          state: JobState(rawValue: r["status"]) ?? .queued, attempt: r["attempt"], reassignments: r["reassignments"],
                          runner: r["runner"], retriesUsed: r["retries_used"])
            }
        }
    }

    static func newJob(_ r: SQLRow) -> NewJob {
        let deps = (try? JSONDecoder().decode([String].self, from: Data((r["dependencies"] as String? ?? "[]").utf8))) ?? []
        return NewJob(name: r["name"], stage: r["stage"], dependencies: deps, allowFailure: r["allow_failure"], script: r["script"],
                      retries: r["retries"], retryDelaySeconds: r["retry_delay"],
                      queues: (r["queues"] as String? ?? defaultQueue).split(separator: ",").map(String.init), priority: r["priority"] ?? 0)
    }

    public func jobs(build: Int64) throws -> [JobSummary] {
        try read { db in
            try db.rows("SELECT * FROM jobs WHERE build_id = ? ORDER BY id", [build]).map(Self.jobSummary)
        }
    }

    static func jobSummary(_ r: SQLRow) -> JobSummary {
        let job = newJob(r)
        return JobSummary(id: r["id"], build: r["build_id"], name: job.name, stage: job.stage, status: typed(r["status"], or: JobState.error), allowFailure: job.allowFailure,
                          dependencies: job.dependencies, runner: r["runner"], attempt: r["attempt"], reassignments: r["reassignments"],
                          retriesUsed: r["retries_used"], startedAt: (r["started_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                          finishedAt: (r["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)), exitCode: r["exit_code"], reason: r["reason"])
    }

    public func recordRunner(name: String, state: RunnerState, host: String?, at: Date) throws {
        try recordRunners([RunnerChange(name: name, state: state, host: host, at: at)], heartbeats: [:])
    }

    public func recordRunners(_ changes: [RunnerChange], heartbeats: [String: Date]) throws {
        guard !changes.isEmpty || !heartbeats.isEmpty else { return }
        try write { db in
            // The existing row's columns are named with the table's name: PostgreSQL insists, SQLite agrees.
            for c in changes {
                let t = c.at.timeIntervalSince1970
                try db.send("""
                    INSERT INTO runners(name, state, first_seen, last_change, host, connected_at, last_heartbeat, queues) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET state = excluded.state, last_change = excluded.last_change,
                        host = COALESCE(excluded.host, runners.host), queues = CASE WHEN CAST(? AS bigint) = 1 THEN excluded.queues ELSE runners.queues END,
                        connected_at = CASE WHEN excluded.state = 'connected' AND runners.state != 'lost' THEN excluded.connected_at
                                       ELSE runners.connected_at END
                    """, [c.name, c.state.rawValue, t, t, c.host, t, t, (c.queues ?? [defaultQueue]).joined(separator: ","), c.queues != nil])
            }
            for (name, at) in heartbeats.sorted(by: { $0.key < $1.key }) {
                try db.send("UPDATE runners SET last_heartbeat = ? WHERE name = ?", [at.timeIntervalSince1970, name])
            }
        }
    }

    public func describe(build: Int64, title: String, author: String) throws {
        try write { db in
            try db.send("UPDATE builds SET title = ?, author = ? WHERE id = ?", [title, author, build])
        }
    }

    public func recentBuilds(limit: Int) throws -> [BuildSummary] {
        try builds(BuildFilter(), offset: 0, limit: limit)
    }

    public func builds(_ filter: BuildFilter, offset: Int, limit: Int) throws -> [BuildSummary] {
        var conditions: [String] = []
        var args: [any SQLValueConvertible] = []
        if let r = filter.repo { conditions.append("b.repo = ?"); args.append(r) }
        if let br = filter.branch { conditions.append("b.branch = ?"); args.append(br) }
        if let st = filter.status { conditions.append("b.status = ?"); args.append(st) }
        if let id = filter.id { conditions.append("b.id = ?"); args.append(id) }
        if let task = filter.task { conditions.append("b.task = ?"); args.append(task) }
        if let tag = filter.tag {
            // `_` and `%` in a tag are themselves, not LIKE's wildcards.
            let escaped = tag.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "_", with: "\\_").replacingOccurrences(of: "%", with: "\\%")
            conditions.append("b.tags LIKE ? ESCAPE '\\'")
            args.append("%," + escaped + ",%")
        }
        if let up = filter.upstream { conditions.append("b.upstream_build = ?"); args.append(up) }
        if filter.withoutBisections { conditions.append("b.cause <> 'bisect'") }
        if !filter.hiddenTasks.isEmpty {
            conditions.append("(b.task IS NULL OR b.task NOT IN (\(filter.hiddenTasks.map { _ in "?" }.joined(separator: ", "))))")
            args += filter.hiddenTasks.map { $0 as any SQLValueConvertible }
        }
        args += [limit, offset]
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        // `attempts` is one for the first try plus every second chance (retries and reassignments over its jobs),
        // so a build that ran each job once shows 1 however many jobs it has, and one that has not started 0. `runner` is the runner of the job whose
        // latest event is the newest: the one that changed last. Each is an index seek per job (jobs_build,
        // then job_events_job), so a page costs the same on 100,000 builds as on ten. The page is chosen first, in
        // the inner query, so that a deep page does not work those out for every build it skips (PostgreSQL would).
        return try read { db in
            try db.rows("""
                SELECT b.*, (SELECT CASE WHEN MAX(attempt) > 0 THEN 1 + CAST(SUM(retries_used + reassignments) AS bigint) ELSE 0 END FROM jobs WHERE build_id = b.id) AS attempts,
                       (SELECT j.runner FROM jobs j WHERE j.build_id = b.id AND j.runner IS NOT NULL
                        ORDER BY (SELECT MAX(e.id) FROM job_events e WHERE e.job_id = j.id) DESC LIMIT 1) AS runner,
                       (SELECT \(db.dialect.listAgg("d.id")) FROM builds d WHERE d.upstream_build = b.id) AS descendants,
                       COALESCE(b.reason, (SELECT reason FROM jobs WHERE build_id = b.id AND reason IS NOT NULL ORDER BY id DESC LIMIT 1)) AS summary_reason
                FROM (SELECT * FROM builds b \(whereClause) ORDER BY b.id DESC LIMIT ? OFFSET ?) b ORDER BY b.id DESC
                """, args).map(Self.buildSummary)
        }
    }

    /// A build row's own columns (no counts or joins).
    static func buildSummaryFields(_ r: SQLRow) -> BuildSummary {
        buildSummary(r, attempts: 0, runner: nil, reason: r["reason"], descendants: nil)
    }

    static func buildSummary(_ r: SQLRow) -> BuildSummary {
        buildSummary(r, attempts: r["attempts"], runner: r["runner"], reason: r["summary_reason"], descendants: r["descendants"])
    }

    private static func buildSummary(_ r: SQLRow, attempts: Int, runner: String?, reason: String?, descendants: String?) -> BuildSummary {
        BuildSummary(id: r["id"], repo: r["repo"], branch: r["branch"], commit: r["commit_id"], status: typed(r["status"], or: BuildStatus.error),
                     runner: runner, createdAt: Date(timeIntervalSince1970: r["created_at"]),
                     startedAt: (r["started_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                     finishedAt: (r["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                     attempts: attempts, reason: reason, allowedFailures: r["allowed_failures"],
                     title: r["title"], author: r["author"], task: r["task"], runNumber: r["run_number"],
                     cause: typed(r["cause"], or: BuildCause.commit), upstream: r["upstream_build"],
                     scheduledAt: (r["scheduled_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                     tags: (r["tags"] as String? ?? "").split(separator: ",").map(String.init),
                     descendants: (descendants ?? "").split(separator: ",").compactMap { Int64($0) })
    }

    public func events(job: Int64) throws -> [JobEvent] {
        try read { db in
            try db.rows("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", [job]).map { r in
                JobEvent(job: job, state: Self.typed(r["state"], or: JobState.error), attempt: r["attempt"], runner: r["runner"], reason: r["reason"],
                         at: Date(timeIntervalSince1970: r["at"]))
            }
        }
    }

    public func logs(job: Int64) throws -> [LogRecord] {
        try read { db in
            try db.rows("SELECT * FROM log_lines WHERE job_id = ? ORDER BY id", [job]).map(Self.logRecord)
        }
    }

    public func lastDispatched(repo: String, branch: String) throws -> String? {
        try read { db in
            try db.one(as: String.self, "SELECT commit_id FROM branch_heads WHERE repo = ? AND branch = ?", [repo, branch])
        }
    }
}

extension SQLStore {
    /// A state column as its type. A value this version does not know (written by a newer DevCI) reads as
    /// `fallback` rather than stopping the reader.
    static func typed<T: RawRepresentable>(_ raw: String?, or fallback: T) -> T where T.RawValue == String {
        raw.flatMap(T.init(rawValue:)) ?? fallback
    }
}

