import DevCIWire
import Foundation

/// What a notification about an ended build says: the build, how its predecessor ended, and its failing jobs.
public struct NotificationFacts: Sendable, Equatable {
    public var build: BuildSummary
    /// How the previous ended build of the same repository, branch and task ended (skipped and cancelled ones
    /// left out); nil for the first.
    public var previous: BuildStatus?
    public var failing: [FailingJob]
    /// The build's failed tests (at most 20), each saying whether it is known flaky.
    public var failedTests: [BuildTest]
    /// The bisection that named the commit that broke the branch, for the message that follows it.
    public var culprit: BisectionRecord?

    public init(build: BuildSummary, previous: BuildStatus?, failing: [FailingJob], failedTests: [BuildTest] = [], culprit: BisectionRecord? = nil) {
        self.build = build
        self.previous = previous
        self.failing = failing
        self.failedTests = failedTests
        self.culprit = culprit
    }

    /// It failed, and every test that failed is known flaky.
    public var onlyFlakyFailures: Bool { failedTests.onlyKnownFlakyFailures }
}

public struct FailingJob: Sendable, Equatable {
    public var name: String
    public var status: JobState
    /// Its last log lines, oldest first.
    public var tail: [String]

    public init(name: String, status: JobState, tail: [String]) {
        self.name = name
        self.status = status
        self.tail = tail
    }
}

/// One message waiting in the outbox: an email (`target`: addresses, comma-separated; `body`: the whole mail)
/// or a webhook POST (`target`: the URL; `body`: the JSON).
public struct OutboxMessage: Sendable, Equatable {
    public var channel: String
    public var target: String
    public var subject: String
    public var body: String

    public init(channel: String, target: String, subject: String, body: String) {
        self.channel = channel
        self.target = target
        self.subject = subject
        self.body = body
    }
}

public struct OutboxEntry: Sendable, Equatable {
    public var id: Int64
    public var build: Int64
    public var message: OutboxMessage
    public var attempts: Int
}

public struct OutboxRow: Sendable, Equatable {
    public var id: Int64
    public var build: Int64
    public var channel: String
    public var target: String
    public var state: String
    public var attempts: Int
    public var lastError: String?
}

extension SQLStore {
    public func jobDefinitions(build: Int64) throws -> [(job: NewJob, state: JobState)] {
        try read { db in
            try db.rows("SELECT * FROM jobs WHERE build_id = ? ORDER BY id", [build]).map {
                (Self.newJob($0), Self.typed($0["status"], or: JobState.error))
            }
        }
    }

    /// Ended builds whose notifications have not been decided yet (the dispatcher stopped in between).
    public func buildsAwaitingNotification() throws -> [Int64] {
        try read { db in
            try db.all(as: Int64.self, "SELECT id FROM builds WHERE notify_done = 0 AND finished_at IS NOT NULL ORDER BY id")
        }
    }

    public func notificationFacts(build id: Int64, logLines: Int) throws -> NotificationFacts? {
        guard let build = try build(id) else { return nil }
        let failedTests = build.status.isFailure ? Array(try tests(build: id).filter(\.status.isFailure).prefix(20)) : []
        return try read { db in
            let previous = try db.one(as: String.self, """
                SELECT status FROM builds WHERE id < ? AND repo = ? AND branch = ? AND task IS NOT DISTINCT FROM ? AND finished_at IS NOT NULL
                AND status NOT IN ('skipped', 'cancelled') AND cause <> 'bisect' ORDER BY id DESC LIMIT 1
                """, [id, build.repo, build.branch, build.task])
            let failing = try db.rows("""
                SELECT id, name, status FROM jobs WHERE build_id = ? AND status IN ('failed', 'error', 'timed_out') AND allow_failure = 0 ORDER BY id LIMIT 10
                """, [id]).map { r -> FailingJob in
                let tail = try db.all(as: String.self, "SELECT substr(text, 1, 400) FROM log_lines WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                                               [r["id"] as Int64, logLines])
                return FailingJob(name: r["name"], status: Self.typed(r["status"], or: JobState.error), tail: tail.reversed())
            }
            return NotificationFacts(build: build, previous: previous.flatMap(BuildStatus.init(rawValue:)), failing: failing, failedTests: failedTests)
        }
    }

    /// Puts a build's messages in the outbox and marks the build decided, in one transaction.
    public func queueNotifications(build: Int64, _ messages: [OutboxMessage], at: Date) throws {
        try write { db in
            let t = at.timeIntervalSince1970
            for m in messages {
                try db.send("""
                    INSERT INTO notifications(build_id, channel, target, subject, body, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, [build, m.channel, m.target, m.subject, m.body, t, t])
            }
            try db.send("UPDATE builds SET notify_done = 1 WHERE id = ?", [build])
        }
    }

    /// Pending messages due by `at`, oldest first.
    public func dueNotifications(at: Date, limit: Int) throws -> [OutboxEntry] {
        try read { db in
            try db.rows("""
                SELECT * FROM notifications WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?
                """, [at.timeIntervalSince1970, limit]).map { r in
                OutboxEntry(id: r["id"], build: r["build_id"],
                            message: OutboxMessage(channel: r["channel"], target: r["target"], subject: r["subject"], body: r["body"]),
                            attempts: r["attempts"])
            }
        }
    }

    /// Notes a delivery attempt: `sent`, or failed with `error` and tried again at `retryAt` (nil: given up).
    public func noteNotificationAttempt(id: Int64, sent: Bool, error: String?, retryAt: Date?, at: Date) throws {
        try write { db in
            let state = sent ? "sent" : retryAt == nil ? "failed" : "pending"
            try db.send("""
                UPDATE notifications SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at),
                    sent_at = CASE WHEN CAST(? AS bigint) = 1 THEN ? ELSE sent_at END
                WHERE id = ? AND state = 'pending'
                """, [state, error, retryAt?.timeIntervalSince1970, sent, at.timeIntervalSince1970, id])
        }
    }

    /// Every outbox row, oldest first (for tests and `devci` tools).
    public func outbox() throws -> [OutboxRow] {
        try read { db in
            try db.rows("SELECT * FROM notifications ORDER BY id").map { r in
                OutboxRow(id: r["id"], build: r["build_id"], channel: r["channel"], target: r["target"], state: r["state"],
                          attempts: r["attempts"], lastError: r["last_error"])
            }
        }
    }
}
