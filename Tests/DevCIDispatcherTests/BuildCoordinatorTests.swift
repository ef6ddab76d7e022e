import DevCIPipeline
import DevCIWire
import XCTest

@testable import DevCIDispatcher
@testable import DevCIStore

/// Drives the build coordinator (scheduler and plans together) with a fake clock: no sockets, no database.
final class BuildCoordinatorTests: XCTestCase {
    var now = ContinuousClock.now
    var c = BuildCoordinator(config: SchedulerConfig(heartbeatInterval: .seconds(1), leaseDuration: .seconds(3), maxReassignments: 2))

    @discardableResult
    func on(_ e: BuildCoordinator.Event) -> [BuildCoordinator.Action] { c.handle(e, now: now) }

    @discardableResult
    func runner(_ e: Scheduler.Event) -> [BuildCoordinator.Action] { on(.runner(e)) }

    /// A runner registers and heartbeats, as a real one does right after its claims.
    func join(_ conn: ConnectionID, _ name: String, slots: Int = 1) {
        runner(.registered(conn, name: name, slots: slots))
        runner(.heartbeat(conn))
    }

    /// A build of jobs with these dependencies (in this order), ids 1, 2, …; `allowed` may fail.
    @discardableResult
    func create(_ build: Int64, _ jobs: [(String, [String])], allowed: Set<String> = []) -> [BuildCoordinator.Action] {
        let planned = jobs.map { PlannedJob(name: $0.0, stage: "test", dependencies: $0.1, allowFailure: allowed.contains($0.0)) }
        let (plan, queued) = BuildCoordinator.firstJobs(BuildPlan(jobs: planned))
        let specs = jobs.enumerated().map { i, j in
            JobSpec(id: Int64(i + 1), build: build, name: j.0, repo: "/r", commit: String(repeating: "a", count: 40), branch: "main",
                    job: NewJob(name: j.0, dependencies: j.1, allowFailure: allowed.contains(j.0)))
        }
        return on(.created(build: build, plan: plan, jobs: specs, queued: queued))
    }

    func assigned(_ actions: [BuildCoordinator.Action]) -> [Int64] {
        actions.compactMap { if case .send(_, .assign(let a)) = $0 { return a.job } else { return nil } }
    }

    func records(_ actions: [BuildCoordinator.Action]) -> [(Int64, JobState)] {
        actions.compactMap { if case .record(let r) = $0 { return (r.job, r.state) } else { return nil } }
    }

    func ended(_ actions: [BuildCoordinator.Action]) -> [BuildStatus] {
        actions.compactMap { if case .buildEnded(_, let s) = $0 { return s } else { return nil } }
    }

    func testCancellingABuildEndsEveryJobAndStartsNothingDownstreamEvenAfterAnAllowedFailure() {
        join(1, "a")
        // `lint` may fail and `deploy` needs it: cancelling `lint` alone would let `deploy` start.
        XCTAssertEqual(assigned(create(7, [("lint", []), ("deploy", ["lint"]), ("docs", ["deploy"])], allowed: ["lint"])), [1])
        let actions = on(.cancel(.build(7), reason: "cancelled on request"))
        XCTAssertEqual(assigned(actions), [], "nothing starts")
        XCTAssertTrue(actions.contains(.send(1, .cancel(job: 1, attempt: 1, reason: "cancelled on request"))))
        XCTAssertEqual(records(actions).map(\.0), [1, 2, 3])
        XCTAssertTrue(records(actions).allSatisfy { $0.1 == .cancelled })
        XCTAssertEqual(ended(actions), [.cancelled])
        XCTAssertFalse(c.isUnfinished(.build(7)))
        XCTAssertEqual(c.scheduler.leasedCount, 0)
        // The runner's late result is discarded, and it takes new work.
        XCTAssertEqual(runner(.result(1, job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "stopped")),
                       [.send(1, .discarded(job: 1, attempt: 1, reason: "job 1 is not active"))])
    }

