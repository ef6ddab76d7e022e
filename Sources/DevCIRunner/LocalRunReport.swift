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
        public var status: String
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
        public var status: String
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
    /// A `BuildStatus` raw value: `success`, `passed_with_allowed_failures`, `failed`, `timed_out`, …
    public var status: String
    public var stages: [String]
    public var jobs: [Job]

    /// Reports written before the statuses were typed said `passed with allowed failures`.
    public var passed: Bool { BuildStatus(rawValue: status)?.passed ?? (status == "passed with allowed failures") }
}

/// Runs a pipeline on this machine, no dispatcher: jobs in plan order, one at a time, each with the same
/// executor as a runner's (steps, timeout, retries), in the current checkout.
