import DevCIWire
import Foundation
import GRDB

/// Why the store cannot be used.
public struct StoreError: Error, CustomStringConvertible {
    public var description: String
    /// The database is locked by someone else: the same call may succeed later.
    public var isBusy = false
    public init(_ d: String, busy: Bool = false) {
        description = d
        isBusy = busy
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
public final class SQLiteStore: BuildWriter, BuildReader, @unchecked Sendable {
    // @unchecked: GRDB's queue serializes every use of the database; `batchDatabase` and `batchThread` are
    // guarded by `batchLock`; the rest is immutable.
    private let db: DatabaseQueue
    public let path: String
    /// The database file's identity when it was opened (device, inode); nil when opened read-only.
    private let identity: FileIdentity?

    /// The transaction a `batch` holds open, and the thread running it: store calls made inside the batch
    /// join it (GRDB's queue is not reentrant).
    private let batchLock = NSLock()
    private var batchDatabase: Database?
    private var batchThread: pthread_t?

    /// A read of the database, for the reporter's queries (Store+Reads.swift); inside a batch, in its transaction.
    func read<T>(_ body: (Database) throws -> T) throws -> T {
        if let open = openBatch() { return try body(open) }
        return try db.read(body)
    }

    private func openBatch() -> Database? {
        batchLock.withLock {
            guard let thread = batchThread, pthread_equal(thread, pthread_self()) != 0 else { return nil }
            return batchDatabase
        }
    }

    public func batch<T>(_ body: () throws -> T) throws -> T {
        if openBatch() != nil { return try body() }
        return try write { db in
            batchLock.withLock { (batchDatabase, batchThread) = (db, pthread_self()) }
            defer { batchLock.withLock { (batchDatabase, batchThread) = (nil, nil) } }
            return try body()
        }
    }

    /// Opens (creating and migrating when `readOnly` is false) the database at `path`.
    public init(path: String, readOnly: Bool = false) throws {
        self.path = path
        var config = Configuration()
        config.readonly = readOnly
        // The dispatcher's writer retries a locked database itself, saying so; a reader waits longer.
        config.busyMode = .timeout(readOnly ? 5 : 1)
        if !readOnly {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        config.prepareDatabase { db in
            if !readOnly {
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
            }
        }
        db = try DatabaseQueue(path: path, configuration: config)
        if !readOnly {
            // WAL lets the reporter and CLI read while the dispatcher writes.
            _ = try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA journal_mode = WAL") }
            try Self.migrator.migrate(db)
            // A real write now: a read-only file or folder is refused at start, not at the first dispatch.
            do {
                try db.write { try $0.execute(sql: "INSERT OR REPLACE INTO store_meta(key, value) VALUES ('opened_at', ?)",
                                              arguments: [String(Date().timeIntervalSince1970)]) }
            } catch {
                throw StoreError("the database at \(path) cannot be written: \(error)")
            }
            identity = FileIdentity(path: path)
            return
        }
        identity = nil
        if try !db.read({ try Self.migrator.hasCompletedMigrations($0) }) {
            throw StoreError("the database at \(path) is from an older or newer DevCI: start this version's dispatcher on it once to upgrade it")
        }
    }

    /// Where the database lives when no flag says: `DEVCI_DB`, else `~/.devci/devci.sqlite`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let p = environment["DEVCI_DB"], !p.isEmpty { return p }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return home + "/.devci/devci.sqlite"
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE builds(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    repo TEXT NOT NULL, branch TEXT NOT NULL, commit_id TEXT NOT NULL,
                    status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
                    UNIQUE(repo, commit_id));
                CREATE INDEX builds_created ON builds(created_at);
                CREATE TABLE jobs(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    build_id INTEGER NOT NULL REFERENCES builds(id),
                    name TEXT NOT NULL, status TEXT NOT NULL,
                    attempt INTEGER NOT NULL DEFAULT 0, reassignments INTEGER NOT NULL DEFAULT 0,
                    runner TEXT, queued_at REAL NOT NULL, started_at REAL, finished_at REAL,
                    exit_code INTEGER, reason TEXT);
                CREATE INDEX jobs_build ON jobs(build_id);
                CREATE INDEX jobs_active ON jobs(status) WHERE status IN ('queued', 'assigned', 'running');
                CREATE TABLE job_events(
                    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL REFERENCES jobs(id),
                    at REAL NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL, runner TEXT, reason TEXT);
                CREATE INDEX job_events_job ON job_events(job_id);
                CREATE TABLE log_lines(
                    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL REFERENCES jobs(id),
                    attempt INTEGER NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, text TEXT NOT NULL);
                CREATE INDEX log_lines_job ON log_lines(job_id, id);
                CREATE TABLE runners(
                    name TEXT PRIMARY KEY, state TEXT NOT NULL, first_seen REAL NOT NULL, last_change REAL NOT NULL);
                CREATE TABLE branch_heads(
                    repo TEXT NOT NULL, branch TEXT NOT NULL, commit_id TEXT NOT NULL, at REAL NOT NULL,
                    PRIMARY KEY(repo, branch));
                """)
        }
        m.registerMigration("v2: pipelines") { db in
            try db.execute(sql: """
                ALTER TABLE jobs ADD COLUMN stage TEXT NOT NULL DEFAULT 'test';
                ALTER TABLE jobs ADD COLUMN dependencies TEXT NOT NULL DEFAULT '[]';
                ALTER TABLE jobs ADD COLUMN allow_failure INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE jobs ADD COLUMN script TEXT;
                ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE jobs ADD COLUMN retry_delay REAL NOT NULL DEFAULT 0;
                ALTER TABLE jobs ADD COLUMN retries_used INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE builds ADD COLUMN allowed_failures INTEGER NOT NULL DEFAULT 0;
                DROP INDEX jobs_active;
                CREATE INDEX jobs_active ON jobs(status) WHERE status IN ('pending', 'queued', 'assigned', 'running');
                """)
        }
        m.registerMigration("v3: reporter") { db in
            try db.execute(sql: """
                ALTER TABLE builds ADD COLUMN title TEXT NOT NULL DEFAULT '';
                ALTER TABLE builds ADD COLUMN author TEXT NOT NULL DEFAULT '';
                ALTER TABLE runners ADD COLUMN host TEXT;
                ALTER TABLE runners ADD COLUMN connected_at REAL;
                ALTER TABLE runners ADD COLUMN last_heartbeat REAL;
                CREATE INDEX builds_repo ON builds(repo, id);
                CREATE INDEX builds_branch ON builds(branch, id);
                CREATE INDEX builds_status ON builds(status, id);
                CREATE INDEX jobs_runner ON jobs(runner, status);
                CREATE INDEX job_events_lost ON job_events(state, at) WHERE state = 'queued' AND reason IS NOT NULL;
                """)
        }
        m.registerMigration("v4: meta") { db in
            try db.execute(sql: "CREATE TABLE store_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        }
        m.registerMigration("v5: event kinds") { db in
            // Older events said it only in words: a lost lease was the one kind they counted.
            try db.execute(sql: """
                ALTER TABLE job_events ADD COLUMN kind TEXT;
                UPDATE job_events SET kind = 'lost' WHERE state = 'queued' AND reason LIKE '%lease on attempt%';
                CREATE INDEX job_events_kind ON job_events(kind, at) WHERE kind IS NOT NULL;
                """)
        }
        m.registerMigration("v6: tasks and queues") { db in
            // Task runs and ad-hoc jobs are builds too, so one build per repository and commit holds for commit
            // builds only: the table is rebuilt without its UNIQUE constraint, which a partial index replaces.
            try db.execute(sql: """
                CREATE TABLE builds_v6(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    repo TEXT NOT NULL, branch TEXT NOT NULL, commit_id TEXT NOT NULL,
                    status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
                    allowed_failures INTEGER NOT NULL DEFAULT 0, title TEXT NOT NULL DEFAULT '', author TEXT NOT NULL DEFAULT '',
                    cause TEXT NOT NULL DEFAULT 'commit', task TEXT, run_number INTEGER, upstream_build INTEGER,
                    scheduled_at REAL, tags TEXT NOT NULL DEFAULT '', reason TEXT);
                INSERT INTO builds_v6(id, repo, branch, commit_id, status, created_at, started_at, finished_at, allowed_failures, title, author)
                    SELECT id, repo, branch, commit_id, status, created_at, started_at, finished_at, allowed_failures, title, author FROM builds;
                DROP TABLE builds;
                ALTER TABLE builds_v6 RENAME TO builds;
                CREATE INDEX builds_created ON builds(created_at);
                CREATE INDEX builds_repo ON builds(repo, id);
                CREATE INDEX builds_branch ON builds(branch, id);
                CREATE INDEX builds_status ON builds(status, id);
                CREATE UNIQUE INDEX builds_commit ON builds(repo, commit_id) WHERE cause = 'commit';
                CREATE UNIQUE INDEX builds_task_commit ON builds(task, repo, commit_id) WHERE cause = 'push';
                CREATE INDEX builds_task ON builds(task, id) WHERE task IS NOT NULL;
                CREATE INDEX builds_upstream ON builds(upstream_build) WHERE upstream_build IS NOT NULL;
                ALTER TABLE jobs ADD COLUMN queues TEXT NOT NULL DEFAULT 'default';
                ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE runners ADD COLUMN queues TEXT NOT NULL DEFAULT 'default';
                CREATE TABLE webhook_deliveries(id TEXT PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL);
                CREATE TABLE task_schedule(task TEXT PRIMARY KEY, last_scheduled REAL NOT NULL);
                """)
        }
        migrateNotifications(&m)
        return m
    }

    public func enqueueRun(_ run: NewRun, jobs newJobs: [NewJob], at: Date) throws -> EnqueueResult {
        try write { db in
            if run.cause == .push, let id = try Int64.fetchOne(db, sql: """
                SELECT id FROM builds WHERE cause = 'push' AND task = ? AND repo = ? AND commit_id = ?
                """, arguments: [run.task, run.repo, run.commit]) {
                return EnqueueResult(build: id, jobs: try Self.jobSpecs(db, build: id, repo: run.repo, commit: run.commit, branch: run.branch),
                                     created: false)
            }
            let build = try Self.insertRun(db, run, status: .queued, reason: run.reason, at: at)
            var specs: [JobSpec] = []
            for job in newJobs {
                let id = try Self.insertJob(db, build: build, job: job, at: at)
                specs.append(JobSpec(id: id, build: build, name: job.name, repo: run.repo, commit: run.commit, branch: run.branch, job: job))
            }
            return EnqueueResult(build: build, jobs: specs, created: true)
        }
    }

    public func recordSkipped(_ run: NewRun, reason: String, at: Date) throws -> Int64 {
        try write { db in try Self.insertRun(db, run, status: .skipped, reason: reason, at: at) }
    }

    private static func insertRun(_ db: Database, _ run: NewRun, status: BuildStatus, reason: String?, at: Date) throws -> Int64 {
        let number = try run.task.map { try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(run_number), 0) + 1 FROM builds WHERE task = ?", arguments: [$0]) ?? 1 }
        let t = at.timeIntervalSince1970
        try db.execute(sql: """
            INSERT INTO builds(repo, branch, commit_id, status, created_at, finished_at, cause, task, run_number, upstream_build, scheduled_at, tags, title, reason)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [run.repo, run.branch, run.commit, status.rawValue, t, status.isFinal ? t : nil, run.cause.rawValue, run.task, number,
                             run.upstream, (run.scheduledAt ?? at).timeIntervalSince1970, Self.tagList(run.tags), String(run.title.prefix(200)), reason])
        return db.lastInsertedRowID
    }

    /// Tags stored as `,a,b,` so that one tag matches with `LIKE '%,a,%'`.
    static func tagList(_ tags: [String]) -> String { tags.isEmpty ? "" : "," + tags.joined(separator: ",") + "," }

    public func deliverySeen(id: String) throws -> Bool {
        try read { db in try Bool.fetchOne(db, sql: "SELECT 1 FROM webhook_deliveries WHERE id = ?", arguments: [id]) ?? false }
    }

    public func noteDelivery(id: String, event: String, at: Date) throws -> Bool {
        try write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO webhook_deliveries(id, at, event) VALUES (?, ?, ?)", arguments: [id, at.timeIntervalSince1970, event])
            return db.changesCount > 0
        }
    }

