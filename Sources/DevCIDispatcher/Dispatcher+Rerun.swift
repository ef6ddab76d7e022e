import DevCIPipeline
import DevCIStore
import DevCIWire
import Foundation
import NIOCore

/// Re-runs asked for from the reporter (`rerun build=N failed_only=0|1 by=USER`): a new build of the same
/// repository, commit and task with the same jobs, each ending with its own one result. With `failed_only`,
/// the jobs that passed are kept (recorded `success`, saying from which build, their artifacts copied) and only
/// the others run again, in the order their needs allow.
extension Dispatcher {
    struct RerunRefused: Error, CustomStringConvertible {
        var description: String
    }

    func rerun(_ id: Int64, failedOnly: Bool, by: String, replyTo: ConnectionID) {
        if failedOnly && state.value.coordinator.isUnfinished(.build(id)) {
            send(replyTo, .error(code: .conflict, message: "build \(id) has not ended: its failed jobs can be run again once it has"))
            return
        }
        let artifacts = config.artifacts
        let made = writer.submit("re-run build \(id)") { store -> (EnqueueResult, BuildPlan, Set<String>, Set<String>, String?)? in
            guard let old = try store.build(id) else { return nil }
            let definitions = try store.jobDefinitions(build: id)
            let keep = failedOnly ? Set(definitions.filter { $0.state == .success }.map(\.job.name)) : []
            guard !failedOnly || keep.count < definitions.count else { throw RerunRefused(description: "every job of build \(id) passed: nothing to run again") }
            var plan = BuildPlan(jobs: definitions.map { PlannedJob(name: $0.job.name, stage: $0.job.stage, dependencies: $0.job.dependencies, allowFailure: $0.job.allowFailure) },
                                 states: keep.reduce(into: [:]) { $0[$1] = .success })
            let first = BuildCoordinator.firstJobs(plan)
            plan = first.plan
            let jobs = definitions.map { d -> NewJob in
                var j = d.job
                j.startsQueued = first.queued.contains(j.name)
                return j
            }
            var run = NewRun(task: old.task, cause: .rerun, repo: old.repo, branch: old.branch, commit: old.commit, tags: old.tags, title: old.title)
            run.reason = "re-run of build \(id)\(failedOnly ? " (its failed jobs)" : "") by \(by)"
            let result = try store.enqueueRun(run, jobs: jobs, at: Date())
            if !old.author.isEmpty { try store.describe(build: result.build, title: old.title, author: old.author) }
            for spec in result.jobs where keep.contains(spec.name) {
                try store.record(JobTransition(job: spec.id, state: .success, attempt: 0, reason: "passed in build \(id); kept by \(by)'s re-run of the failed jobs",
                                               exitCode: 0))
                artifacts?.copy(from: id, to: result.build, job: spec.name)
            }
            return (result, plan, first.queued, keep, old.task)
        }
        made.whenComplete { outcome in
            switch outcome {
            case .success(nil):
                self.send(replyTo, .error(code: .notFound, message: "there is no build \(id)"))
            case .success(let (result, plan, queued, keep, task)?):
                self.logger.notice("build \(result.build) queued: re-run of build \(id)\(failedOnly ? ", \(keep.count) passed job(s) kept" : "") asked by \(by)")
                // The kept jobs are not the coordinator's: they ended as the plan already says.
                self.created(build: result.build, plan: plan, jobs: result.jobs.filter { !keep.contains($0.name) }, queued: queued, task: task)
                self.send(replyTo, .queued(build: result.build, jobs: result.jobs.map(\.id), created: true))
            case .failure(let error as RerunRefused):
                self.send(replyTo, .error(code: .conflict, message: error.description))
            case .failure:
                self.send(replyTo, .error(code: .store, message: "the database could not be used"))
            }
        }
    }
}
