import DevCIWire

/// The dispatcher's own configuration (`--config DIR`): tasks, administrators and per-queue settings, merged
/// from every YAML file under the folder.
public struct ServerConfig: Equatable, Sendable {
    /// By name.
    public var tasks: [String: TaskDefinition]
    public var administrators: [String]
    public var queues: [String: QueueSettings]
    public var secrets: [SecretDefinition] = []
    /// People who may sign in to the reporter, with their bcrypt password hashes (`users:`).
    public var users: [String: String] = [:]
    public var notifications: [NotificationRule] = []
    public var smtp: SMTPSettings?
    /// The reporter's address as people reach it, for links in notifications (`reporter_url:`).
    public var reporterURL = "http://127.0.0.1:5000"

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

/// A secret of `secrets:`: reaches the jobs of these repositories' builds and of these tasks' runs as the
/// environment variable `name`, and no others. Its value never appears in a description of it.
public struct SecretDefinition: Equatable, Sendable, CustomStringConvertible {
    public var name: String
    public var value: String
    public var repositories: [String] = []
    public var tasks: [String] = []
    public var file = ""
    public var line = 0

    public init(name: String, value: String, repositories: [String] = [], tasks: [String] = []) {
        self.name = name
        self.value = value
        self.repositories = repositories
        self.tasks = tasks
    }

    public func isVisible(repository: String, task: String?) -> Bool {
        if let task, tasks.contains(task) { return true }
        guard !repository.isEmpty else { return false }
        let repo = RepositoryAddress.normalized(repository)
        return repositories.contains { RepositoryAddress.normalized($0) == repo }
    }

    public var description: String { "secret \(name) (\(file):\(line))" }
}

extension ServerConfig {
    /// The secrets a job of a build of `repository` (or a run of `task`) sees, by variable.
    public func secrets(repository: String, task: String?) -> [String: String] {
        secrets.filter { $0.isVisible(repository: repository, task: task) }.reduce(into: [:]) { $0[$1.name] = $1.value }
    }

    /// Every secret value, for masking what is stored whatever the job.
    public var secretMask: SecretMask { SecretMask(secrets.map(\.value)) }
}

/// One rule of `notifications:`: on which outcomes, for which builds, to whom.
public struct NotificationRule: Equatable, Sendable {
    public enum When: String, Equatable, Sendable, CaseIterable {
        /// A build that failed (failed, error, timed out).
        case failure
        /// The first successful build after a failed one, of the same repository and branch (or task).
        case fixed
        /// Every build that ends.
        case always
    }

    public enum Format: String, Equatable, Sendable {
        case json
        /// `{"text": …}`, as Slack's (and Mattermost's, Rocket.Chat's) incoming webhooks take.
        case slack
    }

    public var when: Set<When> = [.failure, .fixed]
    /// Builds of these repositories and runs of these tasks; both empty: every build.
    public var repositories: [String] = []
    public var tasks: [String] = []
    public var email: [String] = []
    public var webhook: String?
    public var format: Format = .json
    public var file = ""
    public var line = 0

    public init() {}

    public func applies(repository: String, task: String?) -> Bool {
        if repositories.isEmpty && tasks.isEmpty { return true }
        if let task, tasks.contains(task) { return true }
        let repo = RepositoryAddress.normalized(repository)
        return !repository.isEmpty && repositories.contains { RepositoryAddress.normalized($0) == repo }
    }
}

/// The mail server notifications go through (`smtp:`). The user and password come from the dispatcher's
/// environment (`DEVCI_SMTP_USER`, `DEVCI_SMTP_PASSWORD`), never from a file in the configuration folder.
public struct SMTPSettings: Equatable, Sendable {
    public var host: String
    public var port: Int = 25
    /// Upgrade the connection with STARTTLS before anything else is said (refuses a server that does not offer it).
    public var starttls = true
    public var from: String
    /// A PEM file of the certificate authorities trusted for STARTTLS (default: the system's).
    public var caFile: String?

    public init(host: String, port: Int = 25, starttls: Bool = true, from: String, caFile: String? = nil) {
        self.host = host
        self.port = port
        self.starttls = starttls
        self.from = from
        self.caFile = caFile
    }
}
