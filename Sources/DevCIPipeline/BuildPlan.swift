import DevCIWire

/// One job as the plan sees it: its name, what it waits for and whether its failure is allowed (nothing of what
/// it runs: the plan only decides order and skips).
public struct PlannedJob: Equatable, Sendable {
    public var name: String
    public var stage: String
    /// Jobs that must end before this one starts: its `needs`, or else every job of the earlier stages.
    public var dependencies: [String]
    public var allowFailure: Bool

    public init(name: String, stage: String, dependencies: [String], allowFailure: Bool) {
        self.name = name
        self.stage = stage
        self.dependencies = dependencies
        self.allowFailure = allowFailure
    }
}

/// Which jobs of a build may start, which must be skipped, and how the build stands. Pure: the dispatcher
/// and `devci run --local` feed it job endings and carry out what it returns.
public struct BuildPlan: Equatable, Sendable {
    public enum Action: Equatable, Sendable {
        case start(String)
        case skip(String, reason: String)
    }

    public private(set) var jobs: [PlannedJob]
    public private(set) var states: [String: JobState]

    /// `states` holds what is already known (after a restart); jobs not in it are pending.
    public init(jobs: [PlannedJob], states: [String: JobState] = [:]) {
        self.jobs = jobs
        self.states = states
    }

    /// The plan of a pipeline: each job's dependencies resolved from `needs` and stage order.
    public init(pipeline: Pipeline) {
        self.init(jobs: pipeline.jobs.map { job in
            let stageIndex = pipeline.stages.firstIndex(of: job.stage) ?? 0
            let earlier = Set(pipeline.stages.prefix(stageIndex))
            let deps = job.needs ?? pipeline.jobs.filter { earlier.contains($0.stage) }.map(\.name)
            return PlannedJob(name: job.name, stage: job.stage, dependencies: deps, allowFailure: job.allowFailure)
        })
    }

    /// What may start now (and what must be skipped), for jobs not yet started.
    public mutating func next() -> [Action] {
        var actions: [Action] = []
        var changed = true
        while changed {  // a skip can make further skips (and starts) due
            changed = false
            for job in jobs where states[job.name] == nil {
                var ready = true
                for dep in job.dependencies {
                    guard let depState = states[dep], depState.isFinal else {
                        ready = false
                        break
                    }
                    let depJob = jobs.first { $0.name == dep }
                    if depState != .success && !(depJob?.allowFailure ?? false) {
                        let reason = depState == .skipped ? "'\(dep)' was skipped" : "'\(dep)' \(depState.display)"
                        states[job.name] = .skipped
                        actions.append(.skip(job.name, reason: "skipped: \(reason)"))
                        changed = true
                        ready = false
                        break
                    }
                }
                if ready && states[job.name] == nil {
                    states[job.name] = .queued
                    actions.append(.start(job.name))
                }
            }
        }
        return actions
    }

    /// A job ended (or changed state); returns what that makes due.
    public mutating func update(_ job: String, to state: JobState) -> [Action] {
        states[job] = state
        return state.isFinal ? next() : []
    }

    /// The job ends `cancelled`, and nothing is made due by it (the whole build is being cancelled).
    public mutating func cancel(_ job: String) {
        states[job] = .cancelled
    }

    public var isFinished: Bool { jobs.allSatisfy { states[$0.name]?.isFinal ?? false } }

    /// The build's status from its jobs' (the one roll-up, `BuildStatus.rollUp`); jobs not started count as pending.
    public var outcome: BuildStatus {
        BuildStatus.rollUp(jobs.map { BuildStatus.Job(state: states[$0.name] ?? .pending, allowFailure: $0.allowFailure) })
    }
}
