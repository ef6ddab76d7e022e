import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 3 end to end: the observer, the runner manager and the sample repository's scripts.
final class ObserverAndManagerTests: HarnessTestCase {
    func commits(_ n: Int, to origin: String, from: Int = 0) throws -> [String] {
        try (from..<(from + n)).map { try h.commit("echo commit \($0)", to: origin, message: "commit \($0)") }
    }

    func waitForBuilds(_ count: Int, timeout: TimeInterval = 60) throws -> [BuildSummary] {
        var all: [BuildSummary] = []
        try h.waitUntil("\(count) builds finish", timeout: timeout) {
            all = try h.builds()
            return all.count >= count && all.allSatisfy { $0.status.isFinal }
        }
        return all
    }

    func testTwentyCommitsPushedAtOnceGiveTwentyBuildsOldestFirst() throws {
        let origin = try h.makeOrigin()
        let first = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        try h.startManager(try h.clone(origin, as: "clone-runner"), address, count: 2)
        try h.startObserver([try h.clone(origin, as: "clone-obs")], address)
        XCTAssertEqual(try waitForBuilds(1).map(\.commit), [first], "first sight: the tip only")
        let pushed = try commits(20, to: origin)
        let all = try waitForBuilds(21)
        XCTAssertEqual(all.map(\.commit), [first] + pushed, "every commit once, oldest first")
        XCTAssertTrue(all.allSatisfy { $0.status == .success }, "\(all.map(\.status))")
        XCTAssertEqual(Set(all.compactMap(\.runner)).count, 2, "both runners took work")
    }

    func testRestartingTheObserverAfterAPushNeitherLosesNorRepeatsABuild() throws {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-runner"), address, name: "a")
        let obsClone = try h.clone(origin, as: "clone-obs")
        let observer = try h.startObserver([obsClone], address)
        _ = try waitForBuilds(1)
        kill(observer.processIdentifier, SIGKILL)
        observer.waitUntilExit()
        let pushed = try commits(5, to: origin)
        let again = try h.startObserver([obsClone], address)
        let all = try waitForBuilds(6)
        XCTAssertEqual(Array(all.map(\.commit).suffix(5)), pushed)
        // Later polls dispatch only what is new: one more commit, one more build, and no commit sent twice.
        let later = try h.commit("echo later", to: origin)
        XCTAssertEqual(try waitForBuilds(7).last?.commit, later)
        XCTAssertEqual(try h.builds().count, 7)
        XCTAssertFalse(h.log(of: again).contains("already build"), "nothing was dispatched twice")
    }

