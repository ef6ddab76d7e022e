import DevCIWire
import Foundation
import Yams

/// Reads the server configuration: every `*.yml` and `*.yaml` file under a folder (names and folders carry no
/// meaning), merged into one `ServerConfig`. Every error names its file, line and field; a name defined twice
/// names both places; unknown keys suggest the nearest known one; upstream tasks must not form a cycle.
public enum ServerConfigParser {
    static let topKeys = ["tasks", "administrators", "queues", "secrets", "notifications", "smtp", "reporter_url", "users"]
    static let secretKeys = ["value", "file", "env", "repositories", "tasks"]
    static let notificationKeys = ["when", "repositories", "tasks", "email", "webhook", "format"]
    static let smtpKeys = ["host", "port", "starttls", "from", "ca_file"]
    static let taskKeys = ["command", "pipeline", "enabled", "description", "queues", "tags", "period", "debounce", "priority", "timeout",
                           "triggered_by", "authorized_users"]
    static let triggerKeys = ["repository", "branch", "branches", "task"]
    static let queueKeys = ["description", "priority"]
    /// A configuration file larger than this is refused (it is written by people).
    public static let fileLimit = 1 << 20

    /// Reads and merges every configuration file under `directory`.
    /// `resolveSecrets` false: secrets' `file` and `env` are not read (their values stay empty), for a process that
    /// never hands secrets out (the reporter).
    public static func load(directory: String, resolveSecrets: Bool = true) throws(PipelineErrors) -> ServerConfig {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw PipelineErrors(errors: [PipelineError(file: directory, line: 0, column: 0, field: "", message: "no such folder")])
        }
        var files: [(String, String)] = []
        var errors: [PipelineError] = []
        for relative in configFiles(in: directory) {
            let path = directory + "/" + relative
            guard let data = FileManager.default.contents(atPath: path) else {
                errors.append(PipelineError(file: relative, line: 0, column: 0, field: "", message: "cannot be read"))
                continue
            }
            guard data.count <= fileLimit else {
                errors.append(PipelineError(file: relative, line: 0, column: 0, field: "", message: "is larger than \(fileLimit) bytes"))
                continue
            }
            guard let text = String(data: data, encoding: .utf8) else {
                errors.append(PipelineError(file: relative, line: 0, column: 0, field: "", message: "is not UTF-8 text"))
                continue
            }
            files.append((relative, text))
        }
        let parsed: Result<ServerConfig, PipelineErrors>
        do { parsed = .success(try parse(files, resolveSecrets: resolveSecrets)) } catch { parsed = .failure(error) }
        switch parsed {
        case .success(let config) where errors.isEmpty: return config
        case .success: throw PipelineErrors(errors: errors)
        case .failure(let failure): throw PipelineErrors(errors: errors + failure.errors)
        }
    }

    /// The configuration files under `directory`, relative to it, sorted; hidden files and folders are left out.
    public static func configFiles(in directory: String) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return [] }
        var out: [String] = []
        while let relative = walker.nextObject() as? String {
            let name = (relative as NSString).lastPathComponent
            if name.hasPrefix(".") {
                walker.skipDescendants()
                continue
            }
            if name.hasSuffix(".yml") || name.hasSuffix(".yaml") { out.append(relative) }
        }
        return out.sorted()
    }

    /// Parses and merges configuration texts, each with the file name its errors carry.
    public static func parse(_ files: [(file: String, text: String)], resolveSecrets: Bool = true) throws(PipelineErrors) -> ServerConfig {
        var config = ServerConfig()
        var errors: [PipelineError] = []
        var queueSeen: [String: (String, Int)] = [:]
        /// Tasks that name their own priority (the others take their queue's).
        var ownPriority: Set<String> = []
        for (file, text) in files {
            var r = PipelineParser.Reader(file: file)
            r.resolveSecrets = resolveSecrets
            if let anchor = PipelineParser.anchorPosition(in: text) {
                errors.append(PipelineError(file: file, line: anchor.line, column: anchor.column, field: "",
                                            message: "anchors and aliases (&name, *name) are not supported: write the value out"))
                continue
            }
            let root: Node?
            do {
                root = try Yams.compose(yaml: text)
            } catch let error as YamlError {
                errors.append(r.yamlError(error))
                continue
            } catch {
                errors.append(PipelineError(file: file, line: 1, column: 1, field: "", message: "\(error)"))
                continue
            }
            guard let root else { continue }  // an empty file adds nothing
            for (key, _, value) in r.mapping(root, "", known: topKeys) ?? [] {
                switch key {
                case "administrators":
                    for user in r.strings(value, "administrators") ?? [] {
                        if !Validate.isRunnerName(user) { r.fail(value, "administrators", "'\(user)' is not a valid user name") }
                        if !config.administrators.contains(user) { config.administrators.append(user) }
                    }
                case "secrets":
                    for (name, keyNode, node) in r.mapping(value, "secrets", known: nil) ?? [] {
                        guard SecretsField.isVariableName(name) else {
                            r.fail(keyNode, "secrets", "'\(name.prefix(64))' is not a valid variable name (letters, digits, '_'; not DEVCI_…)")
                            continue
                        }
                        if let first = config.secrets.first(where: { $0.name == name }) {
                            r.fail(keyNode, "secrets.\(name)", "secret '\(name)' is defined twice: \(first.file):\(first.line) and \(file):\(keyNode.mark?.line ?? 0)")
                            continue
                        }
                        if var secret = r.secret(name, node) {
                            secret.file = file
                            secret.line = keyNode.mark?.line ?? 0
                            config.secrets.append(secret)
                        }
                    }
                case "notifications":
                    guard let rules = value.sequence else {
                        r.fail(value, "notifications", "expected a list of rules like [{when: [failure, fixed], email: [dev@example.com]}]")
                        continue
                    }
                    for (i, node) in rules.enumerated() {
                        if var rule = r.notification(node, "notifications[\(i)]") {
                            rule.file = file
                            rule.line = node.mark?.line ?? 0
                            config.notifications.append(rule)
                        }
                    }
                case "smtp":
                    if config.smtp != nil { r.fail(value, "smtp", "is defined in more than one file") }
                    config.smtp = r.smtp(value)
                case "users":
                    for (name, keyNode, hashNode) in r.mapping(value, "users", known: nil) ?? [] {
                        guard Validate.isRunnerName(name) else {
                            r.fail(keyNode, "users", "'\(name.prefix(64))' is not a valid user name (letters, digits, '.', '_', '-')")
                            continue
                        }
                        guard let hash = r.string(hashNode, "users.\(name)") else { continue }
                        guard hash.hasPrefix("$2"), hash.utf8.count == 60, let cost = Int(hash.dropFirst(4).prefix(2)) else {
                            r.fail(hashNode, "users.\(name)", "is not a bcrypt hash: make one with `devci user add \(name)`")
                            continue
                        }
                        guard cost <= 13 else {
                            r.fail(hashNode, "users.\(name)", "has a bcrypt cost of \(cost): at most 13, so that every refused sign-in takes the same time")
                            continue
                        }
                        if config.users[name] != nil { r.fail(keyNode, "users.\(name)", "user '\(name)' is defined twice") }
                        config.users[name] = hash
                    }
                case "reporter_url":
                    if let url = r.string(value, "reporter_url") {
                        if !(url.hasPrefix("http://") || url.hasPrefix("https://")) || url.contains(where: { $0.isWhitespace || $0 == "\"" || $0 == "<" || $0 == ">" }) {
                            r.fail(value, "reporter_url", "must be an http:// or https:// address")
                        }
                        config.reporterURL = String(url.reversed().drop { $0 == "/" }.reversed())
                    }
                case "queues":
                    for (name, keyNode, settingsNode) in r.mapping(value, "queues", known: nil) ?? [] {
                        guard Validate.isRunnerName(name) else {
                            r.fail(keyNode, "queues", "'\(name)' is not a valid queue name (letters, digits, '.', '_', '-'; at most 64)")
                            continue
                        }
                        let here = (file, keyNode.mark?.line ?? 0)
                        if let first = queueSeen[name] {
                            r.fail(keyNode, "queues.\(name)", "queue '\(name)' is defined twice: \(first.0):\(first.1) and \(here.0):\(here.1)")
                            continue
                        }
                        queueSeen[name] = here
                        var settings = QueueSettings()
                        for (k, _, v) in r.mapping(settingsNode, "queues.\(name)", known: queueKeys) ?? [] {
                            if k == "description" {
                                settings.description = r.string(v, "queues.\(name).description") ?? ""
                            } else {
                                settings.priority = r.int(v, "queues.\(name).priority", range: priorityRange)
                            }
                        }
                        config.queues[name] = settings
                    }
                default:
                    for (name, keyNode, taskNode) in r.mapping(value, "tasks", known: nil) ?? [] {
                        guard Validate.isRunnerName(name) else {
                            r.fail(keyNode, "tasks", "'\(name)' is not a valid task name (letters, digits, '.', '_', '-'; at most 64)")
                            continue
                        }
                        if let first = config.tasks[name] {
                            r.fail(keyNode, "tasks.\(name)", "task '\(name)' is defined twice: \(first.file):\(first.line) and \(file):\(keyNode.mark?.line ?? 0)")
                            continue
                        }
                        if var task = r.task(name, taskNode) {
                            task.file = file
                            task.line = keyNode.mark?.line ?? 0
                            config.tasks[name] = task
                            if taskNode.mapping?.keys.contains(where: { $0.scalar?.string == "priority" }) == true { ownPriority.insert(name) }
                        }
                    }
                }
            }
            errors += r.errors
        }
        // Cross-references, once every file is read.
        for task in config.tasks.values.sorted(by: { $0.name < $1.name }) {
            for upstream in task.upstreamTasks where config.tasks[upstream] == nil {
                let hint = PipelineParser.Reader.nearest(upstream, in: Array(config.tasks.keys)).map { " — did you mean '\($0)'?" } ?? ""
                errors.append(PipelineError(file: task.file, line: task.line, column: 1, field: "tasks.\(task.name).triggered_by",
                                            message: "names task '\(upstream)', which is not defined\(hint)"))
            }
            for queue in task.queues where !config.queues.isEmpty && config.queues[queue] == nil && queue != defaultQueue {
                errors.append(PipelineError(file: task.file, line: task.line, column: 1, field: "tasks.\(task.name).queues",
                                            message: "queue '\(queue)' has no settings under 'queues:' (define it, or use one that is)"))
            }
        }
        for secret in config.secrets {
            for task in secret.tasks where config.tasks[task] == nil {
                errors.append(PipelineError(file: secret.file, line: secret.line, column: 1, field: "secrets.\(secret.name).tasks",
                                            message: "names task '\(task)', which is not defined"))
            }
        }
        let secretBytes = LineCodec.percentEncode(SecretsField.json(config.secrets.reduce(into: [:]) { $0[$1.name] = $1.value })).utf8.count
        if secretBytes > SecretsField.maxEncodedBytes, let first = config.secrets.first {
            errors.append(PipelineError(file: first.file, line: first.line, column: 1, field: "secrets",
                                        message: "the secrets together are too large to send with a job (\(secretBytes) bytes encoded, at most \(SecretsField.maxEncodedBytes))"))
        }
        for rule in config.notifications where (!rule.email.isEmpty && config.smtp == nil) {
            errors.append(PipelineError(file: rule.file, line: rule.line, column: 1, field: "notifications",
                                        message: "sends email, but there is no 'smtp:' server configured"))
        }
        let graph = config.tasks.values.sorted { $0.name < $1.name }.map { (name: $0.name, edges: $0.upstreamTasks) }
        if let cycle = PipelineParser.Reader.cycle(in: graph), let first = config.tasks[cycle[0]] {
            errors.append(PipelineError(file: first.file, line: first.line, column: 1, field: "tasks.\(first.name).triggered_by",
                                        message: "upstream tasks form a cycle: \(cycle.reversed().joined(separator: " triggers "))"))
        }
        // A task on a queue with a default priority takes it when it names none.
        for (name, task) in config.tasks where !ownPriority.contains(name) {
            if let p = task.queues.lazy.compactMap({ config.queues[$0]?.priority }).first { config.tasks[name]?.priority = p }
        }
        guard errors.isEmpty else {
            throw PipelineErrors(errors: errors.sorted { ($0.file, $0.line, $0.column) < ($1.file, $1.line, $1.column) })
        }
        return config
    }
}

