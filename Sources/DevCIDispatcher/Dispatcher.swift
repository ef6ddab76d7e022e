import DevCIPipeline
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
    /// The plan of every build with unfinished jobs, and where each of their jobs belongs.
    private var plans: [Int64: BuildState] = [:]
    private var jobIndex: [Int64: (build: Int64, name: String)] = [:]
    private var runnerHosts: [String: String] = [:]
    private var heartbeatWritten: [String: ContinuousClock.Instant] = [:]

    struct BuildState {
        var plan: BuildPlan
        var specs: [String: JobSpec]
    }
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
        var restoredPlans: [Int64: BuildState] = [:]
        for build in Set(active.map(\.spec.build)) {
            let jobs = try store.jobs(build: build)
            var states: [String: JobState] = [:]
            for j in jobs where j.status != JobState.pending.rawValue { states[j.name] = JobState(rawValue: j.status) }
            let plan = BuildPlan(jobs: jobs.map { PlannedJob(name: $0.name, stage: $0.stage, dependencies: $0.dependencies, allowFailure: $0.allowFailure) },
                                 states: states)
            restoredPlans[build] = BuildState(plan: plan, specs: Dictionary(active.filter { $0.spec.build == build }.map { ($0.spec.name, $0.spec) },
                                                                           uniquingKeysWith: { a, _ in a }))
        }
        let server = try loop.submit { () throws -> Void in
            self.apply(self.scheduler.handle(.restored(active.filter { $0.state != .pending }), now: .now))
            for (build, state) in restoredPlans {
                self.track(build, state)
                // Jobs whose dependencies ended while the dispatcher was down start now.
                self.advance(build)
            }
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
            runnerHosts[name] = channels[id]?.remoteAddress?.ipAddress
            apply(scheduler.handle(.registered(id, name: name, slots: slots), now: now))
        case .status:
            send(id, .status(queued: scheduler.queuedCount, running: scheduler.leasedCount, runners: scheduler.connectedRunnerCount))
        case .dispatch(let repo, let commit, let branch, let pipeline, let title, let author):
            do {
                let result = try enqueue(repo: repo, commit: commit, branch: branch, pipeline: pipeline)
                if result.created && !(title.isEmpty && author.isEmpty) {
                    do { try store.describe(build: result.build, title: title, author: author) } catch {
                        logger.error("could not store the title of build \(result.build): \(error)")
                    }
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

    /// Records a build of the commit from its pipeline (or the default single job) and starts what may start.
    private func enqueue(repo: String, commit: String, branch: String, pipeline text: PipelineText) throws -> EnqueueResult {
        let at = Date()
        var plan: BuildPlan
        var jobs: [NewJob]
        switch text {
        case .none:
            jobs = [NewJob(name: "test")]
            plan = BuildPlan(jobs: [PlannedJob(name: "test", stage: "test", dependencies: [], allowFailure: false)])
        case .unreadable(let why):
            logger.warning("build of \(repo) \(commit.prefix(12)) fails: \(why)")
            return try store.enqueueInvalid(repo: repo, branch: branch, commit: commit, reason: why, details: [why], at: at)
        case .text(let yaml):
            let pipeline: Pipeline
            do {
                pipeline = try PipelineParser.parse(yaml)
            } catch {
                logger.warning("build of \(repo) \(commit.prefix(12)) fails: its pipeline file is invalid")
                return try store.enqueueInvalid(repo: repo, branch: branch, commit: commit, reason: "\(pipelineFileName) is invalid",
                                                details: error.errors.map(\.description), at: at)
            }
            plan = BuildPlan(pipeline: pipeline)
            // Each job's script travels in one `assign` line: refuse what would not fit.
            for def in pipeline.jobs where LineCodec.percentEncode(def.script(pipelineEnv: pipeline.env).json()).utf8.count > WireLimits.maxScriptBytes {
                return try store.enqueueInvalid(repo: repo, branch: branch, commit: commit, reason: "\(pipelineFileName) is invalid",
                                                details: ["\(pipelineFileName): jobs.\(def.name): the job's steps and env are too large to send to a runner (over \(WireLimits.maxScriptBytes) bytes encoded)"],
                                                at: at)
            }
            jobs = zip(pipeline.jobs, plan.jobs).map { def, planned in
                NewJob(name: def.name, stage: def.stage, dependencies: planned.dependencies, allowFailure: def.allowFailure,
                       script: def.script(pipelineEnv: pipeline.env).json(), retries: def.retries,
                       retryDelaySeconds: def.retryDelay.seconds)
            }
        }
        // What may start at once is stored `queued` in the same transaction as the build.
        let first = Set(plan.next().compactMap { if case .start(let name) = $0 { return name } else { return nil } })
        for i in jobs.indices { jobs[i].startsQueued = first.contains(jobs[i].name) }
        let result = try store.enqueue(repo: repo, branch: branch, commit: commit, jobs: jobs, at: at)
        if result.created {
            logger.info("build \(result.build) queued: \(repo) \(branch) \(commit.prefix(12)), \(jobs.count) job(s)")
            track(result.build, BuildState(plan: plan, specs: Dictionary(result.jobs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })))
            apply(scheduler.handle(.enqueued(result.jobs.filter { first.contains($0.name) }), now: .now))
        }
        return result
    }

    private func track(_ build: Int64, _ state: BuildState) {
        plans[build] = state
        for (name, spec) in state.specs { jobIndex[spec.id] = (build, name) }
    }

    /// Starts or skips what the build's plan says is due.
    private func advance(_ build: Int64, after update: (name: String, state: JobState)? = nil) {
        guard var state = plans[build] else { return }
        let actions = update.map { state.plan.update($0.name, to: $0.state) } ?? state.plan.next()
        plans[build] = state
        var starting: [JobSpec] = []
        for action in actions {
            switch action {
            case .start(let name):
                guard let spec = state.specs[name] else { continue }
                record(Scheduler.Record(job: spec.id, state: .queued, attempt: 0))
                starting.append(spec)
            case .skip(let name, let reason):
                guard let spec = state.specs[name] else { continue }
                record(Scheduler.Record(job: spec.id, state: .skipped, attempt: 0, reason: reason))
            }
        }
        if state.plan.isFinished {
            plans[build] = nil
            for spec in state.specs.values { jobIndex[spec.id] = nil }
            logger.info("build \(build) \(state.plan.outcome.rawValue)")
        }
        if !starting.isEmpty { apply(scheduler.handle(.enqueued(starting), now: .now)) }
    }

    private func runnerMessage(_ message: ClientMessage, from id: ConnectionID, now: ContinuousClock.Instant) {
        switch message {
        case .heartbeat:
            apply(scheduler.handle(.heartbeat(id), now: now))
            // The runners page shows the last heartbeat; writing it every few seconds is enough.
            if let name = scheduler.runnerName(id), now - (heartbeatWritten[name] ?? now - .seconds(60)) >= .seconds(5) {
                heartbeatWritten[name] = now
                try? store.recordHeartbeat(runner: name, at: Date())
            }
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
                record(r)
                if r.state.isFinal, let (build, name) = jobIndex[r.job] {
                    advance(build, after: (name, r.state))
                }
            case .send(let id, let message):
                send(id, message)
            case .close(let id):
                logger.warning("closing connection \(id): its runner went silent and has reconnected")
                channels[id]?.close(promise: nil)
            case .runnerState(let name, let state):
                logger.info("runner \(name) \(state)")
                let host = state == "connected" ? runnerHosts[name] : nil
                do { try store.recordRunner(name: name, state: state, host: host, at: Date()) } catch {
                    logger.error("could not record runner \(name): \(error)")
                }
            }
        }
    }

    /// Writes a job's state change (log lines of the attempt first) and logs it.
    private func record(_ r: Scheduler.Record) {
        flushLogs()
        do {
            try store.record(JobTransition(job: r.job, state: r.state, attempt: r.attempt, runner: r.runner, reason: r.reason,
                                           exitCode: r.exitCode, reassignments: r.reassignments, retriesUsed: r.retriesUsed, at: Date()))
        } catch {
            logger.error("could not record job \(r.job) → \(r.state.rawValue): \(error)")
        }
        let level: Logger.Level = r.state == .error || (r.state == .queued && r.reason != nil) ? .warning : .info
        logger.log(level: level, "job \(r.job)\(jobIndex[r.job].map { " (\($0.name))" } ?? "") attempt \(r.attempt) → \(r.state.rawValue)\(r.runner.map { " on \($0)" } ?? "")\(r.reason.map { ": \($0)" } ?? "")")
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
    /// Set when this handler closes the connection: lines still buffered from the same read are not acted on.
    private var closing = false

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
        guard !closing else { return }
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
                hangUp(context)
                return
            }
            guard let expected = dispatcher.config.token, constantTimeEquals(token, expected) else {
                dispatcher.logger.warning("connection \(id) from \(context.remoteAddress?.description ?? "?") sent a wrong token")
                dispatcher.send(id, .error(code: "bad_token", message: "wrong token"))
                context.flush()
                hangUp(context)
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
            hangUp(context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        dispatcher.readComplete()
        context.fireChannelReadComplete()
    }

    /// A peer that sends requests without reading the replies is not read from until it catches up,
    /// so replies never pile up without bound.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        context.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        hangUp(context)
    }

    private func hangUp(_ context: ChannelHandlerContext) {
        closing = true
        context.close(promise: nil)
    }

    private func refuse(context: ChannelHandlerContext, _ error: WireError) {
        dispatcher.send(id, .error(code: error.code, message: error.message))
        if !authenticated {
            context.flush()
            hangUp(context)
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
            hangUp(context)
        }
    }
}
