import ArgumentParser
import DevCIDispatcher
import DevCIStore
import DevCIWire
import Foundation
import NIOPosix

struct DispatcherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatcher",
        abstract: "Run the dispatcher: queue work, assign it to runners, record every result."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8888
    @Option(help: "SQLite database (default: DEVCI_DB or ~/.devci/devci.sqlite).") var db: String?
    @Option(help: "Shared token every peer must present (default: DEVCI_TOKEN).") var token: String?
    @Option(help: "How often runners heartbeat.") var heartbeat = "1s"
    @Option(help: "How long a lease lasts without a heartbeat.") var lease = "3s"
    @Option(help: "How many times a job may lose its runner before it ends as error.") var maxReassignments = 3
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.bootstrap("devci.dispatcher")
        let heartbeat = try timeFlag(self.heartbeat, "--heartbeat"), lease = try timeFlag(self.lease, "--lease")
        guard lease > heartbeat else { throw ValidationError("--lease must be longer than --heartbeat") }
        guard maxReassignments >= 0 else { throw ValidationError("--max-reassignments must be 0 or more") }
        let token = (token ?? ProcessInfo.processInfo.environment["DEVCI_TOKEN"]).flatMap { $0.isEmpty ? nil : $0 }
        let path = db ?? SQLiteStore.defaultPath()
        let store: SQLiteStore
        do {
            store = try SQLiteStore(path: path)
        } catch {
            throw Failure("cannot open the database \(path): \(error)")
        }
        logger.info("database \(path)")
        if token == nil && !["127.0.0.1", "localhost", "::1"].contains(host) {
            logger.warning("listening on \(host) without a token: anyone who can reach this port can register runners and dispatch work; set --token or DEVCI_TOKEN")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let dispatcher = Dispatcher(
            config: DispatcherConfig(host: host, port: port, token: token,
                                     scheduler: SchedulerConfig(heartbeatInterval: heartbeat, leaseDuration: lease,
                                                                maxReassignments: maxReassignments)),
            store: store, loop: group.next(), logger: logger)
        let address: String
        do {
            let bound = try dispatcher.start()
            address = "\(bound.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? host):\(bound.port ?? port)"
        } catch {
            throw Failure("cannot listen on \(host):\(port): \(error)")
        }
        logger.info("listening on \(address) (protocol \(WireLimits.protocolVersion), heartbeat \(heartbeat), lease \(lease), token \(token == nil ? "off" : "on"))")
        waitForTermination(logger) {
            dispatcher.shutdown()
        }
        try? group.syncShutdownGracefully()
    }
}
