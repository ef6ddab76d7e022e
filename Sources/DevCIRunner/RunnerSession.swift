import DevCIWire
import Foundation
import Logging

/// The runner's side of the wire as a pure state machine: the greeting and registration, claims after a
/// reconnect, the outbox of log lines kept while cut off, results kept until acknowledged, slots, and the
/// reconnect backoff. It takes events with the current time and returns actions; `RunnerAgent` is the edge
/// that dials, runs jobs on threads and carries the actions out. Tests drive it with a fake clock.
struct RunnerSession {
    typealias Instant = ContinuousClock.Instant

    struct Config: Equatable {
        var name: String
        var slots: Int
        var queues: [String] = [defaultQueue]
        var token: String?
        var maxBackoff: Duration
        var registrationTimeout: Duration
        /// Where the dispatcher is, for log lines.
        var dispatcher: String
    }

    enum Event: Equatable {
        /// The connection is up (nothing said yet).
        case connected
        case connectFailed(String)
        case disconnected
        case received(ServerMessage)
        /// No `registered` came within the registration timeout.
        case registrationTimedOut
        /// Output of a job in progress.
        case output([ClientMessage])
        /// A job's attempt ended; `result` is what to report.
        case finished(job: Int64, result: ClientMessage)
        /// Shutting down: give every job back.
        case stop
        /// Time for a heartbeat (every `heartbeat_ms` once registered).
        case heartbeatDue
    }

    enum Action: Equatable {
        /// Write these lines and flush.
        case send([ClientMessage])
        /// Close the connection now (a dead or wrong peer: nothing more is owed to it).
        case close
        /// The dispatcher dialled went silent (frozen, or cut off): try the other addresses first for a while.
        case avoidDispatcher
        /// Close the connection once what was sent before is written (a goodbye: the give-backs go out first).
        case closeAfterWrites
        /// Dial again after this long (the edge adds jitter).
        case reconnect(after: Duration)
        case armRegistrationDeadline(Duration)
        case disarmRegistrationDeadline
        case startHeartbeat(every: Duration)
        case stopHeartbeat
        /// Run this attempt in this slot's workspace.
        case startJob(JobAssignment, slot: Int)
        /// Stop the job's processes: it then ends and reports `cancelled`.
        case cancelJob(Int64, grace: Double)
        case log(Logger.Level, String)
    }

    static let initialBackoff = Duration.milliseconds(100)
    static let outboxLimit = 100_000
    static let outboxByteLimit = 64 << 20

    let config: Config
    private(set) var connected = false
    private(set) var backoff = initialBackoff
    private(set) var stopping = false
    /// Jobs in progress and their slots.
    private(set) var current: [Int64: (assignment: JobAssignment, slot: Int)] = [:]
    /// Results sent but not yet accepted or discarded: sent again after a reconnect.
    private(set) var unacknowledged: [Int64: ClientMessage] = [:]
    /// Log lines produced while disconnected, sent on reconnect (bounded in count and bytes).
    private(set) var outbox: [ClientMessage] = []
    private var outboxBytes = 0
    private var droppedLines = 0
    /// The outage in progress: since when, and how many tries failed.
    private var outageSince: Instant?
    private var failures = 0
    /// When the dispatcher last said anything, whether it answers heartbeats (dispatchers before this one
    /// did not), and how long its leases last: that long without a word, it is frozen or cut off.
    private var lastHeard: Instant?
    private var answersHeartbeats = false
    private var lease = Duration.seconds(3)
    /// Whether this connection's dispatcher said `hello`: a live one does at once, so a connection that stays
    /// silent (a frozen dispatcher whose kernel still accepts) is left after `greetingTimeout`, not the whole
    /// registration timeout.
    private var greeted = false
    static let greetingTimeout = Duration.seconds(2)

    init(config: Config) {
        self.config = config
    }

