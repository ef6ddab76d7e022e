import DevCIPipeline
import DevCIStore
import DevCIWire
import Foundation

/// A commit a push names: its id and the first line of its message.
public struct PushedCommit: Equatable, Sendable {
    public var id: String
    public var title: String

    public init(id: String, title: String) {
        self.id = id
        self.title = title
    }
}

/// When tasks run: periods, pushes, upstream successes and the generic trigger, with one run at a time and
/// debounce. A pure state machine: events with the wall-clock time in (periods survive restarts, so they are
/// measured in wall-clock time), runs and skips out; the dispatcher's edge stores them and reports back.
public struct Triggers {
    /// A run to create (or to record as skipped).
    public struct Run: Equatable, Sendable {
        public var task: String
        public var cause: BuildCause
        public var repo: String = ""
        public var branch: String = ""
        public var commit: String = ""
        public var title: String = ""
        /// The ancestor: the upstream run whose success started this one.
        public var upstream: Int64?
        public var scheduledAt: Date
    }

    public enum Event: Equatable {
        /// The configuration at start, or a valid one after a reload.
        case configured(ServerConfig)
        /// On start: when each periodic task was last scheduled, and the task runs that were active or last.
        case restored(schedule: [String: Date], runs: [TaskRun])
        /// Time passed: periods come due.
        case tick
        /// `POST /hooks/tasks/<name>`.
        case hook(task: String)
        /// A GitHub push to a repository (its addresses) and branch, with the commits it names, oldest first.
        case push(repositories: [String], branch: String, commits: [PushedCommit])
        /// The edge stored a run the machine asked for (`build` nil: the write failed).
        case runCreated(Run, build: Int64?)
        /// A build's first job started running (debounce counts from a run's start).
        case buildStarted(Int64)
        /// A build ended; a task run's end may start its downstream tasks.
        case buildEnded(Int64, BuildStatus)
    }

    public enum Action: Equatable {
        /// Create this run (then report `runCreated`).
        case run(Run)
        /// Record this run as skipped, with why.
        case skip(Run, reason: String)
        /// Persist when this periodic task was last scheduled.
        case scheduled(task: String, at: Date)
    }

    public private(set) var config = ServerConfig.empty
    private var lastScheduled: [String: Date] = [:]
    /// Active runs of each task: stored ones by build id, and how many are still being stored.
    private var active: [String: Set<Int64>] = [:]
    private var storing: [String: Int] = [:]
    /// When each task's last run (not skipped) was triggered, for debounce.
    private var lastStarted: [String: Date] = [:]
    /// The task runs in progress, to start their downstream tasks when they end.
    private var runs: [Int64: Run] = [:]
    private var startedRuns: Set<Int64> = []

    public init() {}

