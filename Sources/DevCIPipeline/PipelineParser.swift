import DevCIWire
import Yams

/// Reads `.devci.yml` text into a `Pipeline`, finding every error it can in one pass, each with its file,
/// line, column and field. Unknown keys are errors, with the nearest known key suggested.
public enum PipelineParser {
    static let topKeys = ["stages", "jobs", "env", "default"]
    static let jobKeys = ["stage", "steps", "run", "needs", "allow_failure", "timeout", "retries", "retry_delay", "env", "workdir",
                          "image", "memory", "cpus", "network", "artifacts", "cache", "reports"]
    static let defaultKeys = ["timeout", "retries", "retry_delay", "image", "memory", "cpus", "network"]
    static let artifactKeys = ["paths", "when"]
    static let cacheKeys = ["key", "paths"]
    static let reportKeys = ["junit"]
    /// The engine's own floor for a memory limit.
    public static let minimumMemory: Int64 = 6 << 20
    static let stepKeys = ["name", "run"]
    /// The stage of a job that names none, and the stages of a file that lists none.
    public static let defaultStage = "test"
    public static let maxRetries = 10

    public static func parse(_ text: String, file: String = pipelineFileName) throws(PipelineErrors) -> Pipeline {
        var p = Reader(file: file)
        // Aliases let a few hundred bytes expand into billions of nodes inside the YAML library: refuse them first.
        if let anchor = anchorPosition(in: text) {
            throw PipelineErrors(errors: [PipelineError(file: file, line: anchor.line, column: anchor.column, field: "",
                                                        message: "anchors and aliases (&name, *name) are not supported: write the value out")])
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw PipelineErrors(errors: [p.yamlError(error)])
        } catch {
            throw PipelineErrors(errors: [PipelineError(file: file, line: 1, column: 1, field: "", message: "\(error)")])
        }
        let pipeline = p.pipeline(root)
        guard p.errors.isEmpty, let pipeline else {
            throw PipelineErrors(errors: p.errors.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
        }
        return pipeline
    }

    /// Where a YAML anchor or alias starts, if the text has one: an `&` or `*` that begins a node (at the start of a
    /// line or after `:`, `-`, `?`, `,`, `[` or `{`), outside quotes and comments. A plain scalar cannot start with
    /// either, so nothing valid is refused, except such a character at the start of a block scalar's line.
    static func anchorPosition(in text: String) -> (line: Int, column: Int)? {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let chars = Array(line)
            var quote: Character?
            var nodeStart = true
            for (i, c) in chars.enumerated() {
                if let q = quote {
                    if c == q { quote = nil }
                    continue
                }
                let previous: Character? = i > 0 ? chars[i - 1] : nil
                if c == " " || c == "\t" {
                    if let p = previous, ":-?".contains(p) { nodeStart = true }
                    continue
                }
                if c == "#" && (previous == nil || previous == " " || previous == "\t") { break }
                if nodeStart && (c == "&" || c == "*") && i + 1 < chars.count && chars[i + 1] != " " {
                    return (number + 1, i + 1)
                }
                if nodeStart && (c == "\"" || c == "'") {
                    quote = c
                    continue
                }
                nodeStart = "[{,".contains(c)
            }
        }
        return nil
    }

    struct Reader {
        let file: String
        var errors: [PipelineError] = []
        /// Whether secrets' `file` and `env` are read (the reporter, which never needs their values, says no).
        var resolveSecrets = true

        mutating func fail(_ node: Node?, _ field: String, _ message: String) {
            errors.append(PipelineError(file: file, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1, field: field, message: message))
        }

        func yamlError(_ error: YamlError) -> PipelineError {
            func at(_ mark: Mark, _ problem: String) -> PipelineError {
                PipelineError(file: file, line: mark.line, column: mark.column, field: "", message: "not valid YAML: \(problem)")
            }
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                return at(mark, problem)
            case .duplicatedKeysInMapping(let duplicates, let context):
                return PipelineError(file: file, line: context.mark.line, column: context.mark.column, field: "",
                                     message: "duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", "))")
            case .reader(let problem, let offset, _, _):
                // Never the offending text itself: in a configuration file it may be a secret's line.
                return PipelineError(file: file, line: 1, column: 1, field: "", message: "not valid YAML: \(problem)\(offset.map { " at byte \($0)" } ?? "")")
            default:
                return PipelineError(file: file, line: 1, column: 1, field: "", message: "not valid YAML: \(error)")
            }
        }

