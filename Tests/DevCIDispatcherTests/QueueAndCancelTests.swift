import DevCIStore
import DevCIWire
import XCTest

@testable import DevCIDispatcher

/// Priorities, queues and cancel in the scheduler, with a fake clock.
final class QueueAndCancelTests: XCTestCase {
    let now = ContinuousClock.now
    var s = Scheduler(config: SchedulerConfig(heartbeatInterval: .seconds(1), leaseDuration: .seconds(3), maxReassignments: 2))

    func spec(_ id: Int64, priority: Int = 0, queues: [String] = [defaultQueue]) -> JobSpec {
        JobSpec(id: id, build: id, name: "test", repo: "/r", commit: String(repeating: "a", count: 40), branch: "main",
                job: NewJob(name: "test", queues: queues, priority: priority))
    }

    @discardableResult
    func on(_ e: Scheduler.Event) -> [Scheduler.Action] { s.handle(e, now: now) }

    func join(_ conn: ConnectionID, _ name: String, slots: Int = 1, queues: [String] = [defaultQueue]) -> [Scheduler.Action] {
        on(.registered(conn, name: name, slots: slots, queues: queues)) + on(.heartbeat(conn))
    }

    func assigned(_ actions: [Scheduler.Action]) -> [Int64] {
        actions.compactMap { if case .send(_, .assign(let a)) = $0 { return a.job } else { return nil } }
    }

    func testHigherPriorityFirstAndEqualPrioritiesKeepArrivalOrder() {
        on(.enqueued([spec(1), spec(2, priority: 5), spec(3), spec(4, priority: 5), spec(5, priority: -1)]))
        var order: [Int64] = []
        var actions = join(1, "a")
        for _ in 0..<5 {
            let job = assigned(actions)
            XCTAssertEqual(job.count, 1)
            order += job
            actions = on(.result(1, job: job[0], attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        }
        XCTAssertEqual(order, [2, 4, 1, 3, 5])
    }

    func testAJobTakenBackGoesFirstAmongItsPriorityOnly() {
        on(.enqueued([spec(1), spec(2), spec(3, priority: 9)]))
        XCTAssertEqual(assigned(join(1, "a")), [3])
        on(.enqueued([spec(4, priority: 9)]))
        // The runner dies: job 3 comes back first in line among priority 9, ahead of job 4, and of course of 1 and 2.
        on(.disconnected(1))
        var order: [Int64] = []
        var actions = join(2, "b")
        for _ in 0..<4 {
            let job = assigned(actions)
            order += job
            actions = on(.result(2, job: job[0], attempt: job[0] == 3 ? 2 : 1, outcome: .success, exitCode: 0, reason: ""))
        }
        XCTAssertEqual(order, [3, 4, 1, 2])
    }

    func testAJobGoesOnlyToARunnerOfOneOfItsQueuesAndNeverBlocksOthers() {
        on(.enqueued([spec(1, priority: 10, queues: ["gpu"]), spec(2), spec(3, queues: ["fast", "gpu"])]))
        XCTAssertEqual(s.waitingQueues, ["default", "fast", "gpu"])
        // A default runner takes job 2 although the gpu job is first in line.
        XCTAssertEqual(assigned(join(1, "plain", slots: 4)), [2])
        XCTAssertEqual(s.waitingQueues, ["fast", "gpu"])
        XCTAssertEqual(s.queuedCount, 2)
        // A fast runner takes job 3 (it may go to fast or gpu), not job 1.
        XCTAssertEqual(assigned(join(2, "quick", slots: 4, queues: ["fast"])), [3])
        XCTAssertEqual(s.waitingQueues, ["gpu"])
        XCTAssertEqual(assigned(join(3, "big", queues: ["gpu"])), [1])
        XCTAssertEqual(s.waitingQueues, [])
        XCTAssertEqual(s.queuedCount, 0)
    }

    func testCancelEndsAQueuedJobAtOnceAndTellsTheRunnerOfALeasedOne() {
        on(.enqueued([spec(1), spec(2)]))
        _ = join(1, "a")
        let queued = on(.cancel(job: 2, reason: "cancelled on request"))
        XCTAssertEqual(queued, [.record(JobTransition(job: 2, state: .cancelled, attempt: 0, reason: "cancelled on request"))])
        XCTAssertEqual(s.queuedCount, 0)
        let running = on(.cancel(job: 1, reason: "cancelled on request"))
        XCTAssertEqual(running, [.send(1, .cancel(job: 1, attempt: 1, reason: "cancelled on request")),
                                 .record(JobTransition(job: 1, state: .cancelled, attempt: 1, runner: "a", reason: "cancelled on request"))])
        // The runner's result after the kill is discarded: the job ended once, as cancelled.
        let late = on(.result(1, job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "stopped"))
        XCTAssertEqual(late, [.send(1, .discarded(job: 1, attempt: 1, reason: "job 1 is not active"))])
        // Its slot is free again.
        on(.enqueued([spec(3)]))
        XCTAssertEqual(s.leasedCount, 1)
        XCTAssertTrue(on(.cancel(job: 99, reason: "x")).isEmpty)
    }
}
