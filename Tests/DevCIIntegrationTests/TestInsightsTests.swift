import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 14 end to end: test results from reports and from the log, flaky tests found from retries, and the
/// commit that broke a branch named by bisecting the commits the observer's backlog cap left unbuilt.
final class TestInsightsTests: HTTPTestCase {
    func write(_ files: [String: String], in repo: String) throws {
        for (name, text) in files {
            let url = URL(fileURLWithPath: repo).appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        try h.git(["add", "-A"], in: repo)
    }

    @discardableResult
    func commitAll(_ message: String, in repo: String) throws -> String {
        try h.git(["commit", "-q", "--allow-empty", "-m", message], in: repo)
        return try h.git(["rev-parse", "HEAD"], in: repo)
    }

    /// 16 commits pushed at once, the 6th breaking a test, the observer's backlog cap 1: the tip fails, and
    /// bisecting the 15 commits it skipped names the 6th in at most 4 builds (log2(15)+1 rounds down to 4).
    func testTheCommitThatBrokeTheBranchIsNamedByBisection() throws {
        let received = h.dir.appendingPathComponent("received").path
        let hook = try startReceiver(into: received, failing: 0)
        let origin = try h.makeOrigin()
        try write([
            ".devci.yml": "jobs:\n  unit:\n    run: python3 -m unittest -v test_calc\n",
            "calc.py": "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
            "test_calc.py": """
                import unittest
                import calc


                class TestCalc(unittest.TestCase):
                    def test_add(self):
                        self.assertEqual(calc.add(2, 3), 5)

                    def test_mul(self):
                        self.assertEqual(calc.mul(2, 3), 6)
                """,
        ], in: origin)
        try commitAll("a calculator", in: origin)
        let config = try configFolder(["notify.yml": "notifications: [{when: failure, webhook: \"\(hook)\"}]\n"])
        let (dispatcher, address, _) = try startDispatcher(config: config)
        try h.startRunner(try h.clone(origin, as: "clone-runner"), address, name: "a")
        let observerClone = try h.clone(origin, as: "clone-obs")
        let observer = try h.startObserver([observerClone], address, extra: ["--max-backlog", "1"])
        XCTAssertEqual(try h.waitForFinalBuild(1, timeout: 60).status, .success)

        // The 16 commits are made in another clone and reach the origin's main in one fast-forward.
        let dev = try h.clone(origin, as: "dev")
        var commits: [String] = []
        for i in 1...16 {
            if i == 6 {
                try write(["calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"], in: dev)
                commits.append(try commitAll("commit 6: simplify add", in: dev))
            } else {
                try write(["notes.txt": "note \(i)\n"], in: dev)
                commits.append(try commitAll("commit \(i): notes", in: dev))
            }
        }
        try h.git(["pull", "-q", "--ff-only", dev, "main"], in: origin)

        let red = try h.waitForFinalBuild(2, timeout: 60)
        XCTAssertEqual(red.commit, commits[15], "the cap of 1 builds the tip only")
        XCTAssertEqual(red.status, .failed)
        // kill -9 of the dispatcher while the bisection runs: the next one carries it on from the database.
        try h.waitUntil("the bisection has begun", timeout: 60) { try h.store().bisection(explaining: 2)?.currentBuild != nil }
        kill(dispatcher.processIdentifier, SIGKILL)
        dispatcher.waitUntilExit()
        _ = try h.startDispatcher(port: address.port, extra: ["--config", config, "--http-port", "0"])
        var bisection: BisectionRecord?
        try h.waitUntil("the bisection ends", timeout: 120) {
            bisection = try h.store().bisection(explaining: 2)
            return bisection.map { $0.state != .running } ?? false
        }
        let b = try XCTUnwrap(bisection)
        XCTAssertEqual(b.state, .found, b.reason ?? "")
        XCTAssertEqual(b.candidates, Array(commits.prefix(15)), "the 15 commits the observer skipped, oldest first")
        XCTAssertEqual(b.culprit, commits[5], "the 6th commit broke it")
        XCTAssertEqual(b.culpritTitle, "commit 6: simplify add")
        XCTAssertFalse(b.culpritAuthor.isEmpty)
        XCTAssertLessThanOrEqual(b.buildsRun, 5, "at most 5 extra builds")
        print("bisection of 15 untested commits: \(b.buildsRun) build(s); \(b.reason ?? "")")
        let all = try h.builds()
        let bisects = all.filter { $0.cause == .bisect }
        XCTAssertEqual(bisects.count, b.buildsRun)
        XCTAssertEqual(all.count, 2 + b.buildsRun, "nothing else was built: \(all.map { "\($0.id) \($0.cause) \($0.commit.prefix(8))" })")
        XCTAssertTrue(bisects.allSatisfy { $0.upstream == 2 })
        for build in bisects {
            XCTAssertTrue(try h.store().jobDefinitions(build: build.id).allSatisfy { $0.job.priority == priorityRange.lowerBound }, "behind all new work")
        }
        XCTAssertEqual(try h.store().lastDispatched(repo: origin, branch: "main"), commits[15], "bisection never moves the branch's mark")

        // The red build's tests, read from unittest's verbose output: the failure first, with its message.
        let tests = try h.store().tests(build: 2)
        XCTAssertEqual(tests.map(\.name), ["test_add", "test_mul"])
        XCTAssertEqual(tests.map(\.status), [.failed, .passed])
        XCTAssertEqual(tests[0].suite, "test_calc.TestCalc")
        XCTAssertTrue(tests[0].message?.contains("AssertionError: -1 != 5") ?? false, "\(tests[0])")

        // Named in `devci report`, on the build page and in the notification that follows the failure's.
        let report = try h.run(["report", "--db", h.dbPath])
        XCTAssertTrue(report.output.contains("build 2: broken by \(commits[5].prefix(12))"), report.output)
        let failed = try h.run(["report", "--db", h.dbPath, "--run", "2", "--tests"])
        XCTAssertTrue(failed.output.contains("1 failed, 1 passed") && failed.output.contains("test_calc.TestCalc::test_add"), failed.output)
        let (_, port) = try h.startReporter()
        let (status, page) = try get("http://127.0.0.1:\(port)/builds/2")
        XCTAssertEqual(status, 200)
        XCTAssertTrue(page.contains("Broken by <code>\(commits[5])</code>") && page.contains("commit 6: simplify add"), page)
        let (_, json) = try get("http://127.0.0.1:\(port)/api/builds/2")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual((object["bisection"] as? [String: Any])?["culprit"] as? String, commits[5])
        XCTAssertEqual(((object["tests"] as? [[String: Any]])?.first)?["status"] as? String, "failed")
        try h.waitUntil("the failure and its culprit are announced") {
            ((try? FileManager.default.contentsOfDirectory(atPath: received)) ?? []).count >= 2
        }
        let bodies = try FileManager.default.contentsOfDirectory(atPath: received).sorted().map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: received + "/" + $0))) as? [String: Any])
        }
        XCTAssertEqual(bodies.map { $0["build"] as? Int }, [2, 2], "the bisection's own builds are not announced")
        XCTAssertNil(bodies[0]["culprit"])
        XCTAssertEqual((bodies[1]["culprit"] as? [String: Any])?["commit"] as? String, commits[5])
        XCTAssertEqual(try h.store().outbox().count, 2)
        XCTAssertTrue(h.log(of: observer).contains("15 commit(s) left unbuilt"), h.log(of: observer))
    }

    /// The green build before a red one ends after it (two runners): the bisection starts when it does.
    func testABisectionStartsWhenTheGreenBuildBeforeTheRedOneEndsLast() throws {
        let origin = try h.makeOrigin()
        let pipeline = "jobs:\n  unit:\n    run: sh ci.sh\n"
        try write([".devci.yml": pipeline], in: origin)
        let scripts = ["sleep 3; exit 0", "exit 0", "exit 0", "exit 1", "exit 1", "exit 1"]
        var commits: [String] = []
        for (i, script) in scripts.enumerated() { commits.append(try h.commit(script, to: origin, message: "commit \(i)")) }
        let (_, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        try h.startRunner(try h.clone(origin, as: "clone-b"), address, name: "b")
        let (green, _) = try h.dispatch(commits[0], repo: origin, to: address, pipeline: .text(pipeline))
        let client = try WireClient(address: address, token: nil)
        defer { client.close() }
        for commit in commits[1...4] {
            let reply = try client.request(.untested(UntestedCommit(repo: origin, branch: "main", commit: commit, before: commits[5], pipeline: .text(pipeline))))
            XCTAssertEqual(reply, .ok(what: "untested"))
        }
        let (red, _) = try h.dispatch(commits[5], repo: origin, to: address, pipeline: .text(pipeline))
        XCTAssertEqual(try h.waitForFinalBuild(red).status, .failed)
        XCTAssertFalse(try XCTUnwrap(try h.build(green)).status.isFinal, "the red build ended first")
        XCTAssertNil(try h.store().bisection(explaining: red))
        var bisection: BisectionRecord?
        try h.waitUntil("the bisection ends", timeout: 60) {
            bisection = try h.store().bisection(explaining: red)
            return bisection.map { $0.state != .running } ?? false
        }
        XCTAssertEqual(bisection?.culprit, commits[3])
        XCTAssertEqual(bisection?.goodBuild, green)
        XCTAssertLessThanOrEqual(bisection?.buildsRun ?? 99, 3)
    }

    /// A test that fails on a random half of its runs is found flaky from one build's retries; a test that fails
    /// every time is not; a later build that fails only in it says so. A hostile report is a note, nothing more.
    func testAFlakyTestIsFoundFromRetriesAndAnAlwaysFailingOneIsNot() throws {
        let origin = try h.makeOrigin()
        let script = """
            import os, random, sys
            counter = os.environ["FLAKY_COUNTER"]
            n = int(open(counter).read()) if os.path.exists(counter) else 0
            open(counter, "w").write(str(n + 1))
            cases = [("test_stable", False), ("test_flaky", random.Random(n).random() < 0.5)]
            if os.path.exists("broken.flag"):
                cases.append(("test_broken", True))
            os.makedirs("reports", exist_ok=True)
            with open("reports/junit.xml", "w") as out:
                out.write('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="demo" tests="%d">' % len(cases))
                for name, fails in cases:
                    out.write('<testcase classname="tests.Demo" name="%s" time="0.0%d">' % (name, len(name)))
                    if fails:
                        out.write('<failure message="%s failed">Traceback: &lt;script&gt;boom</failure>' % name)
                    out.write('</testcase>')
                out.write('</testsuite></testsuites>')
            sys.exit(1 if any(f for _, f in cases) else 0)
            """
        try write([
            ".devci.yml": "jobs:\n  tests:\n    run: python3 run_tests.py\n    retries: 3\n    reports: {junit: [\"reports/*.xml\"]}\n",
            "run_tests.py": script, "broken.flag": "",
            "reports/hostile.xml": """
                <?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
                <testsuites><testsuite name="x"><testcase classname="evil" name="lol">&lol2;</testcase></testsuite></testsuites>
                """,
        ], in: origin)
        let first = try commitAll("tests", in: origin)
        let counter = h.dir.appendingPathComponent("flaky-counter").path
        let (dispatcher, address, _) = try startDispatcher(config: nil)
        let runner = try h.spawn("runner-a", ["runner", try h.clone(origin, as: "clone-a"), "--dispatcher-server", address.description, "--name", "a"],
                                 environment: ["FLAKY_COUNTER": counter])
        let text = try String(contentsOfFile: origin + "/.devci.yml", encoding: .utf8)
        let (build, job) = try h.dispatch(first, repo: origin, to: address, pipeline: .text(text))
        XCTAssertEqual(try h.waitForFinalBuild(build, timeout: 60).status, .failed, "test_broken fails every attempt")
        XCTAssertEqual(try h.store().job(job)?.attempt, 4, "the first try and 3 retries")
        // Seeds 0-3 of the random half: pass, fail, pass, fail. A test shows its last attempt's result.
        let tests = try h.store().tests(build: build)
        XCTAssertEqual(tests.map(\.name), ["test_flaky", "test_broken", "test_stable"], "failures first")
        XCTAssertEqual(tests.map(\.status), [.failed, .failed, .passed])
        XCTAssertEqual(tests.map(\.flippedHere), [true, false, false])
        XCTAssertEqual(tests.map(\.knownFlaky), [true, false, false])
        XCTAssertEqual(tests[1].message, "test_broken failed\nTraceback: <script>boom")
        let flaky = try h.store().flakyTests(repo: origin)
        XCTAssertEqual(flaky.map(\.name), ["test_flaky"], "the always-failing test is not flaky")
        XCTAssertEqual(flaky.first?.flips.map(\.commit), [first])
        XCTAssertEqual(flaky.first?.runs, 4)
        let log = try h.store().logs(job: job).map(\.text).joined(separator: "\n")
        XCTAssertTrue(log.contains("tests: reports/hostile.xml was not read: the report declares a document type"), log)
        XCTAssertTrue(log.contains("tests: reports/junit.xml: 3 test(s), 2 failed"), log)

        // Fixed, no retries: the next failure is the flaky test's alone, and the build says so.
        try FileManager.default.removeItem(atPath: origin + "/broken.flag")
        try write([".devci.yml": "jobs:\n  tests:\n    run: python3 run_tests.py\n    reports: {junit: [\"reports/junit.xml\"]}\n"], in: origin)
        try h.git(["add", "-A"], in: origin)
        let second = try commitAll("fix the broken test", in: origin)
        let (again, _) = try h.dispatch(second, repo: origin, to: address, pipeline: .text(try String(contentsOfFile: origin + "/.devci.yml", encoding: .utf8)))
        XCTAssertEqual(try h.waitForFinalBuild(again, timeout: 60).status, .failed, "seed 4 fails")
        let next = try h.store().tests(build: again)
        XCTAssertEqual(next.filter { $0.status.isFailure }.map(\.name), ["test_flaky"])
        XCTAssertTrue(next[0].knownFlaky)
        let (_, port) = try h.startReporter()
        let (_, page) = try get("http://127.0.0.1:\(port)/builds/\(again)")
        XCTAssertTrue(page.contains("Every test that failed is known to be flaky"), page)
        let (_, buildPage) = try get("http://127.0.0.1:\(port)/builds/\(build)")
        XCTAssertTrue(buildPage.contains("&lt;script&gt;boom") && !buildPage.contains("<script>boom"), "a report's text is escaped")
        let (status, flakyPage) = try get("http://127.0.0.1:\(port)/repos/origin/flaky")
        XCTAssertEqual(status, 200)
        XCTAssertTrue(flakyPage.contains("tests.Demo::test_flaky") && !flakyPage.contains("test_broken"), flakyPage)
        let (_, history) = try get("http://127.0.0.1:\(port)/repos/origin/tests/history?suite=tests.Demo&name=test_flaky")
        XCTAssertTrue(history.contains("known flaky") && history.contains("in its last 5 runs"), history)
        let (_, timings) = try get("http://127.0.0.1:\(port)/api/repos/origin/tests?branch=main")
        let slowest = try XCTUnwrap((JSONSerialization.jsonObject(with: Data(timings.utf8)) as? [String: Any])?["slowest"] as? [[String: Any]])
        XCTAssertEqual(slowest.first?["name"] as? String, "test_stable", "11 characters: 0.011 s, the slowest passing test")
        XCTAssertTrue(dispatcher.isRunning && runner.isRunning, "the hostile report hurt neither")
    }
}
