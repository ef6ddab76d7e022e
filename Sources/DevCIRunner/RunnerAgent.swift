import DevCIContainer
import DevCIGit
import DevCIPipeline
import DevCIProcess
import DevCIWire
import Foundation
import Logging
import NIOConcurrencyHelpers
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
    /// The queues whose jobs this runner takes.
    public var queues: [String] = [defaultQueue]
    /// The container engine for jobs with `image:` (`unix:///path`); `--docker-host`, else `DOCKER_HOST`, else Docker's default.
    public var dockerHost: String = DockerEngine.defaultAddress()
    /// Further dispatchers to try in turn after `host:port` (standbys of the same database): a connection that
    /// fails, is refused or is lost moves on to the next.
    public var alternates: [HostPort] = []

    /// Every dispatcher address, in the order they are tried.
    public var dispatchers: [HostPort] { [HostPort(host: host, port: port)] + alternates }

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
/// assigned job in its clone and reports its log and result. The decisions are `RunnerSession`'s; this is its
/// edge: the connection, the timers and the job threads. All state lives on one event loop.
public final class RunnerAgent: Sendable {
    public let config: RunnerConfig
    let loop: EventLoop
    let logger: Logger
    /// Served at `--metrics-port`.
    public let metrics: RunnerMetrics

    /// The edge's state: read and written on `loop` only, which the box checks.
    private struct State {
        var session: RunnerSession
        var channel: Channel?
        var heartbeatTask: RepeatedTask?
        var registrationDeadline: Scheduled<Void>?
        /// The executor of each job in progress.
        var executors: [Int64: any Executor] = [:]
        /// Which of the dispatcher addresses is dialled (and, once connected, talked to).
        var current = 0
        /// Addresses that went silent, and until when the others are tried first.
        var avoidUntil: [Int: NIODeadline] = [:]
        var startedAt: [Int64: ContinuousClock.Instant] = [:]
        /// The last write of the connection: a `close` waits for it, so a give-back is on the wire before the hang-up.
        var lastWrite: EventLoopFuture<Void>?
        var onClosed: (() -> Void)?
    }
    private let state: NIOLoopBoundBox<State>

    public init(config: RunnerConfig, loop: EventLoop, logger: Logger) {
        self.config = config
        self.loop = loop
        self.logger = logger
        self.metrics = RunnerMetrics(slots: config.parallel)
        let session = RunnerSession(config: .init(name: config.name, slots: config.parallel, queues: config.queues, token: config.token, maxBackoff: config.maxBackoff,
                                                  registrationTimeout: config.registrationTimeout,
                                                  dispatcher: config.dispatchers.map(\.description).joined(separator: ",")))
        state = .makeBoxSendingValue(State(session: session), as: State.self, eventLoop: loop)
    }

    public func start() {
        loop.execute { self.connect() }
        removeLeftoverContainers()
    }

    /// The engine for container jobs, if its address is usable.
    var engine: DockerEngine? { try? DockerEngine(address: config.dockerHost) }

    /// A runner killed with -9 could not remove its job's container: whatever still carries this clone's label goes.
    private func removeLeftoverContainers() {
        guard let engine else { return }
        let clone = config.clonePath, logger = self.logger
        Task {
            do {
                let removed = try await ContainerExecutor.removeLeftovers(engine: engine, clone: clone)
                if removed > 0 { logger.notice("removed \(removed) container(s) left by an earlier run on \(clone)") }
            } catch {
                logger.debug("no leftover containers looked for: \(error)")
            }
        }
    }

