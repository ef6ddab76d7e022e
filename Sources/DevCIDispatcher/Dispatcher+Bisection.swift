import DevCINotify
import DevCIPipeline
import DevCIStore
import DevCIWire
import Foundation
import NIOCore

/// Test results as runners send them, the commits the observer left unbuilt, and bisection (issue 14): when a
/// branch goes from green to red over commits nobody built, their builds are made one at a time, at the lowest
/// priority (behind all new work), in bisection order, until the first bad commit is known; then it is named on
/// the red build's page and in a notification that follows its failure's.
extension Dispatcher {
    /// Bisection builds wait behind every other job.
    static let bisectPriority = priorityRange.lowerBound

    /// What a step of a bisection did, for the loop to carry on with.
    enum BisectionProgress: Sendable {
        case started(BisectionRecord, EnqueueResult, BuildPlan, Set<String>)
        case ended(BisectionRecord)
    }

    /// Stores an attempt's test results (only while its runner holds the lease; at most `maxPerAttempt` per attempt).
    func testResults(job: Int64, attempt: Int, _ results: [TestResult], from id: ConnectionID) {
        guard scheduler.holdsLease(id, job: job, attempt: attempt), let build = state.value.coordinator.build(ofJob: job) else { return }
        let key = JobAttempt(job: job, attempt: attempt)
        let already = state.value.testCounts[key, default: 0]
        let kept = Array(results.prefix(max(0, TestResultBatch.maxPerAttempt - already)))
        guard !kept.isEmpty else { return }
        // Attempts whose result never comes (their runner died) are forgotten in bulk, not kept for ever.
        if state.value.testCounts.count > 10_000 { state.value.testCounts.removeAll() }
        state.value.testCounts[key] = already + kept.count
        let mask = state.value.secretMask
        let masked = kept.map { r in
            TestResult(suite: mask.mask(r.suite), name: mask.mask(r.name), status: r.status, duration: r.duration, message: r.message.map(mask.mask))
        }
        _ = writer.submit("write \(masked.count) test result(s) of job \(job)") { try $0.appendTestResults(build: build, job: job, attempt: attempt, masked) }
    }

    /// Keeps a commit the observer did not build, and says so once it is stored.
    func untested(_ u: UntestedCommit, replyTo id: ConnectionID) {
        answer(id, writer.submit("keep untested \(u.commit.prefix(12))") { try $0.noteUntested(u, at: Date()) },
               busy: "the database is busy; send it again") { .ok(what: "untested") }
    }

    /// After a build's ending is written: a bisection build moves its bisection on; a commit build that turned
    /// its branch red over untested commits starts one.
    func bisectAfter(build: Int64) {
        let step = writer.submit("bisection after build \(build)") { store -> BisectionProgress? in
            guard let summary = try store.build(build) else { return nil }
            if summary.cause == .bisect {
                guard let b = try store.bisection(building: build), b.state == .running else { return nil }
                return try Self.advance(b, after: summary, store)
            }
            guard summary.cause == .commit else { return nil }
            if summary.status.passed {
                // A green build that ended after the red one that followed it (two runners): that pair too.
                guard let next = try store.nextCommitBuild(after: summary) else { return nil }
                return try Self.startBisection(of: next, store)
            }
            return try Self.startBisection(of: summary, store)
        }
        step.whenSuccess { progress in self.bisectionProgressed(progress) }
    }

    /// The bisection after its build of one candidate ended: that commit's verdict, then the next step.
    private static func advance(_ b: BisectionRecord, after build: BuildSummary, _ store: BuildWriter) throws -> BisectionProgress? {
        guard let index = b.candidates.firstIndex(of: build.commit) else { return nil }
        let failures = try store.tests(build: build.id).filter(\.status.isFailure)
        let (next, step) = Bisection.record(b, index: index, Bisection.verdict(status: build.status, failures: failures))
        return try carryOut(step, next, store)
    }

    /// Starts bisecting a red commit build whose branch's build before it passed, over the commits the observer
    /// left unbuilt in between; nil when there is nothing to bisect (or it is already bisected).
    private static func startBisection(of red: BuildSummary, _ store: BuildWriter) throws -> BisectionProgress? {
        guard red.cause == .commit, red.status.isFailure, try store.bisection(explaining: red.id) == nil,
              let previous = try store.previousCommitBuild(before: red), previous.status.passed else { return nil }
        let (candidates, cut) = try store.untested(repo: red.repo, branch: red.branch, before: red.commit)
        guard !candidates.isEmpty else { return nil }
        // A failure in known-flaky tests alone does not say the branch broke.
        if try store.tests(build: red.id).onlyKnownFlakyFailures { return nil }
        var b = BisectionRecord(repo: red.repo, branch: red.branch, badBuild: red.id, goodBuild: previous.id, candidates: candidates, truncated: cut)
        b.id = try store.saveBisection(b, at: Date())
        return try carryOut(Bisection.next(b), b, store)
    }

