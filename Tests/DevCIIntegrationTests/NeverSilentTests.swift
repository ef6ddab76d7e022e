import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 8: the ways DevCI could stop building silently, or say it worked when it did not — each with real
/// processes on loopback, a real SQLite file and real git repositories.
final class NeverSilentTests: HarnessTestCase {
    func status(_ address: HostPort) throws -> ServerMessage {
        let client = try WireClient(address: address, token: nil)
        defer { client.close() }
        return try client.request(.status)
    }

    /// A job that sleeps on its first attempt (until its marker exists) and passes at once on the next.
    func slowOnceCommit(_ origin: String, _ tag: String) throws -> String {
        let marker = marker(tag)
        return try h.commit("echo \"attempt $DEVCI_ATTEMPT\"\nif [ ! -f \(marker) ]; then touch \(marker); sleep 60; fi\necho done \(tag)", to: origin,
                            message: "slow once \(tag)")
    }

    func marker(_ tag: String) -> String { h.dir.appendingPathComponent("marker-\(tag)").path }

    /// Waits until the first attempt of a `slowOnceCommit` job is in its sleep: killing its runner earlier would
    /// leave the next attempt without the marker, sleeping too.
    func waitUntilSleeping(_ tag: String) throws {
        try h.waitUntil("attempt 1 sleeps") { FileManager.default.fileExists(atPath: marker(tag)) }
    }

    // MARK: 1. A runner restarted under its own name gets work

    func testARunnerRestartedUnderItsOwnNameWithinTheLeaseGetsWork() throws {
        let origin = try h.makeOrigin()
        let clone = try h.clone(origin, as: "clone-r1")
        // The default lease (3 s): every restart below comes within it.
        let (_, address) = try h.startDispatcher(extra: ["--heartbeat", "1s", "--lease", "3s"])
        var runner = try h.startRunner(clone, address, name: "r1")
        for (i, gap) in [0.2, 1.0, 2.5].enumerated() {
            let commit = try slowOnceCommit(origin, "gap\(i)")
            let (build, job) = try h.dispatch(commit, repo: origin, to: address)
            try h.waitUntil("attempt 1 runs") { try h.store().events(job: job).contains { $0.state == .running } }
            try waitUntilSleeping("gap\(i)")
            kill(runner.processIdentifier, SIGKILL)
            runner.waitUntilExit()
            let killed = Date()
            try h.waitUntil("\(gap) s pass", timeout: 10) { Date().timeIntervalSince(killed) >= gap }
            runner = try h.startRunner(clone, address, name: "r1")
            let b = try h.waitForFinalBuild(build, timeout: 20)
            XCTAssertEqual(b.status, .success, "restart \(gap) s after kill -9")
            XCTAssertEqual(b.runner, "r1")
            XCTAssertEqual(try h.finalEvents(job: job).count, 1)
        }
        // And it keeps taking work: one connected runner, nothing stuck in the queue.
        let quick = try h.commit("echo quick", to: origin)
        XCTAssertEqual(try h.waitForFinalBuild(try h.dispatch(quick, repo: origin, to: address).build).status, .success)
        XCTAssertEqual(try status(address), .status(queued: 0, running: 0, runners: 1))
    }

    func testAJobThatKillsItsOwnRunnerUnderTheManagerDoesNotWedgeTheBuild() throws {
        // The job's process group is its leader's, whose parent is the runner: the first attempt kills the runner with -9.
        // The manager restarts it under the same name after its backoff; the job must run again and pass, and
        // the restarted runner must keep taking work.
        let origin = try h.makeOrigin()
        let marker = h.dir.appendingPathComponent("killed-once").path
        let commit = try h.commit("""
            if [ ! -f \(marker) ]; then
              touch \(marker)
              leader=$(cut -d' ' -f5 /proc/$$/stat)
              runner=$(cut -d' ' -f4 /proc/$leader/stat)
              echo "killing runner $runner"; kill -9 "$runner"; sleep 30
            fi
            echo survived
            """, to: origin)
        let (_, address) = try h.startDispatcher(extra: ["--heartbeat", "1s", "--lease", "30s"])
        _ = try h.startManager(try h.clone(origin, as: "clone-m"), address, count: 1)
        let (build, job) = try h.dispatch(commit, repo: origin, to: address)
        let b = try h.waitForFinalBuild(build, timeout: 20)
        let events = try h.store().events(job: job)
        XCTAssertEqual(b.status, .success, "\(events)")
        XCTAssertTrue(try h.store().events(job: job).contains { ($0.reason ?? "").contains("disconnected") }, "requeued when its runner died")
        let next = try h.commit("echo next", to: origin)
        XCTAssertEqual(try h.waitForFinalBuild(try h.dispatch(next, repo: origin, to: address).build, timeout: 20).status, .success)
    }

