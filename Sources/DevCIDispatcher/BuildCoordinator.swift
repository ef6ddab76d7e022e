import DevCIPipeline
import DevCIStore
import DevCIWire

/// One brain per build: the scheduler (runners, leases, queue) together with every unfinished build's plan
/// (stages, needs, skips, roll-up). A pure state machine: it takes events with the current time and returns
/// actions, in the order they must be carried out; it does no I/O and reads no clock. The dispatcher's edge
/// decodes, hands each event in once, and performs what comes back: no action leads back into it.
public struct BuildCoordinator {
    public typealias Instant = ContinuousClock.Instant

    public enum Event: Equatable {
        /// On start: the unfinished jobs, and every job of their builds, from the database.
        case restored(active: [ActiveJob], builds: [Int64: [JobSummary]])
        /// A build was written to the database: its plan, its jobs, and which of them were stored `queued`.
        case created(build: Int64, plan: BuildPlan, jobs: [JobSpec], queued: Set<String>)
        /// A runner's message, a connection's end, or the clock.
        case runner(Scheduler.Event)
        /// Someone cancelled a build or a job: every unfinished job of it ends `cancelled` (running ones are
        /// stopped on their runners).
        case cancel(CancelTarget, reason: String)
    }

    public enum Action: Equatable {
        /// Write a job's state change; `send`s after it wait for the write.
        case record(JobTransition)
        case send(ConnectionID, ServerMessage)
        case close(ConnectionID)
        case runnerState(name: String, state: RunnerState)
        /// Every job of the build has ended: its status, as the store rolls it up too.
        case buildEnded(Int64, BuildStatus)
    }

    /// A build's plan, and the job behind each of its names.
    struct Build {
        var plan: BuildPlan
        var jobs: [String: JobSpec]
    }

    public private(set) var scheduler: Scheduler
    private var builds: [Int64: Build] = [:]
    private var jobIndex: [Int64: (build: Int64, name: String)] = [:]

    public init(config: SchedulerConfig = SchedulerConfig()) {
        scheduler = Scheduler(config: config)
    }

    /// The build of a job, while the build is unfinished.
    public func build(ofJob job: Int64) -> Int64? { jobIndex[job]?.build }

    /// The job's name in its build's plan, while the build is unfinished.
    public func jobName(_ job: Int64) -> String? { jobIndex[job]?.name }

    /// How many builds have unfinished jobs.
    public var activeBuilds: Int { builds.count }

    /// Whether a `cancel` of this build or job has anything to stop.
    public func isUnfinished(_ target: CancelTarget) -> Bool {
        switch target {
        case .build(let id): return builds[id] != nil
        case .job(let id): return jobIndex[id] != nil
        }
    }

