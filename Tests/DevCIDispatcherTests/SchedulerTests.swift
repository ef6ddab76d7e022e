import DevCIStore
import DevCIWire
import XCTest

@testable import DevCIDispatcher

/// Drives the scheduler with a fake clock: every instant is `start + offset`, no real time passes.
final class SchedulerTests: XCTestCase {
    let start = ContinuousClock.now
    var now: ContinuousClock.Instant!
    var s: Scheduler!

    override func setUp() {
        now = start
        s = Scheduler(config: SchedulerConfig(heartbeatInterval: .seconds(1), leaseDuration: .seconds(3), maxReassignments: 2))
    }

    func spec(_ id: Int64) -> JobSpec {
        JobSpec(id: id, build: id, name: "test", repo: "/r", commit: String(repeating: "a", count: 40), branch: "main")
    }

    @discardableResult
    func on(_ e: Scheduler.Event) -> [Scheduler.Action] { s.handle(e, now: now) }

    /// A runner registers and sends its first heartbeat, as a real one does right after its claims.
    @discardableResult
    func join(_ conn: ConnectionID, _ name: String) -> [Scheduler.Action] {
        on(.registered(conn, name: name, slots: 1)) + on(.heartbeat(conn))
    }

    func advance(_ d: Duration) { now = now + d }

    func assignments(_ actions: [Scheduler.Action]) -> [(conn: ConnectionID, job: Int64, attempt: Int)] {
        actions.compactMap {
            if case .send(let c, .assign(let a)) = $0 { return (c, a.job, a.attempt) }
            return nil
        }
    }

    func records(_ actions: [Scheduler.Action]) -> [JobTransition] {
        actions.compactMap {
            if case .record(let r) = $0 { return r }
            return nil
        }
    }

    func testAssignsQueuedJobToRegisteredRunnerAndRecordsEachState() {
        join(1, "a")
        let a = on(.enqueued([spec(10)]))
        XCTAssertEqual(assignments(a).map(\.job), [10])
        XCTAssertEqual(assignments(a).first?.attempt, 1)
        XCTAssertEqual(records(a).map(\.state), [.assigned])
        XCTAssertEqual(records(on(.started(1, job: 10, attempt: 1))).map(\.state), [.running])
        let done = on(.result(1, job: 10, attempt: 1, outcome: .failed, exitCode: 1, reason: "exit status 1"))
        XCTAssertEqual(records(done).map(\.state), [.failed])
        XCTAssertEqual(records(done).first?.exitCode, 1)
        XCTAssertTrue(done.contains(.send(1, .accepted(job: 10, attempt: 1))))
        XCTAssertEqual(s.leasedCount, 0)
        XCTAssertEqual(s.queuedCount, 0)
    }

    func testOneJobPerRunnerSlotAndQueueWaits() {
        join(1, "a")
        let a = on(.enqueued([spec(1), spec(2)]))
        XCTAssertEqual(assignments(a).map(\.job), [1])
        XCTAssertEqual(s.queuedCount, 1)
        let b = join(2, "b")
        XCTAssertEqual(assignments(b).map(\.job), [2])
        XCTAssertEqual(assignments(b).first?.conn, 2)
    }

