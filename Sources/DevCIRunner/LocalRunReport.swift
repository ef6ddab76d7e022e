import DevCIPipeline
import DevCIProcess
import DevCIWire
import Foundation

/// The saved record of one `devci run --local`.
public struct LocalRunReport: Codable, Equatable, Sendable {
    public struct LogLine: Codable, Equatable, Sendable {
        public var ts: Int64
        public var stream: String
        public var text: String
    }

    public struct Attempt: Codable, Equatable, Sendable {
        public var number: Int
        public var status: JobState
        public var exitCode: Int
        public var reason: String
        public var startedAt: Date
        public var finishedAt: Date
        public var log: [LogLine]
    }

    /// One job of a local run as its saved report keeps it, with every attempt's log (there is no database).
    public struct Job: Codable, Equatable, Sendable {
        public var name: String
        public var stage: String
        public var status: JobState
        public var allowFailure: Bool
        public var reason: String?
        public var startedAt: Date?
        public var finishedAt: Date?
        public var attempts: [Attempt]
    }

    public var repository: String
    public var pipeline: String
    public var run: Int
    public var commit: String?
    public var directory: String
    public var startedAt: Date
    public var finishedAt: Date
    public var status: BuildStatus
    public var stages: [String]
    public var jobs: [Job]

    public var passed: Bool { status.passed }

    public init(repository: String, pipeline: String, run: Int, commit: String?, directory: String, startedAt: Date, finishedAt: Date,
                status: BuildStatus, stages: [String], jobs: [Job]) {
        (self.repository, self.pipeline, self.run, self.commit, self.directory) = (repository, pipeline, run, commit, directory)
        (self.startedAt, self.finishedAt, self.status, self.stages, self.jobs) = (startedAt, finishedAt, status, stages, jobs)
    }

    enum CodingKeys: String, CodingKey {
        case repository, pipeline, run, commit, directory, startedAt, finishedAt, status, stages, jobs
    }

    /// Reads reports of every version: those written before statuses were typed said `passed with allowed failures`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        repository = try c.decode(String.self, forKey: .repository)
        pipeline = try c.decode(String.self, forKey: .pipeline)
        run = try c.decode(Int.self, forKey: .run)
        commit = try c.decodeIfPresent(String.self, forKey: .commit)
        directory = try c.decode(String.self, forKey: .directory)
        startedAt = try c.decode(Date.self, forKey: .startedAt)
        finishedAt = try c.decode(Date.self, forKey: .finishedAt)
        let raw = try c.decode(String.self, forKey: .status)
        status = BuildStatus(rawValue: raw.replacingOccurrences(of: " ", with: "_")) ?? .error
        stages = try c.decode([String].self, forKey: .stages)
        jobs = try c.decode([Job].self, forKey: .jobs)
    }
}

/// Runs a pipeline on this machine, no dispatcher: jobs in plan order, one at a time, each with the same
/// executor as a runner's (steps, timeout, retries), in the current checkout.
