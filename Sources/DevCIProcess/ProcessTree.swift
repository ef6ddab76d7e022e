import DevCIWire
import Foundation

/// Long-running children started in order and stopped in reverse, as `devci up` runs the whole system: a
/// child that exits on its own (not while the tree is stopping) is reported once through `onUnexpectedExit`,
/// so the owner can stop the rest and fail rather than run on half a system.
public final class ProcessTree: @unchecked Sendable {
    // @unchecked: `children` is guarded by `lock`; `stopping` is a locked flag.
    private let lock = NSLock()
    private var children: [NamedChild] = []
    private let stopping = OnceFlag()
    private let onUnexpectedExit: @Sendable (String) -> Void

    public init(onUnexpectedExit: @escaping @Sendable (String) -> Void) {
        self.onUnexpectedExit = onUnexpectedExit
    }

    /// Starts `child` and, with `ready`, waits until it holds (polled every 100 ms), the child exits, or
    /// `timeout` passes; throws saying which.
    public func start(_ child: NamedChild, timeout: TimeInterval = 20, ready: (() -> Bool)? = nil) throws {
        let exited = OnceFlag()
        let stopping = self.stopping, report = onUnexpectedExit
        child.start { how in
            exited.set()
            if !stopping.isSet { report("the \(child.name) exited (\(how)); stopped everything") }
        }
        lock.withLock { children.append(child) }
        guard let ready else { return }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while !ready() {
            guard Date() < deadline, !exited.isSet else {
                stopAll(grace: 1)
                throw ProcessTreeError(description: exited.isSet ? "the \(child.name) exited at start (its log is above)"
                                                                 : "the \(child.name) was not ready within \(Int(timeout)) s")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// Stops every child, the last started first, each given `grace` after SIGTERM; returns when all are gone.
    public func stopAll(grace: TimeInterval) {
        stopping.set()
        for child in lock.withLock({ children }).reversed() {
            child.stop(grace: grace)
            child.wait()
        }
    }
}

/// Why a process tree could not start.
public struct ProcessTreeError: Error, CustomStringConvertible {
    public let description: String
}
