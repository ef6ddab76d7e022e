import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// The core issue end to end: real `devci` processes on loopback, a real git repository and SQLite file.
final class CoreTests: HarnessTestCase {
    func testPassingAndFailingCommitsAreRecordedWithTheirLogs() throws {
        let origin = try h.makeOrigin()
        let pass = try h.commit("echo hello from the tests\necho 'warning: <b>&' >&2\nexit 0", to: origin)
        let fail = try h.commit("echo 'FAIL: test_x'\nexit 3", to: origin)
        let (_, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let good = try h.dispatch(pass, repo: origin, to: address)
        let bad = try h.dispatch(fail, repo: origin, to: address)
        XCTAssertEqual(try h.waitForFinalBuild(good.build).status, .success)
        let failed = try h.waitForFinalBuild(bad.build)
        XCTAssertEqual(failed.status, .failed)
        XCTAssertEqual(failed.reason, "exit status 3")
        let lines = try h.store().logs(job: good.job)
        XCTAssertTrue(lines.contains { $0.stream == .out && $0.text == "hello from the tests" }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.stream == .err && $0.text == "warning: <b>&" }, "\(lines)")
        XCTAssertTrue(lines.allSatisfy { $0.timestampMillis > 1_600_000_000_000 })
        XCTAssertEqual(try h.store().events(job: good.job).map(\.state), [.queued, .assigned, .running, .success])
        // The command line reads the same database.
        let report = try h.run(["report", "--db", h.dbPath, "--json"])
        XCTAssertEqual(report.status, 0)
        XCTAssertTrue(report.output.contains("\"status\" : \"failed\""), report.output)
        let status = try h.run(["status", "--dispatcher-server", address.description])
        XCTAssertTrue(status.output.contains("queued 0, running 0, runners connected 1"), status.output)
    }

    func testACommitTheRepositoryDoesNotHaveEndsAsError() throws {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let missing = String(repeating: "e", count: 40)
        let b = try h.waitForFinalBuild(try h.dispatch(missing, repo: origin, to: address).build)
        XCTAssertEqual(b.status, .error)
        XCTAssertTrue(b.reason?.contains("not in") ?? false, b.reason ?? "")
    }

    /// Starts a slow job on one of two runners and returns the build, job and the runner process running it.
    func slowJobOnOneOfTwoRunners(seconds: Int = 3) throws -> (build: Int64, job: Int64, victim: Process, victimName: String, address: HostPort) {
        let origin = try h.makeOrigin()
        let slow = try h.commit("echo \"start $DEVCI_ATTEMPT\"\nsleep \(seconds)\necho done", to: origin)
        let (_, address) = try h.startDispatcher()
        let runners = ["a": try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a"),
                       "b": try h.startRunner(try h.clone(origin, as: "clone-b"), address, name: "b")]
        try h.waitUntil("both runners register") {
            let s = try WireClient(address: address, token: nil).request(.status)
            return s == .status(queued: 0, running: 0, runners: 2)
        }
        let (build, job) = try h.dispatch(slow, repo: origin, to: address)
        var holder: String?
        try h.waitUntil("the job runs") {
            holder = try h.store().events(job: job).last(where: { $0.state == .running })?.runner
            return holder != nil
        }
        return (build, job, runners[holder!]!, holder!, address)
    }

    func testKillNineOfARunnerMidJobGivesExactlyOneResultFromTheOther() throws {
        let (build, job, victim, victimName, _) = try slowJobOnOneOfTwoRunners()
        kill(victim.processIdentifier, SIGKILL)
        let b = try h.waitForFinalBuild(build)
        XCTAssertEqual(b.status, .success)
        XCTAssertNotEqual(b.runner, victimName)
        XCTAssertEqual(b.attempts, 2)
        let events = try h.store().events(job: job)
        XCTAssertTrue(events.contains { $0.state == .queued && ($0.reason ?? "").contains("runner \(victimName)") }, "\(events)")
        XCTAssertEqual(try h.finalEvents(job: job).count, 1)
    }