        // MARK: Shapes

        /// The pairs of a mapping with string keys, reporting unknown keys against `known`.
        mutating func mapping(_ node: Node, _ field: String, known: [String]?) -> [(key: String, keyNode: Node, value: Node)]? {
            guard let m = node.mapping else {
                fail(node, field, "expected a mapping (key: value lines), found \(kind(node))")
                return nil
            }
            var out: [(String, Node, Node)] = []
            for (k, v) in m {
                guard let key = k.scalar?.string else {
                    fail(k, field, "keys must be plain strings")
                    continue
                }
                if let known, !known.contains(key) {
                    let hint = Self.nearest(key, in: known).map { " — did you mean '\($0)'?" } ?? ""
                    fail(k, field, "unknown key '\(key)'\(field.isEmpty ? "" : " in \(Self.describe(field))")\(hint)")
                    continue
                }
                out.append((key, k, v))
            }
            return out
        }

        mutating func string(_ node: Node, _ field: String) -> String? {
            guard let s = node.scalar, node.tag.rawValue != Tag.Name.null.rawValue || !s.string.isEmpty else {
                fail(node, field, "expected a string, found \(kind(node))")
                return nil
            }
            return s.string
        }

        mutating func strings(_ node: Node, _ field: String) -> [String]? {
            if let s = node.scalar, node.tag.rawValue == Tag.Name.null.rawValue, s.string.isEmpty || s.string == "~" || s.string == "null" {
                return []
            }
            guard let seq = node.sequence else {
                fail(node, field, "expected a list like [a, b], found \(kind(node))")
                return nil
            }
            var out: [String] = []
            for item in seq {
                if let s = string(item, field) { out.append(s) }
            }
            return out
        }

        mutating func bool(_ node: Node, _ field: String) -> Bool? {
            switch node.scalar?.string {
            case "true", "True", "yes": return true
            case "false", "False", "no": return false
            default:
                fail(node, field, "expected true or false, found \(kind(node))")
                return nil
            }
        }

        mutating func int(_ node: Node, _ field: String, range: ClosedRange<Int>) -> Int? {
            guard let s = node.scalar?.string, let n = Int(s) else {
                fail(node, field, "expected a whole number, found \(kind(node))")
                return nil
            }
            guard range.contains(n) else {
                fail(node, field, "must be from \(range.lowerBound) to \(range.upperBound), not \(n)")
                return nil
            }
            return n
        }

        mutating func duration(_ node: Node, _ field: String, allowZero: Bool) -> Duration? {
            guard let s = node.scalar?.string, let d = TimeValue.parse(s), allowZero || d > .zero else {
                fail(node, field, "expected a time like 30s, 5m, 1h, 1d or 1w, found \(kind(node))")
                return nil
            }
            return d
        }

        mutating func env(_ node: Node, _ field: String) -> [String: String] {
            guard let pairs = mapping(node, field, known: nil) else { return [:] }
            var out: [String: String] = [:]
            for (key, keyNode, value) in pairs {
                guard Self.isEnvName(key) else {
                    fail(keyNode, field, "'\(key)' is not a variable name (letters, digits and _, not starting with a digit)")
                    continue
                }
                guard let s = value.scalar?.string, value.mapping == nil, value.sequence == nil else {
                    fail(value, "\(field).\(key)", "expected a string, found \(kind(value))")
                    continue
                }
                out[key] = s
            }
            return out
        }

        func kind(_ node: Node) -> String {
            switch node {
            case .mapping: return "a mapping"
            case .sequence: return "a list"
            case .alias: return "an alias"
            case .scalar(let s): return s.string.isEmpty ? "nothing" : "'\(s.string.prefix(40))'"
            }
        }

        // MARK: The file

