import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL store is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require&sslrootcert=FILE]`.
/// The password may come from `PGPASSWORD` instead, so that it is not on a command line. TLS is off on a
/// loopback host and required elsewhere unless `sslmode` says.
public struct PostgresAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var requireTLS: Bool
    /// A PEM file of the certificates that may sign the server's (default: the system's).
    public var rootCertificates: String?

    public static func isAddress(_ location: String) -> Bool {
        location.hasPrefix("postgres://") || location.hasPrefix("postgresql://")
    }

    public init(_ url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard Self.isAddress(url), let parts = URLComponents(string: url), let host = parts.host, !host.isEmpty else {
            throw StoreError("'\(Self.redacted(url))' is not a PostgreSQL address: write postgres://USER@HOST:PORT/DATABASE")
        }
        guard let user = parts.user, !user.isEmpty else {
            throw StoreError("the PostgreSQL address \(Self.redacted(url)) names no user: write postgres://USER@HOST:PORT/DATABASE")
        }
        let database = String(parts.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw StoreError("the PostgreSQL address \(Self.redacted(url)) names no database: write postgres://USER@HOST:PORT/DATABASE")
        }
        self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        port = parts.port ?? 5432
        self.user = user.removingPercentEncoding ?? user
        password = parts.password.map { $0.removingPercentEncoding ?? $0 } ?? environment["PGPASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        self.database = database.removingPercentEncoding ?? database
        let query = Dictionary((parts.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        for key in query.keys where !["sslmode", "sslrootcert"].contains(key) {
            throw StoreError("the PostgreSQL address takes sslmode= and sslrootcert=, not \(key)=")
        }
        switch query["sslmode"] {
        case nil: requireTLS = !["127.0.0.1", "localhost", "::1"].contains(self.host)
        case "disable": requireTLS = false
        case "require", "verify-full": requireTLS = true
        case let other?: throw StoreError("sslmode=\(other) is not known: use disable or require (which verifies the server's certificate)")
        }
        rootCertificates = query["sslrootcert"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The address as a URL, with its password if it has one (for handing to another process).
    public var urlString: String {
        var parts = URLComponents()
        parts.scheme = "postgres"
        parts.user = user
        parts.password = password
        parts.host = host.contains(":") ? "[\(host)]" : host
        parts.port = port
        parts.path = "/" + database
        var query: [URLQueryItem] = []
        if requireTLS != !["127.0.0.1", "localhost", "::1"].contains(host) { query.append(URLQueryItem(name: "sslmode", value: requireTLS ? "require" : "disable")) }
        if let rootCertificates { query.append(URLQueryItem(name: "sslrootcert", value: rootCertificates)) }
        if !query.isEmpty { parts.queryItems = query }
        return parts.string ?? description
    }

    /// The address without its password, for messages and logs.
    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(user)@\(h):\(port)/\(database)"
    }

    /// `url` with any password replaced, for an error about it.
    public static func redacted(_ url: String) -> String {
        guard var parts = URLComponents(string: url) else { return "(a PostgreSQL address)" }
        guard parts.password != nil else { return url }
        parts.password = "****"
        return parts.string ?? "(a PostgreSQL address)"
    }

    func configuration() throws -> PostgresConnection.Configuration {
        var tls = PostgresConnection.Configuration.TLS.disable
        if requireTLS {
            var c = TLSConfiguration.makeClientConfiguration()
            if let rootCertificates { c.trustRoots = .file(rootCertificates) }
            tls = .require(try NIOSSLContext(configuration: c))
        }
        var config = PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
        config.options.connectTimeout = .seconds(5)
        return config
    }
}

/// The PostgreSQL store's connections: a few kept open and lent out one at a time (a dispatcher's writer takes
/// one, the reporter's pages the rest), on their own event loop so a caller may wait for them from any thread.
///
/// The store's callers are synchronous (the dispatcher's writer queue, the reporter's page threads), so queries
/// are sent with postgres-nio's EventLoopFuture interface and waited for here. PostgresClient's pool is
/// async-only, and waiting on a Task from a thread of the cooperative pool (two on this machine) can deadlock.
final class PostgresDriver: SQLDriver, @unchecked Sendable {
    // @unchecked: `idle`, `open` and `closed` are guarded by `condition`; `fence` by `fenceLock`; the rest is immutable.
    let address: PostgresAddress
    var name: String { address.description }
    private let group: MultiThreadedEventLoopGroup
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private let size: Int
    private let condition = NSCondition()
    private var idle: [PostgresConnection] = []
    private var open = 0
    private var closed = false
    private var nextID = 0
    /// Statements every new connection runs first.
    private let setup: [String]
    private let fenceLock = NSLock()
    private var fence: Int64?
    private var fenceLost: String?
    private let sqlCacheLock = NSLock()
    private var numberedSQL: [String: String] = [:]
    /// The statements prepared on each connection (by its id): parsed and planned by the server once, then
    /// executed again and again, which is most of what a transaction costs the server otherwise.
    private var prepared: [PostgresConnection.ID: [String: PreparedQuery]] = [:]
    static let preparedPerConnection = 256

    /// How long a caller waits for a free connection, and for the server to accept a new one.
    static let leaseTimeout: TimeInterval = 15

    /// Connects to `address` (one connection at once, so a wrong address is said at start), creating and
    /// migrating the schema unless `readOnly`.
    init(address: PostgresAddress, readOnly: Bool, connections: Int = 4, applicationName: String = "devci",
         logger: Logger = Logger(label: "devci.store")) throws {
        self.address = address
        self.logger = logger
        size = max(1, connections)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var config = try address.configuration()
        config.options.additionalStartupParameters = [("application_name", applicationName)]
        configuration = config
        // A frozen or cut-off process must not hold a transaction (and the rows it locked) for ever: the server
        // ends such a session, and its transaction with it. The store's transactions last milliseconds.
        setup = readOnly ? [] : ["SET idle_in_transaction_session_timeout = '2s'"]
        do {
            try withConnection { _ in }
            if readOnly {
                try checkSchema()
            } else {
                try PostgresSchema.migrate(self)
                _ = try write { db in
                    try db.execute("""
                        INSERT INTO store_meta(key, value) VALUES ('opened_at', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value
                        """, [String(Date().timeIntervalSince1970)])
                }
            }
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    func shutdown() {
        let connections: [PostgresConnection] = condition.withLock {
            closed = true
            defer { idle.removeAll() }
            return idle
        }
        for c in connections { try? c.close().wait() }
        try? group.syncShutdownGracefully()
    }

    /// From now on every write transaction first checks, in the database, that `epoch` is still the leader's.
    func fence(epoch: Int64) {
        fenceLock.withLock { fence = epoch }
    }

    /// Refuses every write from now on (the leader's lock was lost).
    func lose(_ why: String) {
        fenceLock.withLock { fenceLost = why }
    }

    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try withConnection { c in try body(PostgresSQLConnection(driver: self, connection: c)) }
    }

    func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        let (epoch, lost) = fenceLock.withLock { (fence, fenceLost) }
        if let lost { throw StoreError(lost) }
        return try withConnection { c in
            let db = PostgresSQLConnection(driver: self, connection: c)
            // Sent, not waited for: a refused fence aborts the transaction, and says so at the next wait.
            try db.send("BEGIN", [])
            do {
                if let epoch { try db.send("SELECT devci_fence(?)", [.int(epoch)]) }
                let value = try body(db)
                try db.commit()
                return value
            } catch {
                db.abandon()
                throw error
            }
        }
    }

    func verify() throws {
        if let lost = fenceLock.withLock({ fenceLost }) { throw StoreError(lost) }
    }

    /// Throws unless the schema is this version's (a reader never migrates).
    private func checkSchema() throws {
        let applied = try read { db -> [String]? in
            guard try db.one(as: String.self, "SELECT CAST(to_regclass('schema_migrations') AS text)") != nil else { return nil }
            return try db.all(as: String.self, "SELECT name FROM schema_migrations")
        }
        guard let applied, !applied.isEmpty else {
            throw StoreError("the database \(name) has no DevCI tables yet: start a dispatcher on it (or `devci migrate`) first", notCreated: true)
        }
        guard Set(applied) == Set(PostgresSchema.migrations.map(\.name)) else {
            throw StoreError("the database \(name) is from an older or newer DevCI: start this version's dispatcher on it once to upgrade it")
        }
    }

    // MARK: Connections

    func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let c = try lease()
        do {
            let value = try body(c)
            release(c)
            return value
        } catch {
            release(c)
            throw error
        }
    }

    private func lease() throws -> PostgresConnection {
        let deadline = Date().addingTimeInterval(Self.leaseTimeout)
        condition.lock()
        while true {
            if closed {
                condition.unlock()
                throw StoreError("the store \(name) is closed")
            }
            if let c = idle.popLast() {
                if c.isClosed {
                    open -= 1
                    continue
                }
                condition.unlock()
                return c
            }
            if open < size {
                open += 1
                nextID += 1
                let id = nextID
                condition.unlock()
                do {
                    return try connect(id: id)
                } catch {
                    condition.withLock {
                        open -= 1
                        condition.signal()
                    }
                    throw error
                }
            }
            if !condition.wait(until: deadline) {
                condition.unlock()
                throw StoreError("no connection to \(name) was free for \(Int(Self.leaseTimeout)) s", busy: true)
            }
        }
    }

    private func release(_ c: PostgresConnection) {
        let dead = condition.withLock {
            if c.isClosed || closed {
                sqlCacheLock.withLock { prepared[c.id] = nil }
                open -= 1
            } else {
                idle.append(c)
            }
            condition.signal()
            return closed && !c.isClosed
        }
        if dead { let closing: EventLoopFuture<Void> = c.close(); closing.whenComplete { _ in } }
    }

    private func connect(id: Int) throws -> PostgresConnection {
        let c: PostgresConnection
        do {
            c = try PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger).wait()
        } catch {
            throw StoreError("cannot connect to \(name): \(Self.describe(error))")
        }
        for statement in setup { _ = try run(c, statement, []) }
        return c
    }

    // MARK: Queries

    /// Runs one statement (`?` placeholders) and waits for all its rows.
    func run(_ c: PostgresConnection, _ sql: String, _ arguments: [SQLValue]) throws -> PostgresQueryResult {
        try wait(submit(c, sql, arguments))
    }

    /// The result of a statement sent with `submit`, its failure as a `StoreError`.
    func wait(_ future: EventLoopFuture<PostgresQueryResult>) throws -> PostgresQueryResult {
        do {
            return try future.wait()
        } catch {
            throw Self.storeError(error)
        }
    }

    /// Sends one statement (`?` placeholders) on `c`, behind those sent before; the connection runs them in order.
    func submit(_ c: PostgresConnection, _ sql: String, _ arguments: [SQLValue]) -> EventLoopFuture<PostgresQueryResult> {
        var binds = PostgresBindings(capacity: arguments.count)
        for value in arguments {
            switch value {
            case .null: binds.appendNull()
            case .int(let i): binds.append(i)
            case .double(let d): binds.append(d)
            case .text(let s): binds.append(Self.text(s))
            }
        }
        return c.query(PostgresQuery(unsafeSQL: numbered(sql), binds: binds), logger: logger)
    }

    /// Sends one of the store's own statements on `c` as a prepared statement (prepared first if this connection
    /// has not seen it: that waits, behind what was sent before, and is done once). Each placeholder is cast to
    /// the type of its value (`$1::bigint`), so the server never infers another type than the bind carries; a
    /// NULL is left to the server's inference, and each pattern of NULLs is its own prepared statement.
    func submitPrepared(_ c: PostgresConnection, _ sql: String, _ arguments: [SQLValue]) throws -> EventLoopFuture<[PostgresRow]> {
        let text = numbered(sql, types: arguments.map { value -> String? in
            switch value {
            case .null: nil
            case .int: "bigint"
            case .double: "double precision"
            case .text: "text"
            }
        })
        var statement = sqlCacheLock.withLock { prepared[c.id]?[text] }
        if statement == nil {
            let made: PreparedQuery
            do { made = try c.prepare(query: text).wait() } catch {
                throw Self.storeError(error)
            }
            sqlCacheLock.withLock {
                if prepared[c.id, default: [:]].count < Self.preparedPerConnection { prepared[c.id, default: [:]][text] = made }
            }
            statement = made
        }
        let binds = arguments.map { value -> PostgresData in
            switch value {
            case .null: .null
            case .int(let i): PostgresData(int64: i)
            case .double(let d): PostgresData(double: d)
            case .text(let s): PostgresData(string: Self.text(s))
            }
        }
        return statement!.execute(binds)
    }

    /// Whether a statement is worth preparing: the store's own, with few placeholders (a burst of log lines, or
    /// `devci migrate`'s many-row inserts, come in too many shapes).
    static func preparable(_ arguments: [SQLValue]) -> Bool {
        arguments.count <= 64 && !arguments.isEmpty
    }

    /// `sql` with its `?` placeholders numbered `$1`, `$2`, … (none inside quotes), each cast to its type in
    /// `types` where one is given.
    private func numbered(_ sql: String, types: [String?] = []) -> String {
        let key = types.isEmpty ? sql : sql + "\u{0}" + types.map { $0 ?? "-" }.joined(separator: ",")
        if let done = sqlCacheLock.withLock({ numberedSQL[key] }) { return done }
        var out = "", n = 0, quoted = false
        for ch in sql {
            if ch == "'" { quoted.toggle() }
            if ch == "?" && !quoted {
                n += 1
                out += "$\(n)"
                if n <= types.count, let type = types[n - 1] { out += "::" + type }
            } else {
                out.append(ch)
            }
        }
        sqlCacheLock.withLock { numberedSQL[key] = out }
        return out
    }

    /// A failed statement as the store says it: the server's words, and whether it was the epoch fence.
    static func storeError(_ error: Error) -> StoreError {
        StoreError(describe(error), fenced: sqlState(error) == PostgresSchema.fenceState)
    }

    /// PostgreSQL's text cannot hold NUL: a log line carrying one keeps the rest of its text.
    static func text(_ s: String) -> String {
        s.contains("\0") ? s.replacingOccurrences(of: "\0", with: "\u{FFFD}") : s
    }

    static func sqlState(_ error: Error) -> String? {
        if case .server(let e)? = error as? PostgresError { return e.fields[.sqlState] }
        return (error as? PSQLError)?.serverInfo?[.sqlState]
    }

    /// The server's own words when it refused, else the error.
    static func describe(_ error: Error) -> String {
        if let e = error as? PSQLError {
            if let info = e.serverInfo, let message = info[.message] {
                return message + (info[.detail].map { " (\($0))" } ?? "")
            }
            return "\(e.code)"
        }
        // The prepared-statement path (postgres-nio's older interface) reports the server's refusal this way.
        if case .server(let e)? = error as? PostgresError, let message = e.fields[.message] {
            return message + (e.fields[.detail].map { " (\($0))" } ?? "")
        }
        if error is PostgresDecodingError { return String(reflecting: error) }
        return "\(error)"
    }
}

/// One leased PostgreSQL connection as the store's connection. Statements whose answer is not needed are
/// sent without waiting (`send`), so a transaction costs a round trip per read, not per statement; the first
/// failure among them is thrown at the next wait.
final class PostgresSQLConnection: SQLConnection {
    let driver: PostgresDriver
    let connection: PostgresConnection
    var dialect: SQLDialect { .postgres }
    private var pending: [EventLoopFuture<Void>] = []

    init(driver: PostgresDriver, connection: PostgresConnection) {
        self.driver = driver
        self.connection = connection
    }

    func send(_ sql: String, _ arguments: [SQLValue]) throws {
        if PostgresDriver.preparable(arguments) {
            pending.append(try prepared(sql, arguments).map { _ in })
        } else {
            pending.append(driver.submit(connection, sql, arguments).map { _ in })
        }
    }

    /// A prepared statement sent; a failure to prepare it behind an earlier failure is that earlier failure.
    private func prepared(_ sql: String, _ arguments: [SQLValue]) throws -> EventLoopFuture<[PostgresRow]> {
        do {
            return try driver.submitPrepared(connection, sql, arguments)
        } catch {
            try settle()
            throw error
        }
    }

    /// Waits for everything sent so far; throws the first failure.
    private func settle() throws {
        let sent = pending
        pending = []
        for f in sent {
            do { try f.wait() } catch { throw PostgresDriver.storeError(error) }
        }
    }

    func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int {
        try waited(sql, arguments).metadata.rows ?? 0
    }

    /// Commits, and throws unless every statement of the transaction was written.
    func commit() throws {
        let result = try waited("COMMIT", [])
        // An aborted transaction "commits" as a rollback.
        guard result.metadata.command == "COMMIT" else { throw StoreError("the transaction was rolled back") }
    }

    /// Rolls back what is open, whatever failed.
    func abandon() {
        for f in pending { _ = try? f.wait() }
        pending = []
        if !connection.isClosed { _ = try? driver.run(connection, "ROLLBACK", []) }
    }

    /// Sends `sql` and waits for it, and so for everything sent before it: the first of those that failed is
    /// the error (the ones after it only say the transaction is aborted).
    private func waited(_ sql: String, _ arguments: [SQLValue]) throws -> PostgresQueryResult {
        let future = driver.submit(connection, sql, arguments)
        try settle()
        return try driver.wait(future)
    }

    func rows(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow] {
        let rows: [PostgresRow]
        // postgres-nio's prepared statements come back in binary while their row description says text.
        let binary = PostgresDriver.preparable(arguments)
        if binary {
            let future = try prepared(sql, arguments)
            try settle()
            do { rows = try future.wait() } catch {
                throw PostgresDriver.storeError(error)
            }
        } else {
            rows = try waited(sql, arguments).rows
        }
        guard let first: PostgresRow = rows.first else { return [] }
        var names: [String: Int] = [:]
        var i = 0
        for cell in first {
            if names[cell.columnName] == nil { names[cell.columnName] = i }
            i += 1
        }
        do {
            return try rows.map { row in SQLRow(names: names, values: try row.map { try Self.value($0, binary: binary) }) }
        } catch {
            throw StoreError("cannot read a row of '\(sql.prefix(60))': \(String(reflecting: error))")
        }
    }

    static func value(_ raw: PostgresCell, binary: Bool) throws -> SQLValue {
        guard raw.bytes != nil else { return .null }
        let cell = binary ? PostgresCell(bytes: raw.bytes, dataType: raw.dataType, format: .binary, columnName: raw.columnName,
                                         columnIndex: raw.columnIndex) : raw
        switch cell.dataType {
        case .int2, .int4, .int8: return .int(try cell.decode(Int64.self))
        case .float4, .float8: return .double(try cell.decode(Double.self))
        case .bool: return .int(try cell.decode(Bool.self) ? 1 : 0)
        default: return .text(try cell.decode(String.self))
        }
    }
}
