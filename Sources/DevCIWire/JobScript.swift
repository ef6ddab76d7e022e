import Foundation

/// What a runner runs for one job of a pipeline: its steps, in order, each through `/bin/sh -e -c`.
/// Travels in the `assign` message as JSON. A job without a script runs the runner's `--test-command`.
public struct JobScript: Codable, Equatable, Sendable {
    public struct Step: Codable, Equatable, Sendable {
        public var name: String
        public var run: String
        public init(name: String, run: String) {
            self.name = name
            self.run = run
        }
    }

    public var steps: [Step]
    public var env: [String: String]
    /// Relative to the workspace; validated to stay inside it.
    public var workdir: String?
    public var timeoutSeconds: Double?
    /// Run in a fresh container of this image (`image:`) instead of on the runner's host.
    public var container: ContainerSpec?
    /// Files collected from the workspace after the job and kept by the dispatcher.
    public var artifacts: ArtifactSpec?
    /// Paths kept on the runner between builds under a key.
    public var cache: CacheSpec?
    /// The jobs this one `needs` whose artifacts it receives in its workspace before its first step.
    public var artifactsFrom: [String]?
    /// Test reports read from the workspace after the job, pass or fail.
    public var reports: ReportSpec?

    public init(steps: [Step], env: [String: String] = [:], workdir: String? = nil, timeoutSeconds: Double? = nil,
                container: ContainerSpec? = nil, artifacts: ArtifactSpec? = nil, cache: CacheSpec? = nil, artifactsFrom: [String]? = nil,
                reports: ReportSpec? = nil) {
        self.reports = reports
        self.steps = steps
        self.env = env
        self.workdir = workdir
        self.timeoutSeconds = timeoutSeconds
        self.container = container
        self.artifacts = artifacts
        self.cache = cache
        self.artifactsFrom = artifactsFrom
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    public static func from(json: String) throws -> JobScript {
        try JSONDecoder().decode(JobScript.self, from: Data(json.utf8))
    }
}

/// Where and within what a container job runs: `image:`, `memory:`, `cpus:` and `network:` of the pipeline.
public struct ContainerSpec: Codable, Equatable, Sendable {
    public var image: String
    /// The engine's memory limit (swap included), in bytes.
    public var memoryBytes: Int64?
    /// CPUs in billionths, as the Docker Engine API takes them (`1.5` is 1_500_000_000).
    public var nanoCPUs: Int64?
    /// `none`, `host`, `bridge` or a network's name; nil leaves the engine's default.
    public var network: String?

    public init(image: String, memoryBytes: Int64? = nil, nanoCPUs: Int64? = nil, network: String? = nil) {
        self.image = image
        self.memoryBytes = memoryBytes
        self.nanoCPUs = nanoCPUs
        self.network = network
    }
}

/// `artifacts:` of a job: workspace paths or globs, and on which outcomes they are kept.
public struct ArtifactSpec: Codable, Equatable, Sendable {
    public enum When: String, Codable, Sendable, CaseIterable {
        case always, onSuccess = "on_success", onFailure = "on_failure"
    }

    public var paths: [String]
    public var when: When

    public init(paths: [String], when: When = .onSuccess) {
        self.paths = paths
        self.when = when
    }

    /// Whether a job that ended so keeps its artifacts.
    public func applies(succeeded: Bool) -> Bool {
        switch when {
        case .always: return true
        case .onSuccess: return succeeded
        case .onFailure: return !succeeded
        }
    }
}

/// `cache:` of a job: `paths` in the workspace kept on the runner under `key`, whose `{{ hash of FILE }}` parts are
/// filled in from the workspace when the job starts.
public struct CacheSpec: Codable, Equatable, Sendable {
    public var key: String
    public var paths: [String]

    public init(key: String, paths: [String]) {
        self.key = key
        self.paths = paths
    }
}

/// `reports:` of a job: workspace globs of the JUnit XML files its test runners write.
public struct ReportSpec: Codable, Equatable, Sendable {
    public var junit: [String]

    public init(junit: [String]) {
        self.junit = junit
    }
}
