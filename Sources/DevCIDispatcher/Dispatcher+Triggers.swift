import DevCIPipeline
import DevCIStore
import DevCIWire
import Foundation
import NIOCore

/// The dispatcher's edge for everything that starts work besides a commit's dispatch: task runs (periods,
/// pushes, upstream successes, the generic trigger), ad-hoc jobs, and the configuration they come from.
extension Dispatcher {
    /// What a trigger from outside (the HTTP side) gets back.
    public enum TriggerReply: Equatable, Sendable {
        /// A run was queued (its build id) or skipped (its build id and why).
        case queued(Int64)
        case skipped(Int64, String)
        case unknownTask
        case disabled
        case failed(String)
    }

    // MARK: Ad-hoc jobs

    func addJob(_ job: AdHocJob, replyTo id: ConnectionID) {
        let script = JobScript(steps: [.init(name: "command", run: job.command)], timeoutSeconds: job.timeoutSeconds).json()
        guard LineCodec.percentEncode(script).utf8.count <= WireLimits.maxScriptBytes else {
            send(id, .error(code: .badField, message: "the command is too large to send to a runner"))
            return
        }
        let run = NewRun(task: nil, cause: .adhoc, title: String(job.command.prefix(200)))
        let newJob = NewJob(name: "adhoc", stage: "adhoc", script: script, queues: [job.queue], priority: job.priority)
        let plan = BuildPlan(jobs: [PlannedJob(name: "adhoc", stage: "adhoc", dependencies: [], allowFailure: false)])
        answer(id, createBuild(run, plan: plan, jobs: [newJob]), busy: "the database is busy; the job is queued when it frees") {
            .queued(build: $0.build, jobs: $0.jobs.map(\.id), created: $0.created)
        }
    }

    /// Stores a task run or an ad-hoc job and hands its first jobs to the coordinator.
    private func createBuild(_ run: NewRun, plan: BuildPlan, jobs: [NewJob]) -> EventLoopFuture<EnqueueResult> {
        let (planned, first) = BuildCoordinator.firstJobs(plan)
        var jobs = jobs
        for i in jobs.indices { jobs[i].startsQueued = first.contains(jobs[i].name) }
        let newJobs = jobs, at = Date()
        return writer.submit("record a run of \(run.task ?? "an ad-hoc job")") { try $0.enqueueRun(run, jobs: newJobs, at: at) }.map { result in
            if result.created {
                self.logger.info("build \(result.build) queued: \(run.task.map { "task \($0) (\(run.cause.rawValue))" } ?? "ad-hoc job"), \(newJobs.count) job(s)")
                self.created(build: result.build, plan: planned, jobs: result.jobs, queued: first, task: run.task)
            }
            return result
        }
    }

    // MARK: Task runs

    /// Carries out what the trigger logic decided. Each run's outcome is reported back to it.
    @discardableResult
    func applyTriggers(_ actions: [Triggers.Action]) -> [EventLoopFuture<TriggerReply>] {
        var replies: [EventLoopFuture<TriggerReply>] = []
        for action in actions {
            switch action {
            case .scheduled(let task, let at):
                _ = writer.submit("note the schedule of task \(task)") { try $0.setTaskSchedule([task: at]) }
            case .skip(let run, let reason):
                logger.info("task \(run.task) (\(run.cause.rawValue)) \(reason)")
                let stored = newRun(run)
                replies.append(writer.submit("record a skipped run of task \(run.task)") { try $0.recordSkipped(stored, reason: reason, at: Date()) }
                    .map { build in
                        // Ended as it was written: its notifications are decided now (a rule with `always` hears of it).
                        self.metrics.buildEnded(.skipped)
                        self.decideNotifications(build)
                        return .skipped(build, reason)
                    })
            case .run(let run):
                replies.append(startRun(run))
            }
        }
        return replies
    }

    private func newRun(_ run: Triggers.Run) -> NewRun {
        let task = state.value.triggers.config.tasks[run.task]
        return NewRun(task: run.task, cause: run.cause, repo: run.repo, branch: run.branch, commit: run.commit, upstream: run.upstream,
                      scheduledAt: run.scheduledAt, tags: task?.tags ?? [], title: run.title.isEmpty ? task?.description ?? "" : run.title)
    }

