import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 13, point 5 (the peers' side): `--dispatcher-server` takes several addresses; runners, the observer, the
/// runner manager's runners and the command-line tools try them in turn and end up on the one that answers.
final class AddressListTests: HarnessTestCase {
    func testPeersGivenSeveralAddressesEndUpOnTheDispatcherThatAnswers() throws {
        let dead = "127.0.0.1:\(try h.freeLoopbackPort())"
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin, message: "first")
        let (_, address) = try h.startDispatcher()
        let list = "\(dead),\(address)"
        // The runner dials the dead address first, then the live one.
        let runner = try h.spawn("runner-a", ["runner", try h.clone(origin, as: "clone-a"), "--dispatcher-server", list, "--name", "a",
                                             "--test-command", "sh ci.sh"])
        try h.waitUntil("the runner registers through its second address") { h.log(of: runner).contains("registered as a") }
        // The observer and the tools too.
        _ = try h.spawn("observer", ["observer", try h.clone(origin, as: "clone-obs"), "--dispatcher-server", list, "--interval", "200ms"])
        let build = try h.waitUntilBuilt()
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .success)
        let status = try h.run(["status", "--dispatcher-server", list])
        XCTAssertEqual(status.status, 0, status.output)
        XCTAssertTrue(status.output.contains("runners connected 1"), status.output)
        // Every address dead: said plainly, exit non-zero.
        let none = try h.run(["status", "--dispatcher-server", "\(dead),\(dead)"])
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.output.contains("cannot talk to the dispatcher at \(dead),\(dead)"), none.output)
        XCTAssertNotEqual(try h.run(["status", "--dispatcher-server", "a:1,,b:2"]).status, 0, "an empty entry is refused")
    }

    func testARunnerThatLosesItsDispatcherMovesToTheNextAddress() throws {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (first, a) = try h.startDispatcher()
        let (_, b) = try h.startDispatcher(db: h.dir.appendingPathComponent("b.sqlite").path)
        let runner = try h.spawn("runner-a", ["runner", try h.clone(origin, as: "clone-a"), "--dispatcher-server", "\(a),\(b)",
                                             "--name", "a", "--test-command", "sh ci.sh"])
        func connected(_ at: HostPort) throws -> Bool { try h.run(["status", "--dispatcher-server", at.description]).output.contains("runners connected 1") }
        try h.waitUntil("the runner registers with the first") { try connected(a) }
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        try h.waitUntil("the runner moves to the second", timeout: 20) { try connected(b) }
        XCTAssertTrue(h.log(of: runner).contains("registered as a"))
    }
}

extension Harness {
    /// The id of the first build, once there is one.
    func waitUntilBuilt(timeout: TimeInterval = 30) throws -> Int64 {
        var id: Int64?
        try waitUntil("a build is queued", timeout: timeout) {
            id = try builds().first?.id
            return id != nil
        }
        return id!
    }
}
