/// The codes of `error` lines, in one place (docs/PROTOCOL.md, Error codes). A code this build does not know,
/// from a newer peer, still decodes: it is kept as it came.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    // Bad lines (each counts against the peer's budget).
    public static let empty = ErrorCode(rawValue: "empty")
    public static let unknownVerb = ErrorCode(rawValue: "unknown_verb")
    public static let malformed = ErrorCode(rawValue: "malformed")
    public static let missingField = ErrorCode(rawValue: "missing_field")
    public static let badField = ErrorCode(rawValue: "bad_field")
    public static let unknownField = ErrorCode(rawValue: "unknown_field")
    public static let badEscape = ErrorCode(rawValue: "bad_escape")
    public static let badUTF8 = ErrorCode(rawValue: "bad_utf8")
    public static let tooLong = ErrorCode(rawValue: "too_long")
    public static let notRegistered = ErrorCode(rawValue: "not_registered")
    // Authentication and admission (the dispatcher hangs up after these).
    public static let authRequired = ErrorCode(rawValue: "auth_required")
    public static let badToken = ErrorCode(rawValue: "bad_token")
    public static let tooManyErrors = ErrorCode(rawValue: "too_many_errors")
    public static let timeout = ErrorCode(rawValue: "timeout")
    public static let busy = ErrorCode(rawValue: "busy")
    // Refusals of a request.
    public static let nameInUse = ErrorCode(rawValue: "name_in_use")
    public static let alreadyRegistered = ErrorCode(rawValue: "already_registered")
    public static let store = ErrorCode(rawValue: "store")
    /// A `cancel` or trigger named a build, job or task that does not exist or has already ended.
    public static let notFound = ErrorCode(rawValue: "not_found")
    /// A `reload` found the server configuration invalid; the old one stays.
    public static let config = ErrorCode(rawValue: "config")
    /// An upload would take a job's artifacts over the dispatcher's `--artifact-limit`.
    public static let tooLarge = ErrorCode(rawValue: "too_large")
    /// This dispatcher is a standby (another leads): it takes no work. A peer tries its next address.
    public static let standby = ErrorCode(rawValue: "standby")
    /// A `rerun` the build's state does not allow (its failed jobs before it ended; nothing failed).
    public static let conflict = ErrorCode(rawValue: "conflict")
    // Inside `WireClient` only: the connection closed.
    public static let closed = ErrorCode(rawValue: "closed")
}