extension PipelineParser.Reader {
    /// One task of `tasks:`.
    mutating func task(_ name: String, _ node: Node) -> TaskDefinition? {
        let f = "tasks.\(name)"
        guard let pairs = mapping(node, f, known: ServerConfigParser.taskKeys) else { return nil }
        var task = TaskDefinition(name: name, work: .command(""))
        var work: TaskDefinition.Work?
        for (key, _, value) in pairs {
            switch key {
            case "command":
                guard let command = string(value, "\(f).command") else { continue }
                if work != nil { fail(value, f, "give either 'command' or 'pipeline', not both") }
                if !command.contains(where: { !$0.isWhitespace }) { fail(value, "\(f).command", "is empty") }
                work = .command(command)
            case "pipeline":
                if work != nil { fail(value, f, "give either 'command' or 'pipeline', not both") }
                let before = errors.count
                if let pipeline = self.pipeline(value) {
                    work = .pipeline(pipeline)
                } else if errors.count == before {
                    fail(value, "\(f).pipeline", "is not a valid pipeline")
                }
            case "enabled": task.enabled = bool(value, "\(f).enabled") ?? true
            case "description": task.description = string(value, "\(f).description") ?? ""
            case "queues":
                let queues = strings(value, "\(f).queues") ?? [defaultQueue]
                for q in queues where !Validate.isRunnerName(q) { fail(value, "\(f).queues", "'\(q)' is not a valid queue name") }
                if queues.isEmpty { fail(value, "\(f).queues", "list at least one queue") }
                task.queues = queues.isEmpty ? [defaultQueue] : queues
            case "tags":
                task.tags = strings(value, "\(f).tags") ?? []
                for t in task.tags where !Validate.isRunnerName(t) { fail(value, "\(f).tags", "'\(t)' is not a valid tag (letters, digits, '.', '_', '-')") }
            case "period":
                task.period = duration(value, "\(f).period", allowZero: false)
                if let p = task.period, p < .seconds(1) { fail(value, "\(f).period", "must be at least 1s") }
            case "debounce": task.debounce = duration(value, "\(f).debounce", allowZero: true)
            case "priority": task.priority = int(value, "\(f).priority", range: priorityRange) ?? 0
            case "timeout": task.timeout = duration(value, "\(f).timeout", allowZero: false)
            case "triggered_by": task.triggeredBy = triggers(value, "\(f).triggered_by")
            default:
                task.authorizedUsers = strings(value, "\(f).authorized_users") ?? []
                for u in task.authorizedUsers where !Validate.isRunnerName(u) { fail(value, "\(f).authorized_users", "'\(u)' is not a valid user name") }
            }
        }
        guard let work else {
            fail(node, f, "task '\(name)' has nothing to run: add 'command' or 'pipeline'")
            return nil
        }
        task.work = work
        // Each job's script travels in one line of the wire: refuse, now, what could never be sent.
        let scripts: [(String, JobScript)] = switch work {
        case .command: [(name, task.script)]
        case .pipeline(let p): p.jobs.map { def in
            var s = def.script(pipelineEnv: p.env)
            if s.timeoutSeconds == nil { s.timeoutSeconds = task.timeout?.seconds }
            return (def.name, s)
        }
        }
        for (job, script) in scripts where LineCodec.percentEncode(script.json()).utf8.count > WireLimits.maxScriptBytes {
            fail(node, f, "job '\(job)' is too large to send to a runner (over \(WireLimits.maxScriptBytes) bytes encoded)")
        }
        return task
    }

