import ArgumentParser
import DevCIPipeline
import DevCIReporter
import DevCIStore
import Foundation

extension AuthMode: ExpressibleByArgument {}

struct ReporterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reporter",
        abstract: "Serve build results from the database to a browser, with live logs (read-only)."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 5000
    @Option(help: "The store: a SQLite file, or postgres://USER@HOST:PORT/DATABASE (default: DEVCI_DB or ~/.devci/devci.sqlite).") var db: String?
    @Option(help: "The dispatcher's artifacts folder (default: beside a SQLite database; ~/.devci/artifacts with PostgreSQL).")
    var artifacts: String?
    @Option(help: "The dispatcher's configuration folder: its users, administrators and tasks' authorized_users decide who sees what.")
    var config: String?
    @Option(help: "public-read: anyone sees all but the runs of tasks with authorized_users; required: nothing without signing in.")
    var auth: AuthMode = .publicRead
    @Option(help: "A file holding the key that signs sessions (made, mode 0600, when missing); without it, sessions end when the reporter stops.")
    var sessionKeyFile: String?
    @Flag(help: "Mark the session cookie Secure even on loopback (behind a TLS proxy on the same host).")
    var secureCookies = false
    @Flag(help: "Leave Secure off the session cookie on a non-loopback address (only behind nothing but plain HTTP, which you should not do).")
    var insecureCookies = false
    @OptionGroup var server: DispatcherAddress
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if secureCookies && insecureCookies { throw ValidationError("--secure-cookies and --insecure-cookies contradict each other") }
    }

    func run() async throws {
        let logger = try logging.bootstrap("devci.reporter")
        let path = db ?? SQLStore.defaultPath()
        var settings = ReporterConfig(host: host, port: port, databasePath: path)
        settings.artifactsPath = artifacts.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        if let config {
            do {
                settings.accessSource = try AccessSource(directory: config, mode: auth) { logger.notice("\($0)") }
            } catch {
                throw Failure("the configuration in \(config) is invalid:\n" + error.errors.map { "  \($0)" }.joined(separator: "\n"))
            }
        } else {
            settings.accessSource = AccessSource(fixed: AccessPolicy(mode: auth, config: .empty))
            let loopback = ["127.0.0.1", "localhost", "::1"].contains(host)
            logger.log(level: loopback ? .notice : .warning,
                       "no --config: nobody can sign in and every build is shown to everyone, runs of tasks with authorized_users too")
        }
        let access = settings.access
        if auth == .required && access.users.isEmpty {
            throw ValidationError("--auth required needs users: in the --config folder (make one with `devci user add NAME --config DIR`)")
        }
        if let sessionKeyFile { settings.sessionKeys = SessionKeys(key: try Self.sessionKey(at: sessionKeyFile)) }
        settings.dispatchers = try server.addresses
        settings.token = server.takeToken()
        settings.secureCookies = secureCookies || (!insecureCookies && !["127.0.0.1", "localhost", "::1"].contains(host))
        // Listens at once, even before the dispatcher has created the database: the pages say so until it has.
        let reporter = Reporter(config: settings, logger: logger)
        let host = self.host
        logger.info("re-run and cancel asked of the dispatcher at \(server.dispatcherServer); sign-in: \(auth.rawValue), \(access.users.count) user(s), \(access.administrators.count) administrator(s)\(config.map { " from \($0)" } ?? "")")
        try await reporter.run { port in
            logger.info("listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)")
        }
    }

    /// The session key in `path`, made there (32 random bytes, readable by this user only) when the file is missing.
    static func sessionKey(at path: String) throws -> [UInt8] {
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count >= 32 else { throw Failure("the session key in \(path) is shorter than 32 bytes") }
            return Array(data)
        }
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
        guard FileManager.default.createFile(atPath: path, contents: Data(key), attributes: [.posixPermissions: 0o600]) else {
            throw Failure("cannot write a session key to \(path)")
        }
        return key
    }
}
