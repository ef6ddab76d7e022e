import ArgumentParser
import DevCIDispatcher
import DevCIProcess
import DevCIStore
import DevCIWire
import Foundation
import Logging
import NIOCore
import NIOPosix

struct DispatcherCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatcher",
        abstract: "Run the dispatcher: queue work, assign it to runners, record every result."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8888
    @Option(help: "The store: a SQLite file, or postgres://USER@HOST:PORT/DATABASE, where several dispatchers may run: one leads, the others stand by (default: DEVCI_DB or ~/.devci/devci.sqlite).")
    var db: String?
    @Option(help: "Where artifacts are kept (default: beside a SQLite database; ~/.devci/artifacts with PostgreSQL, which dispatchers on several hosts must share).")
    var artifacts: String?
    @Option(help: "Shared token every peer must present (default: DEVCI_TOKEN).") var token: String?
    @Option(help: "How often runners heartbeat.") var heartbeat = "1s"
    @Option(help: "How long a lease lasts without a heartbeat.") var lease = "3s"
    @Option(help: "How many times a job may lose its runner before it ends as error.") var maxReassignments = 3
    @Option(help: "Listen backlog: how many connections may wait to be accepted (capped by net.core.somaxconn).") var listenBacklog = 8192
    @Option(help: "How long a new connection may take to authenticate (or, without a token, to send a request).") var authTimeout = "5s"
    @Option(help: "How long a connection that is not a registered runner may stay silent before it is closed.") var idleTimeout = "60s"
    @Option(help: "How many connections may be waiting to authenticate at once; more are refused (default: half the open-file limit, which the dispatcher raises to its hard limit at start).")
    var maxPendingConnections: Int?
    @Option(help: "Server configuration folder: tasks, administrators, queues, from every *.yml/*.yaml under it. Reread on SIGHUP and `devci reload`.") var config: String?
    @Option(help: "Address of the HTTP side (webhooks, the task trigger).") var httpHost = "127.0.0.1"
    @Option(help: "Port of the HTTP side; off when not given.") var httpPort: Int?
    @Option(help: "The secret GitHub signs webhook deliveries with (default: DEVCI_WEBHOOK_SECRET).") var webhookSecret: String?
    @Option(help: "The most artifacts one job may keep, summed over its files (like 100m or 2g).") var artifactLimit = "100m"
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard ByteSize.parse(artifactLimit) != nil else { throw ValidationError("--artifact-limit must be a size like 100m or 2g") }
        if let httpPort, !(0...65535).contains(httpPort) { throw ValidationError("--http-port must be from 0 to 65535") }
        _ = try timeFlag(heartbeat, "--heartbeat")
        _ = try timeFlag(authTimeout, "--auth-timeout")
        _ = try timeFlag(idleTimeout, "--idle-timeout")
        guard try timeFlag(lease, "--lease") > timeFlag(heartbeat, "--heartbeat") else { throw ValidationError("--lease must be longer than --heartbeat") }
        guard maxReassignments >= 0 else { throw ValidationError("--max-reassignments must be 0 or more") }
        guard (1...1_000_000).contains(listenBacklog) else { throw ValidationError("--listen-backlog must be from 1 to 1000000") }
        guard (maxPendingConnections ?? 1) >= 1 else { throw ValidationError("--max-pending-connections must be 1 or more") }
        _ = try storeLocation(db)
    }

    func run() throws {
        // A SIGHUP before the dispatcher listens must not kill it: it is ignored until the reload handler is in.
        signal(SIGHUP, SIG_IGN)
        let logger = try logging.bootstrap("devci.dispatcher")
        let heartbeat = try timeFlag(self.heartbeat, "--heartbeat"), lease = try timeFlag(self.lease, "--lease")
        let token = (token ?? ProcessInfo.processInfo.environment["DEVCI_TOKEN"]).flatMap { $0.isEmpty ? nil : $0 }
        Secrets.guardSecret(variable: "DEVCI_TOKEN", option: "--token")
        let webhookSecret = (webhookSecret ?? ProcessInfo.processInfo.environment["DEVCI_WEBHOOK_SECRET"]).flatMap { $0.isEmpty ? nil : $0 }
        Secrets.guardSecret(variable: "DEVCI_WEBHOOK_SECRET", option: "--webhook-secret")
        let environment = ProcessInfo.processInfo.environment
        let smtpUser = environment["DEVCI_SMTP_USER"].flatMap { $0.isEmpty ? nil : $0 }
        let smtpPassword = environment["DEVCI_SMTP_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        Secrets.scrub("DEVCI_SMTP_USER")
        Secrets.scrub("DEVCI_SMTP_PASSWORD")
        let location = try storeLocation(db)
        // Read into the address: no child or /proc reader gets the database's password from here on.
        Secrets.scrub("PGPASSWORD")
        if case .postgres = location, let db, URLComponents(string: db)?.password != nil { Secrets.scrubArgument("--db") }
        let artifactFolder = artifacts.map { ArtifactFolder(root: URL(fileURLWithPath: $0).standardizedFileURL.path) } ?? location.defaultArtifacts()
        // An invalid configuration stops the start, with every error.
        let serverConfig = try self.config.map(loadServerConfig) ?? .empty
        let files = OpenFiles.raiseLimit()
        let termination = Termination()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        // One dispatcher writes a database. SQLite: a second one is refused. PostgreSQL: it stands by.
        var lock: DatabaseLock?
        var leadership: Leadership?
        let store: SQLStore
        switch location {
        case .sqlite(let path):
            do { lock = try DatabaseLock(databasePath: path) } catch { throw Failure("\(error)") }
            do { store = try SQLStore.open(location) } catch { throw Failure("cannot open the database \(path): \(error)") }
        case .postgres(let address):
            let leader = Leadership(address: address, identity: "dispatcher pid \(getpid()) on \(ProcessInfo.processInfo.hostName), listening on \(host):\(port)",
                                    logger: logger)
            leadership = leader
            termination.whenSignalled { leader.stop() }
            guard try standBy(until: leader, group: group, logger: logger) else { return }
            do { store = try SQLStore.open(location) } catch { throw Failure("cannot open the database \(address): \(error)") }
            do {
                let epoch = try leader.takeOver(store: store, onLost: { termination.fail($0) })
                logger.notice("leading the dispatchers of \(address) (epoch \(epoch)): restoring the queue and the leases")
            } catch {
                throw Failure("cannot take the lead on \(address): \(error)")
            }
        }
        logger.info("database \(location); artifacts in \(artifactFolder.root), at most \(artifactLimit) per job")
        if token == nil && !["127.0.0.1", "localhost", "::1"].contains(host) {
            logger.warning("listening on \(host) without a token: anyone who can reach this port can register runners and dispatch work; set --token or DEVCI_TOKEN")
        }
        let somaxconn = (try? String(contentsOfFile: "/proc/sys/net/core/somaxconn", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        if let somaxconn, somaxconn < listenBacklog {
            logger.notice("listen backlog \(listenBacklog) is capped by the kernel at \(somaxconn) (net.core.somaxconn)")
        }
        // Half the descriptors: a whole fleet reconnecting at once fits (10,000 runners under the usual hard limits),
        // and idle sockets can never take the other half, which registered runners and the database use.
        let pendingCap = maxPendingConnections ?? max(16, Int(files / 2))
        var config = DispatcherConfig(host: host, port: port, token: token,
                                      scheduler: SchedulerConfig(heartbeatInterval: heartbeat, leaseDuration: lease,
                                                                 maxReassignments: maxReassignments,
                                                                 restoreGrace: lease + .seconds(3)),
                                      listenBacklog: listenBacklog, identifyTimeout: try timeFlag(authTimeout, "--auth-timeout"),
                                      maxPendingConnections: pendingCap)
        config.idleTimeout = try timeFlag(idleTimeout, "--idle-timeout")
        config.serverConfig = serverConfig
        config.configDirectory = self.config.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        config.httpHost = httpHost
        config.httpPort = httpPort
        config.webhookSecret = webhookSecret
        config.smtpUser = smtpUser
        config.smtpPassword = smtpPassword
        config.artifacts = artifactFolder
        config.artifactLimit = ByteSize.parse(artifactLimit) ?? ArtifactPath.defaultLimit
        let dispatcher = Dispatcher(
            config: config,
            store: store, loop: group.next(), logger: logger, onFatal: { termination.fail($0) })
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { dispatcher.reload() }
        hangup.resume()
        defer { hangup.cancel() }
        let address: String
        do {
            let bound = try dispatcher.start()
            address = "\(bound.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? host):\(bound.port ?? port)"
        } catch {
            throw Failure("cannot listen on \(host):\(port): \(error)")
        }
        if let httpPort {
            if token == nil && !["127.0.0.1", "localhost", "::1"].contains(httpHost) {
                logger.warning("HTTP side on \(httpHost) without a token: anyone who can reach it can start any task; set --token or DEVCI_TOKEN")
            }
            do {
                let port = try dispatcher.startHTTP(port: httpPort)
                logger.info("HTTP side serving http://\(httpHost.contains(":") ? "[\(httpHost)]" : httpHost):\(port) (POST /hooks/github: \(webhookSecret == nil ? "off, no --webhook-secret" : "on"); POST /hooks/tasks/<name>; GET /metrics\(token == nil ? "" : ", with the token as a Bearer credential"))")
            } catch {
                dispatcher.shutdown()
                throw Failure("cannot listen for HTTP on \(httpHost):\(httpPort): \(error)")
            }
        }
        if let dir = self.config {
            logger.info("configuration \(dir): \(serverConfig.tasks.count) task(s); kill -HUP \(getpid()) or `devci reload` rereads it")
        }
        lock?.describe("dispatcher pid \(getpid()) listening on \(address), started \(ISO8601DateFormatter().string(from: Date()))")
        logger.info("listening on \(address) (protocol \(WireLimits.protocolVersion), heartbeat \(heartbeat), lease \(lease), token \(token == nil ? "off" : "on"), open files \(files), waiting connections at most \(pendingCap))")
        try termination.wait(logger) {
            dispatcher.shutdown()
            leadership?.stop()
        }
        withExtendedLifetime(lock) {}
    }

    /// Waits until this dispatcher leads the PostgreSQL database's dispatchers. Meanwhile its port answers every
    /// peer `standby` (naming the leader), so they move on to the next address. False: stopped while waiting.
    private func standBy(until leader: Leadership, group: EventLoopGroup, logger: Logger) throws -> Bool {
        var listener: StandbyListener?
        defer { listener?.close() }
        var failure: Error?
        let leads: Bool
        do {
            leads = try leader.acquire { holder in
                if listener == nil && failure == nil {
                    do {
                        listener = try StandbyListener(host: host, port: port, group: group)
                    } catch {
                        failure = error
                        leader.stop()
                        return
                    }
                    logger.notice("standing by on \(host):\(port): \(holder) leads \(leader.address); peers are told to try the next address, and this dispatcher takes over when the leader is gone")
                } else {
                    logger.notice("\(holder) now leads \(leader.address); still standing by")
                }
                listener?.setLeader(holder)
            }
        } catch {
            throw Failure("cannot open the database: \(error)")
        }
        if let failure { throw Failure("cannot listen on \(host):\(port): \(failure)") }
        if leads && listener != nil { logger.notice("the leader is gone: taking over") }
        return leads
    }
}
