import DevCIGit
import DevCIProcess
import DevCIWire
import Foundation
import Logging
import NIOCore
import NIOPosix

/// How a runner is started.
public struct RunnerConfig: Sendable {
    public var clonePath: String
    public var host: String
    public var port: Int
    public var token: String?
    /// Unique among the dispatcher's runners; defaults to host and process id.
    public var name: String
    /// Run through `/bin/sh -c` in the clone. Comes from the runner's operator, never from the wire.
    public var testCommand: String
    /// The longest wait between reconnection attempts.
    public var maxBackoff: Duration
    /// How many jobs run at once, each in its own workspace.
    public var parallel: Int
    /// How long the dispatcher may take to greet and register this runner before it reconnects (a connection
    /// that completed on this side only, in an overflowing listen backlog, would otherwise wait for ever).
    public var registrationTimeout: Duration = .seconds(10)

    public init(clonePath: String, host: String, port: Int, token: String? = nil, name: String,
                testCommand: String = RunnerConfig.defaultTestCommand, maxBackoff: Duration = .seconds(5), parallel: Int = 1) {
        self.parallel = max(1, parallel)
        self.clonePath = clonePath
        self.host = host
        self.port = port
        self.token = token
        self.name = name
        self.testCommand = testCommand
        self.maxBackoff = maxBackoff
    }

    /// The test command of the system DevCI descends from.
    public static let defaultTestCommand = "python3 -m unittest discover -s tests -v"
}

/// A runner: dials the dispatcher and keeps the connection, reconnecting with capped backoff; runs each
/// assigned job in its clone and reports its log and result. All state lives on one event loop.
public final class RunnerAgent: @unchecked Sendable {
    public let config: RunnerConfig
    let loop: EventLoop
    let logger: Logger

    private var channel: Channel?
    private var heartbeatTask: RepeatedTask?
    private var registrationDeadline: Scheduled<Void>?
    private var outage = OutageNotice()
    private var backoff: Duration = .milliseconds(100)
    private var stopping = false
    /// Jobs in progress, each in its own workspace.
    private var current: [Int64: (assignment: JobAssignment, executor: any Executor, workspace: Int)] = [:]
    /// Results sent but not yet accepted or discarded: sent again after a reconnect.
    private var unacknowledged: [Int64: ClientMessage] = [:]
    /// Log lines produced while disconnected, sent on reconnect.
    private var outbox: [ClientMessage] = []
    private var droppedLines = 0
    private static let outboxLimit = 100_000
    private static let outboxByteLimit = 64 << 20
    private var outboxBytes = 0

    public init(config: RunnerConfig, loop: EventLoop, logger: Logger) {
        self.config = config
        self.loop = loop
        self.logger = logger
    }

    public func start() {
        loop.execute { self.connect() }
    }

    /// Gives back the job in progress (the dispatcher queues it again at once) and disconnects.
    public func shutdown() {
        let done = loop.makePromise(of: Void.self)
        loop.execute {
            self.stopping = true
            self.heartbeatTask?.cancel()
            guard let ch = self.channel else {
                for job in self.current.values { job.executor.cancel(grace: 1) }
                done.succeed()
                return
            }
            for (a, executor, _) in self.current.values.sorted(by: { $0.assignment.job < $1.assignment.job }) {
                executor.cancel(grace: 1)
                ch.write(LineCodec.encode(ClientMessage.result(job: a.job, attempt: a.attempt, outcome: .cancelled, exitCode: -1,
                                                               reason: "runner shutting down")), promise: nil)
            }
            ch.writeAndFlush(LineCodec.encode(ClientMessage.heartbeat)).whenComplete { _ in
                ch.close(promise: nil)
                done.succeed()
            }
        }
        try? done.futureResult.wait()
    }

    // MARK: Connection

