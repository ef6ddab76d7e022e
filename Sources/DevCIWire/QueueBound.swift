import Dispatch

/// A value that may only be read or written on one serial queue, which every access checks (the queue's
/// counterpart of NIO's `NIOLoopBoundBox`). It is what lets a queue-confined class be `Sendable` for the
/// compiler: the one `@unchecked` is here, and its promise is enforced at run time.
public final class QueueBound<Value>: @unchecked Sendable {
    public let queue: DispatchQueue
    private var _value: Value

    /// Made anywhere: the value is handed over and from now on reached only on `queue`.
    public init(_ value: sending Value, queue: DispatchQueue) {
        self.queue = queue
        _value = value
    }

    public var value: Value {
        get {
            dispatchPrecondition(condition: .onQueue(queue))
            return _value
        }
        _modify {
            dispatchPrecondition(condition: .onQueue(queue))
            yield &_value
        }
    }
}