    // MARK: 2. A dead runner's work moves on at once

    func testKillNineOfABusyRunnerMovesItsJobToAnIdleRunnerWithoutWaitingOutTheLease() throws {
        let origin = try h.makeOrigin()
        let commit = try slowOnceCommit(origin, "kill")
        // A lease far longer than the test's deadline: only the closed connection can move the job in time.
        let (_, address) = try h.startDispatcher(extra: ["--heartbeat", "1s", "--lease", "60s"])
        let a = try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        try h.waitUntil("a registers") { try status(address) == .status(queued: 0, running: 0, runners: 1) }
        let (build, job) = try h.dispatch(commit, repo: origin, to: address)
        try h.waitUntil("a runs the job") { try h.store().events(job: job).contains { $0.state == .running } }
        try waitUntilSleeping("kill")
        try h.startRunner(try h.clone(origin, as: "clone-b"), address, name: "b")
        try h.waitUntil("b registers") { try status(address) == .status(queued: 0, running: 1, runners: 2) }
        kill(a.processIdentifier, SIGKILL)
        let b = try h.waitForFinalBuild(build, timeout: 15)
        XCTAssertEqual(b.status, .success)
        XCTAssertEqual(b.runner, "b")
        let requeue = try h.store().events(job: job).first { $0.state == .queued && $0.reason != nil }
        XCTAssertTrue(requeue?.reason?.contains("runner a disconnected") ?? false, "\(String(describing: requeue))")
    }

