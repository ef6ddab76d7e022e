import DevCIStore
import DevCIWire
import XCTest

/// The store against a real SQLite file in a temporary folder and a real PostgreSQL database: every test runs
/// on both, and must pass on both.
final class StoreTests: XCTestCase {
    var dir: URL!
    let commit = String(repeating: "b", count: 40)

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("devci-store-\(UUID().uuidString)/sub")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir.deletingLastPathComponent())
    }

    /// Runs `body` on each database, saying which one a failure came from.
    func onEachDatabase(_ body: (TestDatabase, inout SQLStore) throws -> Void) throws {
        for database in try TestDatabase.all(in: dir) {
            // XCTest on Linux has no activities: a failure's line is shared, so the log says which database ran.
            print("\(name): on \(database.kind)")
            var store = try database.open()
            do { try body(database, &store) } catch { XCTFail("on \(database.kind): \(error)"); throw error }
        }
    }

    func testEnqueueIsIdempotentPerRepositoryAndCommit() throws {
        try onEachDatabase { database, store in
            let first = try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "test")], at: Date())
            let again = try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "test")], at: Date())
            XCTAssertTrue(first.created)
            XCTAssertFalse(again.created)
            XCTAssertEqual(first.build, again.build)
            XCTAssertEqual(first.jobs.map(\.id), again.jobs.map(\.id))
            XCTAssertEqual(try store.lastDispatched(repo: "/r", branch: "main"), commit)
            XCTAssertNil(try store.lastDispatched(repo: "/r", branch: "other"))
        }
    }

    func testAFinalStateIsNeverOverwritten() throws {
        try onEachDatabase { database, store in
            let job = try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "test")], at: Date()).jobs[0].id
            XCTAssertTrue(try store.record(JobTransition(job: job, state: .assigned, attempt: 1, runner: "a")))
            XCTAssertTrue(try store.record(JobTransition(job: job, state: .success, attempt: 1, runner: "a", exitCode: 0)))
            XCTAssertFalse(try store.record(JobTransition(job: job, state: .failed, attempt: 2, runner: "b", exitCode: 1)))
            let build = try XCTUnwrap(try store.recentBuilds(limit: 1).first)
            XCTAssertEqual(build.status, .success)
            XCTAssertEqual(build.runner, "a")
            XCTAssertEqual(try store.events(job: job).map(\.state), [.pending, .assigned, .success])
            XCTAssertTrue(try store.activeJobs().isEmpty)
        }
    }

    func testAllowedFailuresAndAnInvalidPipeline() throws {
        try onEachDatabase { database, store in
            let r = try store.enqueue(repo: "/r", branch: "main", commit: commit,
                                      jobs: [NewJob(name: "a"), NewJob(name: "lint", allowFailure: true)], at: Date())
            try store.record(JobTransition(job: r.jobs[0].id, state: .success, attempt: 1, runner: "x"))
            try store.record(JobTransition(job: r.jobs[1].id, state: .failed, attempt: 1, runner: "x", exitCode: 1))
            let b = try XCTUnwrap(try store.recentBuilds(limit: 1).first)
            XCTAssertEqual(b.status, .success)
            XCTAssertEqual(b.allowedFailures, 1)
            XCTAssertEqual(b.displayStatus, "passed with allowed failures")
            let bad = try store.enqueueInvalid(repo: "/r", branch: "main", commit: String(repeating: "c", count: 40),
                                               reason: "pipeline file is invalid", details: [".devci.yml:3:5: jobs.a: oops"], at: Date())
            XCTAssertEqual(try store.recentBuilds(limit: 1).first?.status, .failed)
            XCTAssertEqual(try store.logs(job: bad.jobs[0].id).map(\.text), [".devci.yml:3:5: jobs.a: oops"])
            XCTAssertEqual(try store.jobs(build: r.build).map(\.name), ["a", "lint"])
        }
    }

    func testActiveJobsSurviveReopening() throws {
        try onEachDatabase { database, store in
            let r = try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "a"), NewJob(name: "b", dependencies: ["a"])], at: Date())
            try store.record(JobTransition(job: r.jobs[0].id, state: .running, attempt: 1, runner: "x"))
            try store.appendLogs([LogRecord(job: r.jobs[0].id, attempt: 1, stream: .err, timestampMillis: 5, text: "héllo <b>")])
            store = try database.open()
            let active = try store.activeJobs()
            XCTAssertEqual(active.map(\.state), [.running, .pending])
            XCTAssertEqual(active[1].spec.job.dependencies, ["a"])
            XCTAssertEqual(active[0].runner, "x")
            XCTAssertEqual(active[0].attempt, 1)
            XCTAssertEqual(try store.logs(job: r.jobs[0].id).map(\.text), ["héllo <b>"])
            XCTAssertEqual(try store.recentBuilds(limit: 5).first?.status, .running)
        }
    }

    func testRunnersCountTheJobsTheyLostByKindNotByWords() throws {
        try onEachDatabase { database, store in
            let r = try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "a"), NewJob(name: "b")], at: Date())
            try store.recordRunners([RunnerChange(name: "r1", state: .connected, host: "10.0.0.1", at: Date())], heartbeats: [:])
            try store.record(JobTransition(job: r.jobs[0].id, state: .running, attempt: 1, runner: "r1"))
            // A closed connection says nothing of leases: its kind says the job was lost.
            try store.record(JobTransition(job: r.jobs[0].id, state: .queued, attempt: 1, runner: "r1",
                                           reason: "runner r1 disconnected; requeued (reassignment 1 of 3)", kind: .lost, reassignments: 1))
            // A retry is not a loss, whatever its words.
            try store.record(JobTransition(job: r.jobs[1].id, state: .queued, attempt: 1, runner: "r1",
                                           reason: "attempt 1 failed (lease on attempt 1 expired); retry 1 of 1", kind: .retry, retriesUsed: 1))
            XCTAssertEqual(try store.runners().first { $0.name == "r1" }?.lostRecently, [r.jobs[0].id])
        }
    }

    func testAStateThisVersionDoesNotKnowReadsAsAFallbackNotACrash() throws {
        try onEachDatabase { database, store in
            let r = try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "a")], at: Date())
            try store.record(JobTransition(job: r.jobs[0].id, state: .running, attempt: 1, runner: "x"))
            // As a newer DevCI might write it.
            try database.execute("UPDATE jobs SET status = 'paused'; UPDATE builds SET status = 'paused'; UPDATE job_events SET state = 'paused';")
            let reader = try openReader(at: database.location)
            XCTAssertEqual(try reader.jobs(build: r.build).map(\.status), [.error])
            XCTAssertEqual(try reader.build(r.build)?.status, .error)
            XCTAssertEqual(try reader.events(job: r.jobs[0].id).map(\.state), [.error, .error])
        }
    }

    /// Issue 13, point 4: the database itself refuses a write from a leader that lost the lead, even one that does
    /// not know it yet (its own watchdog has not noticed): every write transaction is fenced by the epoch.
    func testAWriteFromAnOlderEpochIsRefusedByTheDatabase() throws {
        guard let database = try TestDatabase.all(in: dir).first(where: { $0.kind == "PostgreSQL" }) else { return }
        let address = try PostgresAddress(database.location)
        let a = try database.open(), b = try database.open()
        let first = Leadership(address: address, identity: "dispatcher A", logger: .init(label: "test"))
        XCTAssertTrue(try first.acquire { _ in XCTFail("nobody else leads") })
        let old = try first.takeOver(store: a) { _ in }
        _ = try a.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "t")], at: Date())
        // A lets go without noticing (as a frozen process would), and B takes over.
        first.stop()
        let second = Leadership(address: address, identity: "dispatcher B", logger: .init(label: "test"))
        XCTAssertTrue(try second.acquire { _ in })
        defer { second.stop() }
        XCTAssertEqual(try second.takeOver(store: b) { _ in }, old + 1)
        XCTAssertThrowsError(try a.enqueue(repo: "/r", branch: "main", commit: String(repeating: "c", count: 40), jobs: [NewJob(name: "t")], at: Date())) {
            XCTAssertTrue(($0 as? StoreError)?.isFenced ?? false, "\($0)")
            XCTAssertTrue("\($0)".contains("(epoch \(old)) no longer leads"), "\($0)")
        }
        XCTAssertThrowsError(try a.record(JobTransition(job: 1, state: .failed, attempt: 1, runner: "x")))
        XCTAssertEqual(try b.recentBuilds(limit: 10).map(\.commit), [commit], "nothing of A's after the takeover")
        XCTAssertEqual(try b.jobs(build: 1).map(\.status), [.pending])
        _ = try b.enqueue(repo: "/r", branch: "main", commit: String(repeating: "d", count: 40), jobs: [NewJob(name: "t")], at: Date())
    }

}

