import DevCIWire

/// The dispatcher's own configuration (`--config DIR`): tasks, administrators and per-queue settings, merged
/// from every YAML file under the folder.
public struct ServerConfig: Equatable, Sendable {
    /// By name.
    public var tasks: [String: TaskDefinition]
    public var administrators: [String]
    public var queues: [String: QueueSettings]

    public init(tasks: [String: TaskDefinition] = [:], administrators: [String] = [], queues: [String: QueueSettings] = [:]) {
        self.tasks = tasks
        self.administrators = administrators
        self.queues = queues
    }

    public static let empty = ServerConfig()
}

/// Settings of one queue.
public struct QueueSettings: Equatable, Sendable {
    public var description: String
    /// The priority of a task on this queue that names none.
    public var priority: Int?

    public init(description: String = "", priority: Int? = nil) {
        self.description = description
        self.priority = priority
    }
}

/// A named piece of work the dispatcher runs when one of its triggers fires.
public struct TaskDefinition: Equatable, Sendable {
    /// What a run does: one shell script, or a pipeline of jobs.
    public enum Work: Equatable, Sendable {
        case command(String)
        case pipeline(Pipeline)
    }

    public var name: String
    public var work: Work
    public var enabled: Bool = true
    public var description: String = ""
    public var queues: [String] = [defaultQueue]
    public var tags: [String] = []
    /// Runs every `period`, measured from the last scheduled start.
    public var period: Duration?
    /// How long after a run started a new trigger is still skipped.
    public var debounce: Duration?
    public var priority: Int = 0
    public var timeout: Duration?
    public var triggeredBy: [TaskTrigger] = []
    public var authorizedUsers: [String] = []
    /// Where it is defined, for messages.
    public var file: String = ""
    public var line: Int = 0

    public init(name: String, work: Work) {
        self.name = name
        self.work = work
    }

    /// What a `command:` task's one job runs (a pipeline task's jobs have their own).
    public var script: JobScript {
        if case .command(let command) = work { return JobScript(steps: [.init(name: name, run: command)], timeoutSeconds: timeout?.seconds) }
        return JobScript(steps: [])
    }

    /// The upstream tasks whose successful runs start this one.
    public var upstreamTasks: [String] {
        triggeredBy.compactMap { if case .task(let t) = $0 { return t } else { return nil } }
    }

    /// Whether a push to this repository's branch starts a run. Repository addresses compare without a trailing
    /// `.git` or `/`.
    public func isTriggered(byPushTo repositories: [String], branch: String) -> Bool {
        let pushed = Set(repositories.map(RepositoryAddress.normalized))
        return triggeredBy.contains {
            guard case .push(let repo, let branches) = $0 else { return false }
            return pushed.contains(RepositoryAddress.normalized(repo)) && (branches.isEmpty || branches.contains(branch))
        }
    }
}

/// What starts a task besides its period and the generic trigger.
public enum TaskTrigger: Equatable, Sendable {
    /// A GitHub push to this repository (its `clone_url` or `ssh_url`), on one of these branches (all when empty).
    case push(repository: String, branches: [String])
    /// A successful run of this task.
    case task(String)
}

/// The one comparison of repository addresses between a webhook's payload, the configuration and the observer.
public enum RepositoryAddress {
    public static func normalized(_ address: String) -> String {
        var a = Substring(address)
        while a.hasSuffix("/") { a = a.dropLast() }
        if a.hasSuffix(".git") { a = a.dropLast(4) }
        return String(a)
    }
}
