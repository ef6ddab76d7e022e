import DevCIStore
import DevCIWire
import Foundation
import Logging
import NIOCore
import NIOPosix

/// How a dispatcher is started.
public struct DispatcherConfig: Sendable {
    public var host: String
    public var port: Int
    /// When set, every peer must send `auth token=…` first.
    public var token: String?
    public var scheduler: SchedulerConfig
    /// How often leases are checked.
    public var tickInterval: Duration

    public init(host: String = "127.0.0.1", port: Int = 8888, token: String? = nil,
                scheduler: SchedulerConfig = SchedulerConfig(), tickInterval: Duration = .milliseconds(100)) {
        self.host = host
        self.port = port
        self.token = token
        self.scheduler = scheduler
        self.tickInterval = tickInterval
    }
}

/// The hub: accepts connections, feeds the scheduler and carries out its actions against SQLite and the sockets.
/// Everything runs on one event loop, so the scheduler and the store are touched by one thread only.
public final class Dispatcher: @unchecked Sendable {
    public let config: DispatcherConfig
    let store: BuildStore
    let logger: Logger
    let loop: EventLoop
    private var scheduler: Scheduler
    private var channels: [ConnectionID: Channel] = [:]
    private var nextConnection: ConnectionID = 1
    private var pendingLogs: [LogRecord] = []
    private var unflushed: Set<ConnectionID> = []
    private var tickTask: RepeatedTask?
    private var serverChannel: Channel?

    public init(config: DispatcherConfig, store: BuildStore, loop: EventLoop, logger: Logger) {
        self.config = config
        self.store = store
        self.loop = loop
        self.logger = logger
        self.scheduler = Scheduler(config: config.scheduler)
    }