    private func startRun(_ run: Triggers.Run) -> EventLoopFuture<TriggerReply> {
        guard let task = state.value.triggers.config.tasks[run.task] else {
            applyTriggers(state.value.triggers.handle(.runCreated(run, build: nil), now: Date()))
            return loop.makeSucceededFuture(.unknownTask)
        }
        let plan: BuildPlan, jobs: [NewJob]
        switch task.work {
        case .command:
            let script = task.script.json()
            jobs = [NewJob(name: task.name, stage: "task", script: script, queues: task.queues, priority: task.priority)]
            plan = BuildPlan(jobs: [PlannedJob(name: task.name, stage: "task", dependencies: [], allowFailure: false)])
        case .pipeline(let pipeline):
            switch Self.jobs(of: pipeline, file: task.file, queues: task.queues, priority: task.priority, timeout: task.timeout) {
            case .success(let made): (plan, jobs) = made
            case .failure(let tooLarge):
                logger.error("task \(task.name) cannot run: \(tooLarge)")
                applyTriggers(state.value.triggers.handle(.runCreated(run, build: nil), now: Date()))
                return loop.makeSucceededFuture(.failed(tooLarge.description))
            }
        }
        return createBuild(newRun(run), plan: plan, jobs: jobs).map { result -> TriggerReply in
            self.applyTriggers(self.state.value.triggers.handle(.runCreated(run, build: result.created ? result.build : nil), now: Date()))
            return .queued(result.build)
        }.flatMapErrorThrowing { error in
            self.applyTriggers(self.state.value.triggers.handle(.runCreated(run, build: nil), now: Date()))
            throw error
        }
    }

    /// The generic trigger: a run of the task now (or a skip), answered once it is stored.
    public func triggerTask(_ name: String) -> EventLoopFuture<TriggerReply> {
        loop.flatSubmit {
            guard self.state.value.triggers.config.tasks[name] != nil else { return self.loop.makeSucceededFuture(.unknownTask) }
            guard self.state.value.triggers.isEnabled(name) else { return self.loop.makeSucceededFuture(.disabled) }
            let replies = self.applyTriggers(self.state.value.triggers.handle(.hook(task: name), now: Date()))
            guard let reply = replies.first else { return self.loop.makeSucceededFuture(.failed("nothing was started")) }
            self.flushWrites()
            return reply
        }
    }

    // MARK: Pushes

    /// What a verified GitHub push asks for.
    public struct Push: Sendable {
        public var delivery: String
        /// The repository's addresses (`clone_url`, `ssh_url`, …).
        public var repositories: [String]
        public var branch: String
        /// Oldest first.
        public var commits: [PushedCommit]

        public init(delivery: String, repositories: [String], branch: String, commits: [PushedCommit]) {
            self.delivery = delivery
            self.repositories = repositories
            self.branch = branch
            self.commits = commits
        }
    }

    /// What became of a push.
    public enum PushReply: Equatable, Sendable {
        /// Runs queued (build ids) for tasks, and whether an observer was told to fetch.
        case handled(runs: [Int64], observers: Int)
        /// The same delivery was handled before: nothing is done twice.
        case redelivery
    }

