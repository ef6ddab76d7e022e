/// Why a line could not be decoded. `code` is what goes on the wire in the `error` reply.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code): \(message)" }

    public static let tooLong = WireError(.tooLong, "line exceeds \(WireLimits.maxLineBytes) bytes")
    public static let badUTF8 = WireError(.badUTF8, "line is not valid UTF-8")
}

/// The one codec of the wire: `verb key=value key=value`, values percent-encoded where they hold
/// `%`, space or control characters. Encodes and decodes every message in both directions.
public enum LineCodec {
    // MARK: Encoding

    public static func encode(_ message: ClientMessage) -> String {
        switch message {
        case .auth(let token): return line("auth", ("token", token))
        case .register(let name, let slots, let queues):
            let base = line("register", ("name", name), ("slots", String(slots)))
            return queues == [defaultQueue] ? base : base + " queues=" + percentEncode(queues.joined(separator: ","))
        case .heartbeat: return "heartbeat"
        case .claim(let job, let attempt): return line("claim", ("job", String(job)), ("attempt", String(attempt)))
        case .started(let job, let attempt): return line("started", ("job", String(job)), ("attempt", String(attempt)))
        case .log(let job, let attempt, let stream, let ts, let text):
            return line("log", ("job", String(job)), ("attempt", String(attempt)), ("stream", stream.rawValue),
                        ("ts", String(ts)), ("text", text))
        case .result(let job, let attempt, let outcome, let exitCode, let reason, let giveBack):
            let base = line("result", ("job", String(job)), ("attempt", String(attempt)), ("status", outcome.rawValue),
                            ("exit", String(exitCode)), ("reason", reason))
            return giveBack.map { base + " give_back=" + $0.rawValue } ?? base
        case .dispatch(let repo, let commit, let branch, let pipeline, let title, let author, let mark):
            var base = line("dispatch", ("repo", repo), ("commit", commit), ("branch", branch))
            switch mark {
            case .always: break
            case .never: base += " mark=0"
            case .ifStill(let expected): base += " mark=" + expected
            }
            return base + commitFields(pipeline: pipeline, title: title, author: author)
        case .untested(let u):
            return line("untested", ("repo", u.repo), ("commit", u.commit), ("branch", u.branch), ("before", u.before)) + (u.cut ? " cut=1" : "")
                + commitFields(pipeline: u.pipeline, title: u.title, author: u.author)
        case .tests(let job, let attempt, let results):
            return line("tests", ("job", String(job)), ("attempt", String(attempt)), ("results", TestResultBatch.json(results)))
        case .status: return "status"
        case .lastDispatched(let repo, let branch): return line("last", ("repo", repo), ("branch", branch))
        case .addJob(let j):
            var base = line("add_job", ("command", j.command), ("queue", j.queue), ("priority", String(j.priority)))
            if let t = j.timeoutSeconds { base += " timeout=" + TimeValue.format(seconds: t) }
            return base
        case .cancel(let target, let by):
            let base = switch target {
            case .build(let id): line("cancel", ("build", String(id)))
            case .job(let id): line("cancel", ("job", String(id)))
            }
            return by.isEmpty ? base : base + line("", ("by", by))
        case .rerun(let build, let failedOnly, let by):
            return line("rerun", ("build", String(build)), ("failed_only", failedOnly ? "1" : "0"), ("by", by))
        case .reload: return "reload"
        case .awaitPush(let repos, let timeout):
            return line("await_push", ("repos", repos.joined(separator: "\n")), ("timeout_ms", String(timeout)))
        case .artifactPut(let job, let attempt, let path, let size, let offset, let data):
            return line("artifact_put", ("job", String(job)), ("attempt", String(attempt)), ("path", path), ("size", String(size)),
                        ("offset", String(offset)), ("data", data))
        case .artifactList(let build, let job, let from):
            return line("artifact_list", ("build", String(build))) + (job.map { " job=" + percentEncode($0) } ?? "") + (from > 0 ? " from=\(from)" : "")
        case .artifactGet(let build, let job, let path, let offset):
            return line("artifact_get", ("build", String(build)), ("job", job), ("path", path), ("offset", String(offset)))
        }
    }

