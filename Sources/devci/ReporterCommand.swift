import ArgumentParser
import DevCIReporter
import DevCIStore
import Foundation

struct ReporterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reporter",
        abstract: "Serve build results from the database to a browser, with live logs (read-only)."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 5000
    @Option(help: "SQLite database (default: DEVCI_DB or ~/.devci/devci.sqlite).") var db: String?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try logging.bootstrap("devci.reporter")
        let path = db ?? SQLiteStore.defaultPath()
        // Listens at once, even before the dispatcher has created the database: the pages say so until it has.
        let reporter = Reporter(config: ReporterConfig(host: host, port: port, databasePath: path), logger: logger)
        let host = self.host
        try await reporter.run { port in
            logger.info("listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)")
        }
    }
}