    func testCancellingOnePendingJobSkipsWhatNeedsIt() {
        join(1, "a")
        create(8, [("build", []), ("test", ["build"]), ("ship", ["test"])])
        let actions = on(.cancel(.job(2), reason: "cancelled on request"))
        XCTAssertEqual(records(actions).map(\.0), [2, 3])
        XCTAssertEqual(records(actions).map(\.1), [.cancelled, .skipped])
        XCTAssertTrue(c.isUnfinished(.build(8)), "build is still running")
        XCTAssertEqual(ended(runner(.result(1, job: 1, attempt: 1, outcome: .success, exitCode: 0, reason: ""))), [.cancelled])
    }

    func testTheFinishingRunnerIsAnsweredBeforeTheNextJobIsAssigned() {
        join(1, "a")
        XCTAssertEqual(assigned(create(7, [("compile", []), ("unit", ["compile"])])), [1])
        let done = runner(.result(1, job: 1, attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        let accepted = done.firstIndex(of: .send(1, .accepted(job: 1, attempt: 1)))
        let assign = done.firstIndex { if case .send(_, .assign(let a)) = $0 { return a.job == 2 } else { return false } }
        XCTAssertNotNil(accepted)
        XCTAssertNotNil(assign)
        XCTAssertLessThan(accepted!, assign!, "\(done)")
        XCTAssertEqual(records(done).map(\.1), [.success, .queued, .assigned])
        XCTAssertEqual(c.jobName(2), "unit")
    }

    func testAFailedJobSkipsItsDependantsAndTheBuildEndsFailed() {
        join(1, "a")
        create(7, [("compile", []), ("unit", ["compile"]), ("docs", [])])
        runner(.heartbeat(1))
        let failed = runner(.result(1, job: 1, attempt: 1, outcome: .failed, exitCode: 1, reason: "exit status 1"))
        XCTAssertTrue(records(failed).contains { $0 == (2, .skipped) }, "\(failed)")
        XCTAssertEqual(ended(failed), [], "docs is still queued")
        XCTAssertEqual(assigned(failed), [3])
        let last = runner(.result(1, job: 3, attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        XCTAssertEqual(ended(last), [.failed])
        XCTAssertEqual(c.activeBuilds, 0)
        XCTAssertNil(c.jobName(3))
    }

    func testOnlyAllowedFailuresEndTheBuildPassedWithAllowedFailures() {
        join(1, "a", slots: 2)
        XCTAssertEqual(assigned(create(7, [("unit", []), ("lint", [])], allowed: ["lint"])), [1, 2])
        runner(.result(1, job: 2, attempt: 1, outcome: .failed, exitCode: 1, reason: ""))
        let last = runner(.result(1, job: 1, attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        XCTAssertEqual(ended(last), [.passedWithAllowedFailures])
    }

    func testRestoreStartsJobsWhoseDependenciesEndedWhileTheDispatcherWasDown() {
        func summary(_ id: Int64, _ name: String, _ state: JobState, _ deps: [String]) -> JobSummary {
            JobSummary(id: id, build: 7, name: name, stage: "test", status: state, allowFailure: false, dependencies: deps,
                       runner: nil, attempt: state == .pending ? 0 : 1, reassignments: 0, retriesUsed: 0)
        }
        let pending = ActiveJob(spec: JobSpec(id: 2, build: 7, name: "unit", repo: "/r", commit: String(repeating: "a", count: 40), branch: "main"),
                                state: .pending, attempt: 0, reassignments: 0, runner: nil)
        let restored = on(.restored(active: [pending], builds: [7: [summary(1, "compile", .success, []), summary(2, "unit", .pending, ["compile"])]]))
        XCTAssertTrue(records(restored).contains { $0 == (2, .queued) }, "\(restored)")
        XCTAssertEqual(c.scheduler.queuedCount, 1)
        join(1, "a")
        XCTAssertEqual(c.scheduler.leasedCount, 1)
    }

    func testCreatingTheSameBuildTwiceChangesNothing() {
        join(1, "a")
        XCTAssertEqual(assigned(create(7, [("test", [])])), [1])
        XCTAssertEqual(create(7, [("test", [])]), [])
    }
}
