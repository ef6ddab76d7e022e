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
    /// The listen backlog: a fleet reconnecting at once after a restart must not overflow it (the kernel caps
    /// it at net.core.somaxconn).
    public var listenBacklog: Int
    /// How long a new connection may take to authenticate (or, without a token, to send its first line).
    public var identifyTimeout: Duration
    /// How many connections may be waiting to authenticate at once; more are refused, so idle sockets
    /// cannot use up the file descriptors that runners need.
    public var maxPendingConnections: Int
    /// How long a `dispatch` waits for a locked database before it is answered `store` (the build is still
    /// recorded once the database frees; dispatching again is idempotent).
    public var dispatchReplyTimeout: Duration
    /// How long a connection that is not a registered runner (a client: the observer, `devci dispatch`) may
    /// stay silent before it is closed, so idle sockets cannot pile up after they authenticated.
    public var idleTimeout: Duration = .seconds(60)
    /// Tasks, administrators and queues (`--config DIR`), and the folder it is reread from on a reload.
    public var serverConfig = ServerConfig.empty
    public var configDirectory: String?
    /// The HTTP side (webhooks, the generic trigger): off when nil.
    public var httpHost = "127.0.0.1"
    public var httpPort: Int?
    /// The secret GitHub signs its webhook deliveries with; without one, `/hooks/github` refuses every delivery.
    public var webhookSecret: String?
    /// Where artifacts are kept (beside the database); nil refuses uploads.
    public var artifacts: ArtifactFolder?
    /// The most one job may keep, summed over its files.
    public var artifactLimit: Int64 = ArtifactPath.defaultLimit
    /// The SMTP server's credentials (`DEVCI_SMTP_USER`, `DEVCI_SMTP_PASSWORD`).
    public var smtpUser: String?
    public var smtpPassword: String?
    /// How often the outbox is looked at when it had nothing due.
    public var notifierPollInterval: Duration = .milliseconds(500)

    public init(host: String = "127.0.0.1", port: Int = 8888, token: String? = nil,
                scheduler: SchedulerConfig = SchedulerConfig(), tickInterval: Duration = .milliseconds(100),
                listenBacklog: Int = 8192, identifyTimeout: Duration = .seconds(5), maxPendingConnections: Int = 1024,
                dispatchReplyTimeout: Duration = .seconds(5)) {
        self.host = host
        self.port = port
        self.token = token
        self.scheduler = scheduler
        self.tickInterval = tickInterval
        self.listenBacklog = listenBacklog
        self.identifyTimeout = identifyTimeout
        self.maxPendingConnections = maxPendingConnections
        self.dispatchReplyTimeout = dispatchReplyTimeout
    }
}

/// The hub: accepts connections, hands each event to the `BuildCoordinator` and carries out its actions against the
/// store and the sockets.
/// Everything but the store runs on one event loop; store calls go through `StoreWriter`, off the loop, and a
/// message that reports a write (`accepted`, `assign`, `queued`) is sent only once that write is done.
public final class Dispatcher: Sendable {
    public let config: DispatcherConfig
    let store: BuildWriter
    let logger: Logger
    let loop: EventLoop
    let writer: StoreWriter
    /// Counted and measured here, served at `GET /metrics`.
    public let metrics = DispatcherMetrics()
    let notifierControl = NotifierControl()
    /// Everything that changes: read and written on `loop` only, which the box checks.
    let state: NIOLoopBoundBox<State>

