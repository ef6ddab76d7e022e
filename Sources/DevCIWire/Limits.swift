/// The bounds of the wire, documented in docs/PROTOCOL.md.
public enum WireLimits {
    /// The protocol version announced in the greeting.
    public static let protocolVersion = 1
    /// The longest line either side accepts, newline excluded.
    public static let maxLineBytes = 65_536
    /// The longest log text a runner puts in one `log` message; longer output lines are split.
    public static let maxLogTextBytes = 16_384
    /// The longest percent-encoded pipeline file a `dispatch` carries, and job script an `assign` carries,
    /// so that either line stays under `maxLineBytes` with its other fields.
    public static let maxPipelineBytes = 48_000
    public static let maxScriptBytes = 48_000
    /// Bad lines a connection may send before the dispatcher closes it.
    public static let maxErrorsPerConnection = 5
}

/// This build of DevCI, for `devci --version`.
public enum DevCIVersion {
    public static let current = "0.3.0 (protocol \(WireLimits.protocolVersion))"
}