    /// Restores unfinished work from the database, binds the port and starts the lease clock.
    /// Returns the bound address.
    public func start() throws -> SocketAddress {
        let active = try store.activeJobs()
        let server = try loop.submit { () throws -> Void in
            self.apply(self.scheduler.handle(.restored(active), now: .now))
        }.flatMap { () -> EventLoopFuture<Channel> in
            ServerBootstrap(group: self.loop)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let id = self.nextConnection
                        self.nextConnection += 1
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(BoundedLineDecoder()))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineEncoder()))
                        try channel.pipeline.syncOperations.addHandler(DispatcherConnection(id: id, dispatcher: self))
                    }
                }
                .bind(host: self.config.host, port: self.config.port)
        }.wait()
        serverChannel = server
        let queued = active.filter { $0.state == .queued }.count
        logger.info("restored \(queued) queued and \(active.count - queued) leased job(s) from the database")
        tickTask = loop.scheduleRepeatedTask(initialDelay: .init(config.tickInterval), delay: .init(config.tickInterval)) { _ in
            self.apply(self.scheduler.handle(.tick, now: .now))
            self.flushWrites()
        }
        return server.localAddress!
    }

    /// Stops accepting, closes every connection and writes what is buffered.
    public func shutdown() {
        try? loop.submit {
            self.tickTask?.cancel()
            self.serverChannel?.close(promise: nil)
            for ch in self.channels.values { ch.close(promise: nil) }
            self.flushLogs()
        }.wait()
    }

    /// A future that completes when the listening socket closes.
    public var closeFuture: EventLoopFuture<Void>? { serverChannel?.closeFuture }

    // MARK: Connection events (on the loop)

    func connected(_ id: ConnectionID, channel: Channel) {
        channels[id] = channel
        send(id, .hello(protocolVersion: WireLimits.protocolVersion, authRequired: config.token != nil))
    }

    func disconnected(_ id: ConnectionID) {
        channels[id] = nil
        apply(scheduler.handle(.disconnected(id), now: .now))
        flushWrites()
    }

    /// Handles one decoded message from an authenticated peer. Returns false when the message was refused.
    func received(_ message: ClientMessage, from id: ConnectionID) -> Bool {
        let now = ContinuousClock.now
        switch message {
        case .auth(let token):
            // Already authenticated (or no token set): say whether this token would do.
            if let expected = config.token, !constantTimeEquals(token, expected) {
                send(id, .error(code: "bad_token", message: "wrong token"))
                return false
            }
            send(id, .ok(what: "auth"))
        case .register(let name, let slots):
            apply(scheduler.handle(.registered(id, name: name, slots: slots), now: now))
        case .status:
            send(id, .status(queued: scheduler.queuedCount, running: scheduler.leasedCount, runners: scheduler.connectedRunnerCount))
        case .dispatch(let repo, let commit, let branch):
            do {
                let result = try store.enqueue(repo: repo, branch: branch, commit: commit, jobNames: ["test"], at: Date())
                if result.created {
                    logger.info("build \(result.build) queued: \(repo) \(branch) \(commit.prefix(12))")
                    apply(scheduler.handle(.enqueued(result.jobs), now: now))
                }
                send(id, .queued(build: result.build, jobs: result.jobs.map(\.id), created: result.created))
            } catch {
                logger.error("could not enqueue \(repo) \(commit): \(error)")
                send(id, .error(code: "store", message: "could not record the build"))
            }
        case .lastDispatched(let repo, let branch):
            do {
                send(id, .last(repo: repo, branch: branch, commit: try store.lastDispatched(repo: repo, branch: branch) ?? ""))
            } catch {
                logger.error("could not read the last dispatched commit of \(repo) \(branch): \(error)")
                send(id, .error(code: "store", message: "could not read the database"))
            }
        case .heartbeat, .claim, .started, .log, .result:
            guard scheduler.runnerName(id) != nil else {
                send(id, .error(code: "not_registered", message: "register before sending runner messages"))
                return false
            }
            runnerMessage(message, from: id, now: now)
        }
        return true
    }

    private func runnerMessage(_ message: ClientMessage, from id: ConnectionID, now: ContinuousClock.Instant) {
        switch message {
        case .heartbeat:
            apply(scheduler.handle(.heartbeat(id), now: now))
        case .claim(let job, let attempt):
            apply(scheduler.handle(.claim(id, job: job, attempt: attempt), now: now))
        case .started(let job, let attempt):
            apply(scheduler.handle(.started(id, job: job, attempt: attempt), now: now))
        case .log(let job, let attempt, let stream, let ts, let text):
            if scheduler.holdsLease(id, job: job, attempt: attempt) {
                pendingLogs.append(LogRecord(job: job, attempt: attempt, stream: stream, timestampMillis: ts, text: text))
                if pendingLogs.count >= 2048 { flushLogs() }
            }
        case .result(let job, let attempt, let outcome, let exitCode, let reason):
            apply(scheduler.handle(.result(id, job: job, attempt: attempt, outcome: outcome, exitCode: exitCode, reason: reason), now: now))
        default:
            break
        }
    }

    /// Called once per burst of reads: log lines are written in one transaction per burst.
    func readComplete() {
        flushLogs()
        flushWrites()
    }

    /// Flushes the connections that were written to since the last flush.
    func flushWrites() {
        for id in unflushed { channels[id]?.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    func flushLogs() {
        guard !pendingLogs.isEmpty else { return }
        do {
            try store.appendLogs(pendingLogs)
        } catch {
            logger.error("could not write \(pendingLogs.count) log line(s): \(error)")
        }
        pendingLogs.removeAll(keepingCapacity: true)
    }

    // MARK: Carrying out actions

    private func apply(_ actions: [Scheduler.Action]) {
        for action in actions {
            switch action {
            case .record(let r):
                // Log lines of an attempt land before its result.
                flushLogs()
                do {
                    try store.record(JobTransition(job: r.job, state: r.state, attempt: r.attempt, runner: r.runner, reason: r.reason,
                                                   exitCode: r.exitCode, reassignments: r.reassignments, at: Date()))
                } catch {
                    logger.error("could not record job \(r.job) → \(r.state.rawValue): \(error)")
                }
                let line = "job \(r.job) attempt \(r.attempt) → \(r.state.rawValue)\(r.runner.map { " on \($0)" } ?? "")\(r.reason.map { ": \($0)" } ?? "")"
                if r.state == .queued || r.state == .error { logger.warning("\(line)") } else { logger.info("\(line)") }
            case .send(let id, let message):
                send(id, message)
            case .runnerState(let name, let state):
                logger.info("runner \(name) \(state)")
                do { try store.recordRunner(name: name, state: state, at: Date()) } catch {
                    logger.error("could not record runner \(name): \(error)")
                }
            }
        }
    }

    func send(_ id: ConnectionID, _ message: ServerMessage) {
        guard let channel = channels[id] else { return }
        channel.write(LineCodec.encode(message), promise: nil)
        unflushed.insert(id)
    }
}

/// One peer's connection: authentication, decoding, and the count of bad lines.
final class DispatcherConnection: ChannelInboundHandler {
    typealias InboundIn = FramedLine
    typealias OutboundOut = String

    let id: ConnectionID
    let dispatcher: Dispatcher
    private var authenticated: Bool
    private var errors = 0
    /// Lines received since the connection opened, or since it authenticated.
    private var lines = 0

    init(id: ConnectionID, dispatcher: Dispatcher) {
        self.id = id
        self.dispatcher = dispatcher
        self.authenticated = dispatcher.config.token == nil
    }

    func channelActive(context: ChannelHandlerContext) {
        dispatcher.connected(id, channel: context.channel)
        context.flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        dispatcher.disconnected(id)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lines += 1
        let message: ClientMessage
        do {
            switch unwrapInboundIn(data) {
            case .line(let text): message = try LineCodec.decodeClient(text)
            case .tooLong: throw WireError.tooLong
            case .invalidUTF8: throw WireError.badUTF8
            }
        } catch let error as WireError {
            refuse(context: context, error)
            return
        } catch {
            return
        }
        if !authenticated {
            guard case .auth(let token) = message else {
                dispatcher.send(id, .error(code: "auth_required", message: "send 'auth token=…' first"))
                context.flush()
                context.close(promise: nil)
                return
            }
            guard let expected = dispatcher.config.token, constantTimeEquals(token, expected) else {
                dispatcher.logger.warning("connection \(id) from \(context.remoteAddress?.description ?? "?") sent a wrong token")
                dispatcher.send(id, .error(code: "bad_token", message: "wrong token"))
                context.flush()
                context.close(promise: nil)
                return
            }
            authenticated = true
            lines = 0
            dispatcher.send(id, .ok(what: "auth"))
            return
        }
        if !dispatcher.received(message, from: id) {
            countError(context: context)
        } else if lines == 1, case .status = message {
            // A one-shot query by hand (`echo status | nc localhost 8888`): answer and hang up.
            context.flush()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        dispatcher.readComplete()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func refuse(context: ChannelHandlerContext, _ error: WireError) {
        dispatcher.send(id, .error(code: error.code, message: error.message))
        if !authenticated {
            context.flush()
            context.close(promise: nil)
            return
        }
        countError(context: context)
    }

    /// A peer that keeps sending garbage is cut off.
    private func countError(context: ChannelHandlerContext) {
        errors += 1
        if errors >= WireLimits.maxErrorsPerConnection {
            dispatcher.logger.warning("closing connection \(id) from \(context.remoteAddress?.description ?? "?") after \(errors) bad lines")
            dispatcher.send(id, .error(code: "too_many_errors", message: "closing after \(errors) bad lines"))
            context.flush()
            context.close(promise: nil)
        }
    }
}
