import DevCIProcess
import DevCIWire
import Foundation
import XCTest

/// The executor runners and `devci run --local` share, against real shells.
final class JobExecutorTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "devci-exec-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Through the `Executor` seam, as the runner and `devci run --local` use it.
    func run(_ script: JobScript, on executor: any Executor = HostExecutor()) -> (JobExecutor.Result, [OutputLine]) {
        let out = ChildProcessTests.Collected()
        let r = executor.run(ExecutorJob(script: script, fallbackCommand: "", directory: dir, environment: ["PATH": "/usr/bin:/bin"])) {
            out.add($0)
        }
        return (r, out.all)
    }

    func testACancelledJobEndsStoppedAndOneCancelledBeforeItStartsNeverRuns() {
        let executor = HostExecutor()
        let marker = dir + "/started"
        DispatchQueue.global().async {
            // On the condition (the job has written its marker), not on a guess of how long it takes to start.
            eventually(within: 20) { FileManager.default.fileExists(atPath: marker) }
            executor.cancel(grace: 0.5)
        }
        let (r, _) = run(JobScript(steps: [.init(name: "wait", run: "touch started; sleep 300")]), on: executor)
        XCTAssertTrue(r.stopped)
        XCTAssertEqual(r.outcome.0, .cancelled)

        let early = HostExecutor()
        early.cancel(grace: 0.5)
        let (never, _) = run(JobScript(steps: [.init(name: "must not run", run: "touch ran")]), on: early)
        XCTAssertNotEqual(never.outcome.0, .success)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/ran"))
    }

    func testStepsRunInOrderShareOneGroupAndStopAtTheFirstFailure() {
        let (r, lines) = run(JobScript(steps: [
            .init(name: "start a service", run: "sleep 3007 & echo $! > service.pid"),
            .init(name: "use it", run: "kill -0 $(cat service.pid) && echo service alive"),
            .init(name: "fail", run: "echo about to fail; false; echo not reached"),
            .init(name: "never", run: "echo never"),
        ]))
        XCTAssertEqual(r.outcome.0, .failed)
        XCTAssertEqual(r.termination, .exited(1))
        XCTAssertEqual(lines.filter { $0.stream == .system }.map(\.text),
                       ["step 1/4: start a service", "step 2/4: use it", "step 3/4: fail"])
        XCTAssertEqual(lines.filter { $0.stream == .out }.map(\.text), ["service alive", "about to fail"])
        XCTAssertFalse(processExists("sleep 3007"), "the job's group died with it")
    }

    func testTimeoutKillsAProcessTreeThatIgnoresSIGTERM() {
        let started = Date()
        let (r, _) = run(JobScript(steps: [.init(name: "hang", run: "trap '' TERM; (trap '' TERM; sleep 3008) & sleep 3009")],
                                   timeoutSeconds: 0.5))
        XCTAssertTrue(r.timedOut)
        XCTAssertEqual(r.outcome.0, .timedOut)
        XCTAssertLessThan(Date().timeIntervalSince(started), 20)
        XCTAssertFalse(processExists("sleep 3008"))
        XCTAssertFalse(processExists("sleep 3009"))
    }

    func testWorkdirAndEnvironment() {
        let (r, lines) = run(JobScript(steps: [.init(name: "where", run: "basename \"$PWD\"; echo \"$GREETING\"")],
                                       env: ["GREETING": "hello; $(rm -rf /)"], workdir: "sub"))
        XCTAssertEqual(r.outcome.0, .success)
        XCTAssertEqual(lines.filter { $0.stream == .out }.map(\.text), ["sub", "hello; $(rm -rf /)"])
    }

    func testAWorkdirOutsideTheWorkspaceIsRefused() {
        let (r, _) = run(JobScript(steps: [.init(name: "x", run: "true")], workdir: "../elsewhere"))
        XCTAssertEqual(r.outcome.0, .error)
    }

    func processExists(_ pattern: String) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        p.arguments = ["-f", "^" + pattern]
        p.standardOutput = FileHandle.nullDevice
        try? p.run()
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}