    private func connect() {
        guard !stopping else { return }
        ClientBootstrap(group: loop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(3))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(BoundedLineDecoder()))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineEncoder()))
                    try channel.pipeline.syncOperations.addHandler(RunnerConnection(agent: self))
                }
            }
            .connect(host: config.host, port: config.port)
            .whenComplete { result in
                switch result {
                case .success(let ch):
                    self.channel = ch
                    self.logger.debug("connected to dispatcher \(self.config.host):\(self.config.port)")
                    let timeout = self.config.registrationTimeout
                    self.registrationDeadline = self.loop.scheduleTask(in: .init(timeout)) {
                        guard self.channel === ch else { return }
                        self.logger.warning("the dispatcher at \(self.config.host):\(self.config.port) did not register this runner within \(timeout); reconnecting")
                        ch.close(promise: nil)
                    }
                case .failure(let error):
                    self.unreachable(ConnectionTrouble.describe(error))
                    self.scheduleReconnect()
                }
            }
    }

    private func scheduleReconnect() {
        guard !stopping else { return }
        let delay = backoff
        backoff = min(backoff * 2, config.maxBackoff)
        let jitter = Double.random(in: 0.8...1.2)
        loop.scheduleTask(in: .nanoseconds(Int64(delay.seconds * jitter * 1e9))) { self.connect() }
    }

    /// Says an outage once, in plain words; the retries that follow are quiet (debug).
    private func unreachable(_ why: String) {
        if let first = outage.failed(why) {
            logger.warning("cannot reach the dispatcher at \(config.host):\(config.port): \(first); retrying with backoff (up to \(config.maxBackoff)) until it is back")
        } else {
            logger.debug("still cannot reach the dispatcher: \(why)")
        }
    }

    func disconnected() {
        heartbeatTask?.cancel()
        heartbeatTask = nil
        registrationDeadline?.cancel()
        registrationDeadline = nil
        let wasConnected = channel != nil
        channel = nil
        if wasConnected && !stopping {
            unreachable("the connection closed (jobs in progress: \(current.isEmpty ? "none" : current.keys.sorted().map(String.init).joined(separator: ", ")))")
        }
        scheduleReconnect()
    }

    func received(_ message: ServerMessage) {
        switch message {
        case .hello(let version, let authRequired):
            guard version == WireLimits.protocolVersion else {
                logger.error("dispatcher speaks protocol \(version), this runner \(WireLimits.protocolVersion)")
                channel?.close(promise: nil)
                return
            }
            if let token = config.token {
                send(.auth(token: token))
            } else if authRequired {
                logger.error("the dispatcher requires a token: start the runner with --token or DEVCI_TOKEN")
            }
            send(.register(name: config.name, slots: config.parallel))
            // Take back what we still hold, then deliver what was produced while cut off.
            for (job, message) in unacknowledged.sorted(by: { $0.key < $1.key }) {
                if case .result(_, let attempt, _, _, _) = message { send(.claim(job: job, attempt: attempt)) }
            }
            for (a, _, _) in current.values.sorted(by: { $0.assignment.job < $1.assignment.job }) { send(.claim(job: a.job, attempt: a.attempt)) }
            // The first heartbeat tells the dispatcher our claims are in: from now on we may be given work.
            send(.heartbeat)
            if droppedLines > 0 {
                logger.warning("dropped \(droppedLines) log line(s) while disconnected")
                droppedLines = 0
            }
            for m in outbox { send(m) }
            outbox.removeAll()
            outboxBytes = 0
            for (_, m) in unacknowledged.sorted(by: { $0.key < $1.key }) { send(m) }
            channel?.flush()
        case .registered(let name, let heartbeatMillis, _):
            backoff = .milliseconds(100)
            registrationDeadline?.cancel()
            registrationDeadline = nil
            if let back = outage.recovered() { logger.notice("the dispatcher is back \(back)") }
            logger.info("registered as \(name) with \(config.host):\(config.port); heartbeat every \(heartbeatMillis) ms")
            heartbeatTask?.cancel()
            let interval = TimeAmount.milliseconds(Int64(max(50, heartbeatMillis)))
            heartbeatTask = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                self.channel?.writeAndFlush(LineCodec.encode(ClientMessage.heartbeat), promise: nil)
            }
        case .assign(let a):
            start(a)
        case .cancel(let job, let attempt, let reason):
            if let (a, executor, _) = current[job], a.attempt == attempt {
                logger.warning("job \(job) attempt \(attempt) cancelled by the dispatcher: \(reason)")
                executor.cancel(grace: 2)
            }
        case .accepted(let job, _):
            unacknowledged[job] = nil
        case .discarded(let job, let attempt, let reason):
            unacknowledged[job] = nil
            logger.warning("result of job \(job) attempt \(attempt) discarded: \(reason)")
        case .error(let code, let message):
            if code == "busy" || code == "timeout" {
                // The dispatcher closes the connection itself; the retry is quiet.
                logger.debug("dispatcher says \(code): \(message)")
                return
            }
            logger.error("dispatcher says \(code): \(message)")
            // Not registered: start over (the dispatcher frees a silent runner's name once its lease expires).
            if code == "name_in_use" { channel?.close(promise: nil) }
        case .ok, .queued, .status, .last:
            break
        }
    }

    /// Sends now when connected; log lines wait in the outbox otherwise (results wait in `unacknowledged`).
    private func send(_ message: ClientMessage) {
        if let ch = channel {
            ch.write(LineCodec.encode(message), promise: nil)
        } else if case .log(_, _, _, _, let text) = message {
            if outbox.count < Self.outboxLimit && outboxBytes < Self.outboxByteLimit {
                outbox.append(message)
                outboxBytes += text.utf8.count
            } else {
                droppedLines += 1
            }
        }
    }

    // MARK: Jobs

    private func start(_ a: JobAssignment) {
        let busy = Set(current.values.map(\.workspace))
        guard current[a.job] == nil, let workspace = (0..<config.parallel).first(where: { !busy.contains($0) }) else {
            logger.warning("refusing job \(a.job): all \(config.parallel) slot(s) busy")
            send(.result(job: a.job, attempt: a.attempt, outcome: .cancelled, exitCode: -1, reason: "runner busy"))
            channel?.flush()
            return
        }
        let executor = HostExecutor()
        current[a.job] = (a, executor, workspace)
        logger.info("job \(a.job) (\(a.name)) attempt \(a.attempt): \(a.repo) \(a.branch) \(a.commit)")
        send(.started(job: a.job, attempt: a.attempt))
        channel?.flush()
        let config = self.config
        let thread = Thread {
            let result = self.execute(a, executor: executor, workspace: workspace, config: config)
            self.loop.execute { self.finished(a, result) }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Runs on the job's own thread: the workspace, then the job's steps (or the test command) on its executor.
    private func execute(_ a: JobAssignment, executor: any Executor, workspace slot: Int, config: RunnerConfig) -> JobExecutor.Result {
        func failed(_ why: String) -> JobExecutor.Result { JobExecutor.Result(termination: .failedToStart(why), timedOut: false, stopped: false) }
        let workspace: String
        do {
            workspace = try Workspaces(clonePath: config.clonePath).prepare(slot: slot, for: a) { self.system(a, $0) }
        } catch {
            return failed("\(error)")
        }
        var script: JobScript?
        if let json = a.script {
            do { script = try JobScript.from(json: json) } catch { return failed("unreadable job script: \(error)") }
        }
        if script == nil { system(a, "running: \(config.testCommand)") }
        var env = ProcessInfo.processInfo.environment
        env["DEVCI_JOB"] = String(a.job)
        env["DEVCI_JOB_NAME"] = a.name
        env["DEVCI_BUILD"] = String(a.build)
        env["DEVCI_COMMIT"] = a.commit
        env["DEVCI_BRANCH"] = a.branch
        env["DEVCI_ATTEMPT"] = String(a.attempt)
        env["DEVCI_TOKEN"] = nil
        let job = ExecutorJob(script: script, fallbackCommand: config.testCommand, directory: workspace, environment: env)
        return executor.run(job) { lines in
            let messages = lines.map {
                ClientMessage.log(job: a.job, attempt: a.attempt, stream: $0.stream, timestampMillis: $0.timestampMillis, text: $0.text)
            }
            // Backpressure: while the connection cannot take more, the reader waits, the pipe fills, and the
            // job itself blocks on its writes; output is never buffered without bound.
            self.sendGate.waitUntilOpen()
            self.loop.execute {
                for m in messages { self.send(m) }
                self.channel?.flush()
            }
        }
    }

    /// Open while the connection to the dispatcher can take more (or there is none: the outbox is bounded).
    let sendGate = Gate()

    final class Gate: @unchecked Sendable {
        private let condition = NSCondition()
        private var open = true

        func set(open value: Bool) {
            condition.lock()
            open = value
            condition.broadcast()
            condition.unlock()
        }

        func waitUntilOpen() {
            condition.lock()
            while !open { _ = condition.wait(until: Date(timeIntervalSinceNow: 1)) }
            condition.unlock()
        }
    }

    private func system(_ a: JobAssignment, _ text: String) {
        let ts = Int64(Date().timeIntervalSince1970 * 1000)
        loop.execute {
            self.send(.log(job: a.job, attempt: a.attempt, stream: .system, timestampMillis: ts, text: text))
            self.channel?.flush()
        }
    }

    private func finished(_ a: JobAssignment, _ result: JobExecutor.Result) {
        current[a.job] = nil
        let (outcome, reason) = result.outcome
        if outcome == .error { logger.error("job \(a.job): \(reason)") }
        logger.info("job \(a.job) attempt \(a.attempt) \(outcome.rawValue)\(reason.isEmpty ? "" : " (\(reason))")")
        if stopping { return }  // shutdown already gave it back
        let message = ClientMessage.result(job: a.job, attempt: a.attempt, outcome: outcome, exitCode: result.termination.exitCode, reason: reason)
        unacknowledged[a.job] = message
        send(message)
        channel?.flush()
    }
}

/// The runner's end of the connection: decodes the dispatcher's lines.
final class RunnerConnection: ChannelInboundHandler {
    typealias InboundIn = FramedLine
    let agent: RunnerAgent

    init(agent: RunnerAgent) {
        self.agent = agent
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .line(let text) = unwrapInboundIn(data) else {
            agent.logger.error("the dispatcher sent a line that is too long or not UTF-8; it was dropped")
            return
        }
        do {
            agent.received(try LineCodec.decodeServer(text))
        } catch {
            agent.logger.warning("ignoring a line from the dispatcher: \(error)")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        agent.sendGate.set(open: true)
        agent.disconnected()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        agent.sendGate.set(open: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        agent.logger.warning("connection error: \(error)")
        context.close(promise: nil)
    }
}
