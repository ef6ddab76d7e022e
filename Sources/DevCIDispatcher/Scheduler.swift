import DevCIStore
import DevCIWire
import NIOCore

/// Identifies one TCP connection to the dispatcher.
public typealias ConnectionID = Int

/// Scheduler settings. Woodpecker's numbers scaled down: a lease outlives a few missed heartbeats.
public struct SchedulerConfig: Sendable, Equatable {
    public var heartbeatInterval: Duration
    public var leaseDuration: Duration
    /// How many times a job may lose its lease and be queued again before it ends as `error`.
    public var maxReassignments: Int
    /// How much longer than a lease a restored lease lasts: after a restart or a takeover, a runner first has to
    /// notice that its dispatcher is gone (at once when it died, a lease of silence when it froze), then find
    /// the new one (a frozen one it tried first costs a greeting timeout), before it can claim its job back.
    public var restoreGrace: Duration

    public init(heartbeatInterval: Duration = .seconds(1), leaseDuration: Duration = .seconds(3), maxReassignments: Int = 3,
                restoreGrace: Duration = .zero) {
        self.heartbeatInterval = heartbeatInterval
        self.leaseDuration = leaseDuration
        self.maxReassignments = maxReassignments
        self.restoreGrace = restoreGrace
    }
}

/// The dispatcher's decisions: runners, leases and the queue, as a pure state machine.
/// It takes events with the current time and returns actions; it does no I/O and reads no clock,
/// so tests drive it with a fake clock. The dispatcher's edges persist `record` actions before
/// carrying out the `send` actions that follow them.
public struct Scheduler {
    public typealias Instant = ContinuousClock.Instant

    public enum Event: Equatable {
        /// On start: the unfinished jobs from the database.
        case restored([ActiveJob])
        /// New jobs were written to the database.
        case enqueued([JobSpec])
        case registered(ConnectionID, name: String, slots: Int, queues: [String] = [defaultQueue])
        case disconnected(ConnectionID)
        case heartbeat(ConnectionID)
        case claim(ConnectionID, job: Int64, attempt: Int)
        case started(ConnectionID, job: Int64, attempt: Int)
        case result(ConnectionID, job: Int64, attempt: Int, outcome: Outcome, exitCode: Int, reason: String, giveBack: GiveBack? = nil)
        /// Time passed: expire leases and notice silent runners.
        case tick
        /// Someone cancelled the job: a queued one ends at once, a running one is stopped on its runner.
        case cancel(job: Int64, reason: String)
    }

    public enum Action: Equatable {
        case record(JobTransition)
        case send(ConnectionID, ServerMessage)
        /// A runner's connection state changed (`connected`, `lost`, `disconnected`), for the runners table.
        case runnerState(name: String, state: RunnerState)
        /// Close this connection (a lost runner's, whose name a reconnecting runner takes over).
        case close(ConnectionID)
    }

    struct Lease: Equatable {
        var runner: String
        var attempt: Int
        var expires: Instant
        /// A restored or re-registered lease is renewed only once its runner claims it again.
        var confirmed: Bool
    }

    struct Entry {
        var spec: JobSpec
        var attempt: Int
        var reassignments: Int
        var retriesUsed = 0
        var lease: Lease?
    }

    struct Runner {
        var name: String
        var connection: ConnectionID?
        var slots: Int
        var queues: Set<String> = [defaultQueue]
        var lastHeartbeat: Instant
        var jobs: Set<Int64> = []
        var lost = false
        /// It gave a job back (shutting down): no new work until it registers again.
        var draining = false
        /// Registered but not yet heartbeating: its claims (sent right after `register`) come first,
        /// so that it is not offered work while it still runs a job it is about to be told to drop.
        var settling = true
        /// Attempts it still runs although their lease is gone (it was told to cancel them); they fill
        /// slots until their result arrives and is discarded.
        var stale: Set<Int64> = []
        var lastAssigned: UInt64 = 0

        var isAvailable: Bool {
            connection != nil && !lost && !draining && !settling && jobs.count + stale.count < slots
        }
    }

