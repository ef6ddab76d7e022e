import DevCIWire
import XCTest

@testable import DevCIDispatcher

final class GitHubWebhookTests: XCTestCase {
    /// The test vector of GitHub's "Validating webhook deliveries".
    func testGitHubsOwnTestVector() {
        let body = Array("Hello, World!".utf8), secret = "It's a Secret to Everybody"
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        XCTAssertEqual(GitHubWebhook.signature(body: body, secret: secret), expected)
        XCTAssertTrue(GitHubWebhook.isSigned(expected, body: body, secret: secret))
        XCTAssertTrue(GitHubWebhook.isSigned(expected.uppercased().replacingOccurrences(of: "SHA256=", with: "sha256="), body: body, secret: secret))
        XCTAssertFalse(GitHubWebhook.isSigned(expected, body: Array("Hello, World?".utf8), secret: secret))
        XCTAssertFalse(GitHubWebhook.isSigned(expected, body: body, secret: "another"))
        for bad in [nil, "", "sha256=", "sha1=757107ea", "sha256=zz", String(expected.dropLast()), expected + "00"] {
            XCTAssertFalse(GitHubWebhook.isSigned(bad, body: body, secret: secret), bad ?? "nil")
        }
    }

    func payload(_ ref: String = "refs/heads/main", commits: [String], head: String? = nil, deleted: Bool = false) -> [UInt8] {
        let list = commits.map { "{\"id\":\"\($0)\",\"message\":\"title \($0.prefix(3))\\nbody\"}" }.joined(separator: ",")
        let headJSON = head.map { "{\"id\":\"\($0)\",\"message\":\"head\"}" } ?? "null"
        return Array("""
            {"ref":"\(ref)","deleted":\(deleted),"commits":[\(list)],"head_commit":\(headJSON),
             "repository":{"clone_url":"https://github.com/o/r.git","ssh_url":"git@github.com:o/r.git"}}
            """.utf8)
    }

    func testPushDecisions() {
        let a = String(repeating: "a", count: 40), b = String(repeating: "b", count: 40), c = String(repeating: "c", count: 40)
        XCTAssertEqual(GitHubWebhook.decidePush(payload(commits: [a, b], head: b)),
                       .build(repositories: ["https://github.com/o/r.git", "git@github.com:o/r.git"], branch: "main",
                              commits: [.init(id: a, title: "title aaa"), .init(id: b, title: "title bbb")]))
        // A cut list: the head is built too.
        guard case .build(_, _, let cut) = GitHubWebhook.decidePush(payload(commits: [a], head: c)) else { return XCTFail() }
        XCTAssertEqual(cut.map(\.id), [a, c])
        guard case .ignore = GitHubWebhook.decidePush(payload("refs/tags/v1", commits: [a], head: a)) else { return XCTFail() }
        guard case .ignore = GitHubWebhook.decidePush(payload(commits: [], head: nil, deleted: true)) else { return XCTFail() }
        guard case .invalid = GitHubWebhook.decidePush(payload("refs/heads/a b", commits: [a])) else { return XCTFail() }
        guard case .invalid = GitHubWebhook.decidePush(payload(commits: ["--upload-pack=x"])) else { return XCTFail() }
        guard case .invalid = GitHubWebhook.decidePush(Array("{\"ref\":".utf8)) else { return XCTFail() }
        guard case .invalid(let why) = GitHubWebhook.decidePush(payload(commits: Array(repeating: a, count: 10_000))) else { return XCTFail() }
        XCTAssertTrue(why.contains("at most 2048"), why)
        XCTAssertTrue(GitHubWebhook.isDeliveryID("72d3162e-cc78-11e3-81ab-4c9367dc0958"))
        XCTAssertFalse(GitHubWebhook.isDeliveryID("a b"))
        XCTAssertFalse(GitHubWebhook.isDeliveryID(String(repeating: "a", count: 101)))
    }
}
