/// The bounds of the wire, documented in docs/PROTOCOL.md.
public enum WireLimits {
    /// The protocol version announced in the greeting.
    public static let protocolVersion = 1
    /// The longest line either side accepts, newline excluded.
    public static let maxLineBytes = 65_536
    /// The longest log text a runner puts in one `log` message; longer output lines are split.
    public static let maxLogTextBytes = 16_384
    /// Bad lines a connection may send before the dispatcher closes it.
    public static let maxErrorsPerConnection = 5
}