    struct State {
        var coordinator: BuildCoordinator
        var triggers = Triggers()
        /// Observers waiting for a push to one of their repositories (normalized addresses), and pushes that came
        /// in while nobody waited for their repository.
        var pushWaiters: [ConnectionID: (repos: Set<String>, timer: Scheduled<Void>)] = [:]
        var unclaimedPushes: Set<String> = []
        var httpTask: Task<Void, Error>?
        var channels: [ConnectionID: Channel] = [:]
        var nextConnection: ConnectionID = 1
        var pendingLogs: [LogRecord] = []
        var unflushed: Set<ConnectionID> = []
        /// The last deferred send of each connection: later messages to it wait for it, so none overtakes another.
        var sendTail: [ConnectionID: EventLoopFuture<Void>] = [:]
        /// Runner states and heartbeats not yet written; written together on each tick.
        var runnerChanges: [RunnerChange] = []
        var heartbeats: [String: Date] = [:]
        /// Connections that have not yet authenticated (or, without a token, said anything).
        var pendingConnections = 0
        var refusedSinceWarning = 0
        var lastRefusalWarning: ContinuousClock.Instant?
        var lastVerify = ContinuousClock.now
        var stopping = false
        var tickTask: RepeatedTask?
        var runnerHosts: [String: String] = [:]
        var runnerQueues: [String: [String]] = [:]
        var heartbeatWritten: [String: ContinuousClock.Instant] = [:]
        var serverChannel: Channel?
        /// The files each attempt in progress has begun to upload, with their announced sizes.
        var artifactUploads: [JobAttempt: ArtifactUpload] = [:]
        var lastArtifactSweep = ContinuousClock.now
        /// When each job was last queued and assigned, for the queue-wait and duration histograms (jobs restored
        /// from the database are measured from their next change on).
        var queuedAt: [Int64: ContinuousClock.Instant] = [:]
        var assignedAt: [Int64: ContinuousClock.Instant] = [:]
        var metricQueues: Set<String> = [defaultQueue]
        /// Every configured secret's value, masked in every log line stored.
        var secretMask = SecretMask.none
        var notifierTask: Task<Void, Never>?
        /// Test results stored per attempt in progress (bounded); forgotten with its result.
        var testCounts: [JobAttempt: Int] = [:]
        /// The task each unfinished build is a run of (for its secrets), known before its first job is assigned.
        var buildTasks: [Int64: String] = [:]
    }

    struct JobAttempt: Hashable {
        var job: Int64
        var attempt: Int
    }

    /// An attempt's announced files and their sum, kept as they come (a chunk must not cost a pass over every file).
    struct ArtifactUpload {
        var sizes: [String: Int64] = [:]
        var total: Int64 = 0

        /// The sum with this file announced at this size.
        func total(with path: String, size: Int64) -> Int64 { total - (sizes[path] ?? 0) + size }

        mutating func announce(_ path: String, size: Int64) {
            total = total(with: path, size: size)
            sizes[path] = size
        }
    }
    /// Artifact files are written and read here, in order, never on the event loop.
    let artifactQueue = DispatchQueue(label: "devci.dispatcher.artifacts")

    /// Stops the clock and closes the listener and every connection (on the loop). Leases stay as they are in
    /// the database: runners claim their jobs back from the next dispatcher. The closes run after the state is
    /// updated, never inside a write to it: a close may call back into the dispatcher.
    private static func stopServing(_ state: NIOLoopBoundBox<State>) {
        state.value.stopping = true
        let current = state.value
        current.tickTask?.cancel()
        current.serverChannel?.close(promise: nil)
        for ch in current.channels.values { ch.close(promise: nil) }
    }

    var scheduler: Scheduler { state.value.coordinator.scheduler }
    /// Connections waiting to authenticate (on the loop).
    var pendingConnections: Int { state.value.pendingConnections }

    /// `onFatal` is called (once, from another thread) when the store fails for good: the dispatcher has then
    /// stopped answering and the process should exit non-zero.
    public init(config: DispatcherConfig, store: BuildWriter, loop: EventLoop, logger: Logger,
                onFatal: @escaping @Sendable (String) -> Void = { _ in }) {
        self.config = config
        self.store = store
        self.loop = loop
        self.logger = logger
        let state = NIOLoopBoundBox.makeBoxSendingValue(State(coordinator: BuildCoordinator(config: config.scheduler)), as: State.self, eventLoop: loop)
        self.state = state
        self.writer = StoreWriter(store: store, loop: loop, logger: logger) { message in
            logger.critical("\(message); stopping: nothing more is acknowledged")
            loop.execute { Self.stopServing(state) }
            onFatal(message)
        }
    }

