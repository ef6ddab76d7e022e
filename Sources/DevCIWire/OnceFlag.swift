import Foundation

/// A flag that is set once, from any thread, and read from any other (a timeout fired, shutdown began).
public final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    public init() {}

    public var isSet: Bool { lock.withLock { value } }

    public func set() { lock.withLock { value = true } }
}