    /// Notes the delivery (a redelivery does nothing), starts the runs of the tasks the push triggers, and wakes
    /// observers of the repository, which fetch and dispatch its new commits (each commit is built once).
    public func push(_ push: Push) -> EventLoopFuture<PushReply> {
        // The delivery is noted only once its runs are stored: a delivery that failed half way (the dispatcher
        // died) is redelivered by GitHub and done again; the runs already stored are not doubled (one run per
        // task and pushed commit).
        writer.submit("look up webhook delivery \(push.delivery.prefix(40))") { try $0.deliverySeen(id: push.delivery) }
            .flatMap { seen -> EventLoopFuture<PushReply> in
                guard !seen else { return self.loop.makeSucceededFuture(.redelivery) }
                let observers = self.wakeObservers(of: push.repositories)
                let replies = self.applyTriggers(self.state.value.triggers.handle(
                    .push(repositories: push.repositories, branch: push.branch, commits: push.commits), now: Date()))
                self.flushWrites()
                return EventLoopFuture.whenAllComplete(replies, on: self.loop).flatMap { results in
                    var runs: [Int64] = []
                    for r in results {
                        switch r {
                        case .success(.queued(let b)): runs.append(b)
                        case .failure(let error): return self.loop.makeFailedFuture(error)
                        default: break
                        }
                    }
                    return self.writer.submit("note webhook delivery \(push.delivery.prefix(40))") {
                        try $0.noteDelivery(id: push.delivery, event: "push", at: Date())
                    }.map { _ in .handled(runs: runs, observers: observers) }
                }
            }
    }

    /// Answers waiting observers of these repositories at once; a push nobody waits for is kept for the next wait.
    private func wakeObservers(of repositories: [String]) -> Int {
        let pushed = Set(repositories.map(RepositoryAddress.normalized))
        var woken = 0
        for (id, waiter) in state.value.pushWaiters where !waiter.repos.isDisjoint(with: pushed) {
            waiter.timer.cancel()
            state.value.pushWaiters[id] = nil
            send(id, .pushed(repos: waiter.repos.intersection(pushed).sorted()))
            woken += 1
        }
        if woken == 0 {
            // Bounded: an address nobody ever waits for is forgotten with the rest when there are too many.
            if state.value.unclaimedPushes.count > 1000 { state.value.unclaimedPushes.removeAll() }
            state.value.unclaimedPushes.formUnion(pushed)
        }
        return woken
    }

    /// An observer waits for a push to one of its repositories, or for the timeout.
    func awaitPush(repos: [String], timeoutMillis: Int, replyTo id: ConnectionID) {
        let wanted = Set(repos.map(RepositoryAddress.normalized))
        state.value.pushWaiters.removeValue(forKey: id)?.timer.cancel()
        let claimed = state.value.unclaimedPushes.intersection(wanted)
        if !claimed.isEmpty || timeoutMillis == 0 {
            state.value.unclaimedPushes.subtract(claimed)
            send(id, .pushed(repos: claimed.sorted()))
            return
        }
        // Answered within half the idle timeout: the next wait, which re-arms it, comes before it fires.
        let wait = min(Duration.milliseconds(Int64(timeoutMillis)), config.idleTimeout / 2)
        let timer = loop.assumeIsolated().scheduleTask(in: .init(wait)) {
            guard self.state.value.pushWaiters.removeValue(forKey: id) != nil else { return }
            self.send(id, .pushed(repos: []))
            self.flushWrites()
        }
        state.value.pushWaiters[id] = (wanted, timer)
    }

    // MARK: Configuration

    private static let reloads = DispatchQueue(label: "devci.dispatcher.reload")

    /// Rereads `--config`: a valid configuration replaces the old one (work in progress goes on); an invalid one
    /// is refused with its errors, and the old one stays. `done` gets nil, or the errors, on the loop.
    public func reload(_ done: @escaping @Sendable (String?) -> Void = { _ in }) {
        guard let directory = config.configDirectory else {
            loop.execute { done("the dispatcher was started without --config: there is nothing to reload") }
            return
        }
        // Off the loop (it reads files), one reload at a time and in order.
        Self.reloads.async {
            let result = Result { () throws(PipelineErrors) -> ServerConfig in try ServerConfigParser.load(directory: directory) }
            self.loop.execute {
                switch result {
                case .success(let new):
                    let old = self.state.value.triggers.config
                    self.configure(new)
                    self.logger.notice("configuration reloaded from \(directory): \(new.tasks.count) task(s) (was \(old.tasks.count))")
                    done(nil)
                case .failure(let errors):
                    self.logger.error("configuration in \(directory) is invalid; keeping the old one:\n\(errors)")
                    done(errors.description)
                }
            }
        }
    }
}
