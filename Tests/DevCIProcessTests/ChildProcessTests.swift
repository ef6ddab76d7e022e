import CDevCISpawn
import DevCIProcess
import DevCIWire
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Polls `condition` every 10 ms until it holds or `seconds` have passed; returns whether it held.
@discardableResult
func eventually(within seconds: TimeInterval = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Date(timeIntervalSinceNow: seconds)
    while !condition() {
        if Date() >= deadline { return false }
        usleep(10_000)
    }
    return true
}

/// The job process against real `/bin/sh` children.
final class ChildProcessTests: XCTestCase {
    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [OutputLine] = []
        func add(_ l: [OutputLine]) { lock.lock(); lines += l; lock.unlock() }
        var all: [OutputLine] { lock.lock(); defer { lock.unlock() }; return lines }
    }

    func run(_ script: String, process: ChildProcess = ChildProcess(), environment: [String: String] = [:]) -> (Termination, [OutputLine]) {
        let out = Collected()
        let env = environment.merging(["PATH": "/usr/bin:/bin"]) { a, _ in a }
        let t = process.run(["/bin/sh", "-c", script], in: NSTemporaryDirectory(), environment: env) { out.add($0) }
        return (t, out.all)
    }


    /// A job's scratch: a pid file path and a marker in the job's environment, which every process it starts
    /// inherits, so a test can find them all (and clean up after a failure) without trusting a pid.
    final class Scratch: Sendable {
        let pidFile = NSTemporaryDirectory() + "devci-pid-\(UUID().uuidString)"
        let mark = "DEVCI_TEST_MARK=\(UUID().uuidString)"
        var environment: [String: String] {
            let kv = mark.split(separator: "=", maxSplits: 1)
            return ["PIDFILE": pidFile, String(kv[0]): String(kv[1])]
        }
        var recordedPID: pid_t? {
            (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }

        /// Live (not zombie) processes carrying the marker.
        var marked: [pid_t] {
            let me = getpid()
            let needle = Array(mark.utf8) + [0]
            return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name -> pid_t? in
                guard let pid = pid_t(name), pid != me else { return nil }
                let env = Self.read("/proc/\(name)/environ")
                var i = 0
                while i + needle.count <= env.count {
                    if env[i..<(i + needle.count)].elementsEqual(needle) && (i == 0 || env[i - 1] == 0) { return pid }
                    while i < env.count && env[i] != 0 { i += 1 }
                    i += 1
                }
                return nil
            }
        }

        static func read(_ path: String) -> [UInt8] {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { return [] }
            defer { close(fd) }
            var out: [UInt8] = [], buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { return out }
                out += buf[0..<n]
            }
        }

        /// After a failure: kill what is left, again while something forks more (bounded).
        func cleanUp() {
            for _ in 0..<100 {
                let left = marked
                if left.isEmpty { break }
                for pid in left { kill(pid, SIGKILL) }
            }
            try? FileManager.default.removeItem(atPath: pidFile)
        }
    }

    /// Whether `pid` has gone (reaped: a zombie would still answer kill 0).
    func gone(_ pid: pid_t) -> Bool {
        kill(pid, 0) == -1 && errno == ESRCH
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
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        DispatchQueue.global().async {
            // Wait on the condition (both shells have set their traps), not on a guess of how long that takes.
            eventually(within: 20) { scratch.recordedPID != nil }
            process.stop(grace: 0.5)
        }
        let (t, _) = run("trap '' TERM; (trap '' TERM; echo $$ > \"$PIDFILE\"; sleep 300) & sleep 300",
                         process: process, environment: scratch.environment)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "stopped long before the sleeps end")
        XCTAssertEqual(t, .signaled(SIGKILL), "the group, leader included, died of SIGKILL")
        XCTAssertTrue(process.wasStopped)
        XCTAssertTrue(eventually { scratch.marked.isEmpty }, "left: \(scratch.marked)")
    }

    // A daemon that left the job's group (and session), in three shapes: `setsid cmd &` still holding the
    // job's output; a double fork, so it is orphaned while the job runs; and a tree whose inner process is
    // only re-parented to the leader once its parent has been killed.
    static let escapes = [
        "setsid sh -c 'echo $$ > \"$PIDFILE\"; exec sleep 1000' &",
        "(setsid sh -c 'echo $$ > \"$PIDFILE\"; exec sleep 1000' > /dev/null 2>&1 &);",
        "setsid sh -c 'sh -c \"echo \\$\\$ > \\\"\\$PIDFILE\\\"; exec sleep 1000\"; :' &",
    ]
    static let untilRecorded = "while [ ! -s \"$PIDFILE\" ]; do sleep 0.01; done;"

    func testDaemonsThatLeftTheGroupDieWhenTheCommandExits() throws {
        for escape in Self.escapes {
            let scratch = Scratch()
            defer { scratch.cleanUp() }
            let started = Date()
            let (t, lines) = run("\(escape) \(Self.untilRecorded) echo done; exit 0", environment: scratch.environment)
            let elapsed = Date().timeIntervalSince(started)
            XCTAssertEqual(t, .exited(0), escape)
            XCTAssertEqual(lines.map(\.text), ["done"], "no word of output held past the end: \(escape)")
            XCTAssertLessThan(elapsed, 4, "run returns promptly, not after the wait on escaped output: \(escape)")
            let pid = try XCTUnwrap(scratch.recordedPID, escape)
            XCTAssertTrue(eventually { gone(pid) }, "the daemon \(pid) outlived its job: \(escape)")
            XCTAssertTrue(eventually { scratch.marked.isEmpty }, "left: \(scratch.marked) by \(escape)")
        }
    }

    func testDaemonsThatLeftTheGroupDieWhenTheJobIsStopped() throws {
        // First a command that dies of the SIGTERM, then one that ignores it (as does its daemon) until
        // the leader is told to end it.
        for (prefix, expected) in [("", Termination.signaled(SIGTERM)), ("trap '' TERM;", .signaled(SIGKILL))] {
            for escape in Self.escapes {
                let scratch = Scratch()
                defer { scratch.cleanUp() }
                let process = ChildProcess()
                DispatchQueue.global().async {
                    eventually(within: 20) { scratch.recordedPID != nil }
                    process.stop(grace: 0.5)
                }
                let started = Date()
                let (t, lines) = run("\(prefix) \(escape) sleep 1000", process: process, environment: scratch.environment)
                XCTAssertEqual(t, expected, "\(prefix) \(escape)")
                XCTAssertLessThan(Date().timeIntervalSince(started), 10, "\(prefix) \(escape)")
                XCTAssertFalse(lines.contains { $0.stream == .system }, "\(lines)")
                let pid = try XCTUnwrap(scratch.recordedPID)
                XCTAssertTrue(eventually { gone(pid) }, "the daemon \(pid) outlived its stopped job: \(prefix) \(escape)")
                XCTAssertTrue(eventually { scratch.marked.isEmpty }, "left: \(scratch.marked) by \(prefix) \(escape)")
            }
        }
    }

    func testStopEndsAJobThatStoppedItsWholeGroup() throws {
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let process = ChildProcess()
        DispatchQueue.global().async {
            // Wait until the leader itself is stopped (state T), then stop the job.
            eventually(within: 20) {
                let pid = process.pid
                guard pid > 0, scratch.recordedPID != nil else { return false }
                let stat = String(decoding: Scratch.read("/proc/\(pid)/stat"), as: UTF8.self)
                return stat.split(separator: ")").last?.split(separator: " ").first == "T"
            }
            process.stop(grace: 0.5)
        }
        let started = Date()
        let (t, _) = run("\(Self.escapes[0]) \(Self.untilRecorded) kill -STOP 0; sleep 1000", process: process, environment: scratch.environment)
        XCTAssertEqual(t, .signaled(SIGTERM), "continued, the command acted on the SIGTERM")
        XCTAssertLessThan(Date().timeIntervalSince(started), 4, "no wait for the last-resort SIGKILL")
        let pid = try XCTUnwrap(scratch.recordedPID)
        XCTAssertTrue(eventually { gone(pid) })
        XCTAssertTrue(eventually { scratch.marked.isEmpty }, "left: \(scratch.marked)")
    }

    func testTheLeaderSweepsWhenTheThreadThatStartedItDies() throws {
        // The parent-death signal follows the spawning thread: let that thread end while the job runs.
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        let script = "\(Self.escapes[0]) sleep 1000"
        let env = scratch.environment.merging(["PATH": "/usr/bin:/bin"]) { a, _ in a }
        final class Box: @unchecked Sendable { var leader: pid_t = 0; var code: Int32 = -1 }
        let box = Box()
        let ready = DispatchSemaphore(value: 0)
        let pidFileWritten: @Sendable () -> Bool = { scratch.recordedPID != nil }
        Thread {
            let args: [String] = ["/bin/sh", "-c", script]
            let argv = args.map { strdup($0) } + [nil]
            let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { (argv + envp).forEach { free($0) } }
            let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
            var pid: pid_t = 0
            box.code = devci_spawn("/bin/sh", argv, envp, NSTemporaryDirectory(), devnull, devnull, &pid)
            close(devnull)
            box.leader = pid
            if box.code == 0 { eventually(within: 20, pidFileWritten) }
            ready.signal()
        }.start()
        XCTAssertEqual(ready.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(box.code, 0)
        let leader = box.leader
        var status: Int32 = 0
        XCTAssertTrue(eventually(within: 10) { waitpid(leader, &status, WNOHANG) == leader }, "the leader ended with its parent thread")
        XCTAssertEqual(status & 0x7f, 0)
        XCTAssertEqual((status >> 8) & 0xff, 137)
        let pid = try XCTUnwrap(scratch.recordedPID)
        XCTAssertTrue(eventually { gone(pid) }, "the daemon \(pid) outlived the leader's parent")
        XCTAssertTrue(eventually { scratch.marked.isEmpty }, "left: \(scratch.marked)")
    }

    func testTheLeaderTakesNoOrdersFromTheJob() {
        // The stop signal and a hang-up from the job itself (not from the runner) change nothing.
        let (t, lines) = run("kill -USR1 $PPID; kill -HUP $PPID; echo still here; exit 3")
        XCTAssertEqual(t, .exited(3))
        XCTAssertEqual(lines.map(\.text), ["still here"])
    }

    func testAJobThatIsASubreaperItselfOrForksWithoutEndIsSweptToo() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else { throw XCTSkip("no /usr/bin/python3") }
        let scratch = Scratch()
        defer { scratch.cleanUp() }
        // The command makes itself a subreaper (so orphans go to it, not to the leader) and leaves a
        // setsid'd process that keeps forking new orphans (up to a bound, should the sweep fail); the sweep
        // must still end, and take them all.
        let inner = "(setsid sh -c 'echo $$ > \"$PIDFILE\"; i=0; while [ $i -lt 1000 ]; do (sleep 1000 &); i=$((i+1)); done' > /dev/null 2>&1 &); \(Self.untilRecorded) exit 0"
        let python = "import ctypes, os; assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0; os.execv('/bin/sh', ['sh', '-c', os.environ['INNER']])"
        var env = scratch.environment
        env["INNER"] = inner
        let started = Date()
        let (t, _) = run("exec /usr/bin/python3 -c \"$PY\"", environment: env.merging(["PY": python]) { a, _ in a })
        XCTAssertEqual(t, .exited(0))
        XCTAssertLessThan(Date().timeIntervalSince(started), 8)
        let pid = try XCTUnwrap(scratch.recordedPID)
        XCTAssertTrue(eventually { gone(pid) })
        XCTAssertTrue(eventually { scratch.marked.isEmpty }, "left: \(scratch.marked.count) processes")
    }

    func testLongLinesAreCutAtCharacterBoundaries() {
        var splitter = LineSplitter(maxLineBytes: 5)
        let lines = splitter.push(Array("abcdéfghij\nk".utf8)) + splitter.finish()
        XCTAssertEqual(lines, ["abcd", "éfgh", "ij", "k"])
        XCTAssertTrue(lines.allSatisfy { $0.utf8.count <= 5 && !$0.contains("\u{FFFD}") })
    }
}