    /// A commit's title, author and pipeline, as `dispatch` and `untested` carry them.
    private static func commitFields(pipeline: PipelineText, title: String, author: String) -> String {
        var out = ""
        if !title.isEmpty { out += " title=" + percentEncode(String(title.prefix(200))) }
        if !author.isEmpty { out += " author=" + percentEncode(String(author.prefix(200))) }
        switch pipeline {
        case .none: return out
        case .text(let text): return out + " pipeline=" + percentEncode(text)
        case .unreadable(let why): return out + " pipeline_error=" + percentEncode(why)
        }
    }

    public static func encode(_ message: ServerMessage) -> String {
        switch message {
        case .hello(let version, let authRequired):
            return line("hello", ("proto", String(version)), ("server", "devci"), ("auth", authRequired ? "required" : "none"))
        case .ok(let what): return line("ok", ("for", what))
        case .error(let code, let message): return line("error", ("code", code.rawValue), ("message", message))
        case .registered(let name, let hb, let lease):
            return line("registered", ("name", name), ("heartbeat_ms", String(hb)), ("lease_ms", String(lease)))
        case .assign(let a):
            var base = line("assign", ("job", String(a.job)), ("attempt", String(a.attempt)), ("build", String(a.build)), ("name", a.name))
            if a.hasCheckout { base += line("", ("repo", a.repo), ("commit", a.commit), ("branch", a.branch)) }
            if let script = a.script { base += " script=" + percentEncode(script) }
            if !a.secrets.isEmpty { base += " secrets=" + percentEncode(SecretsField.json(a.secrets)) }
            return base
        case .cancel(let job, let attempt, let reason):
            return line("cancel", ("job", String(job)), ("attempt", String(attempt)), ("reason", reason))
        case .accepted(let job, let attempt): return line("accepted", ("job", String(job)), ("attempt", String(attempt)))
        case .discarded(let job, let attempt, let reason):
            return line("discarded", ("job", String(job)), ("attempt", String(attempt)), ("reason", reason))
        case .queued(let build, let jobs, let created):
            return line("queued", ("build", String(build)), ("jobs", jobs.map(String.init).joined(separator: ",")),
                        ("created", created ? "true" : "false"))
        case .status(let queued, let running, let runners, let waiting):
            let base = line("status", ("queued", String(queued)), ("running", String(running)), ("runners", String(runners)))
            return waiting.isEmpty ? base : base + " waiting=" + percentEncode(waiting.joined(separator: ","))
        case .last(let repo, let branch, let commit):
            return line("last", ("repo", repo), ("branch", branch), ("commit", commit))
        case .pushed(let repos): return line("pushed", ("repos", repos.joined(separator: "\n")))
        case .artifactList(let entries, let next):
            return line("artifact_list", ("entries", ArtifactListing.json(entries)), ("next", String(next)))
        case .artifactData(let size, let offset, let data):
            return line("artifact_data", ("size", String(size)), ("offset", String(offset)), ("data", data))
        }
    }

    // MARK: Decoding