    /// One secret of `secrets:`: exactly one of `value`, `file` (read now) or `env` (the dispatcher's environment).
    mutating func secret(_ name: String, _ node: Node) -> SecretDefinition? {
        let f = "secrets.\(name)"
        guard let pairs = mapping(node, f, known: ServerConfigParser.secretKeys) else { return nil }
        var secret = SecretDefinition(name: name, value: "")
        var sources = 0
        for (key, _, value) in pairs {
            switch key {
            case "value":
                sources += 1
                secret.value = string(value, "\(f).value") ?? ""
            case "file":
                sources += 1
                guard let path = string(value, "\(f).file") else { continue }
                guard resolveSecrets else { secret.value = "unresolved"; continue }
                guard let data = FileManager.default.contents(atPath: path), data.count <= 16_384, let text = String(data: data, encoding: .utf8) else {
                    fail(value, "\(f).file", "cannot read '\(path)' (or it is over 16 KiB or not UTF-8)")
                    continue
                }
                secret.value = text.hasSuffix("\n") ? String(text.dropLast()) : text
            case "env":
                sources += 1
                guard let variable = string(value, "\(f).env") else { continue }
                guard resolveSecrets else { secret.value = "unresolved"; continue }
                guard let v = ProcessInfo.processInfo.environment[variable], !v.isEmpty else {
                    fail(value, "\(f).env", "the dispatcher's environment has no \(variable)")
                    continue
                }
                secret.value = v
            case "repositories":
                secret.repositories = strings(value, "\(f).repositories") ?? []
                for r in secret.repositories where !Validate.isRepository(r) { fail(value, "\(f).repositories", "'\(r.prefix(60))' is not a repository address") }
            default:
                secret.tasks = strings(value, "\(f).tasks") ?? []
            }
        }
        if sources != 1 { fail(node, f, "give exactly one of 'value', 'file' or 'env'") }
        if sources == 1, resolveSecrets, !errors.contains(where: { $0.field.hasPrefix(f) }) {
            let lines = secret.value.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if lines.isEmpty || lines.contains(where: { $0.count < SecretMask.shortestMasked }) {
                fail(node, f, "has a line shorter than \(SecretMask.shortestMasked) characters: it could not be masked in logs")
            }
        }
        if secret.repositories.isEmpty && secret.tasks.isEmpty { fail(node, f, "reaches no job: list the 'repositories' or 'tasks' allowed to see it") }
        return secret
    }

