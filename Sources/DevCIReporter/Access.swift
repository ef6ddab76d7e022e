import Crypto
import DevCIWire
import DevCIPipeline
import Foundation
import HummingbirdBcrypt
import NIOConcurrencyHelpers

/// Whether the reporter shows anything to people who have not signed in.
public enum AuthMode: String, Sendable, CaseIterable {
    /// Everything but the runs of tasks with `authorized_users` is public; signing in shows those too.
    case publicRead = "public-read"
    /// Nothing without signing in.
    case required
}

/// Who is looking: nobody (not signed in), or a user from the configuration.
public struct Viewer: Sendable, Equatable {
    public var name: String?
    public var isAdministrator: Bool

    public static let anonymous = Viewer(name: nil, isAdministrator: false)
}

/// Who may see and do what, from the server configuration: `users` (bcrypt hashes), `administrators` (see
/// everything, may act on everything), and each task's `authorized_users` (only they, and administrators, see its
/// runs, and may act on them). Pure: no I/O.
public struct AccessPolicy: Sendable {
    public var mode: AuthMode
    public var users: [String: String]
    public var administrators: Set<String>
    /// Tasks with authorized users, and who they are.
    public var restricted: [String: Set<String>]

    public init(mode: AuthMode, config: ServerConfig) {
        self.mode = mode
        users = config.users
        administrators = Set(config.administrators)
        restricted = config.tasks.values.filter { !$0.authorizedUsers.isEmpty }.reduce(into: [:]) { $0[$1.name] = Set($1.authorizedUsers) }
    }

    /// The highest bcrypt cost a user's hash may have: a check at 13 takes about half a second here, well inside the
    /// second every refusal takes, so a slow hash cannot tell a known user from an unknown one.
    public static let highestCost = 13

    public func viewer(named name: String?) -> Viewer {
        guard let name, users[name] != nil else { return .anonymous }
        return Viewer(name: name, isAdministrator: administrators.contains(name))
    }

    /// Whether the viewer may see a build of this task (nil: a commit's build or an ad-hoc job).
    public func canSee(task: String?, _ viewer: Viewer) -> Bool {
        if mode == .required && viewer.name == nil { return false }
        guard let task, let allowed = restricted[task] else { return true }
        return viewer.isAdministrator || viewer.name.map(allowed.contains) == true
    }

    /// Whether the viewer may re-run or cancel a build of this task: administrators, and a task's authorized users.
    public func canAct(task: String?, _ viewer: Viewer) -> Bool {
        guard let name = viewer.name else { return false }
        if viewer.isAdministrator { return true }
        guard let task, let allowed = restricted[task] else { return false }
        return allowed.contains(name)
    }

    /// The tasks whose runs the viewer may not see, for list queries.
    public func hiddenTasks(_ viewer: Viewer) -> [String] {
        restricted.keys.filter { !canSee(task: $0, viewer) }.sorted()
    }

    /// A stand-in hash checked for an unknown user, so that a wrong name costs as long as a wrong password.
    static let unknownUserHash = Bcrypt.hash("devci-no-such-user", cost: 12)

    /// The user, if the password is theirs. Always runs one bcrypt check, known user or not.
    public func authenticate(name: String, password: String) -> String? {
        let hash = users[name] ?? Self.unknownUserHash
        let ok = Bcrypt.verify(password, hash: hash)
        return ok && users[name] != nil ? name : nil
    }
}

/// Signed session cookies and CSRF tokens, stateless: HMAC-SHA256 under a key only the reporter holds, so the
/// reporter stays read-only on the database. A session names its user and when it ends; a CSRF token is bound to
/// the session (or, on the sign-in form, to a time), so a form from another site or an old session fails.
public struct SessionKeys: Sendable {
    /// The key's bytes (a `SymmetricKey` is made per use: it is not `Sendable`).
    let keyBytes: [UInt8]
    public static let cookie = "devci_session"
    public static let lifetime: TimeInterval = 12 * 3600

    public init(key: [UInt8]) {
        keyBytes = key
    }

    public static func random() -> SessionKeys { SessionKeys(key: (0..<32).map { _ in UInt8.random(in: 0...255) }) }

