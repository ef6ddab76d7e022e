import DevCIPipeline
@testable import DevCIStore
import DevCIWire
import Foundation
import XCTest

@testable import DevCINotify

final class NotificationComposerTests: XCTestCase {
    func facts(_ status: BuildStatus, previous: BuildStatus?, title: String = "a change", task: String? = nil) -> NotificationFacts {
        var b = BuildSummary(id: 7, repo: "https://git.example.com/shop.git", branch: "main", commit: String(repeating: "a", count: 40), status: status,
                             runner: nil, createdAt: Date(), startedAt: nil, finishedAt: Date(), attempts: 1, reason: nil, allowedFailures: 0)
        b.title = title
        b.author = "Ann <ann@example.com>"
        b.task = task
        return NotificationFacts(build: b, previous: previous,
                                 failing: status == .failed ? [FailingJob(name: "unit", status: .failed, tail: ["ok 1", "token=hunter22 leaked", "FAIL 2"])] : [])
    }

    func config(_ rules: [NotificationRule]) -> ServerConfig {
        var c = ServerConfig()
        c.notifications = rules
        c.smtp = SMTPSettings(host: "127.0.0.1", from: "ci@example.com")
        c.secrets = [SecretDefinition(name: "TOKEN", value: "hunter22", tasks: ["deploy"])]
        c.reporterURL = "https://ci.example.com"
        return c
    }

    func testFailureFixedAndAlwaysAreDecidedFromThePreviousBuild() {
        XCTAssertEqual(NotificationComposer.event(status: .failed, previous: .success), .failure)
        XCTAssertEqual(NotificationComposer.event(status: .timedOut, previous: nil), .failure)
        XCTAssertEqual(NotificationComposer.event(status: .success, previous: .failed), .fixed)
        XCTAssertEqual(NotificationComposer.event(status: .passedWithAllowedFailures, previous: .error), .fixed)
        XCTAssertNil(NotificationComposer.event(status: .success, previous: .success))
        XCTAssertNil(NotificationComposer.event(status: .success, previous: nil))
        XCTAssertNil(NotificationComposer.event(status: .cancelled, previous: .failed))

        var mail = NotificationRule()
        mail.email = ["dev@example.com"]
        var always = NotificationRule()
        always.when = [.always]
        always.webhook = "https://hooks.example.com/x"
        always.format = .slack
        always.tasks = ["deploy"]
        let c = config([mail, always])
        XCTAssertEqual(NotificationComposer.messages(for: facts(.success, previous: .success), config: c, now: Date()).count, 0)
        XCTAssertEqual(NotificationComposer.messages(for: facts(.failed, previous: .success), config: c, now: Date()).map(\.channel), ["email"])
        XCTAssertEqual(NotificationComposer.messages(for: facts(.success, previous: .success, task: "deploy"), config: c, now: Date()).map(\.channel), ["webhook"])
    }

    func testAMailHasOneSubjectLineSecretsMaskedAndNoInjectedHeaders() throws {
        var rule = NotificationRule()
        rule.email = ["dev@example.com"]
        let f = facts(.failed, previous: .success, title: "evil\r\nBcc: everyone@example.com")
        let m = try XCTUnwrap(NotificationComposer.messages(for: f, config: config([rule]), now: Date()).first)
        let headers = m.body.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
        XCTAssertFalse(headers.contains { $0.hasPrefix("Bcc:") }, "\(headers)")
        XCTAssertTrue(headers.contains("Subject: [DevCI] build 7 failed: https://git.example.com/shop.git main aaaaaaaaaa"), "\(headers)")
        XCTAssertTrue(m.body.contains("Title:      evil??Bcc: everyone@example.com"), m.body)
        XCTAssertTrue(m.body.contains("    | token=**** leaked"), m.body)
        XCTAssertFalse(m.body.contains("hunter22"))
        XCTAssertTrue(m.body.contains("https://ci.example.com/builds/7"))
        XCTAssertEqual(SMTPClient.dotStuffed("a\r\n.hidden\n..two"), "a\r\n..hidden\r\n...two")
    }

    func testRetriesBackOffAndEnd() {
        XCTAssertEqual(Notifier.retryDelay(afterAttempts: 1), .seconds(2))
        XCTAssertEqual(Notifier.retryDelay(afterAttempts: 3), .seconds(8))
        XCTAssertEqual(Notifier.retryDelay(afterAttempts: 11), .seconds(600))
        XCTAssertNil(Notifier.retryDelay(afterAttempts: 12))
    }

    /// Issue 14: failed tests, a failure of known-flaky tests only, and the commit a bisection found.
    func testFailedTestsFlakyOnlyFailuresAndTheCulprit() throws {
        var rule = NotificationRule()
        rule.webhook = "https://hooks.example.com/x"
        rule.email = ["dev@example.com"]
        var f = facts(.failed, previous: .success)
        f.failedTests = [BuildTest(job: "unit", suite: "tests.T", name: "test_net", status: .failed, duration: 0.1,
                                   message: "timeout token=hunter22\nmore", attempt: 1, flippedHere: false, knownFlaky: true)]
        var messages = NotificationComposer.messages(for: f, config: config([rule]), now: Date())
        let mail = try XCTUnwrap(messages.first { $0.channel == "email" })
        XCTAssertTrue(mail.subject.hasSuffix("(only known-flaky tests failed)"), mail.subject)
        XCTAssertTrue(mail.body.contains("Every test that failed is known to be flaky"), mail.body)
        XCTAssertTrue(mail.body.contains("tests.T::test_net (failed, known flaky)"), mail.body)
        XCTAssertTrue(mail.body.contains("timeout token=****") && !mail.body.contains("hunter22"), "a secret in a message is masked: \(mail.body)")
        let hook = try XCTUnwrap(messages.first { $0.channel == "webhook" })
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(hook.body.utf8)) as? [String: Any])
        XCTAssertEqual(json["only_flaky_failures"] as? Bool, true)

        f.failedTests[0].knownFlaky = false
        var b = BisectionRecord(repo: "r", branch: "main", badBuild: 7, goodBuild: 6, candidates: ["1a2b3c4d5e", "ffff"], state: .found, culprit: "1a2b3c4d5e6f",
                                culpritTitle: "simplify add", culpritAuthor: "Ada", reason: "found by bisecting 2 commit(s)", buildsRun: 2)
        b.id = 1
        f.culprit = b
        messages = NotificationComposer.messages(for: f, config: config([rule]), now: Date())
        let second = try XCTUnwrap(messages.first { $0.channel == "email" })
        XCTAssertTrue(second.subject.hasSuffix("broken by 1a2b3c4d5e"), second.subject)
        XCTAssertTrue(second.body.contains("Broken by 1a2b3c4d5e, Ada: simplify add"), second.body)
        let culprit = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(messages.first { $0.channel == "webhook" }!.body.utf8)) as? [String: Any])?["culprit"] as? [String: Any])
        XCTAssertEqual(culprit["commit"] as? String, "1a2b3c4d5e6f")
        XCTAssertEqual(culprit["builds"] as? Int, 2)
    }
}