    /// Restores unfinished work from the database, binds the port and starts the lease clock.
    /// Returns the bound address.
    public func start() throws -> SocketAddress {
        let active = try store.activeJobs()
        var jobsOfBuilds: [Int64: [JobSummary]] = [:]
        for build in Set(active.map(\.spec.build)) { jobsOfBuilds[build] = try store.jobs(build: build) }
        let builds = jobsOfBuilds
        let schedule = try store.taskSchedule(), runs = try store.taskRuns()
        let awaitingNotification = try store.buildsAwaitingNotification()
        let activeTasks = runs.filter(\.active).reduce(into: [Int64: String]()) { $0[$1.build] = $1.task }
        let server = try loop.submit { () throws -> Void in
            self.state.value.buildTasks = activeTasks
            self.apply(self.state.value.coordinator.handle(.restored(active: active, builds: builds), now: .now))
            self.configure(self.config.serverConfig)
            self.startNotifier(awaiting: awaitingNotification)
            self.resumeBisections()
            _ = self.state.value.triggers.handle(.restored(schedule: schedule, runs: runs), now: Date())
        }.flatMap { () -> EventLoopFuture<Channel> in
            ServerBootstrap(group: self.loop)
                .serverChannelOption(.backlog, value: Int32(clamping: self.config.listenBacklog))
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let id = self.state.value.nextConnection
                        self.state.value.nextConnection += 1
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(BoundedLineDecoder()))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineEncoder()))
                        try channel.pipeline.syncOperations.addHandler(DispatcherConnection(id: id, dispatcher: self))
                    }
                }
                .bind(host: self.config.host, port: self.config.port)
        }.flatMap { (server: Channel) -> EventLoopFuture<Channel> in
            self.state.value.serverChannel = server
            self.state.value.tickTask = self.loop.scheduleRepeatedTask(initialDelay: .init(self.config.tickInterval),
                                                                       delay: .init(self.config.tickInterval)) { _ in self.tick() }
            return self.loop.makeSucceededFuture(server)
        }.wait()
        let queued = active.filter { $0.state == .queued }.count, leased = active.filter { $0.state.isLeased }.count
        logger.info("restored \(queued) queued, \(leased) leased and \(active.count - queued - leased) waiting job(s) from the database")
        return server.localAddress!
    }

    private func tick() {
        let now = ContinuousClock.now
        let expiredBefore = scheduler.leasesExpired
        apply(state.value.coordinator.handle(.runner(.tick), now: now))
        metrics.leasesExpired(scheduler.leasesExpired - expiredBefore)
        applyTriggers(state.value.triggers.handle(.tick, now: Date()))
        flushRunnerChanges()
        flushWrites()
        // A database deleted or replaced under an idle dispatcher is noticed within a second, too.
        if now - state.value.lastVerify >= .seconds(1) {
            state.value.lastVerify = now
            _ = writer.submit("check the database file") { _ in }
        }
        if now - state.value.lastArtifactSweep >= .seconds(30) {
            state.value.lastArtifactSweep = now
            sweepArtifacts()
        }
    }

    /// Stops accepting, closes every connection and writes what is buffered. Call it off the loop.
    public func shutdown() {
        stopHTTP()
        stopNotifier()
        try? loop.submit {
            Self.stopServing(self.state)
            self.flushLogs()
            self.flushRunnerChanges()
        }.wait()
        writer.drain()
    }


    // MARK: Connection events (on the loop)

    /// A new connection: greeted, or refused when too many are already waiting to authenticate.
    /// Returns false when it was refused.
    func connected(_ id: ConnectionID, channel: Channel) -> Bool {
        guard state.value.pendingConnections < config.maxPendingConnections else {
            state.value.refusedSinceWarning += 1
            let now = ContinuousClock.now
            if state.value.lastRefusalWarning.map({ now - $0 >= .seconds(10) }) ?? true {
                logger.warning("\(config.maxPendingConnections) connections are waiting to authenticate: refused \(state.value.refusedSinceWarning) more (--max-pending-connections)")
                state.value.lastRefusalWarning = now
                state.value.refusedSinceWarning = 0
            }
            channel.writeAndFlush(LineCodec.encode(ServerMessage.error(code: .busy, message: "too many connections waiting to authenticate; try again")),
                                  promise: nil)
            return false
        }
        state.value.pendingConnections += 1
        state.value.channels[id] = channel
        send(id, .hello(protocolVersion: WireLimits.protocolVersion, authRequired: config.token != nil))
        return true
    }

    /// The connection authenticated (or, without a token, said something valid), or closed before it did.
    func identified() {
        state.value.pendingConnections -= 1
    }

    /// Whether this connection is a registered runner (runners are watched by their leases, not by idleness).
    func isRunner(_ id: ConnectionID) -> Bool { scheduler.runnerName(id) != nil }

    func disconnected(_ id: ConnectionID) {
        state.value.pushWaiters.removeValue(forKey: id)?.timer.cancel()
        state.value.channels[id] = nil
        state.value.sendTail[id] = nil
        // Closed by our own shutdown: the runner is alive and keeps its job for the next dispatcher.
        guard !state.value.stopping else { return }
        apply(state.value.coordinator.handle(.runner(.disconnected(id)), now: .now))
        flushWrites()
    }

    /// Handles one decoded message from an authenticated peer. Returns false when the message was refused.
    func received(_ message: ClientMessage, from id: ConnectionID) -> Bool {
        let now = ContinuousClock.now
        switch message {
        case .auth(let token):
            // Already authenticated (or no token set): say whether this token would do.
            if let expected = config.token, !constantTimeEquals(token, expected) {
                send(id, .error(code: .badToken, message: "wrong token"))
                return false
            }
            send(id, .ok(what: "auth"))
        case .register(let name, let slots, let queues):
            state.value.runnerHosts[name] = state.value.channels[id]?.remoteAddress?.ipAddress
            state.value.runnerQueues[name] = queues
            apply(state.value.coordinator.handle(.runner(.registered(id, name: name, slots: slots, queues: queues)), now: now))
        case .status:
            send(id, .status(queued: scheduler.queuedCount, running: scheduler.leasedCount, runners: scheduler.connectedRunnerCount,
                             waiting: scheduler.waitingQueues))
        case .addJob(let job):
            addJob(job, replyTo: id)
        case .cancel(let target, let by):
            guard state.value.coordinator.isUnfinished(target) else {
                send(id, .error(code: .notFound, message: "\(target) has nothing left to cancel: it has ended, or does not exist"))
                return true
            }
            logger.notice("cancelling \(target) on request\(by.isEmpty ? "" : " of \(by)")")
            let actions = state.value.coordinator.handle(.cancel(target, reason: by.isEmpty ? "cancelled on request" : "cancelled by \(by)"), now: now)
            send(id, .ok(what: "cancel"), after: apply(actions))
        case .rerun(let build, let failedOnly, let by):
            rerun(build, failedOnly: failedOnly, by: by, replyTo: id)
        case .reload:
            reload { errors in
                if let errors {
                    self.send(id, .error(code: .config, message: errors))
                } else {
                    self.send(id, .ok(what: "reload"))
                }
                self.flushWrites()
            }
        case .awaitPush(let repos, let timeout):
            awaitPush(repos: repos, timeoutMillis: timeout, replyTo: id)
        case .artifactPut(let job, let attempt, let path, let size, let offset, let data):
            artifactPut(job: job, attempt: attempt, path: path, size: size, offset: offset, data: data, replyTo: id)
        case .artifactList(let build, let job, let from):
            artifactList(build: build, job: job, from: from, replyTo: id)
        case .artifactGet(let build, let job, let path, let offset):
            artifactGet(build: build, job: job, path: path, offset: offset, replyTo: id)
        case .dispatch(let repo, let commit, let branch, let pipeline, let title, let author, let mark):
            dispatch(repo: repo, commit: commit, branch: branch, pipeline: pipeline, title: title, author: author, mark: mark, replyTo: id)
        case .lastDispatched(let repo, let branch):
            answer(id, writer.submit("read the last dispatched commit", verify: false) { try $0.lastDispatched(repo: repo, branch: branch) },
                   busy: "the database is busy; ask again") { .last(repo: repo, branch: branch, commit: $0 ?? "") }
        case .untested(let u):
            untested(u, replyTo: id)
        case .heartbeat, .claim, .started, .log, .result, .tests:
            guard scheduler.runnerName(id) != nil else {
                send(id, .error(code: .notRegistered, message: "register before sending runner messages"))
                return false
            }
            runnerMessage(message, from: id, now: now)
        }
        return true
    }

    /// Records a build of the commit and answers `queued` once it is written (the write still happens when the
    /// answer was `store` for a busy database; dispatching again finds it).
    private func dispatch(repo: String, commit: String, branch: String, pipeline: PipelineText, title: String, author: String,
                          mark: MarkUpdate, replyTo id: ConnectionID) {
        answer(id, enqueue(repo: repo, commit: commit, branch: branch, pipeline: pipeline, title: title, author: author, mark: mark),
               busy: "the database is busy; the build is recorded when it frees: dispatch again to see it") {
            .queued(build: $0.build, jobs: $0.jobs.map(\.id), created: $0.created)
        }
    }

    /// Answers a request with what a store call returned, or with a `store` error when the database stays
    /// locked longer than `dispatchReplyTimeout` (so a peer never waits past its own read timeout) or failed.
    func answer<T>(_ id: ConnectionID, _ result: EventLoopFuture<T>, busy: String, _ reply: @escaping (T) -> ServerMessage) {
        // On the loop: the timer and the completion below share `answered` without a lock.
        var answered = false
        let timeout = loop.assumeIsolated().scheduleTask(in: .init(config.dispatchReplyTimeout)) {
            answered = true
            self.send(id, .error(code: .store, message: busy))
            self.flushWrites()
        }
        result.assumeIsolated().whenComplete { result in
            timeout.cancel()
            guard !answered else { return }
            switch result {
            case .success(let value): self.send(id, reply(value))
            case .failure: self.send(id, .error(code: .store, message: "the database could not be used"))
            }
            self.flushWrites()
        }
    }

    /// Records a build of the commit from its pipeline (or the default single job) and starts what may start.
    private func enqueue(repo: String, commit: String, branch: String, pipeline text: PipelineText, title: String, author: String,
                         mark: MarkUpdate) -> EventLoopFuture<EnqueueResult> {
        let at = Date()
        func invalid(_ reason: String, _ details: [String]) -> EventLoopFuture<EnqueueResult> {
            logger.warning("build of \(repo) \(commit.prefix(12)) fails: \(reason)")
            return writer.submit("record the build of \(commit.prefix(12))") {
                try $0.enqueueInvalid(repo: repo, branch: branch, commit: commit, reason: reason, details: details, mark: mark, at: at)
            }.map { result in
                // A build that failed as it was recorded: a failure to be told of at once, not at the next start.
                if result.created {
                    self.metrics.buildEnded(.failed)
                    self.decideNotifications(result.build)
                }
                return result
            }
        }
        var plan: BuildPlan
        var jobs: [NewJob]
        switch text {
        case .none:
            jobs = [NewJob(name: "test")]
            plan = BuildPlan(jobs: [PlannedJob(name: "test", stage: "test", dependencies: [], allowFailure: false)])
        case .unreadable(let why):
            return invalid(why, [why])
        case .text(let yaml):
            let pipeline: Pipeline
            do {
                pipeline = try PipelineParser.parse(yaml)
            } catch {
                return invalid("\(pipelineFileName) is invalid", error.errors.map(\.description))
            }
            switch Self.jobs(of: pipeline, file: pipelineFileName) {
            case .success(let made): (plan, jobs) = made
            case .failure(let tooLarge): return invalid("\(pipelineFileName) is invalid", [tooLarge.description])
            }
        }
        // What may start at once is stored `queued` in the same transaction as the build.
        let (planned, first) = BuildCoordinator.firstJobs(plan)
        for i in jobs.indices { jobs[i].startsQueued = first.contains(jobs[i].name) }
        let newJobs = jobs
        return writer.submit("record the build of \(commit.prefix(12))") { store in
            let result = try store.enqueue(repo: repo, branch: branch, commit: commit, jobs: newJobs, mark: mark, at: at)
            if result.created && !(title.isEmpty && author.isEmpty) {
                try store.describe(build: result.build, title: title, author: author)
            }
            return result
        }.map { result in
            if result.created {
                self.logger.info("build \(result.build) queued: \(repo) \(branch) \(commit.prefix(12)), \(newJobs.count) job(s)")
                self.created(build: result.build, plan: planned, jobs: result.jobs, queued: first)
            }
            return result
        }
    }

    /// Why a job cannot be sent to a runner.
    struct ScriptTooLarge: Error, CustomStringConvertible {
        var description: String
    }

    /// The jobs of a pipeline and its plan; each job's queues, priority and (where it names none) timeout as given.
    static func jobs(of pipeline: Pipeline, file: String, queues: [String] = [defaultQueue], priority: Int = 0, timeout: Duration? = nil)
        -> Result<(BuildPlan, [NewJob]), ScriptTooLarge>
    {
        let plan = BuildPlan(pipeline: pipeline)
        var jobs: [NewJob] = []
        for (def, planned) in zip(pipeline.jobs, plan.jobs) {
            var script = def.script(pipelineEnv: pipeline.env)
            if script.timeoutSeconds == nil { script.timeoutSeconds = timeout?.seconds }
            // The artifacts of the jobs it waits for arrive in its workspace.
            let from = planned.dependencies.filter { pipeline.job($0)?.artifacts != nil }
            if !from.isEmpty { script.artifactsFrom = from }
            let json = script.json()
            // Each job's script travels in one `assign` line: refuse what would not fit.
            guard LineCodec.percentEncode(json).utf8.count <= WireLimits.maxScriptBytes else {
                return .failure(ScriptTooLarge(description: "\(file): jobs.\(def.name): the job's steps and env are too large to send to a runner (over \(WireLimits.maxScriptBytes) bytes encoded)"))
            }
            jobs.append(NewJob(name: def.name, stage: def.stage, dependencies: planned.dependencies, allowFailure: def.allowFailure,
                               script: json, retries: def.retries, retryDelaySeconds: def.retryDelay.seconds, queues: queues, priority: priority))
        }
        return .success((plan, jobs))
    }

    private func runnerMessage(_ message: ClientMessage, from id: ConnectionID, now: ContinuousClock.Instant) {
        switch message {
        case .heartbeat:
            // Answered, so that a runner hears a frozen or cut-off dispatcher go silent and moves on.
            if scheduler.runnerName(id) != nil { send(id, .ok(what: "heartbeat")) }
            apply(state.value.coordinator.handle(.runner(.heartbeat(id)), now: now))
            // The runners page shows the last heartbeat; writing it every few seconds is enough.
            if let name = scheduler.runnerName(id), now - (state.value.heartbeatWritten[name] ?? now - .seconds(60)) >= .seconds(5) {
                state.value.heartbeatWritten[name] = now
                state.value.heartbeats[name] = Date()
            }
        case .claim(let job, let attempt):
            apply(state.value.coordinator.handle(.runner(.claim(id, job: job, attempt: attempt)), now: now))
        case .started(let job, let attempt):
            apply(state.value.coordinator.handle(.runner(.started(id, job: job, attempt: attempt)), now: now))
        case .log(let job, let attempt, let stream, let ts, let text):
            if scheduler.holdsLease(id, job: job, attempt: attempt) {
                let masked = state.value.secretMask.mask(text)
                state.value.pendingLogs.append(LogRecord(job: job, attempt: attempt, stream: stream, timestampMillis: ts, text: LogText.escapingNUL(masked)))
                if state.value.pendingLogs.count >= 2048 { flushLogs() }
            }
        case .tests(let job, let attempt, let results):
            testResults(job: job, attempt: attempt, results, from: id)
        case .result(let job, let attempt, let outcome, let exitCode, let reason, let giveBack):
            if scheduler.holdsLease(id, job: job, attempt: attempt) { state.value.testCounts[JobAttempt(job: job, attempt: attempt)] = nil }
            // The attempt's uploads are kept only with its recorded result, before any job that needs them can ask.
            let recorded = giveBack == nil && scheduler.holdsLease(id, job: job, attempt: attempt)
            settleArtifacts(job: job, attempt: attempt, keep: recorded)
            apply(state.value.coordinator.handle(.runner(.result(id, job: job, attempt: attempt, outcome: outcome, exitCode: exitCode,
                                                                 reason: state.value.secretMask.mask(reason),
                                                     giveBack: giveBack)), now: now))
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
        for id in state.value.unflushed { state.value.channels[id]?.flush() }
        state.value.unflushed.removeAll(keepingCapacity: true)
    }

    func flushLogs() {
        guard !state.value.pendingLogs.isEmpty else { return }
        let lines = state.value.pendingLogs
        state.value.pendingLogs.removeAll(keepingCapacity: true)
        _ = writer.submit("write \(lines.count) log line(s)") { try $0.appendLogs(lines) }
    }

    private func flushRunnerChanges() {
        guard !state.value.runnerChanges.isEmpty || !state.value.heartbeats.isEmpty else { return }
        let changes = state.value.runnerChanges, beats = state.value.heartbeats
        state.value.runnerChanges.removeAll(keepingCapacity: true)
        state.value.heartbeats.removeAll(keepingCapacity: true)
        _ = writer.submit("record \(changes.count + beats.count) runner change(s)") { try $0.recordRunners(changes, heartbeats: beats) }
    }

    // MARK: Carrying out actions

    /// Performs the state.value.coordinator's actions in order. A `send` that follows a `record` goes out only once that
    /// record is written (and never if it could not be).
    @discardableResult
    func apply(_ actions: [BuildCoordinator.Action]) -> EventLoopFuture<Void>? {
        var written: EventLoopFuture<Void>?
        for action in actions {
            switch action {
            case .record(let r):
                written = record(r)
                if r.state == .running, let build = state.value.coordinator.build(ofJob: r.job) {
                    _ = state.value.triggers.handle(.buildStarted(build), now: Date())
                }
            case .buildEnded(let build, let status):
                logger.info("build \(build) \(status.display)")
                metrics.buildEnded(status)
                state.value.buildTasks[build] = nil
                // Notifications and downstream tasks once the ending is written.
                (written ?? loop.makeSucceededVoidFuture()).assumeIsolated().whenSuccess {
                    self.decideNotifications(build)
                    self.bisectAfter(build: build)
                    self.applyTriggers(self.state.value.triggers.handle(.buildEnded(build, status), now: Date()))
                }
            case .send(let id, .assign(var assignment)):
                // Secrets are added at the edge, as the assignment leaves: never stored, never in a decision.
                let task = state.value.buildTasks[assignment.build] ?? state.value.triggers.task(ofBuild: assignment.build)
                assignment.secrets = state.value.triggers.config.secrets(repository: assignment.repo, task: task)
                send(id, .assign(assignment), after: written)
            case .send(let id, let message):
                send(id, message, after: written)
            case .close(let id):
                logger.warning("closing connection \(id): its runner went silent and has reconnected")
                state.value.channels[id]?.close(promise: nil)
            case .runnerState(let name, let runnerState):
                logger.info("runner \(name) \(runnerState)")
                let host = runnerState == .connected ? state.value.runnerHosts[name] : nil
                let queues = runnerState == .connected ? state.value.runnerQueues[name] : nil
                state.value.runnerChanges.append(RunnerChange(name: name, state: runnerState, host: host, at: Date(), queues: queues))
            }
        }
        return written
    }

    /// Writes a job's state change (log lines of the attempt first) and logs it.
    @discardableResult
    private func record(_ r: JobTransition) -> EventLoopFuture<Void> {
        flushLogs()
        var stamped = r
        stamped.at = Date()
        let transition = stamped
        measure(r)
        let written = writer.submit("record job \(r.job) → \(r.state.rawValue)") { _ = try $0.record(transition) }
        let level: Logger.Level = r.state == .error || (r.state == .queued && r.reason != nil) ? .warning : .info
        logger.log(level: level, "job \(r.job)\(state.value.coordinator.jobName(r.job).map { " (\($0))" } ?? "") attempt \(r.attempt) → \(r.state.rawValue)\(r.runner.map { " on \($0)" } ?? "")\(r.reason.map { ": \($0)" } ?? "")")
        return written
    }

    /// Feeds a job's state change to the metrics: the time it waited in the queue when it is assigned, the time
    /// it ran when it ends.
    private func measure(_ r: JobTransition) {
        let now = ContinuousClock.now
        var wait: Duration?, ran: Duration?
        switch r.state {
        case .queued: state.value.queuedAt[r.job] = now; state.value.assignedAt[r.job] = nil
        case .assigned:
            wait = state.value.queuedAt.removeValue(forKey: r.job).map { now - $0 }
            state.value.assignedAt[r.job] = now
        default:
            if r.state.isFinal {
                state.value.queuedAt[r.job] = nil
                ran = state.value.assignedAt.removeValue(forKey: r.job).map { now - $0 }
            }
        }
        metrics.recorded(r, queueWait: wait, ran: ran)
    }

    /// Takes a (new or reloaded) server configuration.
    func configure(_ config: ServerConfig) {
        _ = state.value.triggers.handle(.configured(config), now: Date())
        state.value.secretMask = config.secretMask
        notifierControl.smtp = config.smtp
    }

    /// Jobs a new build stored `queued`: their wait starts now (before the coordinator may assign them).
    func created(build: Int64, plan: BuildPlan, jobs: [JobSpec], queued: Set<String>, task: String? = nil) {
        let now = ContinuousClock.now
        if let task { state.value.buildTasks[build] = task }
        for job in jobs where queued.contains(job.name) { state.value.queuedAt[job.id] = now }
        apply(state.value.coordinator.handle(.created(build: build, plan: plan, jobs: jobs, queued: queued), now: .now))
    }

    /// The metrics' gauges from the scheduler now, then the exposition (on the loop).
    public func metricsExposition() -> EventLoopFuture<String> {
        loop.submit {
            let s = self.scheduler
            let queued = s.queuedByQueue
            self.state.value.metricQueues.formUnion(queued.keys)
            self.metrics.refresh(queued: queued, running: s.leasedCount, runners: s.connectedRunnerCount, knownQueues: self.state.value.metricQueues)
        }.map { self.metrics.registry.exposition() }
    }

    /// Sends a message now, or, when `write` is given or an earlier message to this connection is still
    /// waiting, after them, in order.
    func send(_ id: ConnectionID, _ message: ServerMessage, after write: EventLoopFuture<Void>? = nil) {
        let tail = state.value.sendTail[id]
        guard write != nil || tail != nil else {
            guard let channel = state.value.channels[id] else { return }
            channel.write(LineCodec.encode(message), promise: nil)
            state.value.unflushed.insert(id)
            return
        }
        let gate: EventLoopFuture<Void> = switch (write, tail) {
        case let (w?, t?): w.and(t).map { _ in () }
        case let (w?, nil): w
        case let (nil, t?): t
        case (nil, nil): loop.makeSucceededVoidFuture()
        }
        let sent = gate.map { () -> Void in self.state.value.channels[id]?.writeAndFlush(LineCodec.encode(message), promise: nil) }
        state.value.sendTail[id] = sent
        sent.whenComplete { _ in
            if self.state.value.sendTail[id] === sent { self.state.value.sendTail[id] = nil }
        }
    }
}