    public let config: SchedulerConfig
    private var entries: [Int64: Entry] = [:]
    private var queue = JobQueue()
    /// Jobs waiting out their `retry_delay` before they are queued again, with when.
    private var delayed: [(job: Int64, due: Instant)] = []
    private var leased: Set<Int64> = []
    private var runners: [String: Runner] = [:]
    private var connections: [ConnectionID: String] = [:]
    private var assignCounter: UInt64 = 0
    /// How many leases have expired since start (for the metrics).
    public private(set) var leasesExpired = 0

    public init(config: SchedulerConfig = SchedulerConfig()) {
        self.config = config
    }

    // MARK: Queries

    public var queuedCount: Int { queue.count + delayed.count }
    public var leasedCount: Int { leased.count }
    /// Jobs waiting on each queue, those waiting out a retry delay included.
    public var queuedByQueue: [String: Int] {
        var counts = queue.countsByQueue
        for d in delayed { for q in entries[d.job]?.spec.job.queues ?? [] { counts[q, default: 0] += 1 } }
        return counts
    }
    public var connectedRunnerCount: Int { runners.values.filter { $0.connection != nil && !$0.lost }.count }

    /// Queues that have jobs waiting and no connected runner serving any queue of those jobs.
    public var waitingQueues: [String] {
        let served = runners.values.filter { $0.connection != nil && !$0.lost }.reduce(into: Set<String>()) { $0.formUnion($1.queues) }
        return Set(queue.waitingQueueSets.filter { served.isDisjoint(with: $0) }.joined()).sorted()
    }

    /// Whether the job is queued, waiting to retry, or leased (not pending on its build's plan, not ended).
    public func isActive(job: Int64) -> Bool { entries[job] != nil }

    /// The runner name behind a connection, once it registered.
    public func runnerName(_ connection: ConnectionID) -> String? { connections[connection] }

    /// Whether this connection's runner holds the lease on this attempt, so its log lines count.
    public func holdsLease(_ connection: ConnectionID, job: Int64, attempt: Int) -> Bool {
        guard let name = connections[connection], let lease = entries[job]?.lease else { return false }
        return lease.runner == name && lease.attempt == attempt
    }

    /// Whether this attempt of the job is the one leased now (by whichever connection).
    public func isLeased(job: Int64, attempt: Int) -> Bool { entries[job]?.lease?.attempt == attempt }

    /// Which runner holds a job's lease, if any.
    public func leaseHolder(job: Int64) -> String? { entries[job]?.lease?.runner }

    // MARK: Events

