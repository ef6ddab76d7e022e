import CLibGit2
import DevCIWire
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
        // The one commit-id rule is `Validate.isCommitID`; this libgit2 reads SHA-1 ids only, so a SHA-256 id is
        // not found (rather than cut to its first 40 digits).
        guard Validate.isCommitID(sha), sha.utf8.count == 40 else { return nil }
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

    /// Whether `commit` comes after `ancestor` in history (false for the same commit, or when either is unknown).
    public func isDescendant(_ commit: String, of ancestor: String) -> Bool {
        guard hasCommit(commit), hasCommit(ancestor), var a = oid(commit), var b = oid(ancestor) else { return false }
        return git_graph_descendant_of(handle, &a, &b) == 1
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
    /// `removeIgnored`: ignored files go too (after a job that had secrets: nothing it left behind reaches the next).
    public func checkout(_ sha: String, removeIgnored: Bool = false) throws {
        guard var id = oid(sha) else { throw GitError(operation: "checkout", message: "not a full commit id") }
        var commit: OpaquePointer?
        try check("find commit \(sha)", git_commit_lookup(&commit, handle, &id))
        defer { git_commit_free(commit) }
        var options = git_checkout_options()
        try check("checkout options", git_checkout_options_init(&options, UInt32(GIT_CHECKOUT_OPTIONS_VERSION)))
        options.checkout_strategy = GIT_CHECKOUT_FORCE.rawValue | GIT_CHECKOUT_REMOVE_UNTRACKED.rawValue
            | (removeIgnored ? GIT_CHECKOUT_REMOVE_IGNORED.rawValue : 0)
        try check("checkout \(sha)", git_checkout_tree(handle, commit, &options))
        try check("detach HEAD at \(sha)", git_repository_set_head_detached(handle, &id))
    }

    /// Clones `source` (a path or URL) into `destination`, which must not exist yet or be empty.
    @discardableResult
    public static func clone(from source: String, to destination: String) throws -> GitRepository {
        _ = libgit2Ready
        var repo: OpaquePointer?
        try check("clone \(source) into \(destination)", git_clone(&repo, source, destination, nil))
        git_repository_free(repo)
        return try GitRepository(path: destination)
    }

    /// The URL of the `origin` remote, a relative local path made absolute against the work tree.
    public func originURL() throws -> String {
        var remote: OpaquePointer?
        try check("find remote origin in \(path)", git_remote_lookup(&remote, handle, "origin"))
        defer { git_remote_free(remote) }
        let url = String(cString: git_remote_url(remote))
        if url.hasPrefix(".") {
            return URL(fileURLWithPath: url, relativeTo: URL(fileURLWithPath: path, isDirectory: true)).standardizedFileURL.path
        }
        return url
    }

    /// The branch HEAD is on (`main`), or nil when HEAD is detached.
    public func headBranch() throws -> String? {
        var ref: OpaquePointer?
        try check("read HEAD of \(path)", git_reference_lookup(&ref, handle, "HEAD"))
        defer { git_reference_free(ref) }
        guard git_reference_type(ref) == GIT_REFERENCE_SYMBOLIC, let target = git_reference_symbolic_target(ref) else { return nil }
        let name = String(cString: target)
        return name.hasPrefix("refs/heads/") ? String(name.dropFirst("refs/heads/".count)) : nil
    }

    /// Fetches `origin` with its configured refspecs (updating `refs/remotes/origin/*`).
    public func fetchOrigin() throws {
        var remote: OpaquePointer?
        try check("find remote origin in \(path)", git_remote_lookup(&remote, handle, "origin"))
        defer { git_remote_free(remote) }
        var options = git_fetch_options()
        try check("fetch options", git_fetch_options_init(&options, UInt32(GIT_FETCH_OPTIONS_VERSION)))
        try check("fetch origin of \(path)", git_remote_fetch(remote, nil, &options, nil))
    }

    /// The commits reachable from `tip` but not from `since`, parents before children (oldest first).
    /// Throws when `since` is not a commit of this repository (history was rewritten, or never seen).
    public func commits(since: String?, upTo tip: String) throws -> [String] {
        guard var tipID = oid(tip) else { throw GitError(operation: "walk", message: "not a full commit id: \(tip)") }
        var walk: OpaquePointer?
        try check("walk history", git_revwalk_new(&walk, handle))
        defer { git_revwalk_free(walk) }
        try check("walk history", git_revwalk_sorting(walk, GIT_SORT_TOPOLOGICAL.rawValue | GIT_SORT_REVERSE.rawValue))
        try check("walk from \(tip)", git_revwalk_push(walk, &tipID))
        if let since {
            guard var sinceID = oid(since), hasCommit(since) else {
                throw GitError(operation: "walk", message: "\(since) is not a commit of \(path)")
            }
            try check("walk since \(since)", git_revwalk_hide(walk, &sinceID))
        }
        var out: [String] = []
        var id = git_oid()
        while true {
            let code = git_revwalk_next(&id, walk)
            if code == GIT_ITEROVER.rawValue { break }
            try check("walk history", code)
            out.append(Self.hex(id))
        }
        return out
    }

    /// The text of the file at `path` in `commit`, nil when the commit has no such file.
    /// Throws when the commit is unknown or the file is not UTF-8 text or larger than `limit` bytes.
    public func file(_ path: String, at commit: String, limit: Int = 1 << 20) throws -> String? {
        guard var id = oid(commit) else { throw GitError(operation: "read \(path)", message: "not a full commit id: \(commit)") }
        var c: OpaquePointer?
        try check("find commit \(commit)", git_commit_lookup(&c, handle, &id))
        defer { git_commit_free(c) }
        var tree: OpaquePointer?
        try check("read the tree of \(commit)", git_commit_tree(&tree, c))
        defer { git_tree_free(tree) }
        var entry: OpaquePointer?
        let code = git_tree_entry_bypath(&entry, tree, path)
        if code == GIT_ENOTFOUND.rawValue { return nil }
        try check("find \(path) in \(commit)", code)
        defer { git_tree_entry_free(entry) }
        var blob: OpaquePointer?
        try check("read \(path) in \(commit)", git_blob_lookup(&blob, handle, git_tree_entry_id(entry)))
        defer { git_blob_free(blob) }
        let size = Int(git_blob_rawsize(blob))
        guard size <= limit else { throw GitError(operation: "read \(path)", message: "\(size) bytes is over the limit of \(limit)") }
        let bytes = UnsafeRawBufferPointer(start: git_blob_rawcontent(blob), count: size)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw GitError(operation: "read \(path)", message: "not UTF-8 text")
        }
        return text
    }

    /// A commit's first line and its author's name, for people to read.
    public func summary(of commit: String) throws -> (title: String, author: String) {
        guard var id = oid(commit) else { throw GitError(operation: "read commit", message: "not a full commit id: \(commit)") }
        var c: OpaquePointer?
        try check("find commit \(commit)", git_commit_lookup(&c, handle, &id))
        defer { git_commit_free(c) }
        let title = git_commit_summary(c).map { String(cString: $0) } ?? ""
        let author = git_commit_author(c).flatMap { $0.pointee.name }.map { String(cString: $0) } ?? ""
        return (title, author)
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
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
