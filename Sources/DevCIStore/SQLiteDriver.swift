import Foundation
import GRDB

/// The SQLite database, through GRDB, in WAL mode: the embedded default.
final class SQLiteDriver: SQLDriver, @unchecked Sendable {
    // @unchecked: GRDB's queue serializes every use of the database; the rest is immutable.
    let queue: DatabaseQueue
    let path: String
    var name: String { path }
    /// The database file's identity when it was opened (device, inode); nil when opened read-only.
    private let identity: FileIdentity?

    init(path: String, readOnly: Bool) throws {
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
        queue = try DatabaseQueue(path: path, configuration: config)
        if !readOnly {
            // WAL lets the reporter and CLI read while the dispatcher writes.
            _ = try queue.writeWithoutTransaction { try $0.execute(sql: "PRAGMA journal_mode = WAL") }
            try Self.migrator.migrate(queue)
            // A real write now: a read-only file or folder is refused at start, not at the first dispatch.
            do {
                try queue.write { try $0.execute(sql: "INSERT OR REPLACE INTO store_meta(key, value) VALUES ('opened_at', ?)",
                                                 arguments: [String(Date().timeIntervalSince1970)]) }
            } catch {
                throw StoreError("the database at \(path) cannot be written: \(error)")
            }
            identity = FileIdentity(path: path)
            return
        }
        identity = nil
        if try !queue.read({ try Self.migrator.hasCompletedMigrations($0) }) {
            throw StoreError("the database at \(path) is from an older or newer DevCI: start this version's dispatcher on it once to upgrade it")
        }
    }

    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try queue.read { try body(SQLiteConnection(db: $0)) }
    }

    /// A write transaction; a database locked by another process is reported as busy, so the caller may retry.
    func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        do {
            return try queue.write { try body(SQLiteConnection(db: $0)) }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
            throw StoreError("the database at \(path) is locked by another process: \(error.message ?? "busy")", busy: true)
        }
    }

    func verify() throws {
        guard let identity else { return }
        guard let now = FileIdentity(path: path) else {
            throw StoreError("the database file \(path) was deleted while the dispatcher was running")
        }
        guard now == identity else {
            throw StoreError("the database file \(path) was replaced by another file while the dispatcher was running")
        }
    }

    /// Whether the file at `path` holds no table yet: a dispatcher has just created it and is still migrating
    /// it, so a read-only open that fails now means "not yet", not "another version".
    static func isBeingCreated(path: String) -> Bool {
        var config = Configuration()
        config.readonly = true
        guard let queue = try? DatabaseQueue(path: path, configuration: config) else { return false }
        return (try? queue.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM sqlite_master") }) == 0
    }
}

/// GRDB's `Database` as the store's connection. Statements are cached by their text.
struct SQLiteConnection: SQLConnection {
    let db: Database
    var dialect: SQLDialect { .sqlite }

    func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int {
        try db.cachedStatement(sql: sql).execute(arguments: Self.arguments(arguments))
        return db.changesCount
    }

    func send(_ sql: String, _ arguments: [SQLValue]) throws {
        try db.cachedStatement(sql: sql).execute(arguments: Self.arguments(arguments))
    }

    func rows(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow] {
        let statement = try db.cachedStatement(sql: sql)
        var names: [String: Int] = [:]
        for (i, name) in statement.columnNames.enumerated() where names[name] == nil { names[name] = i }
        return try Row.fetchAll(statement, arguments: Self.arguments(arguments)).map { row in
            SQLRow(names: names, values: row.databaseValues.map(Self.value))
        }
    }

    static func arguments(_ values: [SQLValue]) -> StatementArguments {
        StatementArguments(values.map { v -> DatabaseValueConvertible? in
            switch v {
            case .null: nil
            case .int(let i): i
            case .double(let d): d
            case .text(let s): s
            }
        })
    }

    static func value(_ v: DatabaseValue) -> SQLValue {
        switch v.storage {
        case .null: .null
        case .int64(let i): .int(i)
        case .double(let d): .double(d)
        case .string(let s): .text(s)
        case .blob(let b): .text(String(decoding: b, as: UTF8.self))
        }
    }
}

extension SQLiteDriver {
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
        m.registerMigration("v8: tests and bisection") { db in
            for statement in SQLStore.testsSchema(.sqlite) { try db.execute(sql: statement) }
        }
        return m
    }
}

extension SQLiteDriver {
    static func migrateNotifications(_ m: inout DatabaseMigrator) {
        m.registerMigration("v7: notifications") { db in
            // Builds that ended before notifications existed are not notified about.
            try db.execute(sql: """
                ALTER TABLE builds ADD COLUMN notify_done INTEGER NOT NULL DEFAULT 0;
                UPDATE builds SET notify_done = 1;
                CREATE INDEX builds_notify ON builds(id) WHERE notify_done = 0;
                CREATE TABLE notifications(
                    id INTEGER PRIMARY KEY AUTOINCREMENT, build_id INTEGER NOT NULL, channel TEXT NOT NULL, target TEXT NOT NULL,
                    subject TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL, last_error TEXT, created_at REAL NOT NULL, sent_at REAL);
                CREATE INDEX notifications_due ON notifications(next_attempt_at) WHERE state = 'pending';
                """)
        }
    }
}