    /// Running bisections after a restart: one whose build ended while no dispatcher was there moves on, and a
    /// recent red build whose bisection was never begun (the dispatcher stopped in between) gets one.
    func resumeBisections() {
        let steps = writer.submit("resume bisections") { store -> [BisectionProgress] in
            var out: [BisectionProgress] = []
            for red in try store.recentFailedCommitBuilds(limit: 20) {
                if let p = try Self.startBisection(of: red, store) { out.append(p) }
            }
            for b in try store.runningBisections() {
                if let current = b.currentBuild {
                    guard let build = try store.build(current), build.status.isFinal else { continue }
                    if let p = try Self.advance(b, after: build, store) { out.append(p) }
                } else if let p = try Self.carryOut(Bisection.next(b), b, store) {
                    out.append(p)
                }
            }
            return out
        }
        steps.whenSuccess { $0.forEach { self.bisectionProgressed($0) } }
    }

    private func bisectionProgressed(_ progress: BisectionProgress?) {
        switch progress {
        case .started(let b, let result, let plan, let queued):
            logger.notice("bisecting build \(b.badBuild) (\(b.repo) \(b.branch)): build \(result.build) tries \(result.jobs.first?.commit.prefix(12) ?? "?") (build \(b.buildsRun) of at most \(BisectionRecord.maxBuilds(b.candidates.count)))")
            created(build: result.build, plan: plan, jobs: result.jobs, queued: queued)
        case .ended(let b):
            if let culprit = b.culprit {
                logger.notice("build \(b.badBuild) (\(b.repo) \(b.branch)) was broken by \(culprit.prefix(12)): \(b.reason ?? "")")
                notifyCulprit(b)
            } else {
                logger.warning("bisection of build \(b.badBuild) stopped: \(b.reason ?? "")")
            }
        case nil:
            break
        }
        flushWrites()
    }

    /// Carries out a step on the store: makes the next bisection build, or records the end.
    private static func carryOut(_ step: Bisection.Step, _ b: BisectionRecord, _ store: BuildWriter) throws -> BisectionProgress? {
        var b = b
        let now = Date()
        switch step {
        case .build(let index):
            let commit = b.candidates[index]
            guard let record = try store.untestedCommit(repo: b.repo, branch: b.branch, commit: commit) else {
                return try stop(&b, "\(commit.prefix(10)) is no longer known", store)
            }
            var plan: BuildPlan, jobs: [NewJob]
            switch record.pipeline {
            case .none:
                jobs = [NewJob(name: "test", priority: bisectPriority)]
                plan = BuildPlan(jobs: [PlannedJob(name: "test", stage: "test", dependencies: [], allowFailure: false)])
            case .unreadable(let why):
                return try stop(&b, "the pipeline of \(commit.prefix(10)) cannot be read: \(why)", store)
            case .text(let yaml):
                guard let pipeline = try? PipelineParser.parse(yaml), case .success(let made) = Dispatcher.jobs(of: pipeline, file: pipelineFileName, priority: bisectPriority) else {
                    return try stop(&b, "the pipeline of \(commit.prefix(10)) is invalid", store)
                }
                (plan, jobs) = made
            }
            let first = BuildCoordinator.firstJobs(plan)
            for i in jobs.indices { jobs[i].startsQueued = first.queued.contains(jobs[i].name) }
            var run = NewRun(task: nil, cause: .bisect, repo: b.repo, branch: b.branch, commit: commit, upstream: b.badBuild, title: record.title)
            run.reason = "bisecting build \(b.badBuild): commit \(index + 1) of the \(b.candidates.count) not built between builds \(b.goodBuild) and \(b.badBuild)"
            let result = try store.enqueueRun(run, jobs: jobs, at: now)
            if !record.author.isEmpty { try store.describe(build: result.build, title: record.title, author: record.author) }
            b.currentBuild = result.build
            b.buildsRun += 1
            _ = try store.saveBisection(b, at: now)
            return .started(b, result, first.plan, first.queued)
        case .found(let index):
            b.state = .found
            b.currentBuild = nil
            if index < b.candidates.count {
                let commit = b.candidates[index]
                let record = try store.untestedCommit(repo: b.repo, branch: b.branch, commit: commit)
                (b.culprit, b.culpritTitle, b.culpritAuthor) = (commit, record?.title ?? "", record?.author ?? "")
            } else if let red = try store.build(b.badBuild) {
                (b.culprit, b.culpritTitle, b.culpritAuthor) = (red.commit, red.title, red.author)
            }
            let after = b.buildsRun == 1 ? "1 build" : "\(b.buildsRun) builds"
            b.reason = "found by bisecting \(b.candidates.count) commit(s) not built between builds \(b.goodBuild) and \(b.badBuild), in \(after)"
            _ = try store.saveBisection(b, at: now)
            return .ended(b)
        case .stopped(let why):
            return try stop(&b, why, store)
        }
    }

    private static func stop(_ b: inout BisectionRecord, _ why: String, _ store: BuildWriter) throws -> BisectionProgress {
        b.state = .stopped
        b.currentBuild = nil
        b.reason = why
        _ = try store.saveBisection(b, at: Date())
        return .ended(b)
    }

    /// The failure's notification again, now naming the commit that broke the branch (failure rules only).
    private func notifyCulprit(_ b: BisectionRecord) {
        let config = state.value.triggers.config
        guard !config.notifications.isEmpty else { return }
        _ = writer.submit("queue the culprit notification of build \(b.badBuild)") { store -> Void in
            guard var facts = try store.notificationFacts(build: b.badBuild, logLines: 0) else { return }
            facts.culprit = b
            facts.failing = []
            let messages = NotificationComposer.messages(for: facts, config: config, now: Date())
            try store.queueNotifications(build: b.badBuild, messages, at: Date())
        }
    }
}