    mutating func handle(_ event: Event, now: Instant) -> [Action] {
        switch event {
        case .connected:
            connected = true
            answersHeartbeats = false
            lastHeard = now
            greeted = false
            return [.armRegistrationDeadline(Self.greetingTimeout)]
        case .connectFailed(let why):
            return unreachable(why, now: now) + reconnect()
        case .disconnected:
            let was = connected
            connected = false
            var out: [Action] = [.stopHeartbeat, .disarmRegistrationDeadline]
            if was && !stopping {
                let jobs = current.keys.sorted().map(String.init).joined(separator: ", ")
                out += unreachable("the connection closed (jobs in progress: \(jobs.isEmpty ? "none" : jobs))", now: now)
            }
            return out + reconnect()
        case .registrationTimedOut:
            guard connected else { return [] }
            guard greeted else {
                return [.log(.warning, "the dispatcher at \(config.dispatcher) accepted the connection but said nothing within \(Self.greetingTimeout) (frozen?); trying again"),
                        .avoidDispatcher, .close]
            }
            return [.log(.warning, "the dispatcher at \(config.dispatcher) did not register this runner within \(config.registrationTimeout); reconnecting"), .close]
        case .received(let message):
            lastHeard = now
            if case .ok(let what) = message, what == "heartbeat" { answersHeartbeats = true }
            return received(message, now: now)
        case .heartbeatDue:
            guard connected else { return [] }
            if answersHeartbeats, let lastHeard, now - lastHeard > lease {
                return [.log(.warning, "the dispatcher at \(config.dispatcher) has not answered for \(Self.seconds(now - lastHeard)) (frozen or cut off); reconnecting"),
                        .avoidDispatcher, .close]
            }
            return [.send([.heartbeat])]
        case .output(let lines):
            return send(lines)
        case .finished(let job, let result):
            current[job] = nil
            if stopping { return [] }  // the shutdown already gave it back
            unacknowledged[job] = result
            return send([result])
        case .stop:
            stopping = true
            var out: [Action] = [.stopHeartbeat]
            let jobs = current.values.sorted { $0.assignment.job < $1.assignment.job }
            out += jobs.map { .cancelJob($0.assignment.job, grace: 1) }
            guard connected else { return out }
            let giveBack = jobs.map {
                ClientMessage.result(job: $0.assignment.job, attempt: $0.assignment.attempt, outcome: .cancelled, exitCode: -1, reason: "runner shutting down",
                                     giveBack: .shutdown)
            }
            return out + [.send(giveBack + [.heartbeat]), .closeAfterWrites]
        }
    }

    /// The slot a new job would take, if any is free.
    var freeSlot: Int? {
        let busy = Set(current.values.map(\.slot))
        return (0..<config.slots).first { !busy.contains($0) }
    }

    // MARK: Inside

