import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// Which of several dispatchers on one PostgreSQL database leads. The leader holds a session-level advisory
/// lock on a connection of its own (never a pooled one); the others try for it a few times a second.
///
/// A leader that dies lets go with its session: at once for a killed process (the kernel closes its socket), and
/// within `sessionTimeout` for a frozen one or a host cut off, because the lock's session asks the server to end
/// it after that long idle (`idle_session_timeout`) and the leader pings it every `pingInterval`. A leader that
/// has not heard its ping answered for `sessionTimeout` minus a margin counts itself lost and stops writing.
/// Whoever takes the lock bumps the epoch in the `leadership` row; `PostgresDriver` fences every write with it.
public final class Leadership: @unchecked Sendable {
    // @unchecked: `connection`, `stopped` and `lastPing` are guarded by `lock` (the caller of `acquire`, then the
    // watcher, use the connection; `stop` may come from a signal's thread at any time).
    public let address: PostgresAddress
    private let identity: String
    private let logger: Logger
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var connection: PostgresConnection?
    private let lock = NSLock()
    private var stopped = false
    private var lastPing = Date()

    /// The advisory lock every DevCI dispatcher of a database contends for.
    static let key: Int64 = 0x4465_7643_4900_0002
    public static let sessionTimeout: TimeInterval = 3
    static let pingInterval: TimeInterval = 0.5
    static let pollInterval: TimeInterval = 0.2

    /// `identity`: who this dispatcher is, as the others name it ("pid 12 on host-a, listening on 10.0.0.1:8888").
    public init(address: PostgresAddress, identity: String, logger: Logger) {
        self.address = address
        self.identity = identity
        self.logger = logger
    }

