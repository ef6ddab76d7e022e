import Foundation

/// A long-running child process with a name: its output goes to our standard error, each line prefixed
/// with `[name] `. Runs on a thread of its own; `onExit` is called from that thread.
public final class NamedChild: Sendable {
    public let name: String
    public let argv: [String]
    public let directory: String
    private let process = ChildProcess()
    private let done = DispatchGroup()

    public init(name: String, argv: [String], directory: String = FileManager.default.currentDirectoryPath) {
        self.name = name
        self.argv = argv
        self.directory = directory
    }

    public func start(environment: [String: String] = ProcessInfo.processInfo.environment,
                      onExit: @escaping @Sendable (Termination) -> Void = { _ in }) {
        done.enter()
        let prefix = "[\(name)] "
        let thread = Thread { [self] in
            let termination = process.run(argv, in: directory, environment: environment) { lines in
                FileHandle.standardError.write(Data(lines.map { prefix + $0.text + "\n" }.joined().utf8))
            }
            onExit(termination)
            done.leave()
        }
        thread.start()
    }

    /// SIGTERM to its process group now, SIGKILL after `grace`.
    public func stop(grace: TimeInterval) {
        process.stop(grace: grace)
    }

    /// Waits until the process has exited and its output is drained.
    public func wait() {
        done.wait()
    }
}

extension Termination: CustomStringConvertible {
    public var description: String {
        switch self {
        case .exited(let code): return "exit status \(code)"
        case .signaled(let sig): return "killed by signal \(sig)"
        case .failedToStart(let why): return why
        }
    }
}

/// The path of the running executable, for starting more of ourselves.
public func currentExecutablePath() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    if n > 0 { return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
}
