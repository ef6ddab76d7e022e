import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 13, point 4: dispatchers on one PostgreSQL database. One leads; the others stand by, tell every peer
/// so, and take over when the leader is killed or frozen; a leader that wakes up after losing the lead records
/// nothing. Real processes, a real PostgreSQL server, real git repositories.
final class FailoverTests: HarnessTestCase {
    /// Starts a dispatcher on `port` of the harness's PostgreSQL database and waits until it says its role.
    func startDispatcher(_ name: String, port: Int, leads: Bool) throws -> Process {
        let p = try h.spawn(name, ["dispatcher", "--port", String(port), "--db", h.dbPath, "--heartbeat", "300ms", "--lease", "1500ms"]
                                  + h.storeArguments)
        try h.waitUntil("\(name) \(leads ? "leads" : "stands by")", timeout: 20) {
            guard p.isRunning else { throw Failure("\(name) exited:\n\(h.log(of: p))") }
            return h.log(of: p).contains(leads ? "(protocol" : "standing by on")
        }
        return p
    }

    /// When each job was first assigned after `since`, oldest first (every write is the leader's).
    func assignments(after since: Date) throws -> [Date] {
        try h.builds().flatMap { try h.store().events(build: $0.id) }.filter { $0.state == .assigned && $0.at > since }.map(\.at).sorted()
    }

    func testAStandbyTakesOverFromAKilledAndAFrozenLeaderAndNothingIsLostOrRecordedTwice() throws {
        try h.usePostgres()
        let origin = try h.makeOrigin()
        var commits = [try h.commit("echo first\nsleep 1", to: origin)]
        let portA = try h.freeLoopbackPort(), portB = try h.freeLoopbackPort()
        let list = "127.0.0.1:\(portA),127.0.0.1:\(portB)"
        var a = try startDispatcher("dispatcher-a", port: portA, leads: true)
        let b = try startDispatcher("dispatcher-b", port: portB, leads: false)
        // The standby answers every peer `standby`, naming the leader.
        let refused = try h.run(["status", "--dispatcher-server", "127.0.0.1:\(portB)"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("standby") && refused.output.contains("pid \(a.processIdentifier)"), refused.output)
        XCTAssertTrue(try h.run(["status", "--dispatcher-server", list]).output.contains("queued"))

        for name in ["r1", "r2"] {
            _ = try h.spawn("runner-\(name)", ["runner", try h.clone(origin, as: "clone-\(name)"), "--dispatcher-server", list, "--name", name,
                                               "--test-command", "sh ci.sh"])
        }
        _ = try h.spawn("observer", ["observer", try h.clone(origin, as: "clone-obs"), "--dispatcher-server", list, "--interval", "200ms"])
        func push(_ n: Int) throws {
            for i in 0..<n { commits.append(try h.commit("echo commit \(commits.count) \(i)\nsleep 1", to: origin)) }
        }
        try h.waitUntil("the first job runs") { try h.builds().contains { $0.status == .running } }
        try push(3)

        // 1. kill -9 of the leader mid-job: B takes over, restores the queue and the leases, runners follow.
        try h.waitUntil("a job runs under A") { try h.builds().contains { $0.status == .running } }
        let killedAt = Date()
        kill(a.processIdentifier, SIGKILL)
        a.waitUntilExit()
        try h.waitUntil("B leads", timeout: 10) { h.log(of: b).contains("(protocol") }
        try h.waitUntil("B assigns a job", timeout: 20) { try !assignments(after: killedAt).isEmpty }
        let killFailover = try assignments(after: killedAt)[0].timeIntervalSince(killedAt)
        print("failover after kill -9 of the leader: \(String(format: "%.2f", killFailover)) s from its death to the first job the new leader assigned")
        XCTAssertTrue(h.log(of: b).contains("epoch 2"), h.log(of: b))

        // A comes back (as a service manager would restart it) and stands by.
        a = try startDispatcher("dispatcher-a2", port: portA, leads: false)
        try push(3)
        try h.waitUntil("a job runs under B") { try h.builds().contains { $0.status == .running } }

        // 2. SIGSTOP of the new leader: its lock session goes idle, the server ends it, A takes over.
        let frozenAt = Date()
        kill(b.processIdentifier, SIGSTOP)
        try h.waitUntil("A leads again", timeout: 15) { h.log(of: a).contains("(protocol") }
        try h.waitUntil("A assigns a job", timeout: 20) { try !assignments(after: frozenAt.addingTimeInterval(0.5)).isEmpty }
        let freezeFailover = try assignments(after: frozenAt.addingTimeInterval(0.5))[0].timeIntervalSince(frozenAt)
        print("failover after SIGSTOP of the leader: \(String(format: "%.2f", freezeFailover)) s from its freeze to the first job the new leader assigned")
        try push(2)

        // 3. SIGCONT: B wakes up without the lead. The database refuses its writes; it says so and stops.
        kill(b.processIdentifier, SIGCONT)
        try h.waitUntil("B stops", timeout: 15) { !b.isRunning }
        XCTAssertNotEqual(b.terminationStatus, 0)
        let said = h.log(of: b)
        XCTAssertTrue(said.contains("no longer leads"), String(said.suffix(3000)))

        // Every commit ends with exactly one build, every job with exactly one recorded result.
        try h.waitUntil("every commit is built", timeout: 60) {
            let builds = try h.builds()
            return Set(builds.map(\.commit)) == Set(commits) && builds.allSatisfy { $0.status.isFinal }
        }
        let builds = try h.builds()
        XCTAssertEqual(builds.count, commits.count, "one build per commit: \(builds.map(\.commit))")
        XCTAssertTrue(builds.allSatisfy { $0.status == .success }, "\(builds.map { "\($0.id) \($0.status)" })")
        for build in builds {
            for job in try h.store().jobs(build: build.id) {
                XCTAssertEqual(try h.finalEvents(job: job.id).count, 1, "job \(job.id) of build \(build.id)")
            }
        }
        XCTAssertTrue(a.isRunning)
    }
}
