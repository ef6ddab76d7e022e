import DevCIStore
import DevCIWire
import XCTest

/// Issue 14's storage on SQLite and on PostgreSQL: results per attempt, flaky tests, a test's history, timings,
/// untested commits and bisections.
final class TestResultsStoreTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("devci-tests-\(UUID().uuidString)/sub")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir.deletingLastPathComponent())
    }

    func sha(_ n: Int) -> String { String(format: "%040x", n) }

    func result(_ name: String, _ status: TestResult.Status, _ duration: Double = 0.1, message: String? = nil) -> TestResult {
        TestResult(suite: "s.T", name: name, status: status, duration: duration, message: message)
    }

    func testResultsFlakyTestsHistoryAndTimings() throws {
        for database in try TestDatabase.all(in: dir) {
            print("\(name): on \(database.kind)")
            let store = try database.open()
            // Build 1 (commit 1): test_flaky fails on attempt 1, passes on attempt 2; test_broken fails on both.
            let b1 = try store.enqueue(repo: "/r", branch: "main", commit: sha(1), jobs: [NewJob(name: "unit", retries: 1)], at: Date())
            let job = b1.jobs[0].id
            try store.appendTestResults(build: b1.build, job: job, attempt: 1, [result("test_ok", .passed, 0.2), result("test_flaky", .failed, message: "x\0y"),
                                                                               result("test_broken", .error)])
            try store.appendTestResults(build: b1.build, job: job, attempt: 2, [result("test_ok", .passed, 0.2), result("test_flaky", .passed),
                                                                               result("test_broken", .error, message: "<b>boom</b>")])
            let tests = try store.tests(build: b1.build)
            XCTAssertEqual(tests.map(\.name), ["test_broken", "test_flaky", "test_ok"], "failures first, then flips, then the rest (\(database.kind))")
            XCTAssertEqual(tests.map(\.attempt), [2, 2, 2], "the last attempt's word")
            XCTAssertEqual(tests.map(\.flippedHere), [false, true, false])
            XCTAssertEqual(tests.map(\.knownFlaky), [false, true, false])
            XCTAssertEqual(tests[0].message, "<b>boom</b>")
            // Builds 2-4: test_ok slows down; test_broken keeps failing.
            for n in 2...5 {
                let b = try store.enqueue(repo: "/r", branch: "main", commit: sha(n), jobs: [NewJob(name: "unit")], at: Date())
                try store.appendTestResults(build: b.build, job: b.jobs[0].id, attempt: 1, [result("test_ok", .passed, n >= 4 ? 0.5 : 0.2),
                                                                                           result("test_broken", .failed)])
            }
            let flaky = try store.flakyTests(repo: "/r")
            XCTAssertEqual(flaky.map(\.name), ["test_flaky"], "an always-failing test is not flaky (\(database.kind))")
            XCTAssertEqual(flaky.first?.flips.map(\.commit), [sha(1)])
            XCTAssertEqual(flaky.first?.flipRate, 1.0)
            XCTAssertTrue(try store.flakyTests(repo: "/other").isEmpty)
            // The same test in two jobs (two Python versions) that passes in one and fails in the other is not flaky.
            let two = try store.enqueue(repo: "/r", branch: "side", commit: sha(40), jobs: [NewJob(name: "py38"), NewJob(name: "py312")], at: Date())
            try store.appendTestResults(build: two.build, job: two.jobs[0].id, attempt: 1, [result("test_version", .passed)])
            try store.appendTestResults(build: two.build, job: two.jobs[1].id, attempt: 1, [result("test_version", .failed)])
            XCTAssertFalse(try store.tests(build: two.build).contains { $0.knownFlaky }, "(\(database.kind))")
            // A bisection's builds of older commits pass and fail by turns: that is not flakiness.
            for n in 20..<32 {
                let run = try store.enqueueRun(NewRun(task: nil, cause: .bisect, repo: "/r", branch: "main", commit: sha(n), upstream: b1.build),
                                               jobs: [NewJob(name: "unit")], at: Date())
                try store.appendTestResults(build: run.build, job: run.jobs[0].id, attempt: 1, [result("test_broken", n % 2 == 0 ? .passed : .failed)])
            }
            XCTAssertEqual(try store.flakyTests(repo: "/r").map(\.name), ["test_flaky"], "(\(database.kind))")
            let history = try store.testHistory(repo: "/r", suite: "s.T", name: "test_broken", limit: 6)
            XCTAssertEqual(history.first?.commit, sha(31))
            XCTAssertEqual(try store.testHistory(repo: "/r", suite: "s.T", name: "test_broken", limit: 100).count, 18)
            XCTAssertEqual(history.count, 6)
            let timings = try store.testTimings(repo: "/r", branch: "main", builds: 30)
            let ok = try XCTUnwrap(timings.first { $0.name == "test_ok" })
            XCTAssertEqual(ok.runs, 6)
            XCTAssertEqual(ok.olderMean, 0.2, accuracy: 1e-9)
            XCTAssertEqual(ok.newerMean, 0.4, accuracy: 1e-9)
            XCTAssertEqual(timings.map(\.name), ["test_ok", "test_flaky"], "passing runs only, slowest first")

            // Untested commits and a bisection survive a reopen.
            try store.noteUntested(UntestedCommit(repo: "/r", branch: "main", commit: sha(7), before: sha(9), pipeline: .text("jobs: {a: {run: x}}"),
                                                  title: "seven", author: "Ada"), at: Date())
            try store.noteUntested(UntestedCommit(repo: "/r", branch: "main", commit: sha(8), before: sha(9), pipeline: .unreadable("too big")), at: Date())
            try store.noteUntested(UntestedCommit(repo: "/r", branch: "main", commit: sha(7), before: sha(9), pipeline: .none), at: Date())
            XCTAssertEqual(try store.untested(repo: "/r", branch: "main", before: sha(9)).commits, [sha(7), sha(8)], "oldest first, once each")
            XCTAssertEqual(try store.untestedCommit(repo: "/r", branch: "main", commit: sha(7))?.pipeline, .text("jobs: {a: {run: x}}"))
            XCTAssertEqual(try store.untestedCommit(repo: "/r", branch: "main", commit: sha(8))?.pipeline, .unreadable("too big"))
            var b = BisectionRecord(repo: "/r", branch: "main", badBuild: 5, goodBuild: 4, candidates: [sha(7), sha(8)])
            b.id = try store.saveBisection(b, at: Date())
            b.currentBuild = 6
            b.buildsRun = 1
            _ = try store.saveBisection(b, at: Date())
            let again = try database.open()
            XCTAssertEqual(try again.runningBisections(), [b])
            XCTAssertEqual(try again.bisection(building: 6), b)
            b.state = .found
            b.culprit = sha(8)
            b.currentBuild = nil
            _ = try again.saveBisection(b, at: Date())
            XCTAssertEqual(try again.bisection(explaining: 5), b)
            XCTAssertTrue(try again.runningBisections().isEmpty)
        }
    }
}
