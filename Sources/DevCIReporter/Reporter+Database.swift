import DevCIStore
import Foundation
import Logging

/// Why no page can be read from the database yet: it does not exist, or this version cannot read it.
/// Served as a 503 page that says so (and reloads itself), never as a crash.
struct DatabaseUnavailable: Error, CustomStringConvertible {
    let description: String
}

/// The database, opened on first use: the reporter may start before the dispatcher has created it (`devci up`
/// starts both at once) and serves a waiting page until then, then the real pages without a restart.
/// A failed open is retried at most every 200 ms, so a busy wall screen costs a clock read per request, not an open.
final class LazyStore: @unchecked Sendable {
    // @unchecked: `store`, `failure` and `triedAt` are guarded by `lock`.
    let path: String
    private let logger: Logger
    private let lock = NSLock()
    private var store: (any BuildReader)?
    private var failure: DatabaseUnavailable?
    private var triedAt: ContinuousClock.Instant?
    static let retryInterval = Duration.milliseconds(200)

    /// The location as messages show it (a PostgreSQL address without its password).
    let name: String

    init(path: String, logger: Logger) {
        self.path = path
        name = storeName(path)
        self.logger = logger
        // At once, so the log says from the start whether there is a database to serve.
        _ = try? open()
    }

    /// The store, or `DatabaseUnavailable` saying why there is none yet.
    func open() throws -> any BuildReader {
        try lock.withLock {
            if let store { return store }
            let now = ContinuousClock.now
            if let failure, let triedAt, now - triedAt < Self.retryInterval { throw failure }
            triedAt = now
            do {
                let opened = try attempt()
                store = opened
                logger.info("database \(name) (read-only)")
                return opened
            } catch let problem as DatabaseUnavailable {
                // Once per distinct problem: a page reloading every two seconds must not fill the log.
                if problem.description != failure?.description { log(problem) }
                failure = problem
                throw problem
            }
        }
    }

    private var waiting: DatabaseUnavailable {
        DatabaseUnavailable(description: "DevCI is waiting for the dispatcher to create the database at \(name).")
    }

    private func attempt() throws -> any BuildReader {
        let postgres = PostgresAddress.isAddress(path)
        guard postgres || FileManager.default.fileExists(atPath: path) else { throw waiting }
        do {
            return try openReader(at: path)
        } catch let error as StoreError where error.isNotCreated {
            throw waiting
        } catch {
            // A dispatcher that created the file a moment ago may not have made its tables yet.
            if storeIsBeingCreated(at: path) { throw waiting }
            throw DatabaseUnavailable(description: error is StoreError ? "\(error)" : "cannot read the database at \(name): \(error)")
        }
    }

    private func log(_ problem: DatabaseUnavailable) {
        if problem.description == waiting.description {
            logger.notice("no database at \(name) yet: serving a waiting page until the dispatcher creates it")
        } else {
            logger.error("\(problem.description)")
        }
    }
}
