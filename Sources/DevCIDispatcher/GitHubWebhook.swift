import Crypto
import DevCIWire
import Foundation

/// GitHub's webhook deliveries: the signature check and the push payload, as GitHub documents them
/// (docs.github.com, "Validating webhook deliveries" and the `push` event). Pure: bytes in, a decision out.
public enum GitHubWebhook {
    /// GitHub's own limit on `commits[]`; a payload that lists more is refused.
    public static let maxCommits = 2048

    /// Whether `header` (`X-Hub-Signature-256: sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
    /// The comparison takes the same time wherever the codes differ.
    public static func isSigned(_ header: String?, body: some Collection<UInt8>, secret: String) -> Bool {
        guard let header, header.hasPrefix("sha256="), let mac = hexBytes(header.dropFirst(7)), mac.count == 32 else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Array(body), using: SymmetricKey(data: Array(secret.utf8)))
    }

    /// `sha256=<hex>` for a body: what GitHub sends (for tests and tools).
    public static func signature(body: some Collection<UInt8>, secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(body), using: SymmetricKey(data: Array(secret.utf8)))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    private static func hexBytes(_ s: Substring) -> [UInt8]? {
        guard s.utf8.count % 2 == 0, s.utf8.count <= 128 else { return nil }
        var out: [UInt8] = []
        var high: UInt8?
        for c in s.utf8 {
            let v: UInt8
            switch c {
            case 48...57: v = c - 48
            case 97...102: v = c - 87
            case 65...70: v = c - 55
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return out
    }

    /// A delivery id as GitHub sends it (a GUID); anything else is refused before it is stored.
    public static func isDeliveryID(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 100 && s.utf8.allSatisfy { (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) || $0 == 45 }
    }

    /// What a push asks for.
    public enum PushDecision: Equatable {
        /// Build these commits (oldest first) of this branch of the repository known by these addresses.
        case build(repositories: [String], branch: String, commits: [PushedCommit])
        /// Nothing to build (a deleted branch, a tag): answered 202.
        case ignore(String)
        /// The payload is not a valid push: answered 400.
        case invalid(String)
    }

    private struct Payload: Decodable {
        struct Commit: Decodable {
            var id: String
            var message: String?
        }
        struct Repository: Decodable {
            var clone_url: String?
            var ssh_url: String?
            var git_url: String?
            var html_url: String?
        }
        var ref: String
        var deleted: Bool?
        var commits: [Commit]?
        var head_commit: Commit?
        var repository: Repository
    }

    public static func decidePush(_ body: some Collection<UInt8>) -> PushDecision {
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: Data(body))
        } catch {
            return .invalid("the body is not a push event's JSON: \(String(describing: error).prefix(200))")
        }
        guard payload.ref.hasPrefix("refs/heads/") else { return .ignore("\(payload.ref.prefix(100)) is not a branch: nothing to build") }
        let branch = String(payload.ref.dropFirst("refs/heads/".count))
        guard Validate.isBranchName(branch) else { return .invalid("the branch name in 'ref' is not valid") }
        if payload.deleted == true { return .ignore("branch \(branch) was deleted: nothing to build") }
        let r = payload.repository
        let repositories = [r.clone_url, r.ssh_url, r.git_url, r.html_url].compactMap { $0 }.filter { !$0.isEmpty }
        guard !repositories.isEmpty else { return .invalid("the repository has no address (clone_url, ssh_url)") }
        guard repositories.allSatisfy(Validate.isRepository) else { return .invalid("a repository address is not valid") }
        let listed = payload.commits ?? []
        guard listed.count <= maxCommits else {
            return .invalid("the push lists \(listed.count) commits; at most \(maxCommits) are accepted")
        }
        var commits = listed
        // The list is cut (GitHub sends at most 2048) or empty (a force-push to an existing commit): build the head.
        if let head = payload.head_commit, !commits.contains(where: { $0.id == head.id }) { commits.append(head) }
        guard commits.allSatisfy({ Validate.isCommitID($0.id) }) else { return .invalid("a commit id is not a full hex object id") }
        guard !commits.isEmpty else { return .ignore("the push names no commit: nothing to build") }
        var seen: Set<String> = []
        let unique = commits.filter { seen.insert($0.id).inserted }
        return .build(repositories: repositories, branch: branch, commits: unique.map {
            PushedCommit(id: $0.id, title: String(($0.message ?? "").split(separator: "\n", maxSplits: 1).first ?? "").prefix(200).description)
        })
    }
}
