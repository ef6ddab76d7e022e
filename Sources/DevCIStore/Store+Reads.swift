import DevCIWire
import Foundation

/// What the reporter reads: each page in a few indexed queries, never one per row.
extension SQLStore {
    public func summary() throws -> SystemSummary {
        try read { db in
            // The WHERE clause is the partial index's own, so only active jobs are read.
            var counts: [String: Int] = [:]
            for r in try db.rows("""
                SELECT status, COUNT(*) AS n FROM jobs WHERE status IN ('pending', 'queued', 'assigned', 'running') GROUP BY status
                """) {
                counts[r["status"]] = r["n"]
            }
            let served = try db.all(as: String.self, "SELECT queues FROM runners WHERE state = 'connected'")
            let servedQueues = Set(served.flatMap { $0.split(separator: ",").map(String.init) })
            let wanted = try db.all(as: String.self, "SELECT DISTINCT queues FROM jobs WHERE status = 'queued'")
            let waiting = Set(wanted.filter { set in !set.split(separator: ",").contains { servedQueues.contains(String($0)) } }
                .flatMap { $0.split(separator: ",").map(String.init) }).sorted()
            return SystemSummary(queued: counts["queued", default: 0], running: counts["assigned", default: 0] + counts["running", default: 0],
                                 runners: served.count, waiting: waiting)
        }
    }

    public func build(_ id: Int64) throws -> BuildSummary? {
        try builds(BuildFilter(id: id), offset: 0, limit: 1).first
    }

    /// The recorded transitions of every job of a build, oldest first.
    public func events(build: Int64) throws -> [JobEvent] {
        try read { db in
            try db.rows("""
                SELECT e.* FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.build_id = ? ORDER BY e.id
                """, [build]).map { r in
                JobEvent(job: r["job_id"], state: Self.typed(r["state"], or: JobState.error), attempt: r["attempt"], runner: r["runner"], reason: r["reason"],
                         at: Date(timeIntervalSince1970: r["at"]))
            }
        }
    }

    /// The last `limit` lines of a job's log (an index seek: a 50 MB log costs no more than a short one).
    public func logTail(job: Int64, limit: Int) throws -> [LogRecord] {
        try read { db in
            try db.rows("SELECT * FROM log_lines WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                             [job, limit]).map(Self.logRecord).reversed()
        }
    }

    /// Log lines of a build's jobs after the row `after`, oldest first: the live log's next batch.
    public func logs(build: Int64, after: Int64, limit: Int) throws -> [LogRecord] {
        try read { db in
            try db.rows("""
                SELECT l.* FROM log_lines l WHERE l.id > ? AND l.job_id IN (SELECT id FROM jobs WHERE build_id = ?)
                ORDER BY l.id LIMIT ?
                """, [after, build, limit]).map(Self.logRecord)
        }
    }

    /// A job's log in batches by row id, for streaming a large log without holding it.
    public func logs(job: Int64, after: Int64, limit: Int) throws -> [LogRecord] {
        try read { db in
            try db.rows("SELECT * FROM log_lines WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                             [job, after, limit]).map(Self.logRecord)
        }
    }

    /// The newest log row id of a build (0 when none): where a live log starts.
    public func lastLogID(build: Int64) throws -> Int64 {
        try read { db in
            // One index seek per job, not a scan of the build's whole log.
            try db.one(as: Int64.self, """
                SELECT MAX((SELECT MAX(id) FROM log_lines WHERE job_id = j.id)) FROM jobs j WHERE j.build_id = ?
                """, [build]) ?? 0
        }
    }

    public func job(_ id: Int64) throws -> JobSummary? {
        try read { db in try db.row("SELECT * FROM jobs WHERE id = ?", [id]).map(Self.jobSummary) }
    }

    public func runners() throws -> [RunnerSummary] {
        try read { db in
            let dayAgo = Date().timeIntervalSince1970 - 86_400
            var current: [String: [Int64]] = [:]
            for r in try db.rows("SELECT id, runner FROM jobs WHERE status IN ('assigned', 'running') AND runner IS NOT NULL") {
                current[r["runner"], default: []].append(r["id"])
            }
            var counts: [String: Int] = [:]
            for r in try db.rows("""
                SELECT runner, COUNT(*) AS n FROM jobs WHERE runner IS NOT NULL
                AND status IN ('success', 'failed', 'error', 'timed_out', 'cancelled') GROUP BY runner
                """) {
                counts[r["runner"]] = r["n"]
            }
            var lost: [String: [Int64]] = [:]
            for r in try db.rows("""
                SELECT job_id, runner FROM job_events WHERE kind = 'lost' AND at > ? ORDER BY id DESC
                """, [dayAgo]) {
                if let name = r["runner"] as String? { lost[name, default: []].append(r["job_id"]) }
            }
            return try db.rows("SELECT * FROM runners ORDER BY state = 'connected' DESC, name").map { r in
                let name: String = r["name"]
                return RunnerSummary(name: name, state: Self.typed(r["state"], or: RunnerState.disconnected), host: r["host"],
                                     connectedAt: (r["connected_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                                     lastHeartbeat: (r["last_heartbeat"] as Double?).map(Date.init(timeIntervalSince1970:)),
                                     currentJobs: current[name] ?? [], jobsRun: counts[name] ?? 0, lostRecently: lost[name] ?? [],
                                     queues: (r["queues"] as String? ?? defaultQueue).split(separator: ",").map(String.init))
            }
        }
    }

    /// Every repository with a build (every build came through a dispatch, which notes its branch head).
    public func repositories() throws -> [String] {
        try read { db in try db.all(as: String.self, "SELECT DISTINCT repo FROM branch_heads ORDER BY repo") }
    }

    public func tasks() throws -> [String] {
        try read { db in try db.all(as: String.self, "SELECT DISTINCT task FROM builds WHERE task IS NOT NULL ORDER BY task") }
    }

    static func logRecord(_ r: SQLRow) -> LogRecord {
        LogRecord(id: r["id"], job: r["job_id"], attempt: r["attempt"], stream: LogStream(rawValue: r["stream"]) ?? .out,
                  timestampMillis: r["ts"], text: r["text"])
    }
}