    func testTheObserverRidesOutADispatcherThatIsDown() throws {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (dispatcher, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-runner"), address, name: "a")
        let observer = try h.startObserver([try h.clone(origin, as: "clone-obs")], address, extra: ["--log-level", "debug"])
        _ = try waitForBuilds(1)
        kill(dispatcher.processIdentifier, SIGKILL)
        dispatcher.waitUntilExit()
        let pushed = try commits(3, to: origin)
        try h.waitUntil("the observer notices") { h.log(of: observer).contains("cannot reach the dispatcher") }
        // Several polls while down (each retry is a debug line), and the warning still said once.
        try h.waitUntil("three more failed polls") { h.log(of: observer).components(separatedBy: "still cannot reach").count - 1 >= 3 }
        XCTAssertEqual(h.log(of: observer).components(separatedBy: "cannot reach the dispatcher at").count - 1, 1, "said once")
        XCTAssertTrue(observer.isRunning)
        _ = try h.startDispatcher(port: address.port)
        let all = try waitForBuilds(4)
        XCTAssertEqual(Array(all.map(\.commit).suffix(3)), pushed)
        try h.waitUntil("the observer says the dispatcher is back") { h.log(of: observer).contains("reachable again") }
    }

    func testTheRunnerManagerReplacesAKilledRunnerAndLeavesNoneBehind() throws {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        let manager = try h.startManager(try h.clone(origin, as: "clone-runner"), address, count: 3, prefix: "rm")
        let pattern = "devci runner .* --name rm-[0-9]"
        try h.waitUntil("three runners connect") {
            try WireClient(address: address, token: nil).request(.status) == .status(queued: 0, running: 0, runners: 3)
        }
        let before = try h.pids(matching: pattern)
        XCTAssertEqual(before.count, 3)
        kill(before[0], SIGKILL)
        try h.waitUntil("the killed runner is replaced", timeout: 10) {
            let now = try h.pids(matching: pattern)
            return now.count == 3 && !now.contains(before[0])
        }
        try h.waitUntil("three runners are connected again", timeout: 10) {
            try WireClient(address: address, token: nil).request(.status) == .status(queued: 0, running: 0, runners: 3)
        }
        XCTAssertTrue(h.log(of: manager).contains("killed by signal 9"), h.log(of: manager))
        // Each runner works in its own working copy.
        let copies = try FileManager.default.contentsOfDirectory(atPath: h.dir.appendingPathComponent("work").path).sorted()
        XCTAssertEqual(copies, ["rm-1", "rm-2", "rm-3"])
        kill(manager.processIdentifier, SIGTERM)
        manager.waitUntilExit()
        XCTAssertEqual(manager.terminationStatus, 0)
        XCTAssertEqual(try h.pids(matching: pattern), [], "no runner outlives its manager")
    }

    func testScalingTheRunnerManagerWithSignals() throws {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        let manager = try h.startManager(try h.clone(origin, as: "clone-runner"), address, count: 1, prefix: "sc")
        func runners() throws -> Int {
            guard case .status(_, _, let n, _) = try WireClient(address: address, token: nil).request(.status) else { return -1 }
            return n
        }
        try h.waitUntil("one runner") { try runners() == 1 }
        // One signal at a time: signals sent in a burst may merge into one.
        kill(manager.processIdentifier, SIGUSR1)
        try h.waitUntil("two runners") { try runners() == 2 }
        kill(manager.processIdentifier, SIGUSR1)
        try h.waitUntil("three runners") { try runners() == 3 }
        kill(manager.processIdentifier, SIGUSR2)
        try h.waitUntil("two runners") { try runners() == 2 && h.pids(matching: "devci runner .* --name sc-").count == 2 }
    }

    func testMakeTestReposAndUpdateRepo() throws {
        let root = URL(fileURLWithPath: h.binary).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        func script(_ name: String, _ args: [String]) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = root.appendingPathComponent("scripts/\(name)")
            p.arguments = args
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        let base = h.dir.appendingPathComponent("sample").path
        let (status, output) = try script("make-test-repos.sh", [base])
        XCTAssertEqual(status, 0, output)
        for name in ["test_repo", "test_repo_clone_obs", "test_repo_clone_runner"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(base)/\(name)/.git"), name)
        }
        // The sample's own suite passes, as the default test command runs it.
        let unittest = Process()
        unittest.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        unittest.arguments = ["python3", "-m", "unittest", "discover", "-s", "tests"]
        unittest.currentDirectoryURL = URL(fileURLWithPath: base + "/test_repo")
        unittest.standardError = FileHandle.nullDevice
        try unittest.run()
        unittest.waitUntilExit()
        XCTAssertEqual(unittest.terminationStatus, 0)

        let clone = base + "/test_repo_clone_obs"
        let newHead = try h.commit("exit 0", to: base + "/test_repo")
        let (ok, updated) = try script("update_repo.sh", [clone])
        XCTAssertEqual(ok, 0, updated)
        XCTAssertTrue(updated.contains(newHead), updated)
        try "dirty".write(toFile: clone + "/calculator.py", atomically: true, encoding: .utf8)
        let (dirty, dirtyOut) = try script("update_repo.sh", [clone])
        XCTAssertNotEqual(dirty, 0)
        XCTAssertTrue(dirtyOut.contains("uncommitted changes"), dirtyOut)
        try h.git(["checkout", "-q", "--", "calculator.py"], in: clone)
        try h.git(["checkout", "-q", "--detach"], in: clone)
        let (detached, detachedOut) = try script("update_repo.sh", [clone])
        XCTAssertNotEqual(detached, 0)
        XCTAssertTrue(detachedOut.contains("detached"), detachedOut)
        try h.git(["checkout", "-q", "main"], in: clone)
        try h.git(["remote", "set-url", "origin", base + "/nowhere"], in: clone)
        let (noAccess, noAccessOut) = try script("update_repo.sh", [clone])
        XCTAssertNotEqual(noAccess, 0)
        XCTAssertTrue(noAccessOut.contains("cannot reach"), noAccessOut)
    }
}

/// `devci up`: the quick start's one process tree.
final class UpTests: XCTestCase {
    func testUpBuildsTheSampleAndStopsEverythingOnCtrlC() throws {
        let h = try Harness(name)
        defer { h.tearDown() }
        // A free port: bind to 0, read it, release it.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        close(probe)

        let up = try h.spawn("up", ["up", "--port", String(port), "--sample-dir", h.dir.appendingPathComponent("sample").path,
                                    "--db", h.dbPath, "--runners", "2", "--reporter-port", "0"],
                             environment: ["HOME": h.dir.path])
        var builds: [BuildSummary] = []
        try h.waitUntil("the sample's first commit is built", timeout: 60) {
            builds = try h.builds()
            return builds.first?.status == .success
        }
        XCTAssertEqual(builds.first?.repo, h.dir.appendingPathComponent("sample/test_repo").path)
        // Its unit job runs `unittest -v`, whose lines are its test results (issue 14).
        let tests = try h.store().tests(build: try XCTUnwrap(builds.first).id)
        XCTAssertFalse(tests.isEmpty, "the sample's tests are read from its log")
        XCTAssertTrue(tests.allSatisfy { $0.status == .passed && $0.job == "unit" && $0.suite.hasPrefix("test_calculator.") }, "\(tests)")
        let children = try h.pids(matching: "devci (dispatcher|runner-manager|observer|runner) .*\(port)")
        XCTAssertGreaterThanOrEqual(children.count, 5, "dispatcher, manager, observer and two runners")
        kill(up.processIdentifier, SIGINT)
        up.waitUntilExit()
        XCTAssertEqual(up.terminationStatus, 0, h.log(of: up))
        XCTAssertEqual(try h.pids(matching: "devci (dispatcher|runner-manager|observer|runner) .*\(port)"), [], "nothing left behind")
    }

    func testUpStopsEverythingAndFailsWhenItsDispatcherCannotRun() throws {
        let h = try Harness(name)
        defer { h.tearDown() }
        // Another dispatcher (on its own database) holds the port: up's own dispatcher cannot listen.
        let (_, taken) = try h.startDispatcher()
        let up = try h.spawn("up", ["up", "--port", String(taken.port), "--sample-dir", h.dir.appendingPathComponent("sample").path,
                                    "--db", h.dir.appendingPathComponent("up.sqlite").path, "--runners", "1", "--reporter-port", "0"],
                             environment: ["HOME": h.dir.path])
        try h.waitUntil("up gives up", timeout: 60) { !up.isRunning }
        XCTAssertNotEqual(up.terminationStatus, 0, h.log(of: up))
        XCTAssertTrue(h.log(of: up).contains("the dispatcher exited"), h.log(of: up))
        XCTAssertEqual(try h.pids(matching: "devci (runner-manager|observer|runner) .*\(taken.port)"), [], "nothing left behind")
    }
}
