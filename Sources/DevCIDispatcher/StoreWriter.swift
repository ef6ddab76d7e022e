import DevCIStore
import Dispatch
import Foundation
import Logging
import NIOCore

/// Carries the dispatcher's store calls off the event loop, in the order they were submitted, so a slow or
/// locked database never stalls heartbeats or other connections. Calls submitted while the previous ones run
/// are written together in one transaction (group commit), and their futures complete together on the loop.
/// A database locked by another process is waited out (retried with backoff, said once per lock); any other
/// failure is fatal: the dispatcher stops rather than acknowledge work it could not record.
final class StoreWriter: @unchecked Sendable {
    /// One submitted call: runs against the store (on the writer's queue) and returns what completes its
    /// promise (on the loop), or fails it.
    private struct Call {
        let what: String
        let verify: Bool
        let run: (BuildWriter) throws -> @Sendable () -> Void
        let fail: (Error) -> Void
    }

    /// The most calls written in one transaction; more wait for the next.
    static let maxBatch = 1024

    private let store: BuildWriter
    private let queue = DispatchQueue(label: "devci.store-writer")
    private let loop: EventLoop
    private let logger: Logger
    private let onFatal: @Sendable (String) -> Void
    // `lock` guards `waiting` and `scheduled`; only `queue` touches `failed`.
    private let lock = NSLock()
    private var waiting: [Call] = []
    private var scheduled = false
    private var draining = false
    private var failed: String?

    init(store: BuildWriter, loop: EventLoop, logger: Logger, onFatal: @escaping @Sendable (String) -> Void) {
        self.store = store
        self.loop = loop
        self.logger = logger
        self.onFatal = onFatal
    }

    /// Runs `body` against the store after everything submitted before it; the future completes on the loop.
    /// `verify`: check afterwards that the database file is still the one opened, before anyone is told.
    func submit<T: Sendable>(_ what: String, verify: Bool = true, _ body: @escaping @Sendable (BuildWriter) throws -> T) -> EventLoopFuture<T> {
        let promise = loop.makePromise(of: T.self)
        let call = Call(what: what, verify: verify, run: { store in
            let value = try body(store)
            return { promise.succeed(value) }
        }, fail: { promise.fail($0) })
        let schedule: Bool = lock.withLock {
            waiting.append(call)
            defer { scheduled = true }
            return !scheduled
        }
        if schedule { queue.async { self.writeWaiting() } }
        return promise.futureResult
    }

    /// Waits until everything submitted so far is written (never call it on the loop). From now on a locked
    /// database is waited for `shutdownPatience` at most, so a stop request is never held up for ever.
    func drain() {
        lock.withLock { draining = true }
        while true {
            queue.sync {}
            if lock.withLock({ waiting.isEmpty && !scheduled }) { return }
        }
    }

    /// How long a write waits for a locked database once the dispatcher is stopping.
    static let shutdownPatience = 10.0

    /// Writes what waits, in one transaction; on the writer's queue.
    private func writeWaiting() {
        let (calls, more): ([Call], Bool) = lock.withLock {
            let taken = Array(waiting.prefix(Self.maxBatch))
            waiting.removeFirst(taken.count)
            scheduled = !waiting.isEmpty
            return (taken, scheduled)
        }
        // The rest runs next on this serial queue, after this batch.
        if more { queue.async { self.writeWaiting() } }
        guard !calls.isEmpty else { return }
        if let failed {
            calls.forEach { $0.fail(StoreError(failed)) }
            return
        }
        let what = calls.count == 1 ? calls[0].what : "\(calls[0].what) and \(calls.count - 1) more"
        do {
            let completions = try retryingWhileBusy(what) { try store.batch { try calls.map { try $0.run(store) } } }
            if calls.contains(where: \.verify) { try store.verify() }
            loop.execute { completions.forEach { $0() } }
        } catch {
            let message = "could not \(what): \(error)"
            failed = message
            calls.forEach { $0.fail(error) }
            onFatal(message)
        }
    }

    private func retryingWhileBusy<T>(_ what: String, _ body: () throws -> T) throws -> T {
        var delay = 0.05
        var said = false
        var waited = 0.0
        while true {
            do {
                let value = try body()
                if said { logger.notice("the database is free again; \(what) done") }
                return value
            } catch let error as StoreError where error.isBusy {
                if lock.withLock({ draining }) && waited >= Self.shutdownPatience { throw error }
                if !said {
                    logger.warning("\(error); waiting for it before I \(what) (heartbeats and leases go on)")
                    said = true
                }
                Thread.sleep(forTimeInterval: delay)
                waited += delay
                delay = min(delay * 2, 1)
            }
        }
    }
}
