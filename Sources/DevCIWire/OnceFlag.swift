import NIOConcurrencyHelpers

/// A flag that is set once, from any thread, and read from any other (a timeout fired, shutdown began).
public final class OnceFlag: Sendable {
    private let value = NIOLockedValueBox(false)

    public init() {}

    public var isSet: Bool { value.withLockedValue { $0 } }

    public func set() { value.withLockedValue { $0 = true } }
}
