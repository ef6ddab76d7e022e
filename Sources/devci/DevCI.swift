import ArgumentParser
import DevCIProcess
import DevCIStore
import DevCIWire
import Foundation
import Logging

@main
struct DevCI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devci",
        abstract: "A small distributed CI: dispatcher, runners and the tools around them.",
        version: DevCIVersion.current,
        subcommands: [UpCommand.self, DispatcherCommand.self, RunnerCommand.self, RunnerManagerCommand.self, ObserverCommand.self,
                      DispatchCommand.self, AddJobCommand.self, CancelCommand.self, ArtifactsCommand.self, ReloadCommand.self, StatusCommand.self, ReportCommand.self,
                      RunCommand.self, LintCommand.self, ReporterCommand.self, UserCommand.self, MigrateCommand.self]
    )
}

/// Flags every long-running process shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. Also DEVCI_LOG_LEVEL.")
    var logLevel: String = ProcessInfo.processInfo.environment["DEVCI_LOG_LEVEL"] ?? "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)': say trace, debug, info, notice, warning, error or critical")
        }
    }

    func bootstrap(_ label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

/// `--dispatcher-server` and `--token`, for every peer of the dispatcher.
struct DispatcherAddress: ParsableArguments {
    @Option(help: "The dispatcher, as HOST:PORT; several, comma-separated, are tried in turn (a leader and its standbys).")
    var dispatcherServer: String = "localhost:8888"

    @Option(help: "Shared token (default: DEVCI_TOKEN).")
    var token: String?

    func validate() throws {
        _ = try address
    }

    /// Every address given, in the order they are tried.
    var addresses: [HostPort] {
        get throws {
            guard let list = HostPort.list(dispatcherServer) else {
                throw ValidationError("--dispatcher-server must be HOST:PORT, or up to 16 of them comma-separated; got '\(dispatcherServer)'")
            }
            return list
        }
    }

    /// The first address (where a single one is meant).
    var address: HostPort {
        get throws { try addresses[0] }
    }

    var resolvedToken: String? {
        let t = token ?? ProcessInfo.processInfo.environment["DEVCI_TOKEN"]
        return t?.isEmpty == false ? t : nil
    }

    /// The token, taken out of this process's environment and command line, so that the jobs a runner (or a
    /// runner manager's runner) starts cannot read it from /proc.
    func takeToken() -> String? {
        let t = resolvedToken
        Secrets.guardSecret(variable: "DEVCI_TOKEN", option: "--token")
        return t
    }

    /// For a process that runs jobs and never opens the store (a runner, a runner manager): the store's
    /// credentials a shared environment file may give it (`PGPASSWORD`, a `DEVCI_DB` address) are taken out of
    /// its environment, so no job inherits them or reads them from /proc.
    func dropStoreCredentials() {
        Secrets.scrub("PGPASSWORD")
        Secrets.scrub("DEVCI_DB")
    }

    func connect() throws -> WireClient {
        let addresses = try self.addresses
        do {
            return try WireClient.connect(to: addresses, token: resolvedToken).client
        } catch {
            throw Failure("cannot talk to the dispatcher at \(dispatcherServer): \(ConnectionTrouble.describe(error))")
        }
    }
}

/// Parses a time flag with the one time-unit parser.
func timeFlag(_ text: String, _ name: String) throws -> Duration {
    guard let d = TimeValue.parse(text), d > .zero else {
        throw ValidationError("\(name) must be a time like 500ms, 3s, 5m; got '\(text)'")
    }
    return d
}

/// What a long-running command waits on: SIGINT, SIGTERM, or a fatal error of its own.
final class Termination: @unchecked Sendable {
    // @unchecked: `fatalMessage` is guarded by `lock`; the semaphore is thread-safe; `sources` is set once in init.
    private let received = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var fatalMessage: String?
    private var sources: [DispatchSourceSignal] = []
    private var signalled = false
    private var onSignal: [@Sendable () -> Void] = []

    /// Watches SIGINT and SIGTERM from now on, so that one that comes before `wait` (while the process is
    /// still starting up) is kept. Make it before the process says it is ready (`listening on …`): the
    /// default action is turned off first, and the watch comes into force a moment later.
    init() {
        signal(SIGPIPE, SIG_IGN)
        sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            // Ignored first, as libdispatch requires: its own handler then takes the signal.
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self, received] in
                self?.noteSignal()
                received.signal()
            }
            source.resume()
            return source
        }
    }

    /// Runs `action` when SIGINT or SIGTERM comes (at once if one came already): how a wait that is not
    /// `wait` (a standby waiting to lead) is ended.
    func whenSignalled(_ action: @escaping @Sendable () -> Void) {
        let now: Bool = lock.withLock {
            if !signalled { onSignal.append(action) }
            return signalled
        }
        if now { action() }
    }

    private func noteSignal() {
        let actions: [@Sendable () -> Void] = lock.withLock {
            signalled = true
            defer { onSignal.removeAll() }
            return onSignal
        }
        actions.forEach { $0() }
    }

    /// Ends the wait with a failure: the process then exits non-zero.
    func fail(_ message: String) {
        lock.lock()
        let first = fatalMessage == nil
        if first { fatalMessage = message }
        lock.unlock()
        if first { received.signal() }
    }

    /// Blocks until SIGINT or SIGTERM or `fail`, then runs `stop`; throws `Failure` when it was `fail`.
    func wait(_ logger: Logger, stop: () -> Void) throws {
        received.wait()
        lock.lock()
        let fatal = fatalMessage
        lock.unlock()
        if fatal == nil { logger.info("shutting down") }
        stop()
        sources.forEach { $0.cancel() }
        if let fatal { throw Failure(fatal) }
    }
}


/// `--db` as the store room reads it, refusals as argument errors.
func storeLocation(_ db: String?) throws -> StoreLocation {
    do { return try StoreLocation.resolve(db) } catch { throw ValidationError("\(error)") }
}

/// Fails with a message on standard error and exit status 1.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }

    /// A reply the command did not ask for: the dispatcher's refusal, or something unexpected.
    init(reply: ServerMessage) {
        if case .error(let code, let message) = reply {
            description = "dispatcher refused: \(code): \(message)"
        } else {
            description = "unexpected reply: \(LineCodec.encode(reply))"
        }
    }
}