    func testAStoppedRunnerLosesItsJobAndItsLateResultIsDiscarded() throws {
        let (build, job, victim, victimName, _) = try slowJobOnOneOfTwoRunners(seconds: 2)
        kill(victim.processIdentifier, SIGSTOP)
        let b = try h.waitForFinalBuild(build)
        XCTAssertEqual(b.status, .success)
        XCTAssertNotEqual(b.runner, victimName)
        kill(victim.processIdentifier, SIGCONT)
        // Woken up, it is told its lease is gone and stops or reports a result that is thrown away.
        try h.waitUntil("the stopped runner learns it lost the job") {
            let log = h.log(of: victim)
            return log.contains("cancelled by the dispatcher") || log.contains("discarded")
        }
        XCTAssertEqual(try h.finalEvents(job: job).count, 1)
        XCTAssertEqual(try h.finalEvents(job: job).first?.runner, b.runner)
    }

    func testKillNineOfTheDispatcherLosesNoJob() throws {
        let origin = try h.makeOrigin()
        var commits: [String] = []
        for i in 0..<3 { commits.append(try h.commit("echo job \(i)\nsleep 1", to: origin)) }
        let (dispatcher, address) = try h.startDispatcher()
        let runner = try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let jobs = try commits.map { try h.dispatch($0, repo: origin, to: address) }
        try h.waitUntil("the first job runs") { try h.store().events(job: jobs[0].job).contains { $0.state == .running } }
        kill(dispatcher.processIdentifier, SIGKILL)
        dispatcher.waitUntilExit()
        XCTAssertEqual(try h.store().activeJobs().count, 3, "one running, two queued, all in the database")
        let (_, again) = try h.startDispatcher(port: address.port)
        XCTAssertEqual(again, address)
        for j in jobs {
            XCTAssertEqual(try h.waitForFinalBuild(j.build).status, .success)
            XCTAssertEqual(try h.finalEvents(job: j.job).count, 1)
        }
        // The running job was taken back by its runner on reconnect, not run again.
        XCTAssertEqual(try h.build(jobs[0].build)?.attempts, 1)
        XCTAssertTrue(runner.isRunning)
    }

    func testGarbageAndOversizedLinesGetErrorsAndTheDispatcherKeepsServing() throws {
        let (dispatcher, address) = try h.startDispatcher()
        let client = try WireClient(address: address, token: nil)
        XCTAssertEqual(client.greeting, .hello(protocolVersion: 1, authRequired: false))
        try client.sendRaw(String(repeating: "x", count: 200_000))
        XCTAssertTrue(try client.readLine()?.hasPrefix("error code=too_long") ?? false)
        try client.sendBytes([0xc3, 0x28, 0x0a])
        XCTAssertTrue(try client.readLine()?.hasPrefix("error code=bad_utf8") ?? false)
        XCTAssertEqual(try client.request(.status), .status(queued: 0, running: 0, runners: 0), "the connection survives a few bad lines")
        for bad in ["frobnicate", "dispatch repo=/r commit=$(reboot) branch=main", "claim job=1"] {
            try client.sendRaw(bad)
            XCTAssertTrue(try client.readLine()?.hasPrefix("error code=") ?? false, bad)
        }
        // The fifth bad line closes the connection.
        var lines: [String] = []
        while let line = try client.readLine(timeout: 10) { lines.append(line) }
        XCTAssertTrue(lines.contains { $0.hasPrefix("error code=too_many_errors") }, "\(lines)")
        XCTAssertFalse(client.isOpen)
        XCTAssertTrue(dispatcher.isRunning)
        // Lines that arrive with a hang-up's cause are not acted on.
        let burst = try WireClient(address: address, token: nil)
        try burst.sendRaw("status\ndispatch repo=/r commit=\(String(repeating: "c", count: 40)) branch=main")
        XCTAssertEqual(try burst.readLine(), "status queued=0 running=0 runners=0")
        XCTAssertNil(try burst.readLine(timeout: 10))
        // `echo status | nc localhost 8888`: a first-line status is answered and the connection closed.
        let fresh = try WireClient(address: address, token: nil)
        XCTAssertEqual(try fresh.request(.status), .status(queued: 0, running: 0, runners: 0))
        XCTAssertNil(try fresh.readLine(timeout: 10))
    }

