import DevCIWire
import Foundation

/// The states of the jobs of unfinished builds, as the store's one writer last wrote them. Recording a job's
/// transition needs its build's jobs (may it change? what does the build roll up to?); kept here, that is no read
/// of the database. Sound because one process writes a database (a file lock on SQLite, the leader lock and the
/// epoch fence on PostgreSQL) and the store clears it whenever a transaction fails. A build leaves it when all its
/// jobs are final; it never holds more than `limit` jobs (past that it starts again, and misses read the database).
final class JobStateCache: @unchecked Sendable {
    // @unchecked: everything is guarded by `lock`.
    struct Job: Equatable {
        var id: Int64
        var state: JobState
        var allowFailure: Bool
    }

    struct Build: Equatable {
        var id: Int64
        var jobs: [Job]
    }

    static let limit = 200_000
    private let lock = NSLock()
    private var builds: [Int64: Build] = [:]
    private var buildOfJob: [Int64: Int64] = [:]

    func build(of job: Int64) -> Build? {
        lock.withLock { buildOfJob[job].flatMap { builds[$0] } }
    }

    /// A build and its jobs as they are now.
    func note(_ build: Build) {
        lock.withLock {
            if buildOfJob.count + build.jobs.count > Self.limit {
                builds.removeAll()
                buildOfJob.removeAll()
            }
            builds[build.id] = build
            for job in build.jobs { buildOfJob[job.id] = build.id }
        }
    }

    /// A new build's jobs, in their first state.
    func note(build: Int64, _ specs: [JobSpec]) {
        note(Build(id: build, jobs: specs.map { Job(id: $0.id, state: $0.job.startsQueued ? .queued : .pending, allowFailure: $0.job.allowFailure) }))
    }

    func set(job: Int64, of build: Int64, to state: JobState) {
        lock.withLock {
            guard var known = builds[build], let i = known.jobs.firstIndex(where: { $0.id == job }) else { return }
            known.jobs[i].state = state
            if known.jobs.allSatisfy({ $0.state.isFinal }) {
                builds[build] = nil
                for j in known.jobs { buildOfJob[j.id] = nil }
            } else {
                builds[build] = known
            }
        }
    }

    func clear() {
        lock.withLock {
            builds.removeAll()
            buildOfJob.removeAll()
        }
    }
}
