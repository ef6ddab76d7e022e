import DevCIProcess
import DevCIWire
import Foundation
import XCTest

/// The job process against real `/bin/sh` children.
final class ChildProcessTests: XCTestCase {
    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [OutputLine] = []
        func add(_ l: [OutputLine]) { lock.lock(); lines += l; lock.unlock() }
        var all: [OutputLine] { lock.lock(); defer { lock.unlock() }; return lines }
    }

    func run(_ script: String, process: ChildProcess = ChildProcess()) -> (Termination, [OutputLine]) {
        let out = Collected()
        let t = process.run(["/bin/sh", "-c", script], in: NSTemporaryDirectory(), environment: ["PATH": "/usr/bin:/bin"]) { out.add($0) }
        return (t, out.all)
    }

    func testStreamsBothStreamsLineByLineAndReportsTheExitStatus() {
        let (t, lines) = run("echo one; echo two >&2; printf 'no newline'; exit 4")
        XCTAssertEqual(t, .exited(4))
        XCTAssertEqual(lines.filter { $0.stream == .out }.map(\.text), ["one", "no newline"])
        XCTAssertEqual(lines.filter { $0.stream == .err }.map(\.text), ["two"])
    }

    func testAMissingProgramFailsToStart() {
        let t = ChildProcess().run(["/nonexistent/program"], in: "/", environment: [:]) { _ in }
        guard case .failedToStart(let why) = t else { return XCTFail("\(t)") }
        XCTAssertTrue(why.contains("No such file"), why)
    }

    func testStopKillsTheWholeGroupEvenWhenItIgnoresSIGTERM() {
        let process = ChildProcess()
        let started = Date()
        DispatchQueue.global().async {
            // Wait on the condition (the group exists), not on a guess of how long spawning takes.
            let deadline = Date(timeIntervalSinceNow: 20)
            while process.pid == 0 && Date() < deadline { usleep(10_000) }
            usleep(200_000)  // let the shell set its trap
            process.stop(grace: 0.5)
        }
        let (t, _) = run("trap '' TERM; (trap '' TERM; sleep 300) & sleep 300", process: process)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "stopped long before the sleeps end")
        XCTAssertEqual(t, .signaled(SIGKILL), "the group, leader included, died of SIGKILL")
        XCTAssertTrue(process.wasStopped)
    }

    func testLongLinesAreCutAtCharacterBoundaries() {
        var splitter = LineSplitter(maxLineBytes: 5)
        let lines = splitter.push(Array("abcdéfghij\nk".utf8)) + splitter.finish()
        XCTAssertEqual(lines, ["abcd", "éfgh", "ij", "k"])
        XCTAssertTrue(lines.allSatisfy { $0.utf8.count <= 5 && !$0.contains("\u{FFFD}") })
    }
}