    func mac(_ text: String) -> String {
        HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: keyBytes)).map { String(format: "%02x", $0) }.joined()
    }

    /// `<user>.<nonce>.<expiry>.<mac>`: user names are letters, digits, '.', '_' and '-', so the last three dots
    /// split it; the nonce makes each sign-in its own session (one signed out ends that one only). The MAC also
    /// covers the user's password hash (`bound`), so a changed password ends every session of theirs.
    public func session(for user: String, bound: String, now: Date = Date()) -> String {
        let nonce = (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let payload = "\(user).\(nonce).\(Int(now.timeIntervalSince1970 + Self.lifetime))"
        return payload + "." + mac("session:" + payload + ":" + bound)
    }

    /// The user a session cookie names, when its signature (over the user's hash now) holds and it has not expired.
    public func user(fromSession value: String, bound: (String) -> String?, now: Date = Date()) -> String? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 4, let expiry = Double(parts[parts.count - 2]), expiry > now.timeIntervalSince1970 else { return nil }
        let payload = parts.dropLast().joined(separator: ".")
        let user = parts.dropLast(3).joined(separator: ".")
        guard let hash = bound(user), constantTimeEquals(String(parts.last!), mac("session:" + payload + ":" + hash)) else { return nil }
        return user
    }

    /// The CSRF token of forms shown within this session.
    public func csrf(session: String) -> String { mac("csrf:" + session) }

    /// The CSRF token of the sign-in form, good for an hour.
    public func signInToken(now: Date = Date()) -> String {
        let stamp = String(Int(now.timeIntervalSince1970))
        return stamp + "." + mac("signin:" + stamp)
    }

    public func isSignInToken(_ token: String, now: Date = Date()) -> Bool {
        let parts = token.split(separator: ".")
        guard parts.count == 2, let stamp = Double(parts[0]), now.timeIntervalSince1970 - stamp < 3600, stamp <= now.timeIntervalSince1970 + 60 else { return false }
        return constantTimeEquals(String(parts[1]), mac("signin:" + parts[0]))
    }
}

/// The access policy as the configuration folder says it now: the folder is looked at again (file names, sizes and
/// times) at most every two seconds and re-read when it changed, so a user removed, a password changed or a task's
/// `authorized_users` narrowed takes effect within seconds, without a restart. A folder that fails to parse leaves
/// the last good policy in place (and says so once).
public final class AccessSource: Sendable {
    struct State {
        var policy: AccessPolicy
        var fingerprint: [String]
        var checked: ContinuousClock.Instant
        var failing: String?
    }

    let directory: String?
    let mode: AuthMode
    let onChange: @Sendable (String) -> Void
    private let state: NIOLockedValueBox<State>
    static let interval: Duration = .seconds(2)

    /// A fixed policy (no folder to follow).
    public init(fixed policy: AccessPolicy) {
        directory = nil
        mode = policy.mode
        onChange = { _ in }
        state = NIOLockedValueBox(State(policy: policy, fingerprint: [], checked: .now))
    }

    /// The policy of `directory`, followed. Throws the folder's errors when it is invalid now.
    public init(directory: String, mode: AuthMode, onChange: @escaping @Sendable (String) -> Void) throws(PipelineErrors) {
        self.directory = directory
        self.mode = mode
        self.onChange = onChange
        let config = try ServerConfigParser.load(directory: directory, resolveSecrets: false)
        state = NIOLockedValueBox(State(policy: AccessPolicy(mode: mode, config: config), fingerprint: Self.fingerprint(directory), checked: .now))
    }

    public var current: AccessPolicy {
        guard let directory else { return state.withLockedValue { $0.policy } }
        let due = state.withLockedValue { s -> [String]? in
            guard ContinuousClock.now - s.checked >= Self.interval else { return nil }
            s.checked = .now
            let now = Self.fingerprint(directory)
            return now == s.fingerprint ? nil : now
        }
        if let fingerprint = due {
            let said: String?
            do {
                let config = try ServerConfigParser.load(directory: directory, resolveSecrets: false)
                said = state.withLockedValue { s in
                    s.policy = AccessPolicy(mode: mode, config: config)
                    s.fingerprint = fingerprint
                    s.failing = nil
                    return "re-read \(directory): \(config.users.count) user(s), \(config.administrators.count) administrator(s)"
                }
            } catch {
                let why = error.errors.map(\.description).joined(separator: "; ")
                said = state.withLockedValue { s in
                    s.fingerprint = fingerprint
                    defer { s.failing = why }
                    return s.failing == why ? nil : "\(directory) is invalid, keeping who may see what as it was: \(why)"
                }
            }
            if let said { onChange(said) }
        }
        return state.withLockedValue { $0.policy }
    }

    static func fingerprint(_ directory: String) -> [String] {
        ServerConfigParser.configFiles(in: directory).map { relative in
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + relative)
            let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(relative) \(size) \(modified)"
        }
    }
}

/// At most as many bcrypt checks at once as there are cores: more sign-ins wait their turn by being told to try
/// again, so a flood of sign-ins cannot queue work without end.
public final class SignInLimiter: Sendable {
    private let running = NIOLockedValueBox(0)
    let limit = max(1, ProcessInfo.processInfo.activeProcessorCount)

    public init() {}

    func enter() -> Bool { running.withLockedValue { n in n < limit ? { n += 1; return true }() : false } }
    func leave() { running.withLockedValue { $0 -= 1 } }
}
