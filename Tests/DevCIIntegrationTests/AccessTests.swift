import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 12, sign-in and acting from the page, with real processes: the reporter signs people in from the
/// configuration's users, shows each only what they may see (404 otherwise, as for a build that does not exist),
/// refuses forms without a valid CSRF token, and asks a real dispatcher to re-run or cancel.
final class AccessTests: HTTPTestCase {
    /// `users:` entries made by `devci user add` itself (password on standard input).
    func userEntries(_ users: [String: String]) throws -> String {
        var lines: [String] = []
        for (name, password) in users.sorted(by: { $0.key < $1.key }) {
            let p = try h.spawnProgram("user-add-\(name)", "/bin/sh", ["-c", "printf '%s\\n' \"$1\" | \"$0\" user add \"$2\" --cost 10", h.binary, password, name])
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, h.log(of: p))
            lines += h.log(of: p).split(separator: "\n").filter { $0.hasPrefix("  ") }.map(String.init)
        }
        return "users:\n" + lines.joined(separator: "\n") + "\n"
    }

    func startReporter(config: String, extra: [String] = []) throws -> Int {
        try h.startReporter(extra: ["--config", config] + extra).port
    }

    /// The value of a hidden form field in a page.
    func field(_ name: String, in page: String) throws -> String {
        let marker = "name=\"\(name)\" value=\""
        guard let r = page.range(of: marker), let end = page[r.upperBound...].firstIndex(of: "\"") else { throw Failure("no \(name) field in:\n\(page.prefix(3000))") }
        return String(page[r.upperBound..<end])
    }

    /// Signs in and returns the session cookie ("devci_session=…"), or nil with the reply when refused.
    func signIn(_ port: Int, _ user: String, _ password: String) throws -> (cookie: String?, reply: HTTP.Reply) {
        let csrf = try field("csrf", in: try HTTP.get(port, "/signin").body)
        let reply = try HTTP.post(port, "/signin", form: [("csrf", csrf), ("next", "/"), ("user", user), ("password", password)])
        let cookie = reply.headers["set-cookie"].flatMap { $0.split(separator: ";").first.map(String.init) }
        return (reply.status == 303 ? cookie : nil, reply)
    }

    func testSignInShowsEachPersonOnlyWhatTheyMaySeeAndFormsNeedTheirToken() throws {
        let store = try h.writer()
        let open = try store.enqueue(repo: "/srv/git/shop.git", branch: "main", commit: String(repeating: "a", count: 40), jobs: [NewJob(name: "unit")], at: Date())
        let secret = try store.enqueueRun(NewRun(task: "deploy", cause: .hook, title: "deploy to production"), jobs: [NewJob(name: "deploy")], at: Date())
        try store.appendLogs([LogRecord(job: secret.jobs[0].id, attempt: 1, stream: .out, timestampMillis: 1, text: "deploying the crown jewels")])
        let config = try configFolder(["access.yml": try userEntries(["alice": "alice-password", "bob": "bob-password", "carol": "carol-password"]) + """
            administrators: [alice]
            tasks:
              deploy: {command: "true", authorized_users: [bob]}
            """])
        let port = try startReporter(config: config)
        let hidden = secret.build, job = secret.jobs[0].id
        let paths = ["/builds/\(hidden)", "/api/builds/\(hidden)", "/builds/\(hidden)/events?after=0", "/jobs/\(job)/log.txt"]
        func visible(_ cookie: String?) throws -> [Int] {
            try paths.map { path in
                let headers = cookie.map { ["Cookie": $0] } ?? [:]
                guard path.contains("/events") else { return try HTTP.get(port, path, headers: headers).status }
                // The live stream of a build still running does not end: its status line is enough.
                let stream = try HTTP.Stream(port, path, headers: headers)
                try stream.wait(timeout: 10, what: "a status line") { $0.contains("\r\n") }
                return Int(stream.text.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
        }
        // Nobody signed in: the public build, not the task with authorized users; its pages are 404 like a build that does not exist.
        XCTAssertEqual(try visible(nil), [404, 404, 404, 404])
        XCTAssertEqual(try HTTP.get(port, "/builds/\(hidden)").body.contains("There is no build \(hidden)."), true)
        let anonymousList = try HTTP.get(port, "/api/builds", accept: "application/json").body
        XCTAssertTrue(anonymousList.contains("\"id\":\(open.build)") && !anonymousList.contains("deploy to production"), anonymousList)
        XCTAssertEqual(try HTTP.get(port, "/builds/\(open.build)").status, 200)
        XCTAssertTrue(try HTTP.get(port, "/").body.contains("href=\"/signin?next=/\""))

        // Wrong passwords: the same answer for a known and an unknown user; a form without its token changes nothing.
        let wrong = try signIn(port, "bob", "not-bobs"), unknown = try signIn(port, "mallory", "whatever")
        XCTAssertNil(wrong.cookie)
        XCTAssertEqual([wrong.reply.status, unknown.reply.status], [401, 401])
        XCTAssertTrue(wrong.reply.body.contains("Wrong user name or password.") && unknown.reply.body.contains("Wrong user name or password."))
        XCTAssertNil(wrong.reply.headers["set-cookie"])
        let forged = try HTTP.post(port, "/signin", form: [("user", "bob"), ("password", "bob-password")])
        XCTAssertEqual(forged.status, 403)
        XCTAssertNil(forged.headers["set-cookie"])

        // Bob may see the task's run; Carol, signed in, may not; Alice, an administrator, may.
        let bob = try XCTUnwrap(try signIn(port, "bob", "bob-password").cookie)
        let setCookie = try XCTUnwrap(try signIn(port, "bob", "bob-password").reply.headers["set-cookie"])
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] { XCTAssertTrue(setCookie.contains(attribute), setCookie) }
        XCTAssertEqual(try visible(bob), [200, 200, 200, 200])
        XCTAssertTrue(try HTTP.get(port, "/jobs/\(job)/log.txt", headers: ["Cookie": bob]).body.contains("deploying the crown jewels"))
        let carol = try XCTUnwrap(try signIn(port, "carol", "carol-password").cookie)
        XCTAssertEqual(try visible(carol), [404, 404, 404, 404])
        XCTAssertFalse(try HTTP.get(port, "/api/builds", accept: "application/json", headers: ["Cookie": carol]).body.contains("deploy to production"))
        let alice = try XCTUnwrap(try signIn(port, "alice", "alice-password").cookie)
        XCTAssertEqual(try visible(alice), [200, 200, 200, 200])
        XCTAssertTrue(try HTTP.get(port, "/", headers: ["Cookie": alice]).body.contains("signed in as <b>alice</b> (administrator)"))
        // A tampered session is nobody's.
        XCTAssertEqual(try HTTP.get(port, "/builds/\(hidden)", headers: ["Cookie": bob.replacingOccurrences(of: "=bob.", with: "=alice.")]).status, 404)

        // A form posted from another site does nothing, whatever it carries; `next` never leads off the site.
        let token = try field("csrf", in: try HTTP.get(port, "/signin").body)
        let login = [("csrf", token), ("next", "/"), ("user", "bob"), ("password", "bob-password")]
        XCTAssertEqual(try HTTP.post(port, "/signin", form: login, headers: ["Origin": "http://evil.example"]).status, 403)
        XCTAssertEqual(try HTTP.post(port, "/signin", form: login, headers: ["Sec-Fetch-Site": "cross-site"]).status, 403)
        XCTAssertEqual(try HTTP.post(port, "/signin", form: login, headers: ["Origin": "http://127.0.0.1"]).status, 303, "same origin (this client's Host has no port)")
        for evil in ["/%09/evil.example", "//evil.example", "/%5Cevil.example", "https://evil.example"] {
            XCTAssertEqual(try field("next", in: try HTTP.get(port, "/signin?next=\(evil)").body), "/", evil)
        }

        // Sign-out needs the session's token; afterwards the old cookie is nobody's.
        XCTAssertEqual(try HTTP.post(port, "/signout", form: [("csrf", "forged")], headers: ["Cookie": bob]).status, 403)
        XCTAssertEqual(try visible(bob), [200, 200, 200, 200], "a forged sign-out changed nothing")
        let page = try HTTP.get(port, "/", headers: ["Cookie": bob]).body
        let live = try HTTP.Stream(port, "/builds/\(hidden)/events?after=0", headers: ["Cookie": bob])
        try live.wait(until: "deploying the crown jewels", timeout: 10)
        let out = try HTTP.post(port, "/signout", form: [("csrf", try field("csrf", in: page))], headers: ["Cookie": bob])
        // The live stream of that session ends too.
        var closed = false
        do { try live.wait(timeout: 10, what: "the stream to end") { _ in false } } catch let failure as Failure {
            closed = failure.description.hasPrefix("stream closed")
        }
        XCTAssertTrue(closed, "the stream of a signed-out session is closed")
        XCTAssertEqual(out.status, 303)
        XCTAssertTrue(out.headers["set-cookie"]?.contains("Max-Age=0") ?? false)
        XCTAssertEqual(try visible(bob), [404, 404, 404, 404])

        // The reporter follows the folder: Bob taken off the task's authorized users loses its runs within seconds,
        // and a changed password ends Carol's session.
        let bobAgain = try XCTUnwrap(try signIn(port, "bob", "bob-password").cookie)
        let carolAgain = try XCTUnwrap(try signIn(port, "carol", "carol-password").cookie)
        let newCarol = try userEntries(["carol": "carol-new-password"]).split(separator: "\n").last.map(String.init) ?? ""
        let original = try String(contentsOfFile: config + "/access.yml", encoding: .utf8)
        let carolLine = try XCTUnwrap(original.split(separator: "\n").first { $0.hasPrefix("  carol:") }.map(String.init))
        try original.replacingOccurrences(of: "authorized_users: [bob]", with: "authorized_users: [alice]").replacingOccurrences(of: carolLine, with: newCarol)
            .write(toFile: config + "/access.yml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try visible(bobAgain), [200, 200, 200, 200], "a new sign-in is a new session, not the one signed out")
        try h.waitUntil("the reporter takes the changed folder", timeout: 15) {
            try visible(bobAgain) == [404, 404, 404, 404] && !HTTP.get(port, "/", headers: ["Cookie": carolAgain]).body.contains("signed in as")
        }
        XCTAssertNotNil(try signIn(port, "carol", "carol-new-password").cookie)

        // `devci user add --config` writes the folder's users.yml (mode 0640), which the next reporter reads.
        let add = try h.spawnProgram("user-add-dave", "/bin/sh", ["-c", "printf 'dave-password\\n' | \"$0\" user add dave --cost 10 --config \"$1\"", h.binary, config])
        add.waitUntilExit()
        XCTAssertEqual(add.terminationStatus, 0, h.log(of: add))
        let mode = try FileManager.default.attributesOfItem(atPath: config + "/users.yml")[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o640)

        // --auth required: nothing without signing in.
        let strict = try startReporter(config: config, extra: ["--auth", "required"])
        let redirect = try HTTP.get(strict, "/builds/\(open.build)")
        XCTAssertEqual(redirect.status, 303)
        XCTAssertEqual(redirect.headers["location"], "/signin?next=%2Fbuilds%2F\(open.build)")
        XCTAssertEqual(try HTTP.get(strict, "/api/builds", accept: "application/json").status, 401)
        XCTAssertEqual(try HTTP.get(strict, "/badge/shop/main.svg").status, 401)
        XCTAssertEqual(try HTTP.get(strict, "/signin").status, 200)
        let carolStrict = try XCTUnwrap(try signIn(strict, "carol", "carol-new-password").cookie)
        XCTAssertNotNil(try signIn(strict, "dave", "dave-password").cookie, "the user written by devci user add --config")
        XCTAssertEqual(try HTTP.get(strict, "/builds/\(open.build)", headers: ["Cookie": carolStrict]).status, 200)
    }

    func testAnAdministratorReRunsABuildItsFailedJobsOnlyAndCancelsFromThePageAndTheDispatcherRecordsWho() throws {
        let mark = h.dir.appendingPathComponent("second-time").path
        let origin = try h.makeOrigin()
        let pipeline = """
            jobs:
              compile: {run: "echo compiled"}
              flaky: {run: "if [ -f \(mark) ]; then echo passed this time; else touch \(mark); echo failed once; exit 1; fi"}
              package: {needs: [compile, flaky], run: "echo packaged"}
            """
        try pipeline.write(toFile: origin + "/.devci.yml", atomically: true, encoding: .utf8)
        let commit = try h.commit("exit 0", to: origin)
        let config = try configFolder(["access.yml": try userEntries(["alice": "alice-password", "carol": "carol-password"]) + "administrators: [alice]\n"])
        let (_, address, _) = try startDispatcher(config: config)
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let port = try startReporter(config: config, extra: ["--dispatcher-server", address.description])
        let (build, _) = try h.dispatch(commit, repo: origin, to: address, pipeline: .text(pipeline))
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .failed)

        let alice = try XCTUnwrap(try signIn(port, "alice", "alice-password").cookie)
        let carol = try XCTUnwrap(try signIn(port, "carol", "carol-password").cookie)
        let page = try HTTP.get(port, "/builds/\(build)", headers: ["Cookie": alice]).body
        XCTAssertTrue(page.contains("action=\"/builds/\(build)/rerun-failed\"") && page.contains("action=\"/builds/\(build)/rerun\""), page)
        XCTAssertFalse(page.contains("action=\"/builds/\(build)/cancel\""), "an ended build has nothing to cancel")
        XCTAssertFalse(try HTTP.get(port, "/builds/\(build)", headers: ["Cookie": carol]).body.contains("/rerun"), "Carol may not act")
        let csrf = try field("csrf", in: page)

        // Without the token, or as someone who may not: nothing happens.
        XCTAssertEqual(try HTTP.post(port, "/builds/\(build)/rerun-failed", form: [], headers: ["Cookie": alice]).status, 403)
        let carolToken = try field("csrf", in: try HTTP.get(port, "/", headers: ["Cookie": carol]).body)
        XCTAssertEqual(try HTTP.post(port, "/builds/\(build)/rerun", form: [("csrf", carolToken)], headers: ["Cookie": carol]).status, 403)
        XCTAssertEqual(try HTTP.post(port, "/builds/\(build)/rerun", form: [("csrf", csrf)]).status, 403, "no session")
        XCTAssertEqual(try h.builds().count, 1)

        // Re-run the failed jobs: compile is kept, flaky runs again (and passes), package runs after it.
        let again = try HTTP.post(port, "/builds/\(build)/rerun-failed", form: [("csrf", csrf)], headers: ["Cookie": alice])
        XCTAssertEqual(again.status, 303, again.body)
        let second = try XCTUnwrap(again.headers["location"].flatMap { Int64($0.split(separator: "/").last ?? "") })
        XCTAssertEqual(try h.waitForFinalBuild(second).status, .success)
        let jobs = try h.store().jobs(build: second)
        XCTAssertEqual(jobs.map(\.name), ["compile", "flaky", "package"])
        XCTAssertEqual(jobs.map(\.status), [.success, .success, .success])
        XCTAssertEqual(jobs[0].attempt, 0, "kept, not run")
        XCTAssertTrue(jobs[0].reason?.contains("passed in build \(build); kept by alice") ?? false, "\(jobs[0])")
        XCTAssertEqual(jobs[1].attempt, 1)
        XCTAssertEqual(try h.store().build(second)?.reason, "re-run of build \(build) (its failed jobs) by alice")
        XCTAssertEqual(try h.store().jobs(build: build).map(\.status), [.success, .failed, .skipped], "the first build is as it ended")

        // A whole re-run runs every job.
        let whole = try HTTP.post(port, "/builds/\(build)/rerun", form: [("csrf", csrf)], headers: ["Cookie": alice])
        let third = try XCTUnwrap(whole.headers["location"].flatMap { Int64($0.split(separator: "/").last ?? "") })
        XCTAssertEqual(try h.waitForFinalBuild(third).status, .success)
        XCTAssertEqual(try h.store().jobs(build: third).map(\.attempt), [1, 1, 1])

        // Cancel a running build from its page.
        let slow = try h.commit("sleep 30", to: origin, message: "slow")
        let (running, runningJob) = try h.dispatch(slow, repo: origin, to: address)
        try h.waitUntil("the slow job runs") { try h.store().job(runningJob)?.status == .running }
        let runningPage = try HTTP.get(port, "/builds/\(running)", headers: ["Cookie": alice]).body
        XCTAssertTrue(runningPage.contains("action=\"/builds/\(running)/cancel\""))
        XCTAssertEqual(try HTTP.post(port, "/builds/\(running)/cancel", form: [("csrf", try field("csrf", in: runningPage))], headers: ["Cookie": alice]).status, 303)
        XCTAssertEqual(try h.waitForFinalBuild(running).status, .cancelled)
        XCTAssertEqual(try h.store().job(runningJob)?.reason, "cancelled by alice")
    }
}