    deinit {
        try? lock.withLock({ connection })?.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// Waits until this process leads, trying every `pollInterval`; `waiting` hears who leads meanwhile (again
    /// whenever that changes). Returns false when `stop()` was called first. A database that cannot be reached at
    /// the first try is an error (a wrong address, said at once); one lost later is retried, said once.
    public func acquire(waiting: (String) -> Void) throws -> Bool {
        var said: String?
        var unreachable = false
        var reached = false
        while !isStopped {
            do {
                let c = try lockConnection()
                reached = true
                if try query(c, "SELECT pg_try_advisory_lock(\(Self.key))").first?.first?.decode(Bool.self) == true {
                    lock.withLock { lastPing = Date() }
                    return true
                }
                unreachable = false
                let holder = (try? query(c, "SELECT holder FROM leadership WHERE id = 1").first?.first?.decode(String.self)) ?? ""
                let leads = holder.isEmpty ? "another dispatcher" : holder
                if said != leads {
                    waiting(leads)
                    said = leads
                }
            } catch {
                dropConnection()
                if !reached && !isStopped { throw StoreError("cannot connect to \(address): \(PostgresDriver.describe(error))") }
                if !unreachable { logger.warning("cannot reach \(address) to contend for the lead: \(error); trying again") }
                unreachable = true
                Thread.sleep(forTimeInterval: 1)
            }
            Thread.sleep(forTimeInterval: Self.pollInterval)
        }
        return false
    }

    /// Takes the lock if nobody holds it, without waiting (`devci migrate` keeps dispatchers off a database it fills).
    public func tryAcquire() throws -> Bool {
        let c = try lockConnection()
        return try query(c, "SELECT pg_try_advisory_lock(\(Self.key))").first?.first?.decode(Bool.self) == true
    }

    /// Who the `leadership` row names as the last leader ("" when none yet).
    public func lastHolder() -> String {
        guard let c = try? lockConnection() else { return "" }
        return (try? query(c, "SELECT holder FROM leadership WHERE id = 1").first?.first?.decode(String.self)) ?? ""
    }

    /// Takes over after `acquire`: the epoch grows by one in the database (waiting for the last leader's open
    /// transactions to end, or be ended by the server), every write of `store` carries it from now on, and the
    /// lock's session is watched: `onLost` is called once if it is lost.
    public func takeOver(store: SQLStore, onLost: @escaping @Sendable (String) -> Void) throws -> Int64 {
        guard let driver = store.postgres else { throw StoreError("a standby dispatcher needs a PostgreSQL store") }
        // Not fenced yet: this is the write that makes the new epoch.
        let epoch = try driver.write { db -> Int64 in
            guard let epoch = try db.one(as: Int64.self, "UPDATE leadership SET epoch = epoch + 1, holder = ?, since = ? WHERE id = 1 RETURNING epoch",
                                         [identity, Date().timeIntervalSince1970]) else {
                throw StoreError("the leadership row is missing from \(address)")
            }
            return epoch
        }
        driver.fence(epoch: epoch)
        let thread = Thread { [self] in watch(driver: driver, epoch: epoch, onLost: onLost) }
        thread.name = "devci leadership"
        thread.start()
        return epoch
    }

    /// Pings the lock's session until it fails or goes unanswered too long, or `stop()`.
    private func watch(driver: PostgresDriver, epoch: Int64, onLost: @escaping @Sendable (String) -> Void) {
        let margin = Self.sessionTimeout - 2 * Self.pingInterval
        while !isStopped {
            Thread.sleep(forTimeInterval: Self.pingInterval)
            let reason: String?
            if let c = lock.withLock({ connection }), !c.isClosed {
                let ping = c.query(PostgresQuery(unsafeSQL: "SELECT 1"), logger: logger)
                ping.whenSuccess { [self] _ in lock.withLock { lastPing = Date() } }
                let silent = lock.withLock { Date().timeIntervalSince(lastPing) }
                reason = silent > margin ? "the database has not answered the leader's lock session for \(String(format: "%.1f", silent)) s" : nil
            } else {
                reason = "the leader's lock session to \(address) was closed"
            }
            if let reason, !isStopped {
                let why = "this dispatcher no longer leads (epoch \(epoch)): \(reason); another may have taken over"
                driver.lose(why)
                onLost(why)
                return
            }
        }
    }

    /// Ends contending (a waiting `acquire` returns false) and lets go of the lock.
    public func stop() {
        lock.withLock { stopped = true }
        dropConnection()
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    /// The lock's own connection, opened on first use. Its session ends on the server after
    /// `sessionTimeout` idle, and the server probes the client's host with TCP keepalives.
    private func lockConnection() throws -> PostgresConnection {
        if let open = lock.withLock({ connection }), !open.isClosed { return open }
        var config = try address.configuration()
        config.options.additionalStartupParameters = [("application_name", "devci leader lock")]
        let c = try PostgresConnection.connect(on: group.next(), configuration: config, id: 1, logger: logger).wait()
        let ms = Int(Self.sessionTimeout * 1000)
        for setting in ["SET idle_session_timeout = \(ms)", "SET tcp_keepalives_idle = 1", "SET tcp_keepalives_interval = 1",
                        "SET tcp_keepalives_count = 2"] {
            do { _ = try query(c, setting) } catch {
                throw StoreError("the PostgreSQL server at \(address) refused '\(setting)' (PostgreSQL 14 or later is needed): \(PostgresDriver.describe(error))")
            }
        }
        let stoppedMeanwhile = lock.withLock {
            if !stopped { connection = c }
            return stopped
        }
        if stoppedMeanwhile {
            try? c.close().wait()
            throw StoreError("stopped")
        }
        return c
    }

    private func dropConnection() {
        let c: PostgresConnection? = lock.withLock {
            defer { connection = nil }
            return connection
        }
        try? c?.close().wait()
    }

    private func query(_ c: PostgresConnection, _ sql: String) throws -> [PostgresRow] {
        try c.query(PostgresQuery(unsafeSQL: sql), logger: logger).wait().rows
    }
}