    public mutating func handle(_ event: Event, now: Instant) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .restored(let jobs):
            restore(jobs, now: now)
        case .enqueued(let specs):
            for spec in specs where entries[spec.id] == nil {
                entries[spec.id] = Entry(spec: spec, attempt: 0, reassignments: 0)
                enqueue(spec)
            }
        case .registered(let conn, let name, let slots, let queues):
            register(conn, name: name, slots: slots, queues: queues, now: now, into: &actions)
        case .disconnected(let conn):
            disconnect(conn, into: &actions)
        case .heartbeat(let conn):
            heartbeat(conn, now: now, into: &actions)
        case .claim(let conn, let job, let attempt):
            guard let name = connections[conn] else { break }
            if var entry = entries[job], var lease = entry.lease, lease.runner == name, lease.attempt == attempt {
                lease.confirmed = true
                lease.expires = now + config.leaseDuration
                entry.lease = lease
                entries[job] = entry
                actions.append(.send(conn, .ok(what: "claim")))
            } else {
                runners[name]?.stale.insert(job)
                actions.append(.send(conn, .cancel(job: job, attempt: attempt, reason: "lease is no longer yours")))
            }
        case .started(let conn, let job, let attempt):
            if holdsLease(conn, job: job, attempt: attempt) {
                actions.append(.record(JobTransition(job: job, state: .running, attempt: attempt, runner: connections[conn])))
            } else {
                actions.append(.send(conn, .cancel(job: job, attempt: attempt, reason: "lease is no longer yours")))
            }
        case .result(let conn, let job, let attempt, let outcome, let exitCode, let reason, let giveBack):
            finish(conn, job: job, attempt: attempt, outcome: outcome, exitCode: exitCode, reason: reason, giveBack: giveBack, now: now, into: &actions)
        case .tick:
            tick(now: now, into: &actions)
        case .cancel(let job, let reason):
            cancel(job, reason: reason, into: &actions)
        }
        assignPending(now: now, into: &actions)
        return actions
    }

    private mutating func restore(_ jobs: [ActiveJob], now: Instant) {
        for job in jobs where entries[job.spec.id] == nil {
            var entry = Entry(spec: job.spec, attempt: job.attempt, reassignments: job.reassignments, retriesUsed: job.retriesUsed)
            if job.state.isLeased, let name = job.runner {
                // Its runner gets one lease period (and the grace) to reconnect and claim it.
                entry.lease = Lease(runner: name, attempt: job.attempt, expires: now + config.leaseDuration + config.restoreGrace, confirmed: false)
                runners[name, default: Runner(name: name, slots: 1, lastHeartbeat: now)].jobs.insert(job.spec.id)
                leased.insert(job.spec.id)
            } else {
                enqueue(job.spec)
            }
            entries[job.spec.id] = entry
        }
    }

    private mutating func enqueue(_ spec: JobSpec) {
        queue.append(spec.id, priority: spec.job.priority, queues: spec.job.queues)
    }

    private mutating func register(_ conn: ConnectionID, name: String, slots: Int, queues: [String], now: Instant, into actions: inout [Action]) {
        // Refusals first: a refused `register` changes nothing.
        if let previous = connections[conn], previous != name {
            actions.append(.send(conn, .error(code: .alreadyRegistered, message: "this connection is runner \(previous)")))
            return
        }
        if let existing = runners[name], let other = existing.connection, other != conn {
            guard existing.lost else {
                actions.append(.send(conn, .error(code: .nameInUse, message: "a runner named \(name) is connected")))
                return
            }
            // The old connection went silent (half-open after a network cut): the newcomer takes the name.
            connections[other] = nil
            actions.append(.close(other))
        }
        var runner = runners[name] ?? Runner(name: name, slots: slots, lastHeartbeat: now)
        runner.connection = conn
        runner.slots = slots
        runner.queues = Set(queues)
        runner.lastHeartbeat = now
        runner.lost = false
        runner.draining = false
        runner.settling = true
        runner.stale = []
        // Leases held under this name wait for the runner to claim them: a restarted runner has lost its work.
        for job in runner.jobs {
            entries[job]?.lease?.confirmed = false
        }
        runners[name] = runner
        connections[conn] = name
        actions.append(.send(conn, .registered(name: name, heartbeatMillis: Int(config.heartbeatInterval.milliseconds),
                                               leaseMillis: Int(config.leaseDuration.milliseconds))))
        actions.append(.runnerState(name: name, state: .connected))
    }

    /// A closed connection means a dead process (the kernel closes a killed runner's socket) or a cut one: its
    /// work moves on at once instead of waiting out the lease. A runner that was only cut off and comes back
    /// is told to drop its attempt when it claims it; attempt fencing keeps the results exact.
    private mutating func disconnect(_ conn: ConnectionID, into actions: inout [Action]) {
        guard let name = connections.removeValue(forKey: conn), let runner = runners[name] else { return }
        for job in runner.jobs.sorted() {
            release(job, reason: "runner \(name) disconnected", kind: .lost, into: &actions)
        }
        runners[name] = nil
        actions.append(.runnerState(name: name, state: .disconnected))
    }

    private mutating func heartbeat(_ conn: ConnectionID, now: Instant, into actions: inout [Action]) {
        guard let name = connections[conn], var runner = runners[name] else { return }
        runner.lastHeartbeat = now
        if runner.settling {
            // The first heartbeat after `register` follows the runner's claims: whatever it did not claim, it
            // does not have (a restarted process starts with nothing). Those jobs move on now, and the new
            // connection's slots hold only what it claimed.
            runner.settling = false
            for job in runner.jobs.sorted() where entries[job]?.lease?.confirmed == false {
                runners[name] = runner
                release(job, reason: "runner \(name) came back without it", kind: .lost, into: &actions)
                runner = runners[name] ?? runner
            }
        }
        if runner.lost {
            runner.lost = false
            actions.append(.runnerState(name: name, state: .connected))
        }
        for job in runner.jobs where entries[job]?.lease?.confirmed == true {
            entries[job]?.lease?.expires = now + config.leaseDuration
        }
        runners[name] = runner
    }

    private mutating func finish(_ conn: ConnectionID, job: Int64, attempt: Int, outcome: Outcome, exitCode: Int, reason: String,
                                 giveBack: GiveBack?, now: Instant, into actions: inout [Action]) {
        guard holdsLease(conn, job: job, attempt: attempt), let name = connections[conn] else {
            if let name = connections[conn] { runners[name]?.stale.remove(job) }
            let why = entries[job] == nil ? "job \(job) is not active" : "lease on attempt \(attempt) was taken away"
            actions.append(.send(conn, .discarded(job: job, attempt: attempt, reason: why)))
            return
        }
        if outcome == .cancelled {
            // The runner gave the job back: queue it again at once. One shutting down gets no more work.
            // Runners from before `give_back` said it only in words.
            if giveBack == .shutdown || (giveBack == nil && reason == "runner shutting down") { runners[name]?.draining = true }
            release(job, reason: "runner \(name) gave the job back: \(reason)", kind: .gaveBack, into: &actions)
            actions.append(.send(conn, .accepted(job: job, attempt: attempt)))
            return
        }
        leased.remove(job)
        runners[name]?.jobs.remove(job)
        if var entry = entries[job], outcome != .success, entry.retriesUsed < entry.spec.job.retries {
            // The job has retries left: this attempt's log stays, and a later attempt runs after the delay.
            entry.retriesUsed += 1
            entry.lease = nil
            entries[job] = entry
            let delay = Duration.milliseconds(Int64(entry.spec.job.retryDelaySeconds * 1000))
            delayed.append((job, now + delay))
            let what = reason.isEmpty ? outcome.state.display : reason
            actions.append(.record(JobTransition(job: job, state: .queued, attempt: attempt, runner: name,
                                          reason: "attempt \(attempt) \(outcome.state.display) (\(what)); retry \(entry.retriesUsed) of \(entry.spec.job.retries) after \(entry.spec.job.retryDelaySeconds)s", kind: .retry,
                                          exitCode: exitCode, retriesUsed: entry.retriesUsed)))
            actions.append(.send(conn, .accepted(job: job, attempt: attempt)))
            moveDueRetries(now: now)
            return
        }
        entries[job] = nil
        actions.append(.record(JobTransition(job: job, state: outcome.state, attempt: attempt, runner: name,
                                      reason: reason.isEmpty ? nil : reason, exitCode: exitCode)))
        actions.append(.send(conn, .accepted(job: job, attempt: attempt)))
    }

    private mutating func moveDueRetries(now: Instant) {
        guard delayed.contains(where: { $0.due <= now }) else { return }
        for d in delayed where d.due <= now {
            if let spec = entries[d.job]?.spec { enqueue(spec) }
        }
        delayed.removeAll { $0.due <= now }
    }

    private mutating func tick(now: Instant, into actions: inout [Action]) {
        moveDueRetries(now: now)
        for job in leased.sorted() {
            guard let lease = entries[job]?.lease, lease.expires <= now else { continue }
            let why = runners[lease.runner]?.connection == nil ? "did not come back" : lease.confirmed ? "stopped heartbeating" : "did not claim it"
            // Only a connection that holds the attempt (it claimed it, or was assigned it) is told to drop it and
            // has it fill a slot until it reports: a new connection under the same name starts with what it claims.
            if lease.confirmed, let conn = runners[lease.runner]?.connection {
                runners[lease.runner]?.stale.insert(job)
                actions.append(.send(conn, .cancel(job: job, attempt: lease.attempt, reason: "lease expired")))
            }
            leasesExpired += 1
            release(job, reason: "runner \(lease.runner) \(why): lease on attempt \(lease.attempt) expired", kind: .lost, into: &actions)
        }
        for (name, runner) in runners.sorted(by: { $0.key < $1.key }) {
            if runner.connection == nil {
                if runner.jobs.isEmpty { runners[name] = nil }
            } else if !runner.lost, now - runner.lastHeartbeat > config.leaseDuration {
                runners[name]?.lost = true
                actions.append(.runnerState(name: name, state: .lost))
            }
        }
    }

    /// Takes a job away from its lease holder and queues it first in line, or ends it once it has been
    /// reassigned too often.
    private mutating func release(_ job: Int64, reason: String, kind: EventKind, into actions: inout [Action]) {
        guard var entry = entries[job], let lease = entry.lease else { return }
        entry.lease = nil
        leased.remove(job)
        runners[lease.runner]?.jobs.remove(job)
        entry.reassignments += 1
        if entry.reassignments > config.maxReassignments {
            entries[job] = nil
            actions.append(.record(JobTransition(job: job, state: .error, attempt: lease.attempt, runner: lease.runner,
                                          reason: "\(reason); lost \(entry.reassignments) times, giving up (cap \(config.maxReassignments))", kind: kind,
                                          reassignments: entry.reassignments)))
        } else {
            entries[job] = entry
            queue.prepend(job, priority: entry.spec.job.priority, queues: entry.spec.job.queues)
            actions.append(.record(JobTransition(job: job, state: .queued, attempt: lease.attempt, runner: lease.runner,
                                          reason: "\(reason); requeued (reassignment \(entry.reassignments) of \(config.maxReassignments))", kind: kind,
                                          reassignments: entry.reassignments)))
        }
    }

    /// Ends a job someone cancelled: out of the queue (or its retry wait), or taken from its runner, which is told
    /// to stop it (its result, when it comes, is discarded).
    private mutating func cancel(_ job: Int64, reason: String, into actions: inout [Action]) {
        guard let entry = entries.removeValue(forKey: job) else { return }
        queue.remove(job)
        delayed.removeAll { $0.job == job }
        var runner: String?
        if let lease = entry.lease {
            leased.remove(job)
            runners[lease.runner]?.jobs.remove(job)
            runner = lease.runner
            if let conn = runners[lease.runner]?.connection {
                runners[lease.runner]?.stale.insert(job)
                actions.append(.send(conn, .cancel(job: job, attempt: lease.attempt, reason: reason)))
            }
        }
        actions.append(.record(JobTransition(job: job, state: .cancelled, attempt: entry.lease?.attempt ?? entry.attempt, runner: runner, reason: reason)))
    }

    private mutating func assignPending(now: Instant, into actions: inout [Action]) {
        // The queue is moved out while runners are picked for it (no copy: it is unique once moved).
        var pending = queue
        queue = JobQueue()
        defer { queue = pending }
        // Never straight back to a runner still dropping an earlier attempt of the same job.
        while let (job, name) = pending.popFirst(runnerFor: { pickRunner(serving: $0, excluding: $1) }), let conn = runners[name]?.connection {
            guard var entry = entries[job], entry.lease == nil else { continue }
            entry.attempt += 1
            entry.lease = Lease(runner: name, attempt: entry.attempt, expires: now + config.leaseDuration, confirmed: true)
            entries[job] = entry
            leased.insert(job)
            assignCounter += 1
            runners[name]?.jobs.insert(job)
            runners[name]?.lastAssigned = assignCounter
            let s = entry.spec
            actions.append(.record(JobTransition(job: job, state: .assigned, attempt: entry.attempt, runner: name)))
            actions.append(.send(conn, .assign(JobAssignment(job: job, attempt: entry.attempt, build: s.build, name: s.name, repo: s.repo,
                                                             commit: s.commit, branch: s.branch, script: s.job.script))))
        }
    }

    /// The available runner of one of `queues` with the most free slots, least recently given work on a tie.
    private func pickRunner(serving queues: [String], excluding job: Int64) -> String? {
        var best: Runner?
        for r in runners.values where r.isAvailable && !r.stale.contains(job) && queues.contains(where: r.queues.contains) {
            guard let b = best else { best = r; continue }
            let free = r.slots - r.jobs.count, bestFree = b.slots - b.jobs.count
            if free > bestFree || (free == bestFree && (r.lastAssigned, r.name) < (b.lastAssigned, b.name)) { best = r }
        }
        return best?.name
    }
}
