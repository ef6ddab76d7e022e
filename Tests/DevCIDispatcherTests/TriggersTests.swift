import DevCIPipeline
import DevCIStore
import DevCIWire
import XCTest

@testable import DevCIDispatcher

/// The trigger logic with a fake wall clock: periods (across a restart), debounce, one run at a time,
/// pushes and upstream tasks.
final class TriggersTests: XCTestCase {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func config(_ yaml: String) throws -> ServerConfig { try ServerConfigParser.parse([("t.yml", yaml)]) }

    func runs(_ actions: [Triggers.Action]) -> [Triggers.Run] {
        actions.compactMap { if case .run(let r) = $0 { return r } else { return nil } }
    }

    func skips(_ actions: [Triggers.Action]) -> [String] {
        actions.compactMap { if case .skip(_, let why) = $0 { return why } else { return nil } }
    }

    func testAPeriodRunsFromTheLastScheduledStartAndARestartCatchesUpOnceOnly() throws {
        var t = Triggers()
        _ = t.handle(.configured(try config("tasks:\n  nightly:\n    command: make\n    period: 1h\n")), now: t0)
        // First seen: the clock starts, nothing runs.
        XCTAssertEqual(t.handle(.tick, now: t0), [.scheduled(task: "nightly", at: t0)])
        XCTAssertEqual(t.handle(.tick, now: t0 + 3599), [])
        let first = t.handle(.tick, now: t0 + 3600.5)
        XCTAssertEqual(runs(first).map(\.scheduledAt), [t0 + 3600])
        XCTAssertEqual(runs(first).first?.cause, .period)
        _ = t.handle(.runCreated(runs(first)[0], build: 1), now: t0 + 3601)
        _ = t.handle(.buildEnded(1, .success), now: t0 + 3700)

        // The dispatcher was down for ten hours: after a restart one run catches up, at the latest boundary.
        var restarted = Triggers()
        _ = restarted.handle(.configured(t.config), now: t0)
        _ = restarted.handle(.restored(schedule: ["nightly": t0 + 3600], runs: []), now: t0)
        let catchUp = restarted.handle(.tick, now: t0 + 3600 * 11 + 20)
        XCTAssertEqual(runs(catchUp).count, 1)
        XCTAssertEqual(runs(catchUp).first?.scheduledAt, t0 + 3600 * 11)
        XCTAssertTrue(catchUp.contains(.scheduled(task: "nightly", at: t0 + 3600 * 11)))
        _ = restarted.handle(.runCreated(runs(catchUp)[0], build: 2), now: t0 + 3600 * 11 + 20)
        _ = restarted.handle(.buildEnded(2, .success), now: t0 + 3600 * 11 + 60)
        XCTAssertEqual(runs(restarted.handle(.tick, now: t0 + 3600 * 11 + 100)), [])
        XCTAssertEqual(runs(restarted.handle(.tick, now: t0 + 3600 * 12)).map(\.scheduledAt), [t0 + 3600 * 12])
    }

    func testOneRunAtATimeSkipsWithTheReasonAndDebounceExtendsTheWindow() throws {
        var t = Triggers()
        _ = t.handle(.configured(try config("tasks:\n  a:\n    command: x\n  d:\n    command: y\n    debounce: 1m\n")), now: t0)
        let first = runs(t.handle(.hook(task: "a"), now: t0))
        XCTAssertEqual(first.count, 1)
        // While it is being stored, and while it is active, a second is skipped.
        XCTAssertEqual(skips(t.handle(.hook(task: "a"), now: t0 + 1)), ["skipped: another run of task 'a' is being queued"])
        _ = t.handle(.runCreated(first[0], build: 7), now: t0 + 1)
        XCTAssertEqual(skips(t.handle(.hook(task: "a"), now: t0 + 2)), ["skipped: run in build 7 of task 'a' is still queued or running"])
        _ = t.handle(.buildEnded(7, .failed), now: t0 + 3)
        XCTAssertEqual(runs(t.handle(.hook(task: "a"), now: t0 + 4)).count, 1, "without debounce, the next may start at once")

        let d = runs(t.handle(.hook(task: "d"), now: t0))
        _ = t.handle(.runCreated(d[0], build: 8), now: t0)
        _ = t.handle(.buildEnded(8, .success), now: t0 + 5)
        XCTAssertEqual(skips(t.handle(.hook(task: "d"), now: t0 + 30)), ["skipped: debounce 60s: the last run started 30s ago"])
        XCTAssertEqual(runs(t.handle(.hook(task: "d"), now: t0 + 61)).count, 1)
        XCTAssertEqual(t.handle(.hook(task: "nope"), now: t0), [])
    }