    func testAGracefulDispatcherRestartLeavesRunnersTheirJobs() throws {
        // The dispatcher closing its own connections on SIGTERM is not a runner dying: nothing is requeued.
        let origin = try h.makeOrigin()
        let commit = try h.commit("echo start\nsleep 2\necho done", to: origin)
        let (dispatcher, address) = try h.startDispatcher(extra: ["--heartbeat", "1s", "--lease", "3s"])
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let (build, job) = try h.dispatch(commit, repo: origin, to: address)
        try h.waitUntil("the job runs") { try h.store().events(job: job).contains { $0.state == .running } }
        kill(dispatcher.processIdentifier, SIGTERM)
        dispatcher.waitUntilExit()
        XCTAssertEqual(dispatcher.terminationStatus, 0)
        _ = try h.startDispatcher(port: address.port, extra: ["--heartbeat", "1s", "--lease", "3s"])
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .success)
        let events = try h.store().events(job: job)
        XCTAssertEqual(events.map(\.state), [.queued, .assigned, .running, .success], "\(events)")
    }

    // MARK: 3. Failure exits non-zero

    func testCommandsExitNonZeroOnFailureAndAManualDispatchNeverMovesTheMarkBackwards() throws {
        let down = try h.run(["status", "--dispatcher-server", "127.0.0.1:1"])
        XCTAssertNotEqual(down.status, 0, down.output)
        XCTAssertTrue(down.output.contains("cannot talk to the dispatcher") && down.output.contains("connection refused"), down.output)
        let sha = String(repeating: "a", count: 40)
        let undispatched = try h.run(["dispatch", sha, "--repo", "127.0.0.1:1", "--dispatcher-server", "127.0.0.1:1"])
        XCTAssertNotEqual(undispatched.status, 0, undispatched.output)

        let origin = try h.makeOrigin()
        let old = try h.commit("echo old", to: origin)
        let new = try h.commit("echo new", to: origin)
        let (_, address) = try h.startDispatcher()
        let missing = try h.run(["dispatch", new, "--repo", "/no/such/path", "--dispatcher-server", address.description])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.output.contains("/no/such/path"), missing.output)
        XCTAssertTrue(try h.builds().isEmpty, "nothing was dispatched")

        func mark() throws -> String? { try h.store().lastDispatched(repo: origin, branch: "main") }
        XCTAssertEqual(try h.run(["dispatch", new, "--repo", origin, "--dispatcher-server", address.description]).status, 0)
        XCTAssertEqual(try mark(), new)
        let manualOld = try h.run(["dispatch", old, "--repo", origin, "--dispatcher-server", address.description])
        XCTAssertEqual(manualOld.status, 0, manualOld.output)
        XCTAssertEqual(try mark(), new, "a manual dispatch of an older commit leaves the observer's mark")
        let newer = try h.commit("echo newer", to: origin)
        XCTAssertEqual(try h.run(["dispatch", newer, "--repo", origin, "--dispatcher-server", address.description]).status, 0)
        XCTAssertEqual(try mark(), newer, "a newer one moves it forward")
        XCTAssertEqual(try h.builds().count, 3)
    }

    func testVersionAndEachSubcommandsOwnUsageOnArgumentErrors() throws {
        let version = try h.run(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertTrue(version.output.contains("protocol \(WireLimits.protocolVersion)"), version.output)
        let badDispatch = try h.run(["dispatch", "HEAD", "--repo", "."])
        XCTAssertNotEqual(badDispatch.status, 0)
        XCTAssertTrue(badDispatch.output.contains("Usage: devci dispatch"), badDispatch.output)
        let badLease = try h.run(["dispatcher", "--lease", "1s", "--heartbeat", "2s", "--db", h.dbPath])
        XCTAssertNotEqual(badLease.status, 0)
        XCTAssertTrue(badLease.output.contains("Usage: devci dispatcher"), badLease.output)
    }

    // MARK: 4. The token never reaches a job

    func testAJobCannotReadTheTokenFromAnyProcess() throws {
        let secret = "s3cret-\(UUID().uuidString)"
        let canary = "canary-\(UUID().uuidString)"
        let origin = try h.makeOrigin()
        // Every process's environment and command line the job can see, searched for the token; the canary
        // proves the search reads the runner's own environment.
        let commit = try h.commit("""
            hits=0; canaries=0
            for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
              if tr '\\0' '\\n' < "$f" 2>/dev/null | grep -q "\(secret)"; then hits=$((hits+1)); echo "found in $f"; fi
              if tr '\\0' '\\n' < "$f" 2>/dev/null | grep -q "\(canary)"; then canaries=$((canaries+1)); fi
            done
            echo "token seen $hits time(s), canary $canaries time(s)"
            env | grep -c DEVCI_TOKEN || true
            """, to: origin)
        let (_, address) = try h.startDispatcher(extra: ["--token", secret])
        try h.spawn("runner-a", ["runner", try h.clone(origin, as: "clone-a"), "--dispatcher-server", address.description, "--name", "a",
                                 "--test-command", "sh ci.sh"],
                    environment: ["DEVCI_TOKEN": secret, "DEVCI_CANARY": canary])
        let client = try WireClient(address: address, token: secret)
        guard case .queued(let build, let jobs, _) = try client.request(.dispatch(repo: origin, commit: commit, branch: "main", pipeline: .none)) else {
            return XCTFail("dispatch refused")
        }
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .success)
        let text = try h.store().logs(job: jobs[0]).map(\.text)
        XCTAssertTrue(text.contains { $0.hasPrefix("token seen 0 time(s), canary ") && !$0.hasSuffix("canary 0 time(s)") }, "\(text)")
        XCTAssertTrue(text.contains("0"), "no DEVCI_TOKEN in the job's environment: \(text)")
    }

    // MARK: 5. The database cannot vanish quietly

    func testADeletedDatabaseStopsTheDispatcherWithAClearError() throws {
        let (dispatcher, address) = try h.startDispatcher()
        try FileManager.default.removeItem(atPath: h.dbPath)
        try h.waitUntil("the dispatcher stops", timeout: 10) { !dispatcher.isRunning }
        XCTAssertNotEqual(dispatcher.terminationStatus, 0)
        XCTAssertTrue(h.log(of: dispatcher).contains("was deleted"), h.log(of: dispatcher))
        XCTAssertThrowsError(try WireClient(address: address, token: nil, timeout: 2), "nothing listens any more")
    }

    func testASecondDispatcherOnTheSameDatabaseRefusesToStartNamingTheFirst() throws {
        let (first, address) = try h.startDispatcher()
        let second = try h.run(["dispatcher", "--port", "0", "--db", h.dbPath])
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.output.contains("another dispatcher") && second.output.contains("pid \(first.processIdentifier)")
                      && second.output.contains(address.description), second.output)
        // The same file through a symbolic link is the same database.
        let link = h.dir.appendingPathComponent("link.sqlite").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: h.dbPath)
        let viaLink = try h.run(["dispatcher", "--port", "0", "--db", link])
        XCTAssertNotEqual(viaLink.status, 0)
        XCTAssertTrue(viaLink.output.contains("another dispatcher"), viaLink.output)
        XCTAssertTrue(first.isRunning)
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        // Its lock went with it: a new one starts.
        _ = try h.startDispatcher()
    }

    func testADatabaseAddressOrAReadOnlyDatabaseIsRefusedAtStart() throws {
        let cwd = h.dir.appendingPathComponent("cwd").path
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        // A PostgreSQL address nobody answers at: said at once, with the address (and never its password).
        let nobody = "postgres://ci:s3cret@127.0.0.1:\(try h.freeLoopbackPort())/ci"
        let pg = try h.run(["dispatcher", "--port", "0", "--db", nobody])
        XCTAssertNotEqual(pg.status, 0)
        XCTAssertTrue(pg.output.contains("cannot connect to postgres://ci@127.0.0.1:"), pg.output)
        XCTAssertFalse(pg.output.contains("s3cret"), pg.output)
        let other = try h.run(["dispatcher", "--port", "0", "--db", "mysql://ci@localhost/ci"])
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.output.contains("not 'mysql://'"), other.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "postgres:") || FileManager.default.fileExists(atPath: "mysql:"), "no folder called postgres: is made")

        // A database this user may read but not write. Root writes anything, so as root the dispatcher runs as nobody.
        let (made, _) = try h.startDispatcher()
        kill(made.processIdentifier, SIGTERM)
        made.waitUntilExit()
        let readOnly: (status: Int32, output: String)
        if getuid() == 0 {
            try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: h.dir.path)
            for file in try FileManager.default.contentsOfDirectory(atPath: h.dir.path) where file.hasPrefix("devci.sqlite") {
                try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: h.dir.appendingPathComponent(file).path)
            }
            // The lock file may be written by anyone: the refusal must come from the database itself.
            try FileManager.default.setAttributes([.posixPermissions: 0o666], ofItemAtPath: h.dbPath + ".lock")
            let p = try h.spawnAs(uid: 65534, "dispatcher-ro", ["dispatcher", "--port", "0", "--db", h.dbPath])
            p.waitUntilExit()
            readOnly = (p.terminationStatus, h.log(of: p))
        } else {
            try FileManager.default.setAttributes([.posixPermissions: 0o444], ofItemAtPath: h.dbPath)
            readOnly = try h.run(["dispatcher", "--port", "0", "--db", h.dbPath])
        }
        XCTAssertNotEqual(readOnly.status, 0, readOnly.output)
        XCTAssertTrue(readOnly.output.contains("cannot") && readOnly.output.contains(h.dbPath), readOnly.output)
        XCTAssertFalse(readOnly.output.contains("listening on"), readOnly.output)
    }

    func testALockedDatabaseNeverStallsHeartbeatsAndDispatchWaitsItOut() throws {
        let origin = try h.makeOrigin()
        let quick = try h.commit("echo quick", to: origin)
        let (dispatcher, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        try h.waitUntil("a registers") { try status(address) == .status(queued: 0, running: 0, runners: 1) }
        // Another process holds the database's write lock for longer than two leases (1.5 s each).
        let locker = Process()
        locker.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        locker.arguments = ["python3", "-c", """
            import sqlite3, sys, time
            c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
            c.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            time.sleep(4)
            c.execute("COMMIT")
            """, h.dbPath]
        let out = Pipe()
        locker.standardOutput = out
        try locker.run()
        XCTAssertTrue(String(decoding: out.fileHandleForReading.availableData, as: UTF8.self).hasPrefix("locked"))
        let dispatch = try h.spawn("cli", ["dispatch", quick, "--repo", origin, "--dispatcher-server", address.description])
        // While the lock is held, the dispatcher keeps answering and the runner keeps its place.
        XCTAssertEqual(try status(address), .status(queued: 0, running: 0, runners: 1))
        locker.waitUntilExit()
        dispatch.waitUntilExit()
        XCTAssertEqual(dispatch.terminationStatus, 0, h.log(of: dispatch))
        let build = try XCTUnwrap(h.builds().first)
        XCTAssertEqual(try h.waitForFinalBuild(build.id).status, .success)
        XCTAssertFalse(h.log(of: dispatcher).contains("runner a lost"), h.log(of: dispatcher))
        XCTAssertTrue(h.log(of: dispatcher).contains("locked by another process"), h.log(of: dispatcher))
        XCTAssertEqual(try status(address), .status(queued: 0, running: 0, runners: 1))
    }

    // MARK: 6 and 7. A herd gets in; idle connections are bounded

    func testAHerdOfRunnersAllRegister() throws {
        let (_, address) = try h.startDispatcher()
        let herd = try h.runScript("bench/herd.py", ["--port", String(address.port), "--runners", "3000", "--timeout", "60"])
        XCTAssertEqual(herd.status, 0, herd.output)
        XCTAssertTrue(herd.output.contains("registered 3000 of 3000"), herd.output)
    }

    func testARunnerThatIsNeverRegisteredReconnects() throws {
        // A peer that accepts and never says a word: the runner gives up on it and dials again.
        let silent = try h.spawnScript("silent-server", """
            import socket, sys
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
            print("port", s.getsockname()[1], flush=True)
            held = []
            while True:
                c, _ = s.accept(); held.append(c); print("accepted", len(held), flush=True)
            """)
        var port = 0
        try h.waitUntil("the silent server listens") {
            port = Int(h.log(of: silent).split(separator: "\n").first { $0.hasPrefix("port ") }?.dropFirst(5) ?? "") ?? 0
            return port > 0
        }
        try h.startRunner(try h.clone(try h.makeOrigin(), as: "clone-a"), HostPort(host: "127.0.0.1", port: port), name: "a",
                          extra: ["--registration-timeout", "1s"])
        try h.waitUntil("the runner dials again", timeout: 15) { h.log(of: silent).contains("accepted 2") }
    }

    func testIdleUnauthenticatedConnectionsAreCappedAndClosed() throws {
        let (dispatcher, address) = try h.startDispatcher(extra: ["--token", "t", "--max-pending-connections", "50", "--auth-timeout", "1s"])
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<200 { idle.append(try h.rawConnect(address.port)) }
        try h.waitUntil("the cap bites and is logged") { h.log(of: dispatcher).contains("connections are waiting to authenticate") }
        // After the timeout every idle socket is closed by the dispatcher, and a real peer gets in.
        try h.waitUntil("every idle socket is closed", timeout: 15) { idle.allSatisfy { h.isClosedByPeer($0) } }
        XCTAssertEqual(try WireClient(address: address, token: "t").request(.status), .status(queued: 0, running: 0, runners: 0))
    }

    func testClientsThatSaidSomethingAndThenIdleAreClosedButRunnersAndTheObserverCarryOn() throws {
        // Without a token, one valid line identifies a connection; a client that then stays silent is closed
        // after --idle-timeout, so sockets that each send one line cannot pile up either.
        let origin = try h.makeOrigin()
        _ = try h.commit("echo one", to: origin)
        let (dispatcher, address) = try h.startDispatcher(extra: ["--idle-timeout", "1s", "--log-level", "debug"])
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<20 {
            let fd = try h.rawConnect(address.port)
            _ = "last repo=/r branch=main\n".withCString { send(fd, $0, strlen($0), 0) }
            idle.append(fd)
        }
        try h.waitUntil("every idle client is closed", timeout: 15) { idle.allSatisfy { h.isClosedByPeer($0) } }
        // A runner stays registered however long it idles; the observer waits for pushes between polls
        // (`await_push`, answered within half the idle timeout), so its kept connection is never idle.
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let observer = try h.startObserver([try h.clone(origin, as: "clone-obs")], address)
        try h.waitUntil("the first build") { try h.builds().first?.status == .success }
        let closes = h.log(of: dispatcher).components(separatedBy: "not a runner").count
        Thread.sleep(forTimeInterval: 2.5)  // more than two idle timeouts: nothing to wait for, the point is that nothing happens
        XCTAssertEqual(h.log(of: dispatcher).components(separatedBy: "not a runner").count, closes, "the observer was closed as idle")
        let second = try h.commit("echo two", to: origin)
        try h.waitUntil("the next commit is built", timeout: 20) { try h.builds().contains { $0.commit == second && $0.status == .success } }
        XCTAssertFalse(h.log(of: observer).contains("cannot reach the dispatcher"), h.log(of: observer))
        XCTAssertEqual(try status(address), .status(queued: 0, running: 0, runners: 1))
    }

    // MARK: 8. What a new user tripped over

    func testLogLinesKeepTextAfterANulAndTheStartupLineCountsRestoredJobs() throws {
        let origin = try h.makeOrigin()
        let commit = try h.commit("printf 'before\\000after\\n'\nsleep 30", to: origin)
        let (dispatcher, address) = try h.startDispatcher()
        let runner = try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let (_, job) = try h.dispatch(commit, repo: origin, to: address)
        try h.waitUntil("the line is stored") { try h.store().logs(job: job).contains { $0.text.hasPrefix("before") } }
        XCTAssertEqual(try h.store().logs(job: job).first { $0.text.hasPrefix("before") }?.text, "before\u{2400}after")
        kill(runner.processIdentifier, SIGSTOP)
        defer { kill(runner.processIdentifier, SIGCONT) }
        kill(dispatcher.processIdentifier, SIGKILL)
        dispatcher.waitUntilExit()
        let (again, _) = try h.startDispatcher(port: address.port)
        XCTAssertTrue(h.log(of: again).contains("restored 0 queued, 1 leased and 0 waiting job(s)"), h.log(of: again))
    }
}
