import DevCIPipeline
import DevCIWire
import XCTest

/// `secrets:`, `notifications:`, `smtp:` and `reporter_url:` of the server configuration.
final class OperateConfigTests: XCTestCase {
    func errors(_ text: String) -> [String] {
        do {
            _ = try ServerConfigParser.parse([("ops.yml", text)])
            return []
        } catch {
            return error.errors.map { "\($0.line) \($0.field): \($0.message)" }
        }
    }

    func testSecretsNotificationsAndTheMailServerAreRead() throws {
        let config = try ServerConfigParser.parse([("ops.yml", """
            reporter_url: https://ci.example.com/
            smtp: {host: mail.example.com, port: 587, from: ci@example.com}
            secrets:
              DEPLOY_KEY: {value: "abcd-1234", repositories: ["https://git.example.com/app.git"], tasks: [deploy]}
            notifications:
              - {when: failure, email: [dev@example.com]}
              - {when: [fixed, always], tasks: [deploy], webhook: "https://hooks.example.com/x", format: slack}
            tasks:
              deploy: {command: "true"}
            """)])
        XCTAssertEqual(config.reporterURL, "https://ci.example.com")
        XCTAssertEqual(config.smtp, SMTPSettings(host: "mail.example.com", port: 587, starttls: true, from: "ci@example.com"))
        XCTAssertEqual(config.secrets(repository: "https://git.example.com/app", task: nil), ["DEPLOY_KEY": "abcd-1234"])
        XCTAssertEqual(config.secrets(repository: "", task: "deploy"), ["DEPLOY_KEY": "abcd-1234"])
        XCTAssertEqual(config.secrets(repository: "https://git.example.com/other", task: "build"), [:])
        XCTAssertEqual(config.notifications.map(\.when), [[.failure], [.fixed, .always]])
        XCTAssertEqual(config.notifications[1].format, .slack)
        XCTAssertFalse("\(config.secrets)".contains("abcd-1234"), "a description never shows the value")
    }

    func testBadSecretsAndRulesAreNamedWithTheirLine() {
        let said = errors("""
            secrets:
              DEVCI_TOKEN: {value: "abcdefgh", tasks: [t]}
              SHORT: {value: "ab", tasks: [t]}
              BOTH: {value: "abcdefgh", env: HOME, tasks: [t]}
              NOBODY: {value: "abcdefgh"}
              GHOST: {value: "abcdefgh", tasks: [missing]}
            notifications:
              - {when: sometimes, email: ["a@b"]}
              - {email: ["x\\r\\nBcc: evil@example.com"]}
              - {webhook: "ftp://x"}
              - {when: failure}
            tasks:
              t: {command: "true"}
            """)
        for expected in ["2 secrets: 'DEVCI_TOKEN' is not a valid variable name", "3 secrets.SHORT: has a line shorter than 4 characters",
                         "4 secrets.BOTH: give exactly one of", "5 secrets.NOBODY: reaches no job", "6 secrets.GHOST.tasks: names task 'missing'",
                         "8 notifications[0].when: 'sometimes' is not one of", "9 notifications[1].email: ", "10 notifications[2].webhook: must be",
                         "11 notifications[3]: notifies nobody", "sends email, but there is no 'smtp:'"] {
            XCTAssertTrue(said.contains { $0.contains(expected) }, "\(expected) in \(said)")
        }
    }

    func testAMaskHidesEveryLineOfASecretLongestFirst() {
        let mask = SecretMask(["tok-1234", "tok-1234-longer", "-----BEGIN-----\n  middle-line\r\n-----END-----\n", "}"])
        XCTAssertEqual(mask.mask("a tok-1234-longer b tok-1234 c"), "a **** b **** c")
        XCTAssertEqual(mask.mask("  middle-line"), "****")
        XCTAssertEqual(mask.mask("key: middle-line"), "key: ****", "trimmed too")
        XCTAssertEqual(mask.mask("-----END-----"), "****")
        XCTAssertEqual(mask.mask("{ }"), "{ }", "a line shorter than 4 characters is not masked")
        XCTAssertEqual(SecretMask.none.mask("tok-1234"), "tok-1234")
    }
}