    /// Gives back the jobs in progress (the dispatcher queues them again at once) and disconnects.
    public func shutdown() {
        let done = loop.makePromise(of: Void.self)
        loop.execute {
            let connected = self.state.value.channel != nil
            if connected { self.state.value.onClosed = { done.succeed() } }
            self.handle(.stop)
            if !connected { done.succeed() }
        }
        try? done.futureResult.wait()
        // A container job outlives this process unless it is stopped and removed first: wait for the jobs to end.
        let deadline = Date(timeIntervalSinceNow: 15)
        while Date() < deadline, (try? loop.submit({ !self.state.value.executors.isEmpty }).wait()) == true {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Hands an event to the session and carries out what it returns.
    private func handle(_ event: RunnerSession.Event) {
        for action in state.value.session.handle(event, now: .now) {
            switch action {
            case .send(let lines):
                guard let ch = state.value.channel else { continue }
                for line in lines.dropLast() { ch.write(LineCodec.encode(line), promise: nil) }
                if let last = lines.last { state.value.lastWrite = ch.writeAndFlush(LineCodec.encode(last)) }
            case .close:
                state.value.channel?.close(promise: nil)
            case .avoidDispatcher:
                state.value.avoidUntil[state.value.current % config.dispatchers.count] = .now() + Self.avoidance
            case .closeAfterWrites:
                guard let ch = state.value.channel else { continue }
                (state.value.lastWrite ?? loop.makeSucceededVoidFuture()).whenComplete { _ in ch.close(promise: nil) }
            case .reconnect(let delay):
                let jitter = Double.random(in: 0.8...1.2)
                loop.scheduleTask(in: .nanoseconds(Int64(delay.seconds * jitter * 1e9))) { self.connect() }
            case .armRegistrationDeadline(let timeout):
                state.value.registrationDeadline?.cancel()
                state.value.registrationDeadline = loop.scheduleTask(in: .init(timeout)) { self.handle(.registrationTimedOut) }
            case .disarmRegistrationDeadline:
                state.value.registrationDeadline?.cancel()
                state.value.registrationDeadline = nil
            case .startHeartbeat(let interval):
                state.value.heartbeatTask?.cancel()
                state.value.heartbeatTask = loop.scheduleRepeatedTask(initialDelay: .init(interval), delay: .init(interval)) { _ in
                    self.handle(.heartbeatDue)
                }
            case .stopHeartbeat:
                state.value.heartbeatTask?.cancel()
                state.value.heartbeatTask = nil
            case .startJob(let a, let slot):
                run(a, slot: slot)
            case .cancelJob(let job, let grace):
                state.value.executors[job]?.cancel(grace: grace)
            case .log(let level, let text):
                logger.log(level: level, "\(text)")
            }
        }
    }

    // MARK: Connection

    private func connect() {
        guard !state.value.session.stopping else { return }
        let dispatcher = self.dispatcher
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
            .connect(host: dispatcher.host, port: dispatcher.port)
            .whenComplete { result in
                switch result {
                case .success(let ch):
                    self.state.value.channel = ch
                    self.state.value.lastWrite = nil
                    self.logger.debug("connected to dispatcher \(dispatcher)")
                    self.handle(.connected)
                case .failure(let error):
                    self.moveToNextDispatcher()
                    self.handle(.connectFailed(ConnectionTrouble.describe(error)))
                }
            }
    }

    /// The dispatcher dialled now.
    var dispatcher: HostPort { config.dispatchers[state.value.current % config.dispatchers.count] }

    /// After a failed, refused or lost connection, the next address is dialled (with the session's backoff).
    private func moveToNextDispatcher() {
        let n = config.dispatchers.count
        guard n > 1 else { return }
        // The next one that has not gone silent lately (a frozen dispatcher still accepts connections, and each
        // costs a greeting timeout), this one again if it is the only such one; when all have, the one that went
        // silent longest ago (the last to go silent is the likeliest to be still frozen).
        let now = NIODeadline.now()
        let from = state.value.current
        let next = (1...n).map { (from + $0) % n }
        let avoid = state.value.avoidUntil
        state.value.current = next.first { (avoid[$0] ?? .distantPast) <= now }
            ?? next.min { (avoid[$0] ?? .distantPast) < (avoid[$1] ?? .distantPast) } ?? next[0]
    }

    /// How long an address that went silent is tried only after the others.
    static let avoidance = TimeAmount.seconds(10)

    func disconnected() {
        state.value.channel = nil
        state.value.lastWrite = nil
        moveToNextDispatcher()
        handle(.disconnected)
        if let closed = state.value.onClosed {
            state.value.onClosed = nil
            closed()
        }
    }

    func received(_ message: ServerMessage) {
        handle(.received(message))
    }

    // MARK: Jobs

    /// Starts the attempt on a thread of its own, on a fresh executor: in a container when the job names an image.
    private func run(_ a: JobAssignment, slot: Int) {
        // Read once here: the executor depends on it, and `execute` reports it when it is unreadable.
        let script = Result { try a.script.map(JobScript.from(json:)) }
        let executor: any Executor = if (try? script.get())??.container != nil, let engine { ContainerExecutor(engine: engine) } else { HostExecutor() }
        state.value.executors[a.job] = executor
        state.value.startedAt[a.job] = .now
        metrics.running(state.value.executors.count)
        let config = self.config, current = dispatcher
        let thread = Thread {
            let result = self.execute(a, script: script, executor: executor, workspace: slot, config: config, current: current)
            self.loop.execute { self.finished(a, result) }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Runs on the job's own thread: the workspace, then the job's steps (or the test command) on its executor.
    private func execute(_ a: JobAssignment, script decoded: Result<JobScript?, any Error>, executor: any Executor, workspace slot: Int,
                         config: RunnerConfig, current: HostPort) -> JobExecutor.Result {
        let failed = JobExecutor.Result.failedToStart
        let workspace: String
        do {
            workspace = try Workspaces(clonePath: config.clonePath).prepare(slot: slot, for: a) { self.system(a, $0) }
        } catch {
            return failed("\(error)")
        }
        let script: JobScript?
        do { script = try decoded.get() } catch { return failed("unreadable job script: \(error)") }
        if script == nil { system(a, "running: \(config.testCommand)") }
        if let image = script?.container?.image {
            guard executor is ContainerExecutor else { return failed("the container engine address '\(config.dockerHost)' is not usable: give --docker-host unix:///path") }
            system(a, "image \(image) on the engine at \(config.dockerHost)")
        }
        // Artifacts go to the dispatcher this runner is connected to (the leader), or, failing it, to any that answers.
        let wire = { try WireClient.connect(to: [current] + config.dispatchers.filter { $0 != current }, token: config.token).client }
        if let from = script?.artifactsFrom, !from.isEmpty {
            do { try WorkspaceFiles.receive(from: from, build: a.build, into: workspace, client: wire) { self.system(a, $0) } } catch { return failed(error.description) }
        }
        let caches = WorkspaceFiles.CacheStore(clonePath: config.clonePath)
        if let cache = script?.cache { caches.restore(cache, repository: a.repo, workspace: workspace) { self.system(a, $0) } }
        var env = ProcessInfo.processInfo.environment
        env["DEVCI_JOB"] = String(a.job)
        env["DEVCI_JOB_NAME"] = a.name
        env["DEVCI_BUILD"] = String(a.build)
        env["DEVCI_COMMIT"] = a.commit
        env["DEVCI_BRANCH"] = a.branch
        env["DEVCI_ATTEMPT"] = String(a.attempt)
        env["DEVCI_TOKEN"] = nil
        let labels = ["devci.runner": config.name, "devci.job": String(a.job), "devci.attempt": String(a.attempt), "devci.build": String(a.build),
                      ContainerExecutor.cloneLabel: config.clonePath]
        for name in a.secrets.keys { env[name] = nil }
        let job = ExecutorJob(script: script, fallbackCommand: config.testCommand, directory: workspace, environment: env, labels: labels,
                              secrets: a.secrets)
        // A secret the job prints is masked before the line leaves this runner.
        let mask = SecretMask(a.secrets.values)
        // The log's test summary, for a job that writes no report file.
        let scanner = NIOLockedValueBox(LogTestScanner())
        var result = executor.run(job) { lines in
            let messages = lines.map {
                ClientMessage.log(job: a.job, attempt: a.attempt, stream: $0.stream, timestampMillis: $0.timestampMillis, text: mask.mask($0.text))
            }
            scanner.withLockedValue { s in
                for case .log(_, _, let stream, _, let text) in messages where stream != .system { s.feed(text) }
            }
            // Backpressure: while the connection cannot take more, the reader waits, the pipe fills, and the
            // job itself blocks on its writes; output is never buffered without bound.
            self.sendGate.waitUntilOpen()
            self.loop.execute { self.handle(.output(messages)) }
        }
        let succeeded = result.outcome.0 == .success
        // A stopped job (cancel, lost lease, shutdown) gives nothing back: its result will not be recorded.
        guard !result.stopped else { return result }
        let tests = TestCollection.results(script?.reports, workspace: workspace, log: scanner.withLockedValue { $0.found }, mask: mask) { self.system(a, $0) }
        if !tests.isEmpty {
            let messages = TestResultBatch.batches(tests).map { ClientMessage.tests(job: a.job, attempt: a.attempt, results: $0) }
            self.sendGate.waitUntilOpen()
            loop.execute { self.handle(.output(messages)) }
        }
        if let spec = script?.artifacts, spec.applies(succeeded: succeeded) {
            do {
                try WorkspaceFiles.send(spec, from: workspace, job: a.job, attempt: a.attempt, client: wire) { self.system(a, $0) }
            } catch {
                system(a, error.description)
                if succeeded { result.failure = error.description }
            }
        }
        if succeeded, let cache = script?.cache { caches.save(cache, repository: a.repo, workspace: workspace) { self.system(a, $0) } }
        return result
    }

    /// Open while the connection to the dispatcher can take more (or there is none: the outbox is bounded).
    let sendGate = Gate()

    final class Gate: @unchecked Sendable {
        // @unchecked: `open` is guarded by `condition`.
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
        loop.execute { self.handle(.output([.log(job: a.job, attempt: a.attempt, stream: .system, timestampMillis: ts, text: SecretMask(a.secrets.values).mask(text))])) }
    }

    private func finished(_ a: JobAssignment, _ result: JobExecutor.Result) {
        state.value.executors[a.job] = nil
        let (outcome, unmasked) = result.outcome
        let reason = SecretMask(a.secrets.values).mask(unmasked)
        let ran = state.value.startedAt.removeValue(forKey: a.job).map { ContinuousClock.now - $0 } ?? .zero
        metrics.finished(outcome: result.stopped ? "stopped" : outcome.rawValue, after: ran)
        metrics.running(state.value.executors.count)
        if outcome == .error { logger.error("job \(a.job): \(reason)") }
        logger.info("job \(a.job) attempt \(a.attempt) \(outcome.rawValue)\(reason.isEmpty ? "" : " (\(reason))")")
        handle(.finished(job: a.job, result: .result(job: a.job, attempt: a.attempt, outcome: outcome, exitCode: result.termination.exitCode, reason: reason)))
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
