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

    public init(steps: [Step], env: [String: String] = [:], workdir: String? = nil, timeoutSeconds: Double? = nil) {
        self.steps = steps
        self.env = env
        self.workdir = workdir
        self.timeoutSeconds = timeoutSeconds
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
