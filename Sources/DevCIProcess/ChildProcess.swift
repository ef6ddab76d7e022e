import CDevCISpawn
import DevCIWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a job's process ended.
public enum Termination: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)
    case failedToStart(String)

    /// The exit status as a shell would show it (128 + signal for a signal).
    public var exitCode: Int {
        switch self {
        case .exited(let c): return Int(c)
        case .signaled(let s): return 128 + Int(s)
        case .failedToStart: return -1
        }
    }
}

/// One line of output, stamped when it was read.
public struct OutputLine: Sendable, Equatable {
    public var stream: LogStream
    public var timestampMillis: Int64
    public var text: String

    public init(stream: LogStream, timestampMillis: Int64, text: String) {
        self.stream = stream
        self.timestampMillis = timestampMillis
        self.text = text
    }
}

/// The one process spawner: runs a command under a small leader in a process group of its own and
/// streams its output line by line. The leader is a child subreaper: stopping it, the command finishing,
/// or this process dying makes the leader kill everything the command started, its process group and also
/// the processes that left it (`setsid`, double-forked daemons), before it exits: nothing it started
/// outlives it. Runners use it for jobs, the runner manager and `devci up` for runners and the other processes.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked: `leader` and `stopRequested` are guarded by `lock`.
    private let lock = NSLock()
    private var leader: pid_t = 0
    private var stopRequested = false

    public init() {}

    /// Runs `argv` to completion on the calling thread, which must live until this returns (the child's
    /// parent-death signal follows it). `onOutput` is called from reader threads with batches of lines.
    public func run(_ argv: [String], in directory: String, environment: [String: String],
                    onOutput: @escaping @Sendable ([OutputLine]) -> Void) -> Termination {
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard devci_pipe_cloexec(&outPipe) == 0 else { return .failedToStart("pipe: \(String(cString: strerror(errno)))") }
        guard devci_pipe_cloexec(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            return .failedToStart("pipe: \(String(cString: strerror(errno)))")
        }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgv.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var child: pid_t = 0
        lock.lock()
        let code: Int32
        if stopRequested {
            code = ECANCELED
        } else {
            code = devci_spawn(argv[0], cArgv, cEnv, directory, outPipe[1], errPipe[1], &child)
            if code == 0 { leader = child }
        }
        lock.unlock()
        close(outPipe[1])
        close(errPipe[1])
        guard code == 0 else {
            close(outPipe[0]); close(errPipe[0])
            return .failedToStart("cannot start \(argv[0]) in \(directory): \(String(cString: strerror(code)))")
        }
        let readers = DispatchGroup()
        for (fd, stream) in [(outPipe[0], LogStream.out), (errPipe[0], LogStream.err)] {
            readers.enter()
            let thread = Thread {
                Self.readLines(fd: fd, stream: stream, onOutput: onOutput)
                close(fd)
                readers.leave()
            }
            thread.start()
        }
        // The leader has swept the job's processes before it exits. Wait for it without reaping it, so its
        // pid (and so its group id) cannot be reused while `stop` may still signal them.
        var info = siginfo_t()
        while waitid(P_PID, id_t(child), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        lock.lock()
        kill(-child, SIGKILL)  // last resort, if the leader itself was killed before its sweep
        leader = 0
        lock.unlock()
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        // A process that escaped the leader (not its descendant, say started through systemd-run) may still
        // hold the pipes: do not wait on it for ever.
        if readers.wait(timeout: .now() + 5) == .timedOut {
            onOutput([OutputLine(stream: .system, timestampMillis: Int64(Date().timeIntervalSince1970 * 1000),
                                 text: "a process that escaped the job still holds its output; no longer reading it")])
        }
        if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
        return .signaled(status & 0x7f)
    }

    /// Asks the job to stop: SIGTERM to its process group now; if the command still runs after `grace`, the
    /// leader is told to SIGKILL everything the job started (its group and whatever left it) and exit.
    /// Should the leader itself not respond, the group gets SIGKILL a few seconds later.
    public func stop(grace: TimeInterval = 2) {
        lock.lock()
        stopRequested = true
        let target = leader
        if target > 0 {
            kill(-target, SIGTERM)
            kill(-target, SIGCONT)  // a stopped process could not act on the SIGTERM
        }
        lock.unlock()
        guard target > 0 else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + grace) { [self] in
            lock.lock()
            let running = leader == target
            if running {
                kill(target, devci_leader_stop_signal())
                kill(target, SIGCONT)  // should the job have stopped its whole group, leader included
            }
            lock.unlock()
            guard running else { return }
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(Int(DEVCI_LEADER_SWEEP_SECONDS) + 2)) { [self] in
                lock.lock()
                defer { lock.unlock() }
                if leader == target { kill(-target, SIGKILL) }
            }
        }
    }

    /// The leader's process id (the group id) while it runs (until it has exited), else 0.
    public var pid: pid_t {
        lock.lock()
        defer { lock.unlock() }
        return leader
    }

    public var wasStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopRequested
    }

    static func readLines(fd: Int32, stream: LogStream, onOutput: @Sendable ([OutputLine]) -> Void) {
        var splitter = LineSplitter(maxLineBytes: WireLimits.maxLogTextBytes)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let lines = n > 0 ? splitter.push(buffer[0..<n]) : splitter.finish()
            if !lines.isEmpty {
                onOutput(lines.map { OutputLine(stream: stream, timestampMillis: now, text: $0) })
            }
            if n <= 0 { return }
        }
    }
}

/// Splits output bytes into lines, cutting a line that runs past the limit into pieces and repairing invalid UTF-8.
public struct LineSplitter {
    public let maxLineBytes: Int
    private var pending: [UInt8] = []

    public init(maxLineBytes: Int) {
        self.maxLineBytes = maxLineBytes
    }

    public mutating func push<C: Collection<UInt8>>(_ bytes: C) -> [String] {
        var lines: [String] = []
        for b in bytes {
            if b == UInt8(ascii: "\n") {
                if pending.last == UInt8(ascii: "\r") { pending.removeLast() }
                lines.append(String(decoding: pending, as: UTF8.self))
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(b)
                if pending.count > maxLineBytes {
                    // Cut before the character that crosses the limit, never inside it.
                    var cut = maxLineBytes
                    while cut > 0 && pending[cut] & 0xC0 == 0x80 { cut -= 1 }
                    if cut == 0 { cut = maxLineBytes }
                    lines.append(String(decoding: pending[..<cut], as: UTF8.self))
                    pending.removeFirst(cut)
                }
            }
        }
        return lines
    }

    public mutating func finish() -> [String] {
        defer { pending.removeAll() }
        return pending.isEmpty ? [] : [String(decoding: pending, as: UTF8.self)]
    }
}