        mutating func pipeline(_ root: Node?) -> Pipeline? {
            guard let root else {
                fail(nil, "", "the file is empty: it needs at least a 'jobs' mapping")
                return nil
            }
            guard let top = mapping(root, "", known: PipelineParser.topKeys) else { return nil }
            var stages: [String]?
            var env: [String: String] = [:]
            var defaults = Defaults()
            var jobsNode: Node?
            var stagesNode: Node?
            for (key, _, value) in top {
                switch key {
                case "stages":
                    stagesNode = value
                    stages = strings(value, "stages")
                    if let s = stages {
                        if s.isEmpty { fail(value, "stages", "list at least one stage") }
                        var seen: Set<String> = []
                        for name in s where !seen.insert(name).inserted { fail(value, "stages", "stage '\(name)' is listed twice") }
                        for name in s where !Self.isName(name) { fail(value, "stages", "'\(name)' is not a valid stage name") }
                    }
                case "env": env = self.env(value, "env")
                case "default":
                    for (k, _, v) in mapping(value, "default", known: PipelineParser.defaultKeys) ?? [] {
                        switch k {
                        case "timeout": defaults.timeout = duration(v, "default.timeout", allowZero: false)
                        case "retries": defaults.retries = int(v, "default.retries", range: 0...PipelineParser.maxRetries) ?? 0
                        case "retry_delay": defaults.retryDelay = duration(v, "default.retry_delay", allowZero: true) ?? .zero
                        default: containerKey(k, v, "default", into: &defaults.container)
                        }
                    }
                default: jobsNode = value
                }
            }
            guard let jobsNode else {
                fail(root, "jobs", "missing: a pipeline needs a 'jobs' mapping")
                return nil
            }
            var jobs: [(JobDefinition, Node, [Node])] = []
            for (name, keyNode, value) in mapping(jobsNode, "jobs", known: nil) ?? [] {
                guard Self.isName(name) else {
                    fail(keyNode, "jobs", "'\(name)' is not a valid job name (letters, digits, '.', '_', '-'; at most 64)")
                    continue
                }
                if let job = self.job(name, value, defaults: defaults) { jobs.append(job) }
            }
            if jobs.isEmpty && errors.isEmpty { fail(jobsNode, "jobs", "define at least one job") }
            let stageList = stages ?? jobs.reduce(into: [String]()) { if !$0.contains($1.0.stage) { $0.append($1.0.stage) } }
            checkReferences(jobs, stages: stageList, stagesNode: stagesNode)
            return Pipeline(stages: stageList, env: env, jobs: jobs.map(\.0))
        }

        /// What `default:` gives every job that does not say otherwise.
        struct Defaults {
            var timeout: Duration?
            var retries = 0
            var retryDelay = Duration.zero
            var container = ContainerKeys()
        }

        /// `image`, `memory`, `cpus` and `network` as read, before they are known to make a container.
        struct ContainerKeys {
            var image: String?
            var memory: Int64?
            var cpus: Int64?
            var network: String?
            var limitNode: Node?

            /// The job's own keys over the defaults.
            func over(_ d: ContainerKeys) -> ContainerKeys {
                ContainerKeys(image: image ?? d.image, memory: memory ?? d.memory, cpus: cpus ?? d.cpus, network: network ?? d.network,
                              limitNode: limitNode ?? d.limitNode)
            }
        }

        mutating func containerKey(_ key: String, _ value: Node, _ f: String, into c: inout ContainerKeys) {
            switch key {
            case "image":
                guard let image = string(value, "\(f).image") else { return }
                if Self.isImageName(image) { c.image = image } else {
                    fail(value, "\(f).image", "'\(image.prefix(80))' is not an image name (like debian:12 or registry.example/team/tool:1.2)")
                }
            case "memory":
                c.limitNode = c.limitNode ?? value
                guard let s = value.scalar?.string, let bytes = ByteSize.parse(s) else {
                    fail(value, "\(f).memory", "expected a size like 512m or 2g, found \(kind(value))")
                    return
                }
                guard bytes >= PipelineParser.minimumMemory else {
                    fail(value, "\(f).memory", "must be at least 6m (the engine's floor), not \(s)")
                    return
                }
                c.memory = bytes
            case "cpus":
                c.limitNode = c.limitNode ?? value
                guard let s = value.scalar?.string, let cpus = Double(s), cpus >= 0.01, cpus <= 1024 else {
                    fail(value, "\(f).cpus", "expected a number of CPUs like 1 or 1.5, found \(kind(value))")
                    return
                }
                c.cpus = Int64((cpus * 1e9).rounded())
            default:
                c.limitNode = c.limitNode ?? value
                guard let network = string(value, "\(f).network") else { return }
                guard Self.isName(network) else {
                    fail(value, "\(f).network", "expected none, host, bridge or a network's name, found '\(network.prefix(40))'")
                    return
                }
                c.network = network
            }
        }