    func testNothingAJobStartedOutlivesItOrItsRunner() throws {
        let origin = try h.makeOrigin()
        let finishes = try h.commit("(sleep 4171; echo leaked) &\necho done", to: origin)
        let hangs = try h.commit("(sleep 4172; echo leaked) &\necho started\nsleep 4173", to: origin)
        let (_, address) = try h.startDispatcher()
        let runner = try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        XCTAssertEqual(try h.waitForFinalBuild(try h.dispatch(finishes, repo: origin, to: address).build).status, .success)
        try h.waitUntil("the finished job's background process is gone") { try !processExists(matching: "sleep 4171") }
        let job = try h.dispatch(hangs, repo: origin, to: address).job
        try h.waitUntil("the hanging job runs") { try processExists(matching: "sleep 4173") && processExists(matching: "sleep 4172") }
        kill(runner.processIdentifier, SIGKILL)
        try h.waitUntil("the killed runner's job and its background process are gone") {
            try !processExists(matching: "sleep 4172") && !processExists(matching: "sleep 4173")
        }
        XCTAssertTrue(try h.finalEvents(job: job).isEmpty, "the job waits for another runner")
    }

    func processExists(matching pattern: String) throws -> Bool {
        try !h.pids(matching: "^" + pattern).isEmpty
    }

    func testWithATokenPeersMustProveItFirst() throws {
        let (_, address) = try h.startDispatcher(extra: ["--token", "s3cret"])
        let anonymous = try WireClient(address: address, token: nil)
        XCTAssertEqual(anonymous.greeting, .hello(protocolVersion: 1, authRequired: true))
        XCTAssertEqual(try anonymous.request(.dispatch(repo: "/r", commit: String(repeating: "a", count: 40), branch: "main", pipeline: .none)),
                       .error(code: .authRequired, message: "send 'auth token=…' first"))
        XCTAssertNil(try anonymous.readLine(timeout: 5), "closed after refusing")
        XCTAssertThrowsError(try WireClient(address: address, token: "wrong"))
        XCTAssertEqual(try WireClient(address: address, token: "s3cret").request(.status), .status(queued: 0, running: 0, runners: 0))
        XCTAssertTrue(try h.store().recentBuilds(limit: 1).isEmpty, "nothing was dispatched without the token")
        let cli = try h.run(["status", "--dispatcher-server", address.description, "--token", "s3cret"])
        XCTAssertEqual(cli.status, 0, cli.output)
        let denied = try h.run(["status", "--dispatcher-server", address.description])
        XCTAssertNotEqual(denied.status, 0)
    }

    func testDispatchFromTheCommandLineIsIdempotent() throws {
        let origin = try h.makeOrigin()
        let sha = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        let first = try h.run(["dispatch", sha, "--repo", origin, "--dispatcher-server", address.description])
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.output.hasPrefix("build 1 jobs 1"), first.output)
        let second = try h.run(["dispatch", sha, "--repo", origin, "--dispatcher-server", address.description])
        XCTAssertTrue(second.output.hasPrefix("build 1 (already dispatched)"), second.output)
        let bad = try h.run(["dispatch", "HEAD", "--repo", origin, "--dispatcher-server", address.description])
        XCTAssertNotEqual(bad.status, 0)
    }

    // The core on PostgreSQL: the same tests, the same processes, the other store.

    func testPassingAndFailingCommitsAreRecordedWithTheirLogsOnPostgreSQL() throws {
        try h.usePostgres()
        try testPassingAndFailingCommitsAreRecordedWithTheirLogs()
    }

    func testKillNineOfARunnerMidJobGivesExactlyOneResultFromTheOtherOnPostgreSQL() throws {
        try h.usePostgres()
        try testKillNineOfARunnerMidJobGivesExactlyOneResultFromTheOther()
    }

    func testAStoppedRunnerLosesItsJobAndItsLateResultIsDiscardedOnPostgreSQL() throws {
        try h.usePostgres()
        try testAStoppedRunnerLosesItsJobAndItsLateResultIsDiscarded()
    }

    func testKillNineOfTheDispatcherLosesNoJobOnPostgreSQL() throws {
        try h.usePostgres()
        try testKillNineOfTheDispatcherLosesNoJob()
    }

}
