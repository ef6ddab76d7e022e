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
        // The reporter never writes; until the dispatcher has made the database there is nothing to show.
        // (A dispatcher starting at the same moment may still be creating it.)
        let deadline = Date(timeIntervalSinceNow: 30)
        var reporter: Reporter?
        while reporter == nil {
            do {
                if FileManager.default.fileExists(atPath: path) {
                    reporter = try Reporter(config: ReporterConfig(host: host, port: port, databasePath: path), logger: logger)
                    break
                }
                guard Date() < deadline else { throw Failure("no database at \(path): start the dispatcher first, or pass --db") }
            } catch {
                guard Date() < deadline else { throw Failure("cannot read \(path): \(error)") }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let host = self.host
        logger.info("database \(path) (read-only)")
        try await reporter!.run { port in
            logger.info("listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)")
        }
    }
}
