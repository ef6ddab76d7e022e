import GRDB
import XCTest

@testable import DevCIStore
import DevCIWire

/// Task runs, ad-hoc jobs, webhook deliveries and the v6 migration, on a real SQLite file.
final class TaskRunStoreTests: XCTestCase {
    var dir: URL!
    let commit = String(repeating: "c", count: 40)

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("devci-tasks-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func testADatabaseOfTheLastVersionKeepsItsBuildsAndItsOneBuildPerCommit() throws {
        let path = dir.appendingPathComponent("old.sqlite").path
        do {
            let queue = try DatabaseQueue(path: path)
            try SQLiteDriver.migrator.migrate(queue, upTo: "v5: event kinds")
            try queue.write { db in
                try db.execute(sql: """
                    INSERT INTO builds(repo, branch, commit_id, status, created_at, title, author) VALUES ('/r', 'main', ?, 'success', 1, 'old', 'ada');
                    INSERT INTO jobs(build_id, name, status, queued_at) VALUES (1, 'test', 'success', 1);
                    """, arguments: [commit])
            }
        }
        let store = try SQLStore(path: path)
        let old = try XCTUnwrap(try store.build(1))
        XCTAssertEqual(old.title, "old")
        XCTAssertEqual(old.cause, .commit)
        XCTAssertNil(old.task)
        XCTAssertFalse(try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "test")], at: Date()).created)
        XCTAssertEqual(try store.jobs(build: 1).first?.status, .success)
    }

    func testTaskRunsAreNumberedPerTaskAndAPushedCommitRunsOncePerTask() throws {
        for database in try TestDatabase.all(in: dir, name: "t") {
            let store = try database.open()
            let job = NewJob(name: "t", queues: ["fast"], priority: 4)
            let a1 = try store.enqueueRun(NewRun(task: "a", cause: .period, tags: ["x", "y"]), jobs: [job], at: Date())
            let b1 = try store.enqueueRun(NewRun(task: "b", cause: .hook), jobs: [job], at: Date())
            let a2 = try store.recordSkipped(NewRun(task: "a", cause: .hook), reason: "skipped: busy", at: Date())
            let adhoc = try store.enqueueRun(NewRun(task: nil, cause: .adhoc, title: "echo hi"), jobs: [job], at: Date())
            XCTAssertEqual(try store.build(a1.build)?.runNumber, 1)
            XCTAssertEqual(try store.build(b1.build)?.runNumber, 1)
            XCTAssertEqual(try store.build(a2)?.runNumber, 2)
            XCTAssertEqual(try store.build(a2)?.status, .skipped)
            XCTAssertEqual(try store.build(a2)?.reason, "skipped: busy")
            XCTAssertNotNil(try store.build(a2)?.finishedAt)
            XCTAssertNil(try store.build(adhoc.build)?.runNumber)
            XCTAssertEqual(try store.activeJobs().first?.spec.job.queues, ["fast"])
            XCTAssertEqual(try store.activeJobs().first?.spec.job.priority, 4)
            XCTAssertEqual(try store.builds(BuildFilter(tag: "y"), offset: 0, limit: 10).map(\.id), [a1.build])
            let underscored = try store.enqueueRun(NewRun(task: "c", cause: .hook, tags: ["a_b"]), jobs: [job], at: Date())
            _ = try store.enqueueRun(NewRun(task: "c", cause: .hook, tags: ["axb"]), jobs: [job], at: Date())
            XCTAssertEqual(try store.builds(BuildFilter(tag: "a_b"), offset: 0, limit: 10).map(\.id), [underscored.build], "_ is not a wildcard")
            XCTAssertEqual(try store.builds(BuildFilter(task: "a"), offset: 0, limit: 10).map(\.id), [a2, a1.build])
            XCTAssertEqual(try store.tasks(), ["a", "b", "c"])

            let push = NewRun(task: "a", cause: .push, repo: "/r", branch: "main", commit: commit, upstream: a1.build)
            let first = try store.enqueueRun(push, jobs: [job], at: Date())
            let again = try store.enqueueRun(push, jobs: [job], at: Date())
            XCTAssertTrue(first.created)
            XCTAssertFalse(again.created)
            XCTAssertEqual(first.build, again.build)
            XCTAssertEqual(try store.build(a1.build)?.descendants, [first.build])
            XCTAssertEqual(try store.build(first.build)?.upstream, a1.build)
            // A commit build of the same commit is another build: one per repository and commit among commit builds.
            XCTAssertTrue(try store.enqueue(repo: "/r", branch: "main", commit: commit, jobs: [NewJob(name: "test")], at: Date()).created)

            let runs = try store.taskRuns()
            XCTAssertEqual(Set(runs.filter(\.active).map(\.build)), [a1.build, b1.build, first.build, underscored.build, underscored.build + 1])
            XCTAssertTrue(try store.noteDelivery(id: "d-1", event: "push", at: Date()))
            XCTAssertFalse(try store.noteDelivery(id: "d-1", event: "push", at: Date()))
            try store.setTaskSchedule(["a": Date(timeIntervalSince1970: 100)])
            try store.setTaskSchedule(["a": Date(timeIntervalSince1970: 200)])
            XCTAssertEqual(try store.taskSchedule(), ["a": Date(timeIntervalSince1970: 200)])
        }
    }

    func testTheSummaryNamesQueuesNoConnectedRunnerServes() throws {
        for database in try TestDatabase.all(in: dir, name: "s") {
            let store = try database.open()
            var job = NewJob(name: "t", queues: ["gpu"])
            job.startsQueued = true
            _ = try store.enqueueRun(NewRun(task: nil, cause: .adhoc), jobs: [job], at: Date())
            try store.recordRunners([RunnerChange(name: "r", state: .connected, host: nil, at: Date(), queues: ["default"])], heartbeats: [:])
            XCTAssertEqual(try store.summary().waiting, ["gpu"])
            XCTAssertEqual(try store.summary().waitingText, "waiting for a runner on queue 'gpu'")
            try store.recordRunners([RunnerChange(name: "g", state: .connected, host: nil, at: Date(), queues: ["gpu"])], heartbeats: [:])
            XCTAssertEqual(try store.summary().waiting, [])
            XCTAssertEqual(try store.runners().first { $0.name == "g" }?.queues, ["gpu"])
        }
    }
}
