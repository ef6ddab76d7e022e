import DevCIStore
import DevCIWire
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// Issue 10 with real processes: the dispatcher's HTTP side, its configuration folder, task triggers, queues,
/// ad-hoc jobs and cancel.
final class TriggerTests: HTTPTestCase {
    /// HMAC-SHA256 by Python's own `hmac`: an implementation independent of the dispatcher's.
    func sign(_ body: Data, secret: String) throws -> String {
        let file = h.dir.appendingPathComponent("body-\(UUID().uuidString.prefix(8))")
        try body.write(to: file)
        let p = try h.spawnProgram("sign", "/usr/bin/env", ["python3", "-c", """
            import hmac, hashlib, sys
            print('sha256=' + hmac.new(sys.argv[1].encode(), open(sys.argv[2], 'rb').read(), hashlib.sha256).hexdigest())
            """, secret, file.path])
        p.waitUntilExit()
        return h.log(of: p).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A push event body in GitHub's documented shape (docs.github.com, webhook events, `push`).
    func pushPayload(repo: String, branch: String = "main", commits: [String], deleted: Bool = false) throws -> Data {
        let list: [[String: Any]] = commits.map {
            ["id": $0, "tree_id": String(repeating: "0", count: 40), "distinct": true, "message": "change \($0.prefix(7))\n\nbody",
             "timestamp": "2026-12-01T05:00:00Z", "url": "https://github.com/o/r/commit/\($0)",
             "author": ["name": "Ada", "email": "ada@example.com", "username": "ada"],
             "committer": ["name": "Ada", "email": "ada@example.com", "username": "ada"], "added": [], "removed": [], "modified": ["ci.sh"]]
        }
        let payload: [String: Any] = [
            "ref": "refs/heads/\(branch)", "before": String(repeating: "0", count: 40), "after": commits.last ?? String(repeating: "0", count: 40),
            "created": false, "deleted": deleted, "forced": false, "base_ref": NSNull(), "compare": "https://github.com/o/r/compare/a...b",
            "commits": list, "head_commit": list.last ?? NSNull(),
            "repository": ["id": 1, "name": "r", "full_name": "o/r", "private": false, "clone_url": repo + ".git", "ssh_url": "git@github.com:o/r.git",
                           "git_url": "git://github.com/o/r.git", "html_url": "https://github.com/o/r", "default_branch": "main"],
            "pusher": ["name": "ada", "email": "ada@example.com"], "sender": ["login": "ada", "id": 1],
        ]
        return try JSONSerialization.data(withJSONObject: payload)
    }

    func deliver(_ base: String, _ body: Data, secret: String, delivery: String = UUID().uuidString, event: String = "push",
                 signature: String? = nil) throws -> (Int, String) {
        try post(base + "/hooks/github", body: body, headers: [
            "Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": try signature ?? sign(body, secret: secret), "User-Agent": "GitHub-Hookshot/test",
        ])
    }

    // MARK: GitHub push

    func testAGitHubPushBuildsEachListedCommitOnceAndARedeliveryOrABadSignatureBuildsNothing() throws {
        let origin = try h.makeOrigin()
        let commits = [try h.commit("echo one", to: origin), try h.commit("echo two", to: origin), try h.commit("echo three", to: origin)]
        let config = try configFolder(["ci/push.yml": """
            tasks:
              on-push:
                command: echo "built $DEVCI_COMMIT on $DEVCI_BRANCH"
                triggered_by:
                  - repository: \(origin)
                    branch: main
            """])
        let secret = "It's a Secret to Everybody"
        let (_, address, base) = try startDispatcher(config: config, extra: ["--webhook-secret", secret])
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let body = try pushPayload(repo: origin, commits: commits)
        let delivery = UUID().uuidString

        // A missing or wrong signature: 401, nothing recorded.
        XCTAssertEqual(try deliver(base, body, secret: secret, signature: "").0, 401)
        XCTAssertEqual(try deliver(base, body, secret: secret, signature: "sha256=" + String(repeating: "0", count: 64)).0, 401)
        XCTAssertEqual(try deliver(base, body, secret: "another secret").0, 401)
        XCTAssertEqual(try h.builds().count, 0)

        XCTAssertEqual(try deliver(base, body, secret: secret, event: "ping").0, 200)
        let (status, reply) = try deliver(base, body, secret: secret, delivery: delivery)
        XCTAssertEqual(status, 200, reply)
        try h.waitUntil("three runs pass") { try h.builds().filter { $0.status == .success }.count == 3 }
        let runs = try h.builds()
        XCTAssertEqual(runs.map(\.commit), commits, "each listed commit once, oldest first")
        XCTAssertTrue(runs.allSatisfy { $0.task == "on-push" && $0.cause == .push && $0.branch == "main" })
        XCTAssertEqual(runs.map(\.runNumber), [1, 2, 3])
        let log = try h.store().logs(job: try XCTUnwrap(try h.store().jobs(build: runs[1].id).first).id).map(\.text)
        XCTAssertTrue(log.contains("built \(commits[1]) on main"), "\(log)")

        // The same delivery again: answered, nothing built twice. A new delivery of the same commits: no new runs either.
        let (again, text) = try deliver(base, body, secret: secret, delivery: delivery)
        XCTAssertEqual(again, 200)
        XCTAssertTrue(text.contains("redelivery"), text)
        XCTAssertEqual(try deliver(base, body, secret: secret).0, 200)
        // Ignored: a tag, a deleted branch, another event. Refused: garbage, a cut body, 10,000 commits, a bad branch.
        XCTAssertEqual(try deliver(base, try pushPayload(repo: origin, branch: "x", commits: commits, deleted: true), secret: secret).0, 202)
        var tag = try XCTUnwrap(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        tag["ref"] = "refs/tags/v1"
        XCTAssertEqual(try deliver(base, try JSONSerialization.data(withJSONObject: tag), secret: secret).0, 202)
        XCTAssertEqual(try deliver(base, body, secret: secret, event: "issues").0, 202)
        XCTAssertEqual(try deliver(base, Data("not json".utf8), secret: secret).0, 400)
        XCTAssertEqual(try deliver(base, body.prefix(body.count / 2), secret: secret).0, 400)
        let many = (0..<10_000).map { String(format: "%040x", $0) }
        let huge = try pushPayload(repo: origin, commits: many)
        let (hugeStatus, hugeText) = try deliver(base, huge, secret: secret)
        XCTAssertEqual(hugeStatus, 413, hugeText)
        let listed = try deliver(base, try JSONSerialization.data(withJSONObject: [
            "ref": "refs/heads/main", "commits": many.prefix(3000).map { ["id": $0] }, "repository": ["clone_url": origin]]), secret: secret)
        XCTAssertEqual(listed.0, 400, listed.1)
        XCTAssertTrue(listed.1.contains("at most 2048"), listed.1)
        XCTAssertEqual(try deliver(base, try pushPayload(repo: origin, branch: "bad..branch", commits: commits), secret: secret).0, 400)
        XCTAssertEqual(try deliver(base, try pushPayload(repo: origin, branch: "$(touch /tmp/devci-pwned)", commits: commits), secret: secret).0, 400)
        XCTAssertEqual(try h.builds().count, 3, "nothing more was built")
        // A valid branch name full of shell: it reaches the job only as data (the task builds every branch).
        let pwned = "/tmp/devci-pwned-\(Int.random(in: 100_000...999_999))"
        defer { try? FileManager.default.removeItem(atPath: pwned) }
        let evil = "x$(touch${IFS}\(pwned))`touch${IFS}\(pwned)`;touch${IFS}\(pwned)"
        try "tasks:\n  on-push:\n    command: \"true\"\n  any-branch:\n    command: echo \"branch=$DEVCI_BRANCH\"\n    triggered_by: [{repository: \(origin)}]\n"
            .write(toFile: config + "/ci/push.yml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try h.run(["reload", "--dispatcher-server", address.description]).status, 0)
        XCTAssertEqual(try deliver(base, try pushPayload(repo: origin, branch: evil, commits: [commits[0]]), secret: secret).0, 200)
        let inert = try h.waitForFinalBuild(try XCTUnwrap(try h.builds().first { $0.task == "any-branch" }).id)
        XCTAssertEqual(inert.status, .success)
        XCTAssertEqual(inert.branch, evil)
        let echoed = try h.store().logs(job: try XCTUnwrap(try h.store().jobs(build: inert.id).first).id).map(\.text)
        XCTAssertTrue(echoed.contains("branch=" + evil), "\(echoed)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: pwned))
    }

    func testAPushWakesTheObserverOfTheRepositoryAndEachCommitIsBuiltOnce() throws {
        let origin = try h.makeOrigin()
        let first = try h.commit("echo one", to: origin)
        let secret = "s"
        let (_, address, base) = try startDispatcher(config: nil, extra: ["--webhook-secret", secret])
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        // Polling every 60 s: only the push can make the next build start within the wait below.
        try h.startObserver([try h.clone(origin, as: "clone-obs")], address, extra: ["--interval", "60s"])
        try h.waitUntil("the first commit is built") { try h.builds().contains { $0.commit == first && $0.status == .success } }
        let second = try h.commit("echo two", to: origin), third = try h.commit("echo three", to: origin)
        let (status, reply) = try deliver(base, try pushPayload(repo: origin, commits: [second, third]), secret: secret)
        XCTAssertEqual(status, 200, reply)
        try h.waitUntil("both pushed commits are built", timeout: 20) {
            Set(try h.builds().filter { $0.status == .success }.map(\.commit)).isSuperset(of: [second, third])
        }
        let builds = try h.builds()
        XCTAssertEqual(builds.map(\.commit), [first, second, third], "each commit once, in order")
        XCTAssertTrue(builds.allSatisfy { $0.cause == .commit })
    }

    // MARK: Periods and upstream tasks

    func testAPeriodicTaskRunsRepeatedlyAndItsDownstreamTaskRunsAfterEachSuccessWithItsAncestor() throws {
        let config = try configFolder(["tasks.yml": """
            tasks:
              tick:
                command: echo tick
                period: 2s
                tags: [nightly]
              deploy:
                description: after each tick
                command: echo deploy
                triggered_by: [{task: tick}]
            """])
        _ = try startWithRunner(config: config)
        try h.waitUntil("two ticks, each followed by a deploy", timeout: 30) {
            try h.builds().filter { $0.task == "deploy" && $0.status == .success }.count >= 2
        }
        let builds = try h.builds()
        let ticks = builds.filter { $0.task == "tick" }, deploys = builds.filter { $0.task == "deploy" }
        XCTAssertTrue(ticks.allSatisfy { $0.cause == .period && $0.tags == ["nightly"] && $0.scheduledAt != nil })
        for deploy in deploys where deploy.status == .success {
            let ancestor = try XCTUnwrap(ticks.first { $0.id == deploy.upstream }, "deploy \(deploy.id) names its ancestor")
            XCTAssertEqual(ancestor.status, .success)
            XCTAssertTrue(ancestor.descendants.contains(deploy.id))
            XCTAssertEqual(deploy.cause, .upstream)
        }
        // Periods are measured from the last scheduled start: consecutive ticks are a period apart.
        let starts = ticks.compactMap(\.scheduledAt).map(\.timeIntervalSince1970)
        for (a, b) in zip(starts, starts.dropFirst()) { XCTAssertEqual(b - a, 2, accuracy: 0.01) }
        let report = try h.run(["report", "--db", h.dbPath, "--json", "--task", "deploy"])
        let listed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(report.output.utf8)) as? [[String: Any]], report.output)
        XCTAssertFalse(listed.isEmpty)
        XCTAssertTrue(listed.allSatisfy { $0["task"] as? String == "deploy" && $0["upstream"] is NSNumber }, report.output)
        let ticksReport = try h.run(["report", "--db", h.dbPath, "--json", "--task", "tick"])
        let tickRows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ticksReport.output.utf8)) as? [[String: Any]])
        XCTAssertTrue(tickRows.contains { ($0["descendants"] as? [NSNumber])?.isEmpty == false }, ticksReport.output)
    }

    func testAPeriodicTaskCatchesUpOnceAfterADispatcherRestartAndATimeoutEndsARunTimedOut() throws {
        let config = try configFolder(["tasks.yml": """
            tasks:
              tick: {command: echo tick, period: 2s}
              stuck: {command: sleep 30, timeout: 1s}
            """])
        let (dispatcher, address, base, _) = try startWithRunner(config: config)
        XCTAssertEqual(try post(base + "/hooks/tasks/stuck", body: Data()).0, 201)
        let stuck = try h.waitForFinalBuild(try XCTUnwrap(try h.builds().first { $0.task == "stuck" }).id)
        XCTAssertEqual(stuck.status, .timedOut)
        try h.waitUntil("the first tick passes") { try h.builds().contains { $0.task == "tick" && $0.status == .success } }
        kill(dispatcher.processIdentifier, SIGKILL)
        dispatcher.waitUntilExit()
        let killedAt = Date()
        // Down for more than three periods: the point is the time that passes, not a condition to wait for.
        Thread.sleep(forTimeInterval: 7)
        let before = try h.builds().filter { $0.task == "tick" }.count
        let (_, _) = try h.startDispatcher(port: address.port, extra: ["--config", config])
        try h.waitUntil("a catch-up run and the next regular one", timeout: 20) {
            try h.builds().filter { $0.task == "tick" }.count >= before + 2
        }
        let after = try h.builds().filter { $0.task == "tick" }.dropFirst(before)
        let scheduled = after.compactMap(\.scheduledAt).map(\.timeIntervalSince1970)
        // One run per missed period would start with the first missed boundary (at most 2 s after the kill) and
        // go on a period apart; the one catch-up run is at the latest boundary (at least 3 periods on), and the
        // next is a period after it.
        XCTAssertGreaterThanOrEqual(scheduled[0], killedAt.timeIntervalSince1970 + 3, "the catch-up is the latest missed boundary: \(scheduled)")
        XCTAssertEqual(scheduled[1] - scheduled[0], 2, accuracy: 0.01, "the next run is a period after the catch-up's scheduled start")
    }

    // MARK: One at a time, debounce, the generic trigger

    func testOneRunAtATimeAndDebounceRecordSkippedRunsAndTheTriggerNeedsTheToken() throws {
        let config = try configFolder(["a.yml": """
            tasks:
              slow:
                command: sleep 2
            """, "sub/b.yaml": """
            tasks:
              quick:
                command: "true"
                debounce: 1m
              off:
                command: "true"
                enabled: false
            """])
        let (_, _, base, _) = try startWithRunner(config: config, extra: ["--token", "t0ken"], runnerExtra: ["--token", "t0ken"])
        let auth = ["Authorization": "Bearer t0ken"]
        XCTAssertEqual(try post(base + "/hooks/tasks/slow", body: Data()).0, 401)
        XCTAssertEqual(try post(base + "/hooks/tasks/slow", body: Data(), headers: ["Authorization": "Bearer wrong"]).0, 401)
        XCTAssertEqual(try post(base + "/hooks/tasks/nope", body: Data(), headers: auth).0, 404)
        XCTAssertEqual(try post(base + "/hooks/tasks/off", body: Data(), headers: auth).0, 409)
        XCTAssertEqual(try post(base + "/hooks/tasks/..%2F..", body: Data(), headers: auth).0 / 100, 4)

        let (first, text) = try post(base + "/hooks/tasks/slow", body: Data(), headers: auth)
        XCTAssertEqual(first, 201, text)
        let (second, skipped) = try post(base + "/hooks/tasks/slow", body: Data(), headers: auth)
        XCTAssertEqual(second, 200, skipped)
        XCTAssertTrue(skipped.contains("still queued or running"), skipped)
        try h.waitUntil("slow passes") { try h.builds().contains { $0.task == "slow" && $0.status == .success } }

        XCTAssertEqual(try post(base + "/hooks/tasks/quick", body: Data(), headers: auth).0, 201)
        try h.waitUntil("quick passes") { try h.builds().contains { $0.task == "quick" && $0.status == .success } }
        let (third, debounced) = try post(base + "/hooks/tasks/quick", body: Data(), headers: auth)
        XCTAssertEqual(third, 200, debounced)
        XCTAssertTrue(debounced.contains("debounce"), debounced)

        let skips = try h.builds().filter { $0.status == .skipped }
        XCTAssertEqual(skips.map(\.task), ["slow", "quick"])
        XCTAssertTrue(skips.allSatisfy { $0.reason?.hasPrefix("skipped: ") ?? false }, "\(skips.map(\.reason))")
        XCTAssertEqual(skips.map(\.runNumber), [2, 2], "a skipped run has its run number too")
    }

    func testWithoutATokenTheTriggerIsRefusedWhenTheHTTPSideIsNotOnLoopback() throws {
        let config = try configFolder(["t.yml": "tasks:\n  t: {command: \"true\"}\n"])
        let (dispatcher, _, base) = try startDispatcher(config: config, extra: ["--http-host", "0.0.0.0"])
        XCTAssertTrue(h.log(of: dispatcher).contains("without a token: anyone who can reach it can start any task"), h.log(of: dispatcher))
        let url = base.replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1") + "/hooks/tasks/t"
        XCTAssertEqual(try post(url, body: Data()).0, 403)
        XCTAssertEqual(try h.builds().count, 0)
    }

    // MARK: Queues, ad-hoc jobs, cancel

    func testAJobOnQueueFastWaitsForAFastRunnerAndSaysSo() throws {
        let (_, address, _, origin) = try startWithRunner(config: nil, runner: "slowpoke")
        try h.waitUntil("the default runner registers") { try h.run(["status", "--dispatcher-server", address.description]).output.contains("runners connected 1") }
        let added = try h.run(["add-job", "echo fast-job-ran", "--queue", "fast", "--dispatcher-server", address.description])
        XCTAssertEqual(added.status, 0, added.output)
        let build = try XCTUnwrap(Int64(added.output.split(separator: " ")[1]))
        try h.waitUntil("status says why it waits") {
            try h.run(["status", "--dispatcher-server", address.description]).output.contains("waiting for a runner on queue 'fast'")
        }
        XCTAssertEqual(try h.build(build)?.status, .queued)
        XCTAssertEqual(try h.store().summary().waiting, ["fast"])
        try h.startRunner(try h.clone(origin, as: "clone-b"), address, name: "quick", extra: ["--queue", "fast", "--queue", "default"])
        let done = try h.waitForFinalBuild(build)
        XCTAssertEqual(done.status, .success)
        XCTAssertEqual(done.runner, "quick")
        XCTAssertEqual(done.cause, .adhoc)
        XCTAssertTrue(try h.store().logs(job: try XCTUnwrap(h.store().jobs(build: build).first).id).contains { $0.text == "fast-job-ran" })
        XCTAssertEqual(try h.store().summary().waiting, [])
    }

    func testCancelKillsARunningJobAndEndsAQueuedOne() throws {
        let (_, address, _, _) = try startWithRunner(config: nil)
        let marker = "sleep 60.\(Int.random(in: 100_000...999_999))"
        let added = try h.run(["add-job", "echo started; \(marker)", "--dispatcher-server", address.description])
        XCTAssertEqual(added.status, 0, added.output)
        let build = try XCTUnwrap(Int64(added.output.split(separator: " ")[1]))
        try h.waitUntil("the job runs") { !(try h.pids(matching: marker)).isEmpty }
        let cancel = try h.run(["cancel", String(build), "--dispatcher-server", address.description])
        XCTAssertEqual(cancel.status, 0, cancel.output)
        let ended = try h.waitForFinalBuild(build)
        XCTAssertEqual(ended.status, .cancelled)
        try h.waitUntil("the runner killed its process group") { try h.pids(matching: marker).isEmpty }
        XCTAssertEqual(try h.finalEvents(job: try XCTUnwrap(h.store().jobs(build: build).first).id).map(\.state), [.cancelled])

        // A queued job (no runner serves its queue) ends at once; cancelling again, or a build that does not exist, fails.
        let queued = try h.run(["add-job", "true", "--queue", "nobody", "--dispatcher-server", address.description])
        let id = try XCTUnwrap(Int64(queued.output.split(separator: " ")[1]))
        XCTAssertEqual(try h.run(["cancel", "build:\(id)", "--dispatcher-server", address.description]).status, 0)
        XCTAssertEqual(try h.waitForFinalBuild(id).status, .cancelled)
        let twice = try h.run(["cancel", String(id), "--dispatcher-server", address.description])
        XCTAssertEqual(twice.status, 1)
        XCTAssertTrue(twice.output.contains("nothing left to cancel"), twice.output)
        XCTAssertNotEqual(try h.run(["cancel", "job:x", "--dispatcher-server", address.description]).status, 0)
        // The runner still takes work after the cancel.
        let after = try h.run(["add-job", "echo still-here", "--dispatcher-server", address.description])
        XCTAssertEqual(try h.waitForFinalBuild(try XCTUnwrap(Int64(after.output.split(separator: " ")[1]))).status, .success)
    }

    // MARK: Configuration

    func testAnInvalidConfigurationIsRefusedAtStartAndOnReloadWhileAValidOneReplacesTheOld() throws {
        let bad = try configFolder(["one.yml": "tasks:\n  a:\n    command: x\n    triggered_by: [{task: b}]\n",
                                    "two/two.yml": "tasks:\n  b:\n    comand: y\n    triggered_by: [{task: a}]\n  a:\n    command: z\n"])
        let lint = try h.run(["lint", "--config", bad])
        XCTAssertEqual(lint.status, 2, lint.output)
        XCTAssertTrue(lint.output.contains("task 'a' is defined twice: one.yml:2 and two/two.yml:5"), lint.output)
        XCTAssertTrue(lint.output.contains("did you mean 'command'?"), lint.output)
        let refused = try h.spawn("bad-dispatcher", ["dispatcher", "--port", "0", "--db", h.dbPath, "--config", bad])
        refused.waitUntilExit()
        XCTAssertNotEqual(refused.terminationStatus, 0)
        XCTAssertTrue(h.log(of: refused).contains("defined twice"), h.log(of: refused))

        let config = try configFolder(["t.yml": "tasks:\n  first:\n    command: echo first\n"])
        let (dispatcher, address, base, _) = try startWithRunner(config: config)
        // Invalid: refused with the errors, and the old configuration stays.
        try "tasks:\n  first:\n    command: echo first\n  loop1:\n    command: x\n    triggered_by: [{task: loop2}]\n  loop2:\n    command: y\n    triggered_by: [{task: loop1}]\n"
            .write(toFile: config + "/t.yml", atomically: true, encoding: .utf8)
        let reload = try h.run(["reload", "--dispatcher-server", address.description])
        XCTAssertEqual(reload.status, 1, reload.output)
        XCTAssertTrue(reload.output.contains("cycle: loop1 triggers loop2 triggers loop1") || reload.output.contains("cycle: loop2 triggers loop1 triggers loop2"),
                      reload.output)
        XCTAssertEqual(try post(base + "/hooks/tasks/first", body: Data()).0, 201)
        XCTAssertEqual(try post(base + "/hooks/tasks/loop1", body: Data()).0, 404)
        // Valid, by SIGHUP: the new task exists; the old run finished meanwhile, nothing was dropped.
        try "tasks:\n  second:\n    command: echo second\n".write(toFile: config + "/t.yml", atomically: true, encoding: .utf8)
        kill(dispatcher.processIdentifier, SIGHUP)
        try h.waitUntil("the reload is logged") { h.log(of: dispatcher).contains("configuration reloaded") }
        XCTAssertEqual(try post(base + "/hooks/tasks/second", body: Data()).0, 201)
        try h.waitUntil("both runs pass") { try h.builds().filter { $0.status == .success }.count == 2 }
        XCTAssertEqual(try h.builds().compactMap(\.task), ["first", "second"])
    }
}