    public static func decodeClient(_ text: String) throws(WireError) -> ClientMessage {
        var f = try Fields(text)
        let message: ClientMessage
        switch f.verb {
        case "auth": message = .auth(token: try f.string("token"))
        case "register":
            let name = try f.string("name")
            guard Validate.isRunnerName(name) else { throw WireError(.badField, "name must be 1-64 of [A-Za-z0-9._-]") }
            let slots = try f.int("slots", default: 1)
            guard (1...256).contains(slots) else { throw WireError(.badField, "slots must be 1-256") }
            let queues = try f.string("queues", default: defaultQueue).split(separator: ",").map(String.init)
            guard !queues.isEmpty, queues.count <= 32, queues.allSatisfy(Validate.isRunnerName) else {
                throw WireError(.badField, "queues must be 1-32 comma-separated names of [A-Za-z0-9._-]")
            }
            message = .register(name: name, slots: slots, queues: queues)
        case "heartbeat": message = .heartbeat
        case "claim": message = .claim(job: try f.id("job"), attempt: try f.attempt())
        case "started": message = .started(job: try f.id("job"), attempt: try f.attempt())
        case "log":
            let job = try f.id("job"), attempt = try f.attempt()
            guard let stream = LogStream(rawValue: try f.string("stream")) else { throw WireError(.badField, "stream must be out, err or system") }
            message = .log(job: job, attempt: attempt, stream: stream, timestampMillis: try f.int64("ts"), text: try f.string("text", default: ""))
        case "result":
            let job = try f.id("job"), attempt = try f.attempt()
            guard let outcome = Outcome(rawValue: try f.string("status")) else {
                throw WireError(.badField, "status must be one of \(Outcome.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            var giveBack: GiveBack?
            if f.has("give_back") {
                let text = try f.string("give_back")
                guard let why = GiveBack(rawValue: text), outcome == .cancelled else {
                    throw WireError(.badField, "give_back is \(GiveBack.allCases.map(\.rawValue).joined(separator: " or ")), with status=cancelled only")
                }
                giveBack = why
            }
            message = .result(job: job, attempt: attempt, outcome: outcome, exitCode: try f.int("exit", default: -1),
                              reason: try f.string("reason", default: ""), giveBack: giveBack)
        case "dispatch":
            let repo = try f.string("repo"), commit = try f.string("commit"), branch = try f.string("branch", default: "main")
            guard Validate.isRepository(repo) else { throw WireError(.badField, "repo must be a path or URL, not an option") }
            guard Validate.isCommitID(commit) else { throw WireError(.badField, "commit must be a full lowercase hex object id") }
            guard Validate.isBranchName(branch) else { throw WireError(.badField, "branch is not a valid branch name") }
            let (pipeline, title, author) = try commitFields(&f)
            let markText = try f.string("mark", default: "1")
            let mark: MarkUpdate
            switch markText {
            case "1": mark = .always
            case "0": mark = .never
            case let expected where Validate.isCommitID(expected): mark = .ifStill(expected)
            default: throw WireError(.badField, "mark must be 0, 1 or a full commit id")
            }
            message = .dispatch(repo: repo, commit: commit, branch: branch, pipeline: pipeline, title: title, author: author, mark: mark)
        case "untested":
            let repo = try f.string("repo"), commit = try f.string("commit"), branch = try f.string("branch"), before = try f.string("before")
            guard Validate.isRepository(repo) else { throw WireError(.badField, "repo must be a path or URL, not an option") }
            guard Validate.isCommitID(commit), Validate.isCommitID(before) else { throw WireError(.badField, "commit and before must be full lowercase hex object ids") }
            guard Validate.isBranchName(branch) else { throw WireError(.badField, "branch is not a valid branch name") }
            let cut = try f.string("cut", default: "0")
            guard cut == "0" || cut == "1" else { throw WireError(.badField, "cut must be 0 or 1") }
            let (pipeline, title, author) = try commitFields(&f)
            message = .untested(UntestedCommit(repo: repo, branch: branch, commit: commit, before: before, pipeline: pipeline, title: title, author: author,
                                               cut: cut == "1"))
        case "tests":
            let job = try f.id("job"), attempt = try f.attempt()
            guard let results = TestResultBatch.results(try f.string("results")) else {
                throw WireError(.badField, "results must be a JSON list of tests (suite, name, status, duration, message)")
            }
            message = .tests(job: job, attempt: attempt, results: results.map(\.bounded))
        case "status": message = .status
        case "add_job":
            let command = try f.string("command")
            guard command.contains(where: { !$0.isWhitespace }) else { throw WireError(.badField, "command is empty") }
            let queue = try f.string("queue", default: defaultQueue)
            guard Validate.isRunnerName(queue) else { throw WireError(.badField, "queue must be 1-64 of [A-Za-z0-9._-]") }
            let priority = try f.int("priority", default: 0)
            guard priorityRange.contains(priority) else {
                throw WireError(.badField, "priority must be from \(priorityRange.lowerBound) to \(priorityRange.upperBound)")
            }
            var timeout: Double?
            if f.has("timeout") {
                guard let t = TimeValue.parse(try f.string("timeout")), t > .zero else { throw WireError(.badField, "timeout must be a time like 30s or 5m") }
                timeout = t.seconds
            }
            message = .addJob(AdHocJob(command: command, queue: queue, priority: priority, timeoutSeconds: timeout))
        case "cancel":
            let by = try f.string("by", default: "")
            guard by.isEmpty || Validate.isRunnerName(by) else { throw WireError(.badField, "by must be a user name") }
            message = f.has("build") ? .cancel(.build(try f.id("build")), by: by) : .cancel(.job(try f.id("job")), by: by)
        case "rerun":
            let by = try f.string("by")
            guard Validate.isRunnerName(by) else { throw WireError(.badField, "by must be a user name") }
            message = .rerun(build: try f.id("build"), failedOnly: try f.string("failed_only", default: "0") == "1", by: by)
        case "reload": message = .reload
        case "await_push":
            let repos = try f.string("repos").split(separator: "\n").map(String.init)
            guard !repos.isEmpty, repos.count <= 16, repos.allSatisfy(Validate.isRepository) else {
                throw WireError(.badField, "repos must be 1-16 repository addresses, one per line")
            }
            let timeout = try f.int("timeout_ms")
            guard (0...60_000).contains(timeout) else { throw WireError(.badField, "timeout_ms must be from 0 to 60000") }
            message = .awaitPush(repos: repos, timeoutMillis: timeout)
        case "last":
            let repo = try f.string("repo"), branch = try f.string("branch")
            guard Validate.isRepository(repo), Validate.isBranchName(branch) else { throw WireError(.badField, "bad repo or branch") }
            message = .lastDispatched(repo: repo, branch: branch)
        case "artifact_put":
            let job = try f.id("job"), attempt = try f.attempt(), path = try f.string("path")
            let size = try f.int64("size"), offset = try f.int64("offset"), data = try f.string("data", default: "")
            guard ArtifactPath.isSafe(path) else { throw WireError(.badField, "path must be a relative path without '..'") }
            guard size >= 0, offset >= 0, offset <= size else { throw WireError(.badField, "size and offset must satisfy 0 <= offset <= size") }
            guard data.utf8.count <= (ArtifactPath.chunkBytes / 3 + 1) * 4 else { throw WireError(.badField, "data is over \(ArtifactPath.chunkBytes) bytes") }
            message = .artifactPut(job: job, attempt: attempt, path: path, size: size, offset: offset, data: data)
        case "artifact_list":
            let build = try f.id("build")
            let job = f.has("job") ? try f.string("job") : nil
            if let job, !Validate.isRunnerName(job) { throw WireError(.badField, "job must be a job name") }
            let from = try f.int("from", default: 0)
            guard from >= 0 else { throw WireError(.badField, "from must not be negative") }
            message = .artifactList(build: build, job: job, from: from)
        case "artifact_get":
            let build = try f.id("build"), job = try f.string("job"), path = try f.string("path"), offset = try f.int64("offset")
            guard Validate.isRunnerName(job), ArtifactPath.isSafe(path), offset >= 0 else {
                throw WireError(.badField, "job must be a job name, path a relative path without '..', offset not negative")
            }
            message = .artifactGet(build: build, job: job, path: path, offset: offset)
        default:
            throw WireError(.unknownVerb, "unknown message '\(f.verb.prefix(32))'")
        }
        try f.finish()
        return message
    }

    private static func commitFields(_ f: inout Fields) throws(WireError) -> (PipelineText, String, String) {
        let pipeline: PipelineText
        if f.has("pipeline") {
            pipeline = .text(try f.string("pipeline"))
        } else if f.has("pipeline_error") {
            pipeline = .unreadable(try f.string("pipeline_error"))
        } else {
            pipeline = .none
        }
        return (pipeline, String(try f.string("title", default: "").prefix(200)), String(try f.string("author", default: "").prefix(200)))
    }

    public static func decodeServer(_ text: String) throws(WireError) -> ServerMessage {
        var f = try Fields(text)
        let message: ServerMessage
        switch f.verb {
        case "hello":
            message = .hello(protocolVersion: try f.int("proto"), authRequired: try f.string("auth") == "required")
            _ = try? f.string("server")
        case "ok": message = .ok(what: try f.string("for", default: ""))
        case "error": message = .error(code: ErrorCode(rawValue: try f.string("code")), message: try f.string("message", default: ""))
        case "registered":
            message = .registered(name: try f.string("name"), heartbeatMillis: try f.int("heartbeat_ms"), leaseMillis: try f.int("lease_ms"))
        case "assign":
            let checkout = f.has("repo")
            var a = JobAssignment(job: try f.id("job"), attempt: try f.attempt(), build: try f.id("build"),
                                  name: try f.string("name", default: "test"), repo: checkout ? try f.string("repo") : "",
                                  commit: checkout ? try f.string("commit") : "", branch: checkout ? try f.string("branch") : "",
                                  script: f.has("script") ? try f.string("script") : nil)
            guard !checkout || (Validate.isCommitID(a.commit) && Validate.isRepository(a.repo) && Validate.isBranchName(a.branch)) else {
                throw WireError(.badField, "assignment has an invalid commit, repository or branch")
            }
            if f.has("secrets") {
                guard let secrets = SecretsField.decode(try f.string("secrets")) else { throw WireError(.badField, "secrets is not a JSON object of strings") }
                a.secrets = secrets
            }
            message = .assign(a)
        case "cancel": message = .cancel(job: try f.id("job"), attempt: try f.attempt(), reason: try f.string("reason", default: ""))
        case "accepted": message = .accepted(job: try f.id("job"), attempt: try f.attempt())
        case "discarded": message = .discarded(job: try f.id("job"), attempt: try f.attempt(), reason: try f.string("reason", default: ""))
        case "queued":
            let build = try f.id("build")
            var jobs: [Int64] = []
            for part in try f.string("jobs", default: "").split(separator: ",") {
                guard let id = Int64(part), id > 0 else { throw WireError(.badField, "jobs must be a comma-separated list of ids") }
                jobs.append(id)
            }
            message = .queued(build: build, jobs: jobs, created: try f.string("created") == "true")
        case "status":
            message = .status(queued: try f.int("queued"), running: try f.int("running"), runners: try f.int("runners"),
                              waiting: try f.string("waiting", default: "").split(separator: ",").map(String.init))
        case "last":
            message = .last(repo: try f.string("repo"), branch: try f.string("branch"), commit: try f.string("commit", default: ""))
        case "pushed": message = .pushed(repos: try f.string("repos", default: "").split(separator: "\n").map(String.init))
        case "artifact_list":
            guard let entries = ArtifactListing.entries(try f.string("entries")) else { throw WireError(.badField, "entries must be a JSON list") }
            message = .artifactList(entries: entries, next: try f.int("next", default: 0))
        case "artifact_data":
            message = .artifactData(size: try f.int64("size"), offset: try f.int64("offset"), data: try f.string("data", default: ""))
        default:
            throw WireError(.unknownVerb, "unknown message '\(f.verb.prefix(32))'")
        }
        try f.finish()
        return message
    }

    // MARK: Fields

    static func line(_ verb: String, _ fields: (String, String)...) -> String {
        var out = verb
        for (key, value) in fields {
            out += " "
            out += key
            out += "="
            out += percentEncode(value)
        }
        return out
    }

    /// Escapes `%`, space and control characters; everything else (including non-ASCII UTF-8) stays readable.
    public static func percentEncode(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 <= 0x20 || $0 == 0x25 || $0 == 0x7f }) else { return s }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count + 16)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in s.utf8 {
            if b <= 0x20 || b == 0x25 || b == 0x7f {
                bytes.append(0x25)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0xf)])
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func percentDecode(_ s: Substring) throws(WireError) -> String {
        guard s.utf8.contains(0x25) else { return String(s) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            if b == 0x25 {
                guard let h = it.next().flatMap(hexValue), let l = it.next().flatMap(hexValue) else {
                    throw WireError(.badEscape, "malformed %-escape")
                }
                bytes.append(h << 4 | l)
            } else {
                bytes.append(b)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else { throw WireError.badUTF8 }
        return decoded
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: return b - 48
        case 65...70: return b - 55
        case 97...102: return b - 87
        default: return nil
        }
    }

    /// A line split into its verb and `key=value` fields; each field must be consumed exactly once.
    struct Fields {
        let verb: String
        private var values: [Substring: Substring] = [:]

        init(_ text: String) throws(WireError) {
            var parts = text.split(separator: " ", omittingEmptySubsequences: true)
            guard !parts.isEmpty else { throw WireError(.empty, "empty line") }
            verb = String(parts.removeFirst())
            guard verb.utf8.count <= 32 else { throw WireError(.unknownVerb, "unknown message '\(verb.prefix(32))'") }
            for part in parts {
                guard let eq = part.firstIndex(of: "="), eq != part.startIndex else {
                    throw WireError(.malformed, "expected key=value, got '\(part.prefix(40))'")
                }
                let key = part[..<eq]
                guard values.updateValue(part[part.index(after: eq)...], forKey: key) == nil else {
                    throw WireError(.malformed, "field '\(key.prefix(32))' given twice")
                }
            }
        }

        func has(_ key: Substring) -> Bool { values[key] != nil }

        mutating func string(_ key: Substring) throws(WireError) -> String {
            guard let v = values.removeValue(forKey: key) else { throw WireError(.missingField, "missing field '\(key)'") }
            return try LineCodec.percentDecode(v)
        }

        mutating func string(_ key: Substring, default d: String) throws(WireError) -> String {
            values[key] == nil ? d : try string(key)
        }

        mutating func int64(_ key: Substring) throws(WireError) -> Int64 {
            let s = try string(key)
            guard let v = Int64(s) else { throw WireError(.badField, "field '\(key)' must be an integer") }
            return v
        }

        mutating func int(_ key: Substring) throws(WireError) -> Int {
            let v = try int64(key)
            guard let i = Int(exactly: v), i > -(1 << 31), i < 1 << 31 else { throw WireError(.badField, "field '\(key)' is out of range") }
            return i
        }

        mutating func int(_ key: Substring, default d: Int) throws(WireError) -> Int {
            values[key] == nil ? d : try int(key)
        }

        mutating func id(_ key: Substring) throws(WireError) -> Int64 {
            let v = try int64(key)
            guard v > 0 else { throw WireError(.badField, "field '\(key)' must be a positive id") }
            return v
        }

        mutating func attempt() throws(WireError) -> Int {
            let v = try int("attempt")
            guard v > 0 else { throw WireError(.badField, "field 'attempt' must be positive") }
            return v
        }

        /// Unknown fields are an error, so a typo never passes silently.
        func finish() throws(WireError) {
            if let extra = values.keys.sorted().first {
                throw WireError(.unknownField, "unknown field '\(extra.prefix(32))' for '\(verb)'")
            }
        }
    }
}