        /// A Docker image reference: registry, path, tag and digest characters only, never a shell word.
        static func isImageName(_ s: String) -> Bool {
            guard let first = s.unicodeScalars.first, (1...255).contains(s.utf8.count), first.properties.isAlphabetic || ("0"..."9").contains(first)
            else { return false }
            return s.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-/:@".unicodeScalars.contains($0)) }
        }

        /// A path inside the workspace: relative, without `..`.
        mutating func workspacePath(_ node: Node, _ field: String) -> String? {
            guard let path = string(node, field) else { return nil }
            if path.isEmpty || path.hasPrefix("/") || path.split(separator: "/").contains("..") || path.utf8.contains(where: { $0 < 0x20 }) {
                fail(node, field, "must be a relative path inside the workspace, not '\(path.prefix(80))'")
                return nil
            }
            return path
        }

        mutating func workspacePaths(_ node: Node, _ field: String) -> [String] {
            guard let seq = node.sequence else {
                if let one = node.scalar, !one.string.isEmpty { return workspacePath(node, field).map { [$0] } ?? [] }
                fail(node, field, "expected a list of paths like [dist/, \"*.log\"], found \(kind(node))")
                return []
            }
            var out: [String] = []
            for item in seq { if let p = workspacePath(item, field) { out.append(p) } }
            if out.isEmpty && seq.isEmpty { fail(node, field, "list at least one path") }
            return out
        }

        mutating func artifacts(_ node: Node, _ f: String) -> ArtifactSpec? {
            if node.mapping == nil { return ArtifactSpec(paths: workspacePaths(node, f)) }
            var spec = ArtifactSpec(paths: [])
            var hasPaths = false
            for (k, _, v) in mapping(node, f, known: PipelineParser.artifactKeys) ?? [] {
                if k == "paths" {
                    hasPaths = true
                    spec.paths = workspacePaths(v, "\(f).paths")
                } else if let when = string(v, "\(f).when") {
                    guard let w = ArtifactSpec.When(rawValue: when) else {
                        fail(v, "\(f).when", "expected always, on_success or on_failure, found '\(when.prefix(40))'")
                        continue
                    }
                    spec.when = w
                }
            }
            if !hasPaths { fail(node, f, "artifacts need 'paths'") }
            return spec
        }

        /// `reports: {junit: [globs]}`: the job's JUnit XML test reports, read after it ends.
        mutating func reports(_ node: Node, _ f: String) -> ReportSpec? {
            guard let pairs = mapping(node, f, known: PipelineParser.reportKeys) else { return nil }
            var spec = ReportSpec(junit: [])
            for (_, _, v) in pairs { spec.junit = workspacePaths(v, "\(f).junit") }
            if node.mapping?.isEmpty == true { fail(node, f, "name the report files: reports: {junit: [\"**/junit*.xml\"]}") }
            return spec
        }

        mutating func cache(_ node: Node, _ f: String) -> CacheSpec? {
            var key: String?, paths: [String]?
            var given: Set<String> = []
            for (k, _, v) in mapping(node, f, known: PipelineParser.cacheKeys) ?? [] {
                given.insert(k)
                if k == "paths" {
                    paths = workspacePaths(v, "\(f).paths")
                } else if let s = string(v, "\(f).key") {
                    switch CacheKey.parse(s) {
                    case .success: key = s
                    case .failure(let why): fail(v, "\(f).key", why.description)
                    }
                }
            }
            guard let key, let paths else {
                // A key or paths given but wrong is already said.
                if given.count < 2 { fail(node, f, "a cache needs 'key' and 'paths'") }
                return nil
            }
            return CacheSpec(key: key, paths: paths)
        }