    public func taskSchedule() throws -> [String: Date] {
        try read { db in
            var out: [String: Date] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT task, last_scheduled FROM task_schedule") {
                out[r["task"]] = Date(timeIntervalSince1970: r["last_scheduled"])
            }
            return out
        }
    }

    public func setTaskSchedule(_ schedule: [String: Date]) throws {
        guard !schedule.isEmpty else { return }
        try write { db in
            for (task, at) in schedule.sorted(by: { $0.key < $1.key }) {
                try db.execute(sql: """
                    INSERT INTO task_schedule(task, last_scheduled) VALUES (?, ?)
                    ON CONFLICT(task) DO UPDATE SET last_scheduled = excluded.last_scheduled
                    """, arguments: [task, at.timeIntervalSince1970])
            }
        }
    }

    public func taskRuns() throws -> [TaskRun] {
        try read { db in
            try Row.fetchAll(db, sql: """
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
            try Self.noteBranchHead(db, repo: repo, branch: branch, commit: commit, move: mark, at: at)
            if let existing = try existingBuild(db, repo: repo, commit: commit) { return existing }
            let build = try Self.insertBuild(db, repo: repo, branch: branch, commit: commit, at: at)
            var specs: [JobSpec] = []
            for job in newJobs {
                let id = try Self.insertJob(db, build: build, job: job, at: at)
                specs.append(JobSpec(id: id, build: build, name: job.name, repo: repo, commit: commit, branch: branch, job: job))
            }
            return EnqueueResult(build: build, jobs: specs, created: true)
        }
    }

    public func enqueueInvalid(repo: String, branch: String, commit: String, reason: String, details: [String], mark: MarkUpdate = .always,
                               at: Date) throws -> EnqueueResult {
        try write { db in
            try Self.noteBranchHead(db, repo: repo, branch: branch, commit: commit, move: mark, at: at)
            if let existing = try existingBuild(db, repo: repo, commit: commit) { return existing }
            let build = try Self.insertBuild(db, repo: repo, branch: branch, commit: commit, at: at)
            let job = NewJob(name: "pipeline", stage: "pipeline")
            let id = try Self.insertJob(db, build: build, job: job, at: at)
            let ms = Int64(at.timeIntervalSince1970 * 1000)
            for line in details {
                try db.execute(sql: "INSERT INTO log_lines(job_id, attempt, stream, ts, text) VALUES (?, 0, 'system', ?, ?)", arguments: [id, ms, line])
            }
            _ = try Self.transition(db, JobTransition(job: id, state: .failed, attempt: 0, reason: reason, at: at))
            return EnqueueResult(build: build, jobs: [JobSpec(id: id, build: build, name: job.name, repo: repo, commit: commit, branch: branch, job: job)],
                                 created: true)
        }
    }

    private func existingBuild(_ db: Database, repo: String, commit: String) throws -> EnqueueResult? {
        guard let row = try Row.fetchOne(db, sql: "SELECT id, branch FROM builds WHERE repo = ? AND commit_id = ? AND cause = 'commit'",
                                         arguments: [repo, commit]) else {
            return nil
        }
        let id: Int64 = row["id"]
        return EnqueueResult(build: id, jobs: try Self.jobSpecs(db, build: id, repo: repo, commit: commit, branch: row["branch"]), created: false)
    }

    private static func jobSpecs(_ db: Database, build: Int64, repo: String, commit: String, branch: String) throws -> [JobSpec] {
        try Row.fetchAll(db, sql: "SELECT id, name FROM jobs WHERE build_id = ? ORDER BY id", arguments: [build]).map {
            JobSpec(id: $0["id"], build: build, name: $0["name"], repo: repo, commit: commit, branch: branch)
        }
    }

    private static func noteBranchHead(_ db: Database, repo: String, branch: String, commit: String, move: MarkUpdate, at: Date) throws {
        let onConflict: String
        var args: [DatabaseValueConvertible] = [repo, branch, commit, at.timeIntervalSince1970]
        switch move {
        case .always: onConflict = "UPDATE SET commit_id = excluded.commit_id, at = excluded.at"
        case .never: onConflict = "NOTHING"
        case .ifStill(let expected):
            onConflict = "UPDATE SET commit_id = excluded.commit_id, at = excluded.at WHERE branch_heads.commit_id = ?"
            args.append(expected)
        }
        try db.execute(sql: """
            INSERT INTO branch_heads(repo, branch, commit_id, at) VALUES (?, ?, ?, ?)
            ON CONFLICT(repo, branch) DO \(onConflict)
            """, arguments: StatementArguments(args))
    }

    private static func insertBuild(_ db: Database, repo: String, branch: String, commit: String, at: Date) throws -> Int64 {
        try db.execute(sql: "INSERT INTO builds(repo, branch, commit_id, status, created_at) VALUES (?, ?, ?, 'queued', ?)",
                       arguments: [repo, branch, commit, at.timeIntervalSince1970])
        return db.lastInsertedRowID
    }

    private static func insertJob(_ db: Database, build: Int64, job: NewJob, at: Date) throws -> Int64 {
        let deps = String(decoding: try JSONEncoder().encode(job.dependencies), as: UTF8.self)
        let state = job.startsQueued ? JobState.queued.rawValue : JobState.pending.rawValue
        try db.execute(sql: """
            INSERT INTO jobs(build_id, name, status, queued_at, stage, dependencies, allow_failure, script, retries, retry_delay, queues, priority)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [build, job.name, state, at.timeIntervalSince1970, job.stage, deps, job.allowFailure, job.script, job.retries,
                             job.retryDelaySeconds, job.queues.joined(separator: ","), job.priority])
        let id = db.lastInsertedRowID
        try db.execute(sql: "INSERT INTO job_events(job_id, at, state, attempt) VALUES (?, ?, ?, 0)", arguments: [id, at.timeIntervalSince1970, state])
        return id
    }

    @discardableResult
    public func record(_ tr: JobTransition) throws -> Bool {
        try write { db in try Self.transition(db, tr) }
    }

    /// A write transaction; a database locked by another process is reported as busy, so the caller may retry.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        if let open = openBatch() { return try body(open) }
        do {
            return try db.write(body)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
            throw StoreError("the database at \(path) is locked by another process: \(error.message ?? "busy")", busy: true)
        }
    }

    public func verify() throws {
        guard let identity else { return }
        guard let now = FileIdentity(path: path) else {
            throw StoreError("the database file \(path) was deleted while the dispatcher was running")
        }
        guard now == identity else {
            throw StoreError("the database file \(path) was replaced by another file while the dispatcher was running")
        }
    }

    private static func transition(_ db: Database, _ tr: JobTransition) throws -> Bool {
        guard let row = try Row.fetchOne(db, sql: "SELECT build_id, status FROM jobs WHERE id = ?", arguments: [tr.job]) else {
            return false
        }
        let current = JobState(rawValue: row["status"]) ?? .error
        if current.isFinal { return false }
        let t = (tr.at ?? Date()).timeIntervalSince1970
        var sets = ["status = ?", "attempt = ?"]
        var args: [DatabaseValueConvertible?] = [tr.state.rawValue, tr.attempt]
        if tr.state != .queued && tr.state != .skipped { sets.append("runner = ?"); args.append(tr.runner) }
        if tr.state == .running { sets.append("started_at = COALESCE(started_at, ?)"); args.append(t) }
        if tr.state.isFinal { sets.append("finished_at = ?"); args.append(t) }
        if let code = tr.exitCode { sets.append("exit_code = ?"); args.append(code) }
        if let r = tr.reassignments { sets.append("reassignments = ?"); args.append(r) }
        if let r = tr.retriesUsed { sets.append("retries_used = ?"); args.append(r) }
        if let reason = tr.reason, !reason.isEmpty { sets.append("reason = ?"); args.append(reason) }
        args.append(tr.job)
        try db.execute(sql: "UPDATE jobs SET \(sets.joined(separator: ", ")) WHERE id = ?", arguments: StatementArguments(args))
        try db.execute(sql: "INSERT INTO job_events(job_id, at, state, attempt, runner, reason, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       arguments: [tr.job, t, tr.state.rawValue, tr.attempt, tr.runner, tr.reason, tr.kind?.rawValue])
        try rollUp(db, build: row["build_id"], at: t)
        return true
    }

    /// A build's status from its jobs' (`BuildStatus.rollUp`, the one definition). Stored as the schema has it:
    /// passed with allowed failures is `success` with a count of `allowed_failures`.
    static func rollUp(_ db: Database, build: Int64, at t: Double) throws {
        let rows = try Row.fetchAll(db, sql: "SELECT status, allow_failure FROM jobs WHERE build_id = ?", arguments: [build])
        let jobs = rows.map { BuildStatus.Job(state: JobState(rawValue: $0["status"]) ?? .error, allowFailure: $0["allow_failure"]) }
        let rolled = BuildStatus.rollUp(jobs)
        let status = rolled == .passedWithAllowedFailures ? BuildStatus.success.rawValue : rolled.rawValue
        let allowedFailures = BuildStatus.allowedFailures(jobs)
        let final = rolled.isFinal
        try db.execute(sql: """
            UPDATE builds SET status = ?, allowed_failures = ?,
                started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?) ELSE started_at END,
                finished_at = CASE WHEN ? THEN ? ELSE NULL END
            WHERE id = ?
            """, arguments: [status, allowedFailures, status, t, final, t, build])
    }

    public func appendLogs(_ lines: [LogRecord]) throws {
        guard !lines.isEmpty else { return }
        try write { db in
            let stmt = try db.cachedStatement(sql: "INSERT INTO log_lines(job_id, attempt, stream, ts, text) VALUES (?, ?, ?, ?, ?)")
            for l in lines {
                try stmt.execute(arguments: [l.job, l.attempt, l.stream.rawValue, l.timestampMillis, l.text])
            }
        }
    }

    public func activeJobs() throws -> [ActiveJob] {
        try read { db in
            try Row.fetchAll(db, sql: """
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

    static func newJob(_ r: Row) -> NewJob {
        let deps = (try? JSONDecoder().decode([String].self, from: Data((r["dependencies"] as String? ?? "[]").utf8))) ?? []
        return NewJob(name: r["name"], stage: r["stage"], dependencies: deps, allowFailure: r["allow_failure"], script: r["script"],
                      retries: r["retries"], retryDelaySeconds: r["retry_delay"],
                      queues: (r["queues"] as String? ?? defaultQueue).split(separator: ",").map(String.init), priority: r["priority"] ?? 0)
    }

    public func jobs(build: Int64) throws -> [JobSummary] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE build_id = ? ORDER BY id", arguments: [build]).map(Self.jobSummary)
        }
    }

    static func jobSummary(_ r: Row) -> JobSummary {
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
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO runners(name, state, first_seen, last_change, host, connected_at, last_heartbeat, queues) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET state = excluded.state, last_change = excluded.last_change,
                    host = COALESCE(excluded.host, host), queues = CASE WHEN ? THEN excluded.queues ELSE queues END,
                    connected_at = CASE WHEN excluded.state = 'connected' AND state != 'lost' THEN excluded.connected_at ELSE connected_at END
                """)
            for c in changes {
                let t = c.at.timeIntervalSince1970
                try upsert.execute(arguments: [c.name, c.state.rawValue, t, t, c.host, t, t, (c.queues ?? [defaultQueue]).joined(separator: ","),
                                               c.queues != nil])
            }
            let beat = try db.cachedStatement(sql: "UPDATE runners SET last_heartbeat = ? WHERE name = ?")
            for (name, at) in heartbeats.sorted(by: { $0.key < $1.key }) {
                try beat.execute(arguments: [at.timeIntervalSince1970, name])
            }
        }
    }

    public func describe(build: Int64, title: String, author: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE builds SET title = ?, author = ? WHERE id = ?", arguments: [title, author, build])
        }
    }

    public func recentBuilds(limit: Int) throws -> [BuildSummary] {
        try builds(BuildFilter(), offset: 0, limit: limit)
    }

    public func builds(_ filter: BuildFilter, offset: Int, limit: Int) throws -> [BuildSummary] {
        var conditions: [String] = []
        var args: [DatabaseValueConvertible?] = []
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
        if !filter.hiddenTasks.isEmpty {
            conditions.append("(b.task IS NULL OR b.task NOT IN (\(filter.hiddenTasks.map { _ in "?" }.joined(separator: ", "))))")
            args += filter.hiddenTasks.map { $0 as DatabaseValueConvertible? }
        }
        args += [limit, offset]
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        // `attempts` is one for the first try plus every second chance (retries and reassignments over its jobs),
        // so a build that ran each job once shows 1 however many jobs it has, and one that has not started 0. `runner` is the runner of the job whose
        // latest event is the newest: the one that changed last. Each is an index seek per job (jobs_build,
        // then job_events_job), so a page costs the same on 100,000 builds as on ten.
        return try read { db in
            try Row.fetchAll(db, sql: """
                SELECT b.*, (SELECT CASE WHEN MAX(attempt) > 0 THEN 1 + SUM(retries_used + reassignments) ELSE 0 END FROM jobs WHERE build_id = b.id) AS attempts,
                       (SELECT j.runner FROM jobs j WHERE j.build_id = b.id AND j.runner IS NOT NULL
                        ORDER BY (SELECT MAX(e.id) FROM job_events e WHERE e.job_id = j.id) DESC LIMIT 1) AS runner,
                       (SELECT group_concat(d.id) FROM builds d WHERE d.upstream_build = b.id) AS descendants,
                       COALESCE(b.reason, (SELECT reason FROM jobs WHERE build_id = b.id AND reason IS NOT NULL ORDER BY id DESC LIMIT 1)) AS summary_reason
                FROM builds b \(whereClause) ORDER BY b.id DESC LIMIT ? OFFSET ?
                """, arguments: StatementArguments(args)).map(Self.buildSummary)
        }
    }

    /// A build row's own columns (no counts or joins).
    static func buildSummaryFields(_ r: Row) -> BuildSummary {
        buildSummary(r, attempts: 0, runner: nil, reason: r["reason"], descendants: nil)
    }

    static func buildSummary(_ r: Row) -> BuildSummary {
        buildSummary(r, attempts: r["attempts"], runner: r["runner"], reason: r["summary_reason"], descendants: r["descendants"])
    }

    private static func buildSummary(_ r: Row, attempts: Int, runner: String?, reason: String?, descendants: String?) -> BuildSummary {
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
            try Row.fetchAll(db, sql: "SELECT * FROM job_events WHERE job_id = ? ORDER BY id", arguments: [job]).map { r in
                JobEvent(job: job, state: Self.typed(r["state"], or: JobState.error), attempt: r["attempt"], runner: r["runner"], reason: r["reason"],
                         at: Date(timeIntervalSince1970: r["at"]))
            }
        }
    }

    public func logs(job: Int64) throws -> [LogRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM log_lines WHERE job_id = ? ORDER BY id", arguments: [job]).map(Self.logRecord)
        }
    }

    public func lastDispatched(repo: String, branch: String) throws -> String? {
        try read { db in
            try String.fetchOne(db, sql: "SELECT commit_id FROM branch_heads WHERE repo = ? AND branch = ?", arguments: [repo, branch])
        }
    }
}

extension SQLiteStore {
    /// A state column as its type. A value this version does not know (written by a newer DevCI) reads as
    /// `fallback` rather than stopping the reader.
    static func typed<T: RawRepresentable>(_ raw: String?, or fallback: T) -> T where T.RawValue == String {
        raw.flatMap(T.init(rawValue:)) ?? fallback
    }
}