    func testHeartbeatsKeepTheLease() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        for _ in 0..<20 {
            advance(.seconds(1))
            on(.heartbeat(1))
            XCTAssertTrue(records(on(.tick)).isEmpty)
        }
        XCTAssertEqual(s.leaseHolder(job: 1), "a")
    }

    func testExpiredLeaseRequeuesToAnotherRunnerAndLateResultIsDiscarded() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        join(2, "b")
        advance(.milliseconds(2900))
        on(.heartbeat(2))
        XCTAssertTrue(records(on(.tick)).isEmpty, "lease still valid")
        XCTAssertEqual(s.leasesExpired, 0)
        advance(.milliseconds(200))
        on(.heartbeat(2))
        let t = on(.tick)
        XCTAssertEqual(s.leasesExpired, 1, "counted for the metrics")
        XCTAssertEqual(s.queuedByQueue, [defaultQueue: 0].filter { $0.value > 0 }, "the job is leased again at once")
        let rs = records(t)
        XCTAssertEqual(rs.map(\.state), [.queued, .assigned])
        XCTAssertTrue(rs[0].reason?.contains("runner a stopped heartbeating") ?? false, rs[0].reason ?? "")
        XCTAssertEqual(rs[0].reassignments, 1)
        XCTAssertTrue(t.contains(.send(1, .cancel(job: 1, attempt: 1, reason: "lease expired"))))
        XCTAssertEqual(assignments(t).map { [Int64($0.conn), $0.job, Int64($0.attempt)] }, [[2, 1, 2]])
        // The hung runner wakes up and reports: its result is not recorded.
        let late = on(.result(1, job: 1, attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        XCTAssertTrue(records(late).isEmpty)
        XCTAssertTrue(late.contains { if case .send(1, .discarded(1, 1, _)) = $0 { return true } else { return false } })
        // Its log lines no longer count either.
        XCTAssertFalse(s.holdsLease(1, job: 1, attempt: 1))
        XCTAssertTrue(s.holdsLease(2, job: 1, attempt: 2))
        let ok = on(.result(2, job: 1, attempt: 2, outcome: .success, exitCode: 0, reason: ""))
        XCTAssertEqual(records(ok).map(\.state), [.success])
    }

    func testReassignmentCapEndsJobAsError() {
        join(1, "a")
        on(.enqueued([spec(1)]))  // attempt 1
        for attempt in 1...3 {
            advance(.seconds(4))  // the runner goes silent and its lease runs out
            let r = records(on(.tick))
            if attempt < 3 {
                XCTAssertEqual(r.map(\.state), [.queued])
                // It comes back, drops the attempt it was told to cancel, and is given the job again.
                XCTAssertTrue(assignments(on(.heartbeat(1))).isEmpty)
                let dropped = on(.result(1, job: 1, attempt: attempt, outcome: .cancelled, exitCode: -1, reason: "stopped on request"))
                XCTAssertEqual(assignments(dropped).map(\.attempt), [attempt + 1])
            } else {
                XCTAssertEqual(r.map(\.state), [.error])
                XCTAssertTrue(r[0].reason?.contains("giving up") ?? false, r[0].reason ?? "")
                XCTAssertEqual(r[0].reassignments, 3)
            }
        }
        XCTAssertEqual(s.queuedCount + s.leasedCount, 0)
    }

    func testSilentRunnerIsNotGivenWorkButOthersAre() {
        join(1, "a")
        join(2, "b")
        on(.enqueued([spec(1), spec(2)]))
        advance(.seconds(4))
        on(.heartbeat(2))
        let t = on(.tick)
        XCTAssertTrue(t.contains(.runnerState(name: "a", state: .lost)))
        on(.result(2, job: 2, attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        XCTAssertEqual(s.leaseHolder(job: 1), "b", "job 1 moved from the silent runner to b")
        let more = on(.enqueued([spec(3)]))
        XCTAssertTrue(assignments(more).isEmpty, "a is silent and b is busy")
        XCTAssertEqual(s.queuedCount, 1)
    }

    func testADeadRunnersWorkMovesOnTheMomentItsConnectionCloses() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        join(2, "b")
        // No time passes: the kernel closed the killed runner's socket.
        let d = on(.disconnected(1))
        XCTAssertEqual(records(d).map(\.state), [.queued, .assigned])
        XCTAssertTrue(records(d)[0].reason?.contains("runner a disconnected") ?? false, records(d)[0].reason ?? "")
        XCTAssertEqual(assignments(d).map { [Int64($0.conn), $0.job, Int64($0.attempt)] }, [[2, 1, 2]])
        XCTAssertTrue(d.contains(.runnerState(name: "a", state: .disconnected)))
    }

    func testARunnerThatWasOnlyCutOffIsToldToDropTheAttemptItClaims() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        on(.disconnected(1))
        XCTAssertEqual(s.queuedCount, 1, "requeued at once")
        on(.registered(7, name: "a", slots: 1))
        XCTAssertTrue(on(.claim(7, job: 1, attempt: 1)).contains(.send(7, .cancel(job: 1, attempt: 1, reason: "lease is no longer yours"))))
        XCTAssertTrue(assignments(on(.heartbeat(7))).isEmpty, "its slot holds the attempt it is dropping")
        let r = on(.result(7, job: 1, attempt: 1, outcome: .success, exitCode: 0, reason: ""))
        XCTAssertTrue(r.contains { if case .send(7, .discarded(1, 1, _)) = $0 { return true } else { return false } })
        XCTAssertEqual(assignments(r).map(\.attempt), [2], "the job's next attempt")
    }

    /// Issue 8: a runner restarted under its own name (as the runner manager does) gets work; the slot is held
    /// by the connection, which starts with what it claims.
    func testARunnerRestartedUnderItsOwnNameWithinTheLeaseGetsWork() {
        for gap in [Duration.milliseconds(200), .seconds(1), .milliseconds(2500)] {
            setUp()
            join(1, "a")
            on(.enqueued([spec(1)]))
            on(.disconnected(1))
            advance(gap)
            on(.tick)
            let back = join(2, "a")
            XCTAssertEqual(assignments(back).map { [Int64($0.conn), $0.job, Int64($0.attempt)] }, [[2, 1, 2]], "restart after \(gap)")
            XCTAssertTrue(back.allSatisfy { if case .send(2, .cancel) = $0 { return false } else { return true } })
            XCTAssertEqual(records(on(.result(2, job: 1, attempt: 2, outcome: .success, exitCode: 0, reason: ""))).map(\.state), [.success])
            on(.enqueued([spec(2)]))
            XCTAssertEqual(s.leaseHolder(job: 2), "a", "and keeps getting work after \(gap)")
        }
    }

    func testAHalfOpenRunnerReplacedByANewProcessHasItsUnclaimedWorkRequeuedAtTheFirstHeartbeat() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        advance(.milliseconds(3100))
        on(.tick)  // silent (frozen, or its cable cut): lost, its lease gone
        XCTAssertEqual(s.queuedCount, 1)
        // A new process under the same name takes the half-open connection's place and claims nothing.
        let r = on(.registered(2, name: "a", slots: 1))
        XCTAssertTrue(r.contains(.close(1)))
        XCTAssertEqual(assignments(on(.heartbeat(2))).map { [Int64($0.conn), $0.job] }, [[2, 1]])
    }

    func testARestartedRunnerThatClaimsNothingAfterADispatcherRestartGetsWorkAtOnce() {
        on(.restored([ActiveJob(spec: spec(1), state: .running, attempt: 1, reassignments: 0, runner: "a")]))
        on(.registered(1, name: "a", slots: 1))
        let hb = on(.heartbeat(1))
        XCTAssertEqual(records(hb).map(\.state), [.queued, .assigned], "not claimed: requeued without waiting out the lease")
        XCTAssertTrue(records(hb)[0].reason?.contains("came back without it") ?? false)
        XCTAssertEqual(assignments(hb).map(\.attempt), [2])
    }

    func testAnUnclaimedLeaseThatExpiresIsNotCountedAgainstTheNewConnection() {
        // The runner re-registers after a dispatcher restart but its first heartbeat comes only after the lease:
        // the attempt it never claimed is requeued without a cancel, and never fills the new connection's slot.
        on(.restored([ActiveJob(spec: spec(1), state: .running, attempt: 1, reassignments: 0, runner: "a")]))
        on(.registered(1, name: "a", slots: 1))
        advance(.milliseconds(3100))
        let t = on(.tick)
        XCTAssertEqual(records(t).map(\.state), [.queued])
        XCTAssertTrue(records(t)[0].reason?.contains("did not claim it") ?? false, "\(records(t))")
        XCTAssertFalse(t.contains { if case .send(_, .cancel) = $0 { return true } else { return false } }, "\(t)")
        XCTAssertEqual(assignments(on(.heartbeat(1))).map { [Int64($0.conn), $0.job, Int64($0.attempt)] }, [[1, 1, 2]])
    }

    func testARestoredLeaseLastsALeaseAndTheGraceSoAFrozenLeadersRunnerCanFindItsSuccessor() {
        s = Scheduler(config: SchedulerConfig(heartbeatInterval: .seconds(1), leaseDuration: .seconds(3), maxReassignments: 2, restoreGrace: .seconds(5)))
        on(.restored([ActiveJob(spec: spec(1), state: .running, attempt: 1, reassignments: 0, runner: "a")]))
        advance(.milliseconds(7900))
        XCTAssertEqual(records(on(.tick)), [], "still within the lease and the grace")
        on(.registered(1, name: "a", slots: 1))
        on(.claim(1, job: 1, attempt: 1))
        advance(.milliseconds(200))
        XCTAssertEqual(records(on(.heartbeat(1))), [], "claimed back: the same attempt goes on")
        advance(.milliseconds(3100))
        XCTAssertEqual(records(on(.tick)).map(\.state), [.queued], "a renewed lease is an ordinary lease again")
    }

    func testARefusedRegisterTakesNoNameOver() {
        join(1, "r1")
        join(2, "r2")
        advance(.milliseconds(3100))
        on(.heartbeat(2))
        on(.tick)  // r1 is lost
        let r = on(.registered(2, name: "r1", slots: 1))
        XCTAssertTrue(r.contains(.send(2, .error(code: .alreadyRegistered, message: "this connection is runner r2"))), "\(r)")
        XCTAssertFalse(r.contains(.close(1)), "r1's connection stays r1's")
        XCTAssertEqual(s.runnerName(1), "r1")
    }

    func testARunnerFromBeforeGiveBackStillDrainsWhenItSaysItIsShuttingDown() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        let r = on(.result(1, job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "runner shutting down"))
        XCTAssertTrue(assignments(r).isEmpty, "an old runner shutting down is not given the job straight back")
    }

    func testRestoreAfterDispatcherRestart() {
        let active = [
            ActiveJob(spec: spec(1), state: .running, attempt: 2, reassignments: 1, runner: "a"),
            ActiveJob(spec: spec(2), state: .queued, attempt: 0, reassignments: 0, runner: nil),
            ActiveJob(spec: spec(3), state: .assigned, attempt: 1, reassignments: 0, runner: "gone"),
        ]
        on(.restored(active))
        XCTAssertEqual(s.queuedCount, 1)
        XCTAssertEqual(s.leasedCount, 2)
        // Runner a comes back and claims its attempt; a new runner b takes the queued job.
        on(.registered(1, name: "a", slots: 1))
        XCTAssertTrue(on(.claim(1, job: 1, attempt: 2)).contains(.send(1, .ok(what: "claim"))))
        let b = join(2, "b")
        XCTAssertEqual(assignments(b).map(\.job), [2])
        // Runner "gone" never returns: its job goes back to the queue after one lease.
        advance(.seconds(3))
        on(.heartbeat(1))
        on(.heartbeat(2))
        let t = records(on(.tick))
        XCTAssertEqual(t.first?.job, 3)
        XCTAssertEqual(t.first?.state, .queued)
        XCTAssertEqual(s.leaseHolder(job: 1), "a")
        // A wrong attempt is told to stop.
        XCTAssertTrue(on(.claim(1, job: 3, attempt: 1)).contains(.send(1, .cancel(job: 3, attempt: 1, reason: "lease is no longer yours"))))
    }

    func testRunnerGivingBackAJobRequeuesItAtOnce() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        let r = records(on(.result(1, job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "runner shutting down", giveBack: .shutdown)))
        XCTAssertEqual(r.map(\.state), [.queued])
        XCTAssertEqual(s.queuedCount, 1)
        XCTAssertEqual(assignments(join(2, "b")).map(\.attempt), [2])
    }

    func testDuplicateRunnerNameIsRefused() {
        on(.registered(1, name: "a", slots: 1))
        let r = on(.registered(2, name: "a", slots: 1))
        XCTAssertTrue(r.contains { if case .send(2, .error(.nameInUse, _)) = $0 { return true } else { return false } })
        XCTAssertNil(s.runnerName(2))
    }

    func testRunnerThatLostItsLeaseWhileAwayGetsNoWorkUntilItDropsTheOldAttempt() {
        join(1, "a")
        on(.enqueued([spec(1)]))
        on(.disconnected(1))
        XCTAssertEqual(s.queuedCount, 1, "job 1 is queued again at once")
        // It reconnects still running attempt 1: told to cancel, and offered nothing meanwhile.
        XCTAssertTrue(assignments(on(.registered(2, name: "a", slots: 1))).isEmpty, "no work before its claims are in")
        XCTAssertTrue(on(.claim(2, job: 1, attempt: 1)).contains(.send(2, .cancel(job: 1, attempt: 1, reason: "lease is no longer yours"))))
        XCTAssertTrue(assignments(on(.heartbeat(2))).isEmpty, "its one slot is still taken by the dropped attempt")
        let r = on(.result(2, job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "stopped on request"))
        XCTAssertTrue(r.contains { if case .send(2, .discarded(1, 1, _)) = $0 { return true } else { return false } })
        XCTAssertEqual(records(r).map(\.state), [.assigned], "the dropped attempt records nothing")
        XCTAssertEqual(assignments(r).map(\.attempt), [2], "free again, it takes the job's next attempt")
    }

    func testAFailedAttemptWithRetriesLeftIsQueuedAgainAfterItsDelay() {
        join(1, "a")
        var flaky = spec(1)
        flaky.job.retries = 1
        flaky.job.retryDelaySeconds = 5
        on(.enqueued([flaky]))
        let failed = on(.result(1, job: 1, attempt: 1, outcome: .failed, exitCode: 1, reason: "exit status 1"))
        XCTAssertEqual(records(failed).map(\.state), [.queued])
        XCTAssertEqual(records(failed).first?.retriesUsed, 1)
        XCTAssertTrue(records(failed).first?.reason?.contains("retry 1 of 1") ?? false)
        XCTAssertTrue(assignments(failed).isEmpty, "not before the delay")
        advance(.seconds(4))
        on(.heartbeat(1))
        XCTAssertTrue(assignments(on(.tick)).isEmpty)
        advance(.seconds(1))
        on(.heartbeat(1))
        XCTAssertEqual(assignments(on(.tick)).map(\.attempt), [2])
        let second = on(.result(1, job: 1, attempt: 2, outcome: .timedOut, exitCode: 137, reason: "timed out"))
        XCTAssertEqual(records(second).map(\.state), [.timedOut], "no retries left: the attempt's outcome is final")
    }

    func testASilentRunnersNameIsTakenOverByItsReconnection() {
        join(1, "a")
        advance(.seconds(4))
        on(.tick)  // a is lost, its connection half-open
        let r = on(.registered(2, name: "a", slots: 1))
        XCTAssertTrue(r.contains(.close(1)))
        XCTAssertEqual(s.runnerName(2), "a")
        XCTAssertNil(s.runnerName(1))
    }

    func testARunnerBusyWithAnOldAttemptIsNotGivenTheJobAgainNorDrained() {
        // Two slots: attempt 1 is lost while the runner is away, and must not come straight back to it.
        on(.registered(1, name: "a", slots: 2))
        on(.heartbeat(1))
        on(.enqueued([spec(1)]))
        advance(.seconds(4))
        on(.tick)
        XCTAssertTrue(assignments(on(.heartbeat(1))).isEmpty, "back, a still runs attempt 1: job 1 waits for another runner")
        join(2, "b")
        XCTAssertEqual(s.leaseHolder(job: 1), "b")
        // A refusal that is not a shutdown does not drain the runner.
        on(.enqueued([spec(2)]))
        XCTAssertEqual(s.leaseHolder(job: 2), "a")
        let refused = on(.result(1, job: 2, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "runner busy", giveBack: .busy))
        XCTAssertEqual(assignments(refused).map(\.attempt), [2], "a busy refusal leaves the runner in service")
        let down = on(.result(1, job: 2, attempt: 2, outcome: .cancelled, exitCode: -1, reason: "runner shutting down", giveBack: .shutdown))
        XCTAssertTrue(assignments(down).isEmpty, "one shutting down gets nothing more")
    }

    func testEnqueueingTheSameJobTwiceQueuesItOnce() {
        on(.enqueued([spec(1)]))
        on(.enqueued([spec(1)]))
        XCTAssertEqual(s.queuedCount, 1)
    }
}