        mutating func job(_ name: String, _ node: Node, defaults: Defaults) -> (JobDefinition, Node, [Node])? {
            let f = "jobs.\(name)"
            guard let pairs = mapping(node, f, known: PipelineParser.jobKeys) else { return nil }
            var job = JobDefinition(name: name, stage: PipelineParser.defaultStage, steps: [], needs: nil, allowFailure: false,
                                    timeout: defaults.timeout, retries: defaults.retries, retryDelay: defaults.retryDelay, env: [:], workdir: nil)
            var needNodes: [Node] = []
            var stageNode: Node = node
            var hasRun = false, hasSteps = false
            var container = ContainerKeys()
            for (key, keyNode, value) in pairs {
                switch key {
                case "stage":
                    stageNode = value
                    job.stage = string(value, "\(f).stage") ?? job.stage
                case "run":
                    hasRun = true
                    if let run = string(value, "\(f).run") { job.steps = [JobScript.Step(name: name, run: run)] }
                case "steps":
                    hasSteps = true
                    guard let seq = value.sequence else {
                        fail(value, "\(f).steps", "expected a list of steps (- name: …, run: …), found \(kind(value))")
                        continue
                    }
                    if seq.isEmpty { fail(value, "\(f).steps", "list at least one step") }
                    for (i, item) in seq.enumerated() {
                        let sf = "\(f).steps[\(i)]"
                        if let run = item.scalar?.string {  // `- make` is a step named after its command
                            job.steps.append(JobScript.Step(name: String(run.prefix(40)), run: run))
                            continue
                        }
                        var stepName: String?, run: String?
                        for (k, _, v) in mapping(item, sf, known: PipelineParser.stepKeys) ?? [] {
                            if k == "name" { stepName = string(v, "\(sf).name") } else { run = string(v, "\(sf).run") }
                        }
                        guard let run else {
                            fail(item, sf, "a step needs 'run'")
                            continue
                        }
                        job.steps.append(JobScript.Step(name: stepName ?? "step \(i + 1)", run: run))
                    }
                case "needs":
                    job.needs = strings(value, "\(f).needs")
                    needNodes = value.sequence.map(Array.init) ?? [value]
                case "allow_failure": job.allowFailure = bool(value, "\(f).allow_failure") ?? false
                case "timeout": job.timeout = duration(value, "\(f).timeout", allowZero: false)
                case "retries": job.retries = int(value, "\(f).retries", range: 0...PipelineParser.maxRetries) ?? 0
                case "retry_delay": job.retryDelay = duration(value, "\(f).retry_delay", allowZero: true) ?? .zero
                case "env": job.env = env(value, "\(f).env")
                case "image", "memory", "cpus", "network": containerKey(key, value, f, into: &container)
                case "artifacts": job.artifacts = artifacts(value, "\(f).artifacts")
                case "cache": job.cache = cache(value, "\(f).cache")
                case "reports": job.reports = reports(value, "\(f).reports")
                default:
                    guard let dir = string(value, "\(f).workdir") else { continue }
                    if dir.hasPrefix("/") || dir.split(separator: "/").contains("..") || dir.isEmpty {
                        fail(value, "\(f).workdir", "must be a relative path inside the repository, not '\(dir)'")
                    } else {
                        job.workdir = dir
                    }
                    _ = keyNode
                }
            }
            let c = container.over(defaults.container)
            if let image = c.image {
                job.container = ContainerSpec(image: image, memoryBytes: c.memory, nanoCPUs: c.cpus, network: c.network)
            } else if let at = container.limitNode {
                fail(at, f, "memory, cpus and network apply to a job in a container: add 'image'")
            }
            if hasRun && hasSteps { fail(node, f, "give either 'run' or 'steps', not both") }
            if !hasRun && !hasSteps { fail(node, f, "job '\(name)' has nothing to run: add 'run' or 'steps'") }
            return (job, stageNode, needNodes)
        }

