import ArgumentParser
import DevCIWire
import Foundation
import Logging

@main
struct DevCI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devci",
        abstract: "A small distributed CI: dispatcher, runners and the tools around them.",
        subcommands: [UpCommand.self, DispatcherCommand.self, RunnerCommand.self, RunnerManagerCommand.self, ObserverCommand.self,
                      DispatchCommand.self, StatusCommand.self, ReportCommand.self, RunCommand.self, LintCommand.self, ReporterCommand.self]
    )
}

/// Flags every long-running process shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. Also DEVCI_LOG_LEVEL.")
    var logLevel: String = ProcessInfo.processInfo.environment["DEVCI_LOG_LEVEL"] ?? "info"

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
    @Option(help: "The dispatcher, as HOST:PORT.")
    var dispatcherServer: String = "localhost:8888"

    @Option(help: "Shared token (default: DEVCI_TOKEN).")
    var token: String?

    var address: HostPort {
        get throws {
            guard let a = HostPort(dispatcherServer) else {
                throw ValidationError("--dispatcher-server must be HOST:PORT, got '\(dispatcherServer)'")
            }
            return a
        }
    }

    var resolvedToken: String? {
        let t = token ?? ProcessInfo.processInfo.environment["DEVCI_TOKEN"]
        return t?.isEmpty == false ? t : nil
    }

    func connect() throws -> WireClient {
        let address = try self.address
        do {
            return try WireClient(address: address, token: resolvedToken)
        } catch {
            throw CleanExit.message("error: cannot talk to the dispatcher at \(address): \(error)")
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

/// Blocks until SIGINT or SIGTERM, then runs `stop`.
func waitForTermination(_ logger: Logger, stop: () -> Void) {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    signal(SIGPIPE, SIG_IGN)
    let received = DispatchSemaphore(value: 0)
    let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { received.signal() }
        source.resume()
        return source
    }
    received.wait()
    logger.info("shutting down")
    stop()
    sources.forEach { $0.cancel() }
}

/// Fails with a message on standard error and exit status 1.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