/// One peer's connection: authentication, decoding, and the count of bad lines.
final class DispatcherConnection: ChannelDuplexHandler {
    typealias InboundIn = FramedLine
    typealias OutboundIn = String
    typealias OutboundOut = String

    let id: ConnectionID
    let dispatcher: Dispatcher
    private var authenticated: Bool
    private var errors = 0
    /// Lines received since the connection opened, or since it authenticated.
    private var lines = 0
    /// Set when this handler closes the connection: lines still buffered from the same read are not acted on.
    private var closing = false
    /// Counted among the connections waiting to authenticate (or, without a token, to say anything valid).
    private var pending = false
    private var identifyTimer: Scheduled<Void>?
    /// Armed while the connection is identified but not a registered runner; every line re-arms it.
    private var idleTimer: Scheduled<Void>?
    /// A read held back while the peer is not reading its replies.
    private var readHeldBack = false

    init(id: ConnectionID, dispatcher: Dispatcher) {
        self.id = id
        self.dispatcher = dispatcher
        self.authenticated = dispatcher.config.token == nil
    }

    func channelActive(context: ChannelHandlerContext) {
        guard dispatcher.connected(id, channel: context.channel) else {
            hangUp(context)
            return
        }
        pending = true
        let timeout = dispatcher.config.identifyTimeout
        identifyTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .init(timeout)) { [self] in
            guard pending, !closing else { return }
            dispatcher.logger.notice("closing connection \(id) from \(context.remoteAddress?.description ?? "?"): silent for \(timeout) without \(dispatcher.config.token == nil ? "a request" : "authenticating")")
            dispatcher.send(id, .error(code: .timeout, message: "\(dispatcher.config.token == nil ? "say something" : "authenticate") within \(timeout)"))
            context.flush()
            hangUp(context)
        }
        context.flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        identify()
        idleTimer?.cancel()
        dispatcher.disconnected(id)
        context.fireChannelInactive()
    }

    /// No longer waiting to authenticate: it did, or it went away.
    private func identify() {
        identifyTimer?.cancel()
        identifyTimer = nil
        if pending {
            pending = false
            dispatcher.identified()
        }
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
                dispatcher.send(id, .error(code: .authRequired, message: "send 'auth token=…' first"))
                context.flush()
                hangUp(context)
                return
            }
            guard let expected = dispatcher.config.token, constantTimeEquals(token, expected) else {
                dispatcher.logger.warning("connection \(id) from \(context.remoteAddress?.description ?? "?") sent a wrong token")
                dispatcher.send(id, .error(code: .badToken, message: "wrong token"))
                context.flush()
                hangUp(context)
                return
            }
            authenticated = true
            identify()
            lines = 0
            dispatcher.send(id, .ok(what: "auth"))
            watchIdleness(context)
            return
        }
        identify()
        if !dispatcher.received(message, from: id) {
            countError(context: context)
        } else if lines == 1, case .status = message {
            // A one-shot query by hand (`echo status | nc localhost 8888`): answer and hang up.
            context.flush()
            hangUp(context)
            return
        }
        watchIdleness(context)
    }

    /// A client that stays silent for `idleTimeout` is closed; a registered runner is not watched here.
    private func watchIdleness(_ context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        guard !closing, !dispatcher.isRunner(id) else { return }
        let timeout = dispatcher.config.idleTimeout
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .init(timeout)) { [self] in
            guard !closing, !dispatcher.isRunner(id) else { return }
            dispatcher.logger.debug("closing connection \(id): no request for \(timeout) and not a runner")
            dispatcher.send(id, .error(code: .timeout, message: "idle for \(timeout)"))
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
        if context.channel.isWritable && readHeldBack {
            readHeldBack = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    /// Reads only while the peer takes our replies: while they pile up (the channel is not writable), the next
    /// read waits, the kernel's buffers fill and the peer's sends block.
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readHeldBack = true
        }
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
            dispatcher.send(id, .error(code: .tooManyErrors, message: "closing after \(errors) bad lines"))
            context.flush()
            hangUp(context)
        }
    }
}