    private mutating func received(_ message: ServerMessage, now: Instant) -> [Action] {
        switch message {
        case .hello(let version, let authRequired):
            greeted = true
            guard version == WireLimits.protocolVersion else {
                return [.log(.error, "dispatcher speaks protocol \(version), this runner \(WireLimits.protocolVersion)"), .close]
            }
            // Greeted: now the whole registration timeout for `registered`.
            var out: [Action] = [.armRegistrationDeadline(config.registrationTimeout)]
            var lines: [ClientMessage] = []
            if let token = config.token {
                lines.append(.auth(token: token))
            } else if authRequired {
                out.append(.log(.error, "the dispatcher requires a token: start the runner with --token or DEVCI_TOKEN"))
            }
            lines.append(.register(name: config.name, slots: config.slots, queues: config.queues))
            // Take back what we still hold, then deliver what was produced while cut off.
            for (job, result) in unacknowledged.sorted(by: { $0.key < $1.key }) {
                if case .result(_, let attempt, _, _, _, _) = result { lines.append(.claim(job: job, attempt: attempt)) }
            }
            for (job, held) in current.sorted(by: { $0.key < $1.key }) { lines.append(.claim(job: job, attempt: held.assignment.attempt)) }
            // The first heartbeat tells the dispatcher our claims are in: from now on we may be given work.
            lines.append(.heartbeat)
            if droppedLines > 0 {
                out.append(.log(.warning, "dropped \(droppedLines) log line(s) while disconnected"))
                droppedLines = 0
            }
            lines += outbox
            outbox.removeAll()
            outboxBytes = 0
            lines += unacknowledged.sorted(by: { $0.key < $1.key }).map(\.value)
            return out + [.send(lines)]
        case .registered(let name, let heartbeatMillis, let leaseMillis):
            backoff = Self.initialBackoff
            lease = .milliseconds(Int64(max(leaseMillis, heartbeatMillis * 2, 500)))
            var out: [Action] = [.disarmRegistrationDeadline]
            if let since = outageSince {
                out.append(.log(.notice, "the dispatcher is back after \(Self.seconds(now - since)) and \(failures) failed attempt(s)"))
                outageSince = nil
                failures = 0
            }
            out.append(.log(.info, "registered as \(name) with \(config.dispatcher); heartbeat every \(heartbeatMillis) ms"))
            out.append(.startHeartbeat(every: .milliseconds(Int64(max(50, heartbeatMillis)))))
            return out
        case .assign(let a):
            guard current[a.job] == nil, let slot = freeSlot else {
                return [.log(.warning, "refusing job \(a.job): all \(config.slots) slot(s) busy"),
                        .send([.result(job: a.job, attempt: a.attempt, outcome: .cancelled, exitCode: -1, reason: "runner busy", giveBack: .busy)])]
            }
            current[a.job] = (a, slot)
            return [.log(.info, "job \(a.job) (\(a.name)) attempt \(a.attempt): \(a.repo) \(a.branch) \(a.commit)"),
                    .send([.started(job: a.job, attempt: a.attempt)]), .startJob(a, slot: slot)]
        case .cancel(let job, let attempt, let reason):
            guard let held = current[job], held.assignment.attempt == attempt else { return [] }
            return [.log(.warning, "job \(job) attempt \(attempt) cancelled by the dispatcher: \(reason)"), .cancelJob(job, grace: 2)]
        case .accepted(let job, _):
            unacknowledged[job] = nil
            return []
        case .discarded(let job, let attempt, let reason):
            unacknowledged[job] = nil
            return [.log(.warning, "result of job \(job) attempt \(attempt) discarded: \(reason)")]
        case .error(let code, let message):
            // `busy` and `timeout`: the dispatcher closes the connection itself; the retry is quiet.
            if code == .busy || code == .timeout { return [.log(.debug, "dispatcher says \(code): \(message)")] }
            // A standby greets so and hangs up: the next address is tried.
            if code == .standby { return [.log(.info, "\(config.dispatcher): \(message)"), .close] }
            var out: [Action] = [.log(.error, "dispatcher says \(code): \(message)")]
            // Not registered: start over (the dispatcher frees a silent runner's name once its lease expires).
            if code == .nameInUse { out.append(.close) }
            return out
        case .ok, .queued, .status, .last, .pushed, .artifactList, .artifactData:
            return []
        }
    }

    /// Sends now when connected; log lines wait in the outbox otherwise (results wait in `unacknowledged`).
    private mutating func send(_ lines: [ClientMessage]) -> [Action] {
        if connected { return lines.isEmpty ? [] : [.send(lines)] }
        for line in lines {
            let bytes: Int
            switch line {
            case .log(_, _, _, _, let text): bytes = text.utf8.count
            case .tests(_, _, let results): bytes = TestResultBatch.json(results).utf8.count
            default: continue
            }
            if outbox.count < Self.outboxLimit && outboxBytes < Self.outboxByteLimit {
                outbox.append(line)
                outboxBytes += bytes
            } else {
                droppedLines += 1
            }
        }
        return []
    }

    private mutating func reconnect() -> [Action] {
        guard !stopping else { return [] }
        let delay = backoff
        backoff = min(backoff * 2, config.maxBackoff)
        return [.reconnect(after: delay)]
    }

    /// An outage is said once, in plain words; the retries that follow are quiet.
    private mutating func unreachable(_ why: String, now: Instant) -> [Action] {
        failures += 1
        guard outageSince == nil else { return [.log(.debug, "still cannot reach the dispatcher: \(why)")] }
        outageSince = now
        return [.log(.warning, "cannot reach the dispatcher at \(config.dispatcher): \(why); retrying with backoff (up to \(config.maxBackoff)) until it is back")]
    }

    private static func seconds(_ d: Duration) -> String {
        String(format: "%.1f s", d.seconds)
    }
}
