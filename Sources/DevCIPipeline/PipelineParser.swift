import DevCIWire
import Yams

/// Reads `.devci.yml` text into a `Pipeline`, finding every error it can in one pass, each with its file,
/// line, column and field. Unknown keys are errors, with the nearest known key suggested.
public enum PipelineParser {
    static let topKeys = ["stages", "jobs", "env", "default"]
    static let jobKeys = ["stage", "steps", "run", "needs", "allow_failure", "timeout", "retries", "retry_delay", "env", "workdir"]
    static let defaultKeys = ["timeout", "retries", "retry_delay"]
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
            var defaults = (timeout: Duration?.none, retries: 0, retryDelay: Duration.zero)
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
                        default: defaults.retryDelay = duration(v, "default.retry_delay", allowZero: true) ?? .zero
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

        mutating func job(_ name: String, _ node: Node, defaults: (timeout: Duration?, retries: Int, retryDelay: Duration))
            -> (JobDefinition, Node, [Node])?
        {
            let f = "jobs.\(name)"
            guard let pairs = mapping(node, f, known: PipelineParser.jobKeys) else { return nil }
            var job = JobDefinition(name: name, stage: PipelineParser.defaultStage, steps: [], needs: nil, allowFailure: false,
                                    timeout: defaults.timeout, retries: defaults.retries, retryDelay: defaults.retryDelay, env: [:], workdir: nil)
            var needNodes: [Node] = []
            var stageNode: Node = node
            var hasRun = false, hasSteps = false
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