    public mutating func handle(_ event: Event, now: Date) -> [Action] {
        switch event {
        case .configured(let config):
            self.config = config
            return []
        case .restored(let schedule, let restored):
            lastScheduled.merge(schedule) { _, new in new }
            for r in restored {
                if r.active {
                    active[r.task, default: []].insert(r.build)
                    // Its end still starts its downstream tasks, at its commit.
                    let n = r.run
                    runs[r.build] = Run(task: r.task, cause: n.cause, repo: n.repo, branch: n.branch, commit: n.commit, title: n.title,
                                        upstream: n.upstream, scheduledAt: n.scheduledAt ?? r.startedAt)
                }
                if lastStarted[r.task].map({ $0 < r.startedAt }) ?? true { lastStarted[r.task] = r.startedAt }
            }
            return []
        case .tick:
            return tick(now: now)
        case .hook(let task):
            return trigger(task, Run(task: task, cause: .hook, scheduledAt: now), now: now)
        case .push(let repositories, let branch, let commits):
            var out: [Action] = []
            for task in enabledTasks where task.isTriggered(byPushTo: repositories, branch: branch) {
                // The address the task names is the one its runners fetch from.
                let repo = task.triggeredBy.lazy.compactMap { trigger -> String? in
                    guard case .push(let r, _) = trigger, repositories.map(RepositoryAddress.normalized).contains(RepositoryAddress.normalized(r)) else { return nil }
                    return r
                }.first ?? repositories[0]
                for commit in commits {
                    out += trigger(task.name, Run(task: task.name, cause: .push, repo: repo, branch: branch, commit: commit.id, title: commit.title,
                                                  scheduledAt: now), now: now)
                }
            }
            return out
        case .runCreated(let run, let build):
            storing[run.task, default: 1] -= 1
            if let build {
                active[run.task, default: []].insert(build)
                runs[build] = run
            }
            return []
        case .buildStarted(let build):
            if let run = runs[build], startedRuns.insert(build).inserted { lastStarted[run.task] = now }
            return []
        case .buildEnded(let build, let status):
            startedRuns.remove(build)
            guard let run = runs.removeValue(forKey: build) else {
                for task in active.keys { active[task]?.remove(build) }
                return []
            }
            active[run.task]?.remove(build)
            guard status.passed else { return [] }
            var out: [Action] = []
            for task in enabledTasks where task.upstreamTasks.contains(run.task) {
                out += trigger(task.name, Run(task: task.name, cause: .upstream, repo: run.repo, branch: run.branch, commit: run.commit,
                                              title: run.title, upstream: build, scheduledAt: now), now: now)
            }
            return out
        }
    }

    /// Whether a task of this name exists and may run.
    /// The task a build is a run of, while the dispatcher knows it (runs restored on start included).
    public func task(ofBuild build: Int64) -> String? { runs[build]?.task }

    public func isEnabled(_ task: String) -> Bool { config.tasks[task]?.enabled ?? false }

    private var enabledTasks: [TaskDefinition] {
        config.tasks.values.filter(\.enabled).sorted { $0.name < $1.name }
    }

    private mutating func tick(now: Date) -> [Action] {
        var out: [Action] = []
        for task in enabledTasks {
            guard let period = task.period?.seconds else { continue }
            guard let last = lastScheduled[task.name] else {
                // The clock of a new periodic task starts now; its first run is one period away.
                lastScheduled[task.name] = now
                out.append(.scheduled(task: task.name, at: now))
                continue
            }
            let elapsed = now.timeIntervalSince(last)
            guard elapsed >= period else { continue }
            // However many periods were missed (the dispatcher was down), one run catches up, at the latest
            // period boundary; the next is due one period after it.
            let due = last.addingTimeInterval((elapsed / period).rounded(.down) * period)
            lastScheduled[task.name] = due
            out.append(.scheduled(task: task.name, at: due))
            out += trigger(task.name, Run(task: task.name, cause: .period, scheduledAt: due), now: now)
        }
        return out
    }

    /// A run of the task, or a skip when another is active or the debounce window is open. Runs of pushed commits
    /// are never skipped: every commit is tested.
    private mutating func trigger(_ name: String, _ run: Run, now: Date) -> [Action] {
        guard let task = config.tasks[name], task.enabled else { return [] }
        if run.cause != .push {
            if let other = active[name]?.min() {
                return [.skip(run, reason: "skipped: run in build \(other) of task '\(name)' is still queued or running")]
            }
            if storing[name, default: 0] > 0 {
                return [.skip(run, reason: "skipped: another run of task '\(name)' is being queued")]
            }
            if let debounce = task.debounce?.seconds, let last = lastStarted[name], now.timeIntervalSince(last) < debounce {
                let ago = Int(now.timeIntervalSince(last).rounded())
                return [.skip(run, reason: "skipped: debounce \(TimeValue.format(seconds: debounce)): the last run started \(ago)s ago")]
            }
        }
        storing[name, default: 0] += 1
        lastStarted[name] = now
        return [.run(run)]
    }
}
