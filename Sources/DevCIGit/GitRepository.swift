import CLibGit2
import Foundation

/// A libgit2 failure, with libgit2's own message.
public struct GitError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var message: String
    public var description: String { "\(operation): \(message)" }

    static func last(_ operation: String, _ code: Int32) -> GitError {
        let detail = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? "libgit2 error \(code)"
        return GitError(operation: operation, message: detail)
    }
}

private let libgit2Ready: Void = { git_libgit2_init(); return () }()

@inline(__always)
private func check(_ operation: @autoclosure () -> String, _ code: Int32) throws {
    if code < 0 { throw GitError.last(operation(), code) }
}

/// A git repository opened through libgit2. Not thread-safe: use one instance from one thread at a time.
public final class GitRepository {
    private let handle: OpaquePointer
    public let path: String

    public init(path: String) throws {
        _ = libgit2Ready
        var repo: OpaquePointer?
        try check("open \(path)", git_repository_open(&repo, path))
        handle = repo!
        self.path = path
    }

    deinit { git_repository_free(handle) }

    /// Parses a full hex object id; nil unless `sha` is exactly that.
    private func oid(_ sha: String) -> git_oid? {
        guard sha.utf8.count == 40, sha.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else { return nil }
        var id = git_oid()
        return git_oid_fromstr(&id, sha) == 0 ? id : nil
    }

    /// Whether the object database holds this commit.
    public func hasCommit(_ sha: String) -> Bool {
        guard var id = oid(sha) else { return false }
        var commit: OpaquePointer?
        guard git_commit_lookup(&commit, handle, &id) == 0 else { return false }
        git_commit_free(commit)
        return true
    }

    /// Fetches every branch of `remote` (a URL or a path; never an option) into `refs/remotes/<name>/*`.
    public func fetch(from remote: String, as name: String = "origin") throws {
        var r: OpaquePointer?
        if git_remote_lookup(&r, handle, name) != 0 || remote != String(cString: git_remote_url(r)) {
            if r != nil { git_remote_free(r) }
            r = nil
            try check("open remote \(remote)", git_remote_create_anonymous(&r, handle, remote))
        }
        defer { git_remote_free(r) }
        var options = git_fetch_options()
        try check("fetch options", git_fetch_options_init(&options, UInt32(GIT_FETCH_OPTIONS_VERSION)))
        let spec = strdup("+refs/heads/*:refs/remotes/\(name)/*")
        defer { free(spec) }
        var specs: [UnsafeMutablePointer<CChar>?] = [spec]
        try specs.withUnsafeMutableBufferPointer { buf in
            var array = git_strarray(strings: buf.baseAddress, count: 1)
            try check("fetch \(remote)", git_remote_fetch(r, &array, &options, nil))
        }
    }

    /// Points HEAD at `sha` (detached) and makes the work tree match it exactly, removing untracked files.
    public func checkout(_ sha: String) throws {
        guard var id = oid(sha) else { throw GitError(operation: "checkout", message: "not a full commit id") }
        var commit: OpaquePointer?
        try check("find commit \(sha)", git_commit_lookup(&commit, handle, &id))
        defer { git_commit_free(commit) }
        var options = git_checkout_options()
        try check("checkout options", git_checkout_options_init(&options, UInt32(GIT_CHECKOUT_OPTIONS_VERSION)))
        options.checkout_strategy = GIT_CHECKOUT_FORCE.rawValue | GIT_CHECKOUT_REMOVE_UNTRACKED.rawValue
        try check("checkout \(sha)", git_checkout_tree(handle, commit, &options))
        try check("detach HEAD at \(sha)", git_repository_set_head_detached(handle, &id))
    }

    /// The commit HEAD points at.
    public func headCommit() throws -> String {
        var id = git_oid()
        try check("read HEAD", git_reference_name_to_id(&id, handle, "HEAD"))
        return Self.hex(id)
    }

    /// The tip of a local or remote-tracking branch, e.g. `refs/remotes/origin/main`.
    public func tip(of reference: String) throws -> String? {
        var id = git_oid()
        let code = git_reference_name_to_id(&id, handle, reference)
        if code == GIT_ENOTFOUND.rawValue { return nil }
        try check("read \(reference)", code)
        return Self.hex(id)
    }

    static func hex(_ id: git_oid) -> String {
        var id = id
        var buf = [CChar](repeating: 0, count: 41)
        git_oid_tostr(&buf, 41, &id)
        return String(cString: buf)
    }
}