    /// One rule of `notifications:`.
    mutating func notification(_ node: Node, _ f: String) -> NotificationRule? {
        guard let pairs = mapping(node, f, known: ServerConfigParser.notificationKeys) else { return nil }
        var rule = NotificationRule()
        for (key, _, value) in pairs {
            switch key {
            case "when":
                let words = value.sequence != nil ? strings(value, "\(f).when") ?? [] : [string(value, "\(f).when") ?? ""]
                rule.when = []
                for w in words {
                    guard let when = NotificationRule.When(rawValue: w) else {
                        fail(value, "\(f).when", "'\(w.prefix(40))' is not one of failure, fixed, always")
                        continue
                    }
                    rule.when.insert(when)
                }
            case "repositories":
                rule.repositories = strings(value, "\(f).repositories") ?? []
                for r in rule.repositories where !Validate.isRepository(r) { fail(value, "\(f).repositories", "'\(r.prefix(60))' is not a repository address") }
            case "tasks": rule.tasks = strings(value, "\(f).tasks") ?? []
            case "email":
                rule.email = value.sequence != nil ? strings(value, "\(f).email") ?? [] : [string(value, "\(f).email") ?? ""]
                for a in rule.email where !Validate.isMailAddress(a) { fail(value, "\(f).email", "'\(a.prefix(80))' is not a mail address") }
            case "webhook":
                rule.webhook = string(value, "\(f).webhook")
                if let url = rule.webhook, !Validate.isWebURL(url) { fail(value, "\(f).webhook", "must be an http:// or https:// address") }
            default:
                guard let text = string(value, "\(f).format") else { continue }
                guard let format = NotificationRule.Format(rawValue: text) else {
                    fail(value, "\(f).format", "'\(text.prefix(40))' is not one of json, slack")
                    continue
                }
                rule.format = format
            }
        }
        if rule.email.isEmpty && rule.webhook == nil { fail(node, f, "notifies nobody: give 'email' or 'webhook'") }
        if rule.when.isEmpty { fail(node, f, "'when' lists no outcome") }
        return rule
    }