    func testEveryPushedCommitRunsEvenWhileAnotherRunIsActive() throws {
        var t = Triggers()
        _ = t.handle(.configured(try config("""
            tasks:
              ci:
                command: make test
                triggered_by: [{repository: "https://github.com/o/r.git", branches: [main]}]
            """)), now: t0)
        let commits = [PushedCommit(id: String(repeating: "1", count: 40), title: "one"), PushedCommit(id: String(repeating: "2", count: 40), title: "two")]
        let pushed = runs(t.handle(.push(repositories: ["https://github.com/o/r", "git@github.com:o/r.git"], branch: "main", commits: commits), now: t0))
        XCTAssertEqual(pushed.map(\.commit), commits.map(\.id))
        XCTAssertEqual(pushed.map(\.repo), ["https://github.com/o/r.git", "https://github.com/o/r.git"], "the address the task names")
        XCTAssertEqual(pushed.map(\.cause), [.push, .push])
        XCTAssertEqual(runs(t.handle(.push(repositories: ["https://github.com/o/r"], branch: "dev", commits: commits), now: t0)), [])
        XCTAssertEqual(runs(t.handle(.push(repositories: ["https://github.com/o/other"], branch: "main", commits: commits), now: t0)), [])
    }

    func testASuccessfulRunStartsItsDownstreamTasksWithTheAncestorAndAFailureDoesNot() throws {
        var t = Triggers()
        _ = t.handle(.configured(try config("""
            tasks:
              test: {command: make test}
              deploy: {command: make deploy, triggered_by: [{task: test}]}
              announce: {command: echo, triggered_by: [{task: deploy}], enabled: false}
            """)), now: t0)
        let run = runs(t.handle(.hook(task: "test"), now: t0))[0]
        _ = t.handle(.runCreated(run, build: 3), now: t0)
        XCTAssertEqual(runs(t.handle(.buildEnded(3, .failed), now: t0 + 1)), [])
        let again = runs(t.handle(.hook(task: "test"), now: t0 + 2))[0]
        _ = t.handle(.runCreated(again, build: 4), now: t0 + 2)
        let downstream = runs(t.handle(.buildEnded(4, .passedWithAllowedFailures), now: t0 + 3))
        XCTAssertEqual(downstream.map(\.task), ["deploy"])
        XCTAssertEqual(downstream.first?.upstream, 4)
        XCTAssertEqual(downstream.first?.cause, .upstream)
        _ = t.handle(.runCreated(downstream[0], build: 5), now: t0 + 3)
        XCTAssertEqual(runs(t.handle(.buildEnded(5, .success), now: t0 + 4)), [], "a disabled task never runs")
        // A reload that drops the downstream task while an upstream run is active: the run ends cleanly and
        // starts nothing; the dropped task can no longer be triggered.
        let third = runs(t.handle(.hook(task: "test"), now: t0 + 5))[0]
        _ = t.handle(.runCreated(third, build: 6), now: t0 + 5)
        _ = t.handle(.configured(try config("tasks:\n  test: {command: make test}\n")), now: t0 + 6)
        XCTAssertEqual(t.handle(.buildEnded(6, .success), now: t0 + 7), [])
        XCTAssertEqual(t.handle(.hook(task: "deploy"), now: t0 + 8), [])
        XCTAssertEqual(runs(t.handle(.hook(task: "test"), now: t0 + 9)).count, 1, "the ended run is no longer active")
    }

    func testARunActiveAcrossARestartStillStartsItsDownstreamTaskAtItsCommit() throws {
        var t = Triggers()
        _ = t.handle(.configured(try config("""
            tasks:
              test: {command: make test, triggered_by: [{repository: /srv/r}]}
              deploy: {command: make deploy, triggered_by: [{task: test}]}
            """)), now: t0)
        let commit = String(repeating: "d", count: 40)
        let stored = NewRun(task: "test", cause: .push, repo: "/srv/r", branch: "main", commit: commit, scheduledAt: t0, title: "fix")
        _ = t.handle(.restored(schedule: [:], runs: [TaskRun(build: 9, task: "test", active: true, startedAt: t0, run: stored)]), now: t0 + 1)
        XCTAssertEqual(skips(t.handle(.hook(task: "test"), now: t0 + 2)).count, 1, "the restored run is active")
        let downstream = runs(t.handle(.buildEnded(9, .success), now: t0 + 3))
        XCTAssertEqual(downstream.map(\.task), ["deploy"])
        XCTAssertEqual(downstream.first?.upstream, 9)
        XCTAssertEqual(downstream.first?.commit, commit)
        XCTAssertEqual(downstream.first?.repo, "/srv/r")
    }

    func testDebounceCountsFromWhenTheLastRunStartedRunning() throws {
        var t = Triggers()
        _ = t.handle(.configured(try config("tasks:\n  d: {command: y, debounce: 1m}\n")), now: t0)
        let run = runs(t.handle(.hook(task: "d"), now: t0))[0]
        _ = t.handle(.runCreated(run, build: 1), now: t0)
        // It waited in the queue for five minutes, then ran for ten seconds.
        _ = t.handle(.buildStarted(1), now: t0 + 300)
        _ = t.handle(.buildEnded(1, .success), now: t0 + 310)
        XCTAssertEqual(skips(t.handle(.hook(task: "d"), now: t0 + 330)), ["skipped: debounce 60s: the last run started 30s ago"])
        XCTAssertEqual(runs(t.handle(.hook(task: "d"), now: t0 + 361)).count, 1)
    }
}
