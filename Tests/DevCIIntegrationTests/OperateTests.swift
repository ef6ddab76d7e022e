import DevCIStore
import DevCIWire
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// Issue 12 with real processes: metrics scraped by promtool and a real Prometheus, notifications to a real SMTP
/// server and a webhook receiver, secrets masked in logs.
final class OperateTests: HTTPTestCase {
    /// `name{labels} value` lines of an exposition, by everything before the value.
    func series(_ exposition: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = value
        }
        return out
    }

    /// `promtool check metrics` on the text: its exit status and what it said.
    func promtoolCheck(_ exposition: String) throws -> (Int32, String) {
        let file = h.dir.appendingPathComponent("metrics-\(UUID().uuidString.prefix(8)).txt")
        try exposition.write(to: file, atomically: true, encoding: .utf8)
        let p = try h.spawnProgram("promtool", "/bin/sh", ["-c", "promtool check metrics < \"$0\"", file.path])
        p.waitUntilExit()
        return (p.terminationStatus, h.log(of: p))
    }

    func testMetricsMatchTheDatabasePassPromtoolAndARealPrometheusScrapesThem() throws {
        let token = "metrics-token-\(UUID().uuidString.prefix(8))"
        let origin = try h.makeOrigin()
        let commits = [try h.commit("exit 0", to: origin, message: "one"), try h.commit("exit 1", to: origin, message: "two"),
                       try h.commit("exit 0", to: origin, message: "three")]
        let (_, address, base) = try startDispatcher(config: nil, extra: ["--token", token])
        let runner = try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a", extra: ["--token", token, "--metrics-port", "0"])
        var runnerMetrics: String?
        try h.waitUntil("the runner serves its metrics") {
            guard let line = h.log(of: runner).split(separator: "\n").first(where: { $0.contains("metrics at http://") }),
                  let r = line.range(of: "metrics at ") else { return false }
            runnerMetrics = String(line[r.upperBound...].split(separator: " ")[0])
            return true
        }
        for commit in commits {
            let client = try WireClient(address: address, token: token)
            guard case .queued(let build, _, _) = try client.request(.dispatch(repo: origin, commit: commit, branch: "main", pipeline: .none)) else {
                throw Failure("dispatch refused")
            }
            client.close()
            _ = try h.waitForFinalBuild(build)
        }

        // Without the token: refused.
        XCTAssertEqual(try get("\(base)/metrics").0, 401)
        let (status, text, type) = try getResponse("\(base)/metrics", headers: ["Authorization": "Bearer \(token)"])
        XCTAssertEqual(status, 200)
        XCTAssertEqual(type, "text/plain; version=0.0.4; charset=utf-8")
        let m = series(text)
        // The counters agree with the database.
        let store = try h.store()
        let builds = try store.recentBuilds(limit: 100)
        var jobStates: [String: Int] = [:]
        for b in builds { for j in try store.jobs(build: b.id) { jobStates[j.status.rawValue, default: 0] += 1 } }
        XCTAssertEqual(jobStates, ["success": 2, "failed": 1])
        for (state, count) in jobStates { XCTAssertEqual(m["devci_jobs_ended_total{status=\"\(state)\"}"], Double(count), state) }
        for (status, count) in Dictionary(grouping: builds, by: \.status.rawValue).mapValues(\.count) {
            XCTAssertEqual(m["devci_builds_ended_total{status=\"\(status)\"}"], Double(count), status)
        }
        XCTAssertEqual(m["devci_job_queue_wait_seconds_count"], 3)
        XCTAssertEqual((m["devci_job_duration_seconds_count{status=\"success\"}"] ?? 0) + (m["devci_job_duration_seconds_count{status=\"failed\"}"] ?? 0), 3)
        XCTAssertEqual(m["devci_runners_connected"], 1)
        XCTAssertEqual(m["devci_jobs_running"], 0)
        XCTAssertEqual(m["devci_jobs_queued{queue=\"default\"}"], 0)
        XCTAssertGreaterThan(m["process_resident_memory_bytes"] ?? 0, 1_000_000)
        XCTAssertGreaterThan(m["process_open_fds"] ?? 0, 3)
        XCTAssertNotNil(m["process_cpu_seconds_total"])
        // Every family has its HELP line, and promtool finds nothing to say.
        let families = Set(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] })
        let helped = Set(text.split(separator: "\n").filter { $0.hasPrefix("# HELP ") }.map { $0.split(separator: " ")[2] })
        XCTAssertEqual(families, helped)
        XCTAssertTrue(families.isSuperset(of: ["devci_leases_expired_total", "devci_reassignments_total", "devci_retries_total", "devci_webhook_deliveries_total", "devci_notification_deliveries_total"]),
                      "\(families.sorted())")
        let (rc, said) = try promtoolCheck(text)
        XCTAssertEqual(rc, 0, said)

        let runnerText = try get(try XCTUnwrap(runnerMetrics)).1
        let r = series(runnerText)
        XCTAssertEqual(r["devci_runner_jobs_total{outcome=\"success\"}"], 2)
        XCTAssertEqual(r["devci_runner_jobs_total{outcome=\"failed\"}"], 1)
        XCTAssertEqual(r["devci_runner_current_jobs"], 0)
        XCTAssertEqual(r["devci_runner_job_duration_seconds_count{outcome=\"success\"}"], 2)
        XCTAssertEqual(try promtoolCheck(runnerText).0, 0)

        // A real Prometheus scrapes both, the dispatcher with the token.
        let tokenFile = h.dir.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let promPort = try h.freeLoopbackPort()
        let config = h.dir.appendingPathComponent("prometheus.yml")
        try """
            global: {scrape_interval: 1s}
            scrape_configs:
              - job_name: dispatcher
                authorization: {type: Bearer, credentials_file: \(tokenFile.path)}
                static_configs: [{targets: ["\(base.dropFirst("http://".count))"]}]
              - job_name: runner
                static_configs: [{targets: ["\(try XCTUnwrap(runnerMetrics).dropFirst("http://".count).dropLast("/metrics".count))"]}]
            """.write(to: config, atomically: true, encoding: .utf8)
        _ = try h.spawnProgram("prometheus", "/usr/bin/env", ["prometheus", "--config.file=\(config.path)", "--storage.tsdb.path=\(h.dir.appendingPathComponent("tsdb").path)",
                                                               "--web.listen-address=127.0.0.1:\(promPort)"])
        func query(_ q: String) throws -> [[String: Any]] {
            let url = "http://127.0.0.1:\(promPort)/api/v1/query?query=\(q.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")"
            guard let (code, body) = try? get(url), code == 200,
                  let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
                  let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]] else { return [] }
            return result
        }
        func value(_ q: String) throws -> Double? {
            guard let first = try query(q).first, let v = first["value"] as? [Any], let s = v.last as? String else { return nil }
            return Double(s)
        }
        try h.waitUntil("Prometheus has scraped both", timeout: 60) {
            try value("sum(up)") == 2 && value("devci_jobs_ended_total{status=\"success\"}") == 2
                && value("devci_runner_jobs_total{outcome=\"failed\"}") == 1
        }
    }

    // MARK: Secrets

    func testASecretReachesOnlyTheJobsAllowedToSeeItAndIsMaskedInTheStoredLogTheLiveStreamAndTheDatabase() throws {
        let token = "s3cr3t-token-value-\(UUID().uuidString.prefix(8))"
        let cert = ["-----BEGIN TEST KEY-----", "bGluZS10d28tb2YtdGhlLWNlcnQ-\(UUID().uuidString.prefix(6))", "-----END TEST KEY-----"]
        let other = "never-seen-\(UUID().uuidString.prefix(8))"
        let allowed = try h.makeOrigin()
        let script = """
            echo "token=$API_TOKEN"
            printf '%s\\n' "$CERT"
            echo "other=[${OTHER_SECRET:-unset}] len=${#API_TOKEN}"
            echo "twice: $API_TOKEN and $API_TOKEN"
            if [ -n "$API_TOKEN" ]; then echo "$API_TOKEN" > left-behind.txt; fi
            if [ -f left-behind.txt ]; then echo "found what a job with secrets left"; else echo "nothing left behind"; fi
            """
        for repo in [allowed] {
            try "left-behind.txt\n".write(toFile: repo + "/.gitignore", atomically: true, encoding: .utf8)
            try h.git(["add", ".gitignore"], in: repo)
        }
        let good = try h.commit(script, to: allowed)
        let stranger = h.dir.appendingPathComponent("stranger").path
        try FileManager.default.createDirectory(atPath: stranger, withIntermediateDirectories: true)
        try h.git(["init", "-q", "-b", "main"], in: stranger)
        // The other repository ignores the same file: only the runner's clean-up keeps it from the next job.
        try "left-behind.txt\n".write(toFile: stranger + "/.gitignore", atomically: true, encoding: .utf8)
        try h.git(["add", ".gitignore"], in: stranger)
        let strangerCommit = try h.commit(script, to: stranger)
        let certFile = h.dir.appendingPathComponent("cert.pem")
        try (cert.joined(separator: "\n") + "\n").write(to: certFile, atomically: true, encoding: .utf8)
        let config = try configFolder(["secrets.yml": """
            secrets:
              API_TOKEN: {value: "\(token)", repositories: ["\(allowed)"]}
              CERT: {file: \(certFile.path), repositories: ["\(allowed)/"]}
              OTHER_SECRET: {value: "\(other)", tasks: [nightly, deploy]}
            tasks:
              nightly: {command: "true", enabled: false}
              deploy: {command: "echo \\"deploy-key=$OTHER_SECRET len=${#OTHER_SECRET}\\""}
            """])
        let (dispatcher, address, base) = try startDispatcher(config: config)
        try h.startRunner(try h.clone(allowed, as: "clone-a"), address, name: "a")
        let port = try h.startReporter().port
        let (build, job) = try h.dispatch(good, repo: allowed, to: address)
        let stream = try HTTP.Stream(port, "/builds/\(build)/events?after=0")
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .success)
        try stream.wait(until: "twice:", timeout: 10)
        let lines = try h.store().logs(job: job).map(\.text)
        XCTAssertTrue(lines.contains("token=****"), "\(lines)")
        for (i, line) in cert.enumerated() { XCTAssertTrue(lines.contains("****"), "line \(i) of the certificate: \(line) in \(lines)") }
        XCTAssertEqual(lines.filter { $0 == "****" }.count, 3, "each line of the multi-line secret: \(lines)")
        XCTAssertTrue(lines.contains("other=[unset] len=\(token.count)"), "a secret of a task does not reach a build of a repository: \(lines)")
        XCTAssertTrue(lines.contains("twice: **** and ****"), "\(lines)")

        let (strangerBuild, strangerJob) = try h.dispatch(strangerCommit, repo: stranger, to: address)
        XCTAssertEqual(try h.waitForFinalBuild(strangerBuild).status, .success)
        let strangerLines = try h.store().logs(job: strangerJob).map(\.text)
        XCTAssertTrue(strangerLines.contains("token=") && strangerLines.contains("other=[unset] len=0"), "\(strangerLines)")
        XCTAssertTrue(strangerLines.contains("nothing left behind"), "an ignored file a job with secrets wrote is removed: \(strangerLines)")
        XCTAssertTrue(strangerLines.contains("a job with secrets ran here before: removing ignored files too"), "\(strangerLines)")

        // A run of a task the secret names gets it, from its first job on (the runner is idle when the run is created).
        let (code, body) = try post("\(base)/hooks/tasks/deploy", body: Data())
        XCTAssertEqual(code, 201, body)
        let deployBuild = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: String])?["build"].flatMap { Int64($0) })
        XCTAssertEqual(try h.waitForFinalBuild(deployBuild).status, .success)
        let deployLines = try h.store().logs(build: deployBuild, after: 0, limit: 100).map(\.text)
        XCTAssertTrue(deployLines.contains("deploy-key=**** len=\(other.count)"), "\(deployLines)")

        // Nowhere in what is kept or shown: the live stream, the log download, the database's files, the processes' logs.
        let page = try HTTP.get(port, "/jobs/\(job)/log.txt").body + (try HTTP.get(port, "/builds/\(build)").body)
        var kept = stream.text + page + h.log(of: dispatcher) + h.diagnostics()
        for suffix in ["", "-wal"] {
            if let data = FileManager.default.contents(atPath: h.dbPath + suffix) { kept += String(decoding: data, as: UTF8.self) }
        }
        XCTAssertTrue(stream.text.contains("token=****"), stream.text)
        for secret in [token, other] + cert { XCTAssertFalse(kept.contains(secret), "\(secret) leaked") }
    }

    // MARK: Notifications

    /// A real SMTP server (Python's aiosmtpd, installed by scripts/test.sh) on `port`, keeping each mail as a file.
    @discardableResult
    func startSMTP(port: Int, maildir: String) throws -> Process {
        let p = try h.spawnProgram("smtp", "/usr/bin/env", ["python3", "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(port)",
                                                             "-c", "aiosmtpd.handlers.Mailbox", maildir])
        try h.waitUntil("the SMTP server listens") {
            guard p.isRunning else { throw Failure("aiosmtpd exited (pip install aiosmtpd):\n\(h.log(of: p))") }
            guard let fd = try? h.rawConnect(port) else { return false }
            close(fd)
            return true
        }
        return p
    }

    func mails(_ maildir: String) -> [String] {
        let folder = maildir + "/new"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
            .compactMap { try? String(contentsOfFile: folder + "/" + $0, encoding: .utf8) }
    }

    func testAFailureAndItsFixEachSendOneMailAndOneWebhookAndNoneIsLostWhenTheDispatcherIsKilledBeforeDelivery() throws {
        let maildir = h.dir.appendingPathComponent("maildir").path
        let received = h.dir.appendingPathComponent("received").path
        let smtpPort = try h.freeLoopbackPort()
        let hook = try startReceiver(into: received, failing: 1)
        let origin = try h.makeOrigin()
        let broken = try h.commit("echo 'the widget test broke: expected 3, got 4'; exit 1", to: origin, message: "break the widget")
        let fixed = try h.commit("exit 0", to: origin, message: "fix the widget")
        let again = try h.commit("exit 0", to: origin, message: "another change")
        let config = try configFolder(["notify.yml": """
            reporter_url: http://ci.example.com:5000/
            smtp: {host: 127.0.0.1, port: \(smtpPort), starttls: false, from: ci@example.com}
            notifications:
              - {when: [failure, fixed], email: [dev@example.com, lead@example.com], webhook: "\(hook)"}
            """])
        let (first, address, _) = try startDispatcher(config: config)
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        // As the observer dispatches: with the commit's title and author.
        let client = try WireClient(address: address, token: nil)
        guard case .queued(let build, _, _) = try client.request(.dispatch(repo: origin, commit: broken, branch: "main", pipeline: .none,
                                                                            title: "break the widget", author: "Test <test@example.invalid>")) else {
            throw Failure("dispatch refused")
        }
        client.close()
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .failed)
        // The mail server is down: the mail waits in the outbox, tried again later; the webhook's first 500 is retried.
        try h.waitUntil("the mail has been tried and the webhook delivered after its 500", timeout: 30) {
            let rows = try h.store().outbox()
            return rows.count == 2 && rows.contains { $0.channel == "email" && $0.attempts >= 1 && $0.state == "pending" }
                && rows.contains { $0.channel == "webhook" && $0.state == "sent" && $0.attempts == 2 }
        }
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        try startSMTP(port: smtpPort, maildir: maildir)
        let (restarted, _) = try h.startDispatcher(port: address.port, extra: ["--config", config, "--http-port", "0"])
        try h.waitUntil("the mail is delivered by the restarted dispatcher") { mails(maildir).count == 1 }
        let mail = mails(maildir)[0]
        for needle in ["Subject: [DevCI] build \(build) failed", "Repository: \(origin)", "Commit:     \(broken)", "Author:     Test",
                       "Title:      break the widget", "| the widget test broke: expected 3, got 4", "http://ci.example.com:5000/builds/\(build)",
                       "To: dev@example.com, lead@example.com"] {
            XCTAssertTrue(mail.contains(needle), "\(needle) in:\n\(mail)")
        }

        let (fixBuild, _) = try h.dispatch(fixed, repo: origin, to: address)
        XCTAssertEqual(try h.waitForFinalBuild(fixBuild).status, .success)
        try h.waitUntil("the fix is announced") { mails(maildir).count == 2 }
        // Mailbox file names do not sort by arrival: each mail is found by what it says.
        XCTAssertEqual(mails(maildir).filter { $0.contains("Subject: [DevCI] build \(fixBuild) fixed") }.count, 1, "\(mails(maildir))")
        XCTAssertEqual(mails(maildir).filter { $0.contains("Subject: [DevCI] build \(build) failed") }.count, 1)
        let (plain, _) = try h.dispatch(again, repo: origin, to: address)
        XCTAssertEqual(try h.waitForFinalBuild(plain).status, .success)
        try h.waitUntil("the third build's notifications are decided") { try h.store().buildsAwaitingNotification().isEmpty && h.log(of: restarted).contains("build \(plain) success") }
        try h.waitUntil("every outbox row is sent") { try h.store().outbox().allSatisfy { $0.state == "sent" } }
        XCTAssertEqual(mails(maildir).count, 2, "one mail for the failure, one for the fix, none for a success after a success")
        let hooks = try FileManager.default.contentsOfDirectory(atPath: received).sorted()
        XCTAssertEqual(hooks.count, 2, "\(hooks)")
        let bodies = try hooks.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: received + "/" + $0))) as? [String: Any]) }
        XCTAssertEqual(bodies.map { $0["event"] as? String }, ["failure", "fixed"])
        XCTAssertEqual(bodies[0]["commit"] as? String, broken)
        let failing = try XCTUnwrap(bodies[0]["failing_jobs"] as? [[String: Any]])
        XCTAssertEqual((failing.first?["log_tail"] as? [String])?.last, "the widget test broke: expected 3, got 4")
    }

    /// STARTTLS to a server whose certificate is trusted through `ca_file`, then AUTH PLAIN with the credentials
    /// from the dispatcher's environment, which appear in none of its output.
    func testMailGoesOverSTARTTLSWithTheCredentialsFromTheEnvironment() throws {
        let certs = h.dir.appendingPathComponent("tls").path
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        let openssl = try h.spawnProgram("openssl", "/usr/bin/env", ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                                                      "-keyout", certs + "/key.pem", "-out", certs + "/cert.pem", "-subj", "/CN=localhost",
                                                                      "-addext", "subjectAltName=DNS:localhost"])
        openssl.waitUntilExit()
        XCTAssertEqual(openssl.terminationStatus, 0, h.log(of: openssl))
        let maildir = h.dir.appendingPathComponent("maildir").path
        let port = try h.freeLoopbackPort()
        let password = "pw-\(UUID().uuidString.prefix(12))"
        let server = try h.spawnProgram("smtp-tls", "/usr/bin/env", ["python3", "-u", "-c", """
            import ssl, sys, time
            from aiosmtpd.controller import Controller
            from aiosmtpd.handlers import Mailbox
            from aiosmtpd.smtp import AuthResult, LoginPassword
            port, cert, key, maildir, user, pw = sys.argv[1:7]
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            def check(server, session, envelope, mechanism, data):
                return AuthResult(success=isinstance(data, LoginPassword) and data.login == user.encode() and data.password == pw.encode())
            c = Controller(Mailbox(maildir), hostname='127.0.0.1', port=int(port), tls_context=ctx, require_starttls=True,
                           authenticator=check, auth_require_tls=True)
            c.start()
            print('ready', flush=True)
            while True: time.sleep(3600)
            """, String(port), certs + "/cert.pem", certs + "/key.pem", maildir, "ci-mailer", password])
        try h.waitUntil("the TLS SMTP server is ready") {
            guard server.isRunning else { throw Failure("the SMTP server exited:\n\(h.log(of: server))") }
            return h.log(of: server).contains("ready")
        }
        let origin = try h.makeOrigin()
        let broken = try h.commit("exit 1", to: origin)
        let config = try configFolder(["notify.yml": """
            smtp: {host: localhost, port: \(port), from: ci@example.com, ca_file: \(certs)/cert.pem}
            notifications: [{when: always, email: [dev@example.com]}]
            """])
        let (dispatcher, address) = try h.startDispatcher(extra: ["--config", config],
                                                          environment: ["DEVCI_SMTP_USER": "ci-mailer", "DEVCI_SMTP_PASSWORD": password])
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let (build, _) = try h.dispatch(broken, repo: origin, to: address)
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .failed)
        try h.waitUntil("the mail arrives over TLS", timeout: 30) { mails(maildir).count == 1 }
        XCTAssertTrue(mails(maildir)[0].contains("Subject: [DevCI] build \(build) failed"))
        XCTAssertFalse(h.log(of: dispatcher).contains(password))
        let environ = (try? String(contentsOfFile: "/proc/\(dispatcher.processIdentifier)/environ", encoding: .utf8)) ?? ""
        XCTAssertFalse(environ.contains(password), "the password is scrubbed from the dispatcher's environment")
    }

    /// A webhook that accepts the connection and never answers costs one attempt (timed out) and is tried again;
    /// builds go on meanwhile.
    func testAWebhookThatHangsNeverHoldsUpBuildsAndIsTriedAgain() throws {
        let hang = try h.spawnProgram("hang", "/usr/bin/env", ["python3", "-u", "-c", """
            import socket, time
            s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)
            print('port', s.getsockname()[1])
            held = []
            while True:
                c, _ = s.accept(); held.append(c)
            """])
        var port = 0
        try h.waitUntil("the hanging receiver listens") {
            port = h.log(of: hang).split(separator: "\n").first { $0.hasPrefix("port ") }.flatMap { Int($0.dropFirst(5)) } ?? 0
            return port > 0
        }
        let origin = try h.makeOrigin()
        let commits = [try h.commit("exit 1", to: origin, message: "one"), try h.commit("exit 1", to: origin, message: "two"),
                       try h.commit("exit 1", to: origin, message: "three")]
        let config = try configFolder(["notify.yml": "notifications: [{when: always, webhook: \"http://127.0.0.1:\(port)/hook\"}]\n"])
        let (_, address, _) = try startDispatcher(config: config)
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        for commit in commits {
            let (build, _) = try h.dispatch(commit, repo: origin, to: address)
            XCTAssertEqual(try h.waitForFinalBuild(build).status, .failed)
        }
        // Every build ended while the first delivery was still hanging.
        let outbox = try h.store().outbox()
        XCTAssertEqual(outbox.count, 3)
        XCTAssertTrue(outbox.allSatisfy { $0.state == "pending" && $0.attempts == 0 }, "builds did not wait for the webhook: \(outbox)")
        try h.waitUntil("the hanging delivery times out and is set to be tried again", timeout: 40) {
            try h.store().outbox().contains { $0.attempts >= 1 && $0.state == "pending" && $0.lastError != nil }
        }
    }

    /// A build that fails as it is recorded (an invalid pipeline file) is told of at once, not at the next start.
    func testABuildWithAnInvalidPipelineIsAnnouncedAtOnce() throws {
        let received = h.dir.appendingPathComponent("received").path
        let hook = try startReceiver(into: received, failing: 0)
        let origin = try h.makeOrigin()
        let commit = try h.commit("exit 0", to: origin)
        let config = try configFolder(["notify.yml": "notifications: [{when: failure, webhook: \"\(hook)\"}]\n"])
        let (_, address, _) = try startDispatcher(config: config)
        let (build, _) = try h.dispatch(commit, repo: origin, to: address, pipeline: .text("jobs: [not, a, mapping]"))
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .failed)
        try h.waitUntil("the failure is announced") { ((try? FileManager.default.contentsOfDirectory(atPath: received)) ?? []).count == 1 }
        XCTAssertTrue(try h.store().buildsAwaitingNotification().isEmpty)
    }
}