    /// `smtp:`, the mail server.
    mutating func smtp(_ node: Node) -> SMTPSettings? {
        guard let pairs = mapping(node, "smtp", known: ServerConfigParser.smtpKeys) else { return nil }
        var host: String?, from: String?, port = 25, starttls = true, caFile: String?
        for (key, _, value) in pairs {
            switch key {
            case "host":
                host = string(value, "smtp.host")
                if let h = host, h.isEmpty || h.contains(where: { $0.isWhitespace || $0 == "/" }) { fail(value, "smtp.host", "is not a host name or address") }
            case "port": port = int(value, "smtp.port", range: 1...65535) ?? 25
            case "starttls": starttls = bool(value, "smtp.starttls") ?? true
            case "from":
                from = string(value, "smtp.from")
                if let a = from, !Validate.isMailAddress(a) { fail(value, "smtp.from", "'\(a.prefix(80))' is not a mail address") }
            default: caFile = string(value, "smtp.ca_file")
            }
        }
        guard let host, let from else {
            fail(node, "smtp", "give 'host' and 'from'")
            return nil
        }
        return SMTPSettings(host: host, port: port, starttls: starttls, from: from, caFile: caFile)
    }

    /// `triggered_by:`: a list of `{repository: URL, branch: main}` (or `branches: [..]`) and `{task: name}`.
    mutating func triggers(_ node: Node, _ field: String) -> [TaskTrigger] {
        guard let seq = node.sequence else {
            fail(node, field, "expected a list like [{task: build}, {repository: …, branch: main}], found \(kind(node))")
            return []
        }
        var out: [TaskTrigger] = []
        for (i, item) in seq.enumerated() {
            let f = "\(field)[\(i)]"
            var repository: String?, branches: [String] = [], task: String?
            for (k, _, v) in mapping(item, f, known: ServerConfigParser.triggerKeys) ?? [] {
                switch k {
                case "repository":
                    repository = string(v, "\(f).repository")
                    if let r = repository, !Validate.isRepository(r) { fail(v, "\(f).repository", "'\(r.prefix(60))' is not a repository address") }
                case "branch": branches += string(v, "\(f).branch").map { [$0] } ?? []
                case "branches": branches += strings(v, "\(f).branches") ?? []
                default:
                    task = string(v, "\(f).task")
                }
            }
            for b in branches where !Validate.isBranchName(b) { fail(item, f, "'\(b.prefix(60))' is not a valid branch name") }
            switch (repository, task) {
            case (let r?, nil): out.append(.push(repository: r, branches: branches))
            case (nil, let t?):
                if !branches.isEmpty { fail(item, f, "'branch' goes with 'repository', not with 'task'") }
                out.append(.task(t))
            case (.some, .some): fail(item, f, "give either 'repository' or 'task', not both")
            case (nil, nil): fail(item, f, "give 'repository' (a push to it) or 'task' (a successful run of it)")
            }
        }
        return out
    }
}
