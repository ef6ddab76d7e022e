import DevCIWire

/// A repository's `.devci.yml`, parsed and validated.
public struct Pipeline: Equatable, Sendable {
    public var stages: [String]
    public var env: [String: String]
    /// Jobs in file order.
    public var jobs: [JobDefinition]

    public func job(_ name: String) -> JobDefinition? { jobs.first { $0.name == name } }
}

/// One job as its `.devci.yml` defines it (steps, needs, limits), before any build exists. The dispatcher turns
/// each into a `NewJob` to store and a `PlannedJob` to plan.
public struct JobDefinition: Equatable, Sendable {
    public var name: String
    public var stage: String
    public var steps: [JobScript.Step]
    /// Nil when the job did not say: it then waits for every job of the earlier stages.
    public var needs: [String]?
    public var allowFailure: Bool
    public var timeout: Duration?
    public var retries: Int
    public var retryDelay: Duration
    /// The job's own variables over the pipeline's.
    public var env: [String: String]
    public var workdir: String?
    /// `image:` and its limits; nil runs on the runner's host.
    public var container: ContainerSpec?
    public var artifacts: ArtifactSpec?
    public var cache: CacheSpec?
    /// `reports:`: the test reports the runner reads after the job.
    public var reports: ReportSpec?
}

/// Where in which file a problem is.
public struct PipelineError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    /// The field, as a path: `jobs.unit.needs`.
    public var field: String
    public var message: String

    public var description: String { "\(file):\(line):\(column): \(field.isEmpty ? "" : "\(field): ")\(message)" }
}

/// Every problem found in a file, in file order.
public struct PipelineErrors: Error, Equatable, Sendable, CustomStringConvertible {
    public var errors: [PipelineError]
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

extension JobDefinition {
    /// What a runner needs to run this job, for the wire.
    public func script(pipelineEnv: [String: String]) -> JobScript {
        JobScript(steps: steps, env: pipelineEnv.merging(env) { $1 }, workdir: workdir,
                  timeoutSeconds: timeout?.seconds, container: container, artifacts: artifacts, cache: cache, reports: reports)
    }
}