    public mutating func handle(_ event: Event, now: Instant) -> [Action] {
        switch event {
        case .restored(let active, let jobsByBuild):
            var out = schedule(.restored(active.filter { $0.state != .pending }), now: now)
            let specs = Dictionary(grouping: active.map(\.spec), by: \.build)
            for (build, jobs) in jobsByBuild.sorted(by: { $0.key < $1.key }) {
                var states: [String: JobState] = [:]
                for j in jobs where j.status != .pending { states[j.name] = j.status }
                let plan = BuildPlan(jobs: jobs.map { PlannedJob(name: $0.name, stage: $0.stage, dependencies: $0.dependencies, allowFailure: $0.allowFailure) },
                                     states: states)
                track(build, Build(plan: plan, jobs: Dictionary((specs[build] ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })))
                // Jobs whose dependencies ended while the dispatcher was down start now.
                out += advance(build, after: nil, now: now)
            }
            return out
        case .created(let build, let plan, let jobs, let queued):
            guard builds[build] == nil else { return [] }
            track(build, Build(plan: plan, jobs: Dictionary(jobs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })))
            return schedule(.enqueued(jobs.filter { queued.contains($0.name) }), now: now)
        case .runner(let e):
            return schedule(e, now: now)
        case .cancel(.job(let job), let reason):
            guard let (build, name) = jobIndex[job], let plan = builds[build]?.plan, !(plan.states[name]?.isFinal ?? false) else { return [] }
            if scheduler.isActive(job: job) { return schedule(.cancel(job: job, reason: reason), now: now) }
            // Still pending on its build's plan: no runner has it. What depends on it is skipped (or, when it
            // was allowed to fail, may start), as for any ending.
            return [.record(JobTransition(job: job, state: .cancelled, attempt: 0, reason: reason))] + advance(build, after: (name, .cancelled), now: now)
        case .cancel(.build(let id), let reason):
            // The whole build at once: every unfinished job ends `cancelled` before the plan is asked what is
            // due, so nothing downstream starts (not even after a job allowed to fail).
            guard var state = builds.removeValue(forKey: id) else { return [] }
            var out: [Action] = []
            for (name, spec) in state.jobs.sorted(by: { $0.value.id < $1.value.id }) where !(state.plan.states[name]?.isFinal ?? false) {
                if scheduler.isActive(job: spec.id) {
                    out += passThrough(scheduler.handle(.cancel(job: spec.id, reason: reason), now: now))
                } else {
                    out.append(.record(JobTransition(job: spec.id, state: .cancelled, attempt: 0, reason: reason)))
                }
                state.plan.cancel(name)
            }
            for spec in state.jobs.values { jobIndex[spec.id] = nil }
            out.append(.buildEnded(id, state.plan.outcome))
            return out
        }
    }

    /// Scheduler actions as they are, without advancing any plan (the caller has settled the plans).
    private func passThrough(_ actions: [Scheduler.Action]) -> [Action] {
        actions.map { action in
            switch action {
            case .record(let r): return .record(r)
            case .send(let conn, let message): return .send(conn, message)
            case .close(let conn): return .close(conn)
            case .runnerState(let name, let state): return .runnerState(name: name, state: state)
            }
        }
    }

    /// The plan of a build about to be created: what its jobs are, and which may start at once (stored
    /// `queued` in the build's own transaction).
    public static func firstJobs(_ plan: BuildPlan) -> (plan: BuildPlan, queued: Set<String>) {
        var plan = plan
        let queued = Set(plan.next().compactMap { if case .start(let name) = $0 { return name } else { return nil } })
        return (plan, queued)
    }

    // MARK: Inside

    private mutating func track(_ build: Int64, _ state: Build) {
        builds[build] = state
        for (name, spec) in state.jobs { jobIndex[spec.id] = (build, name) }
    }

    /// The scheduler's actions for one event, then what the jobs that ended make due in their builds: so the
    /// finishing runner's `accepted` goes out before any downstream `assign`.
    private mutating func schedule(_ event: Scheduler.Event, now: Instant) -> [Action] {
        var out: [Action] = []
        var ended: [(build: Int64, name: String, state: JobState)] = []
        for action in scheduler.handle(event, now: now) {
            switch action {
            case .record(let r):
                out.append(.record(r))
                if r.state.isFinal, let (build, name) = jobIndex[r.job] { ended.append((build, name, r.state)) }
            case .send(let conn, let message): out.append(.send(conn, message))
            case .close(let conn): out.append(.close(conn))
            case .runnerState(let name, let state): out.append(.runnerState(name: name, state: state))
            }
        }
        for e in ended { out += advance(e.build, after: (e.name, e.state), now: now) }
        return out
    }

    /// Starts or skips what the build's plan says is due, and ends the build when nothing is left.
    private mutating func advance(_ build: Int64, after update: (name: String, state: JobState)?, now: Instant) -> [Action] {
        guard var state = builds[build] else { return [] }
        let due = update.map { state.plan.update($0.name, to: $0.state) } ?? state.plan.next()
        builds[build] = state
        var out: [Action] = []
        var starting: [JobSpec] = []
        for action in due {
            switch action {
            case .start(let name):
                guard let spec = state.jobs[name] else { continue }
                out.append(.record(JobTransition(job: spec.id, state: .queued, attempt: 0)))
                starting.append(spec)
            case .skip(let name, let reason):
                guard let spec = state.jobs[name] else { continue }
                out.append(.record(JobTransition(job: spec.id, state: .skipped, attempt: 0, reason: reason)))
            }
        }
        if state.plan.isFinished {
            builds[build] = nil
            for spec in state.jobs.values { jobIndex[spec.id] = nil }
            out.append(.buildEnded(build, state.plan.outcome))
        }
        if !starting.isEmpty { out += schedule(.enqueued(starting), now: now) }
        return out
    }
}