        /// Stages exist, needs name jobs of the same or earlier stages, and needs have no cycle.
        mutating func checkReferences(_ jobs: [(JobDefinition, Node, [Node])], stages: [String], stagesNode: Node?) {
            let byName = Dictionary(jobs.map { ($0.0.name, $0.0) }, uniquingKeysWith: { a, _ in a })
            for (job, stageNode, needNodes) in jobs {
                guard let stageIndex = stages.firstIndex(of: job.stage) else {
                    fail(stageNode, "jobs.\(job.name).stage", "stage '\(job.stage)' is not in stages [\(stages.joined(separator: ", "))]")
                    continue
                }
                for (i, need) in (job.needs ?? []).enumerated() {
                    let at = i < needNodes.count ? needNodes[i] : stageNode
                    guard let other = byName[need] else {
                        let hint = Self.nearest(need, in: Array(byName.keys)).map { " — did you mean '\($0)'?" } ?? ""
                        fail(at, "jobs.\(job.name).needs", "needs '\(need)', which is not a job\(hint)")
                        continue
                    }
                    if need == job.name { fail(at, "jobs.\(job.name).needs", "a job cannot need itself") }
                    if let otherIndex = stages.firstIndex(of: other.stage), otherIndex > stageIndex {
                        fail(at, "jobs.\(job.name).needs", "needs '\(need)', which runs in the later stage '\(other.stage)'")
                    }
                }
            }
            if let cycle = Self.cycle(in: jobs.map(\.0)), let first = jobs.first(where: { $0.0.name == cycle[0] }) {
                fail(first.2.first ?? first.1, "jobs.\(cycle[0]).needs", "needs form a cycle: \(cycle.joined(separator: " → "))")
            }
        }

        // MARK: Helpers

        /// A cycle in `needs`, spelled out from its first job back to it, if there is one.
        static func cycle(in jobs: [JobDefinition]) -> [String]? {
            cycle(in: jobs.map { job in (job.name, (job.needs ?? []).filter { $0 != job.name }) })
        }

        /// A cycle in a graph of names (each with the names it points to), spelled out from its first name back to it.
        static func cycle(in graph: [(name: String, edges: [String])]) -> [String]? {
            var needs: [String: [String]] = [:]
            for (name, edges) in graph where needs[name] == nil { needs[name] = edges }
            let order = graph.map(\.name)
            var state: [String: Int] = [:]  // 1 visiting, 2 done
            var path: [String] = []
            func visit(_ n: String) -> [String]? {
                state[n] = 1
                path.append(n)
                for m in needs[n] ?? [] where needs[m] != nil {
                    if state[m] == 1 { return Array(path[path.firstIndex(of: m)!...]) + [m] }
                    if state[m] == nil, let c = visit(m) { return c }
                }
                path.removeLast()
                state[n] = 2
                return nil
            }
            for name in order where state[name] == nil {
                if let c = visit(name) { return c }
            }
            return nil
        }

        static func isName(_ s: String) -> Bool { Validate.isRunnerName(s) }

        static func isEnvName(_ s: String) -> Bool {
            guard let first = s.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
            return s.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
        }

        static func describe(_ field: String) -> String {
            let parts = field.split(separator: ".")
            if parts.count == 2, parts[0] == "jobs" { return "job '\(parts[1])'" }
            return "'\(field)'"
        }

        /// The known word within two edits of `word`, if one is.
        static func nearest(_ word: String, in known: [String]) -> String? {
            known.map { ($0, editDistance(word, $0)) }.filter { $0.1 <= 2 }.min { $0.1 < $1.1 }?.0
        }

        static func editDistance(_ a: String, _ b: String) -> Int {
            let a = Array(a), b = Array(b)
            var row = Array(0...b.count)
            for i in 1...max(1, a.count) where !a.isEmpty {
                var prev = row[0]
                row[0] = i
                for j in 1...max(1, b.count) where !b.isEmpty {
                    let cur = row[j]
                    row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                    prev = cur
                }
            }
            return a.isEmpty ? b.count : row[b.count]
        }
    }
}
