import ArgumentParser
import DevCIGit
import DevCIPipeline
import DevCIReporter
import DevCIRunner
import DevCIStore
import DevCIWire
import Foundation

struct DispatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Queue a build of one commit and print its build id."
    )

    @Argument(help: "Full commit id (40 hex digits).") var commit: String
    @Option(help: "Repository path or URL the runners fetch from.") var repo: String
    @Option(help: "Branch the commit is on.") var branch = "main"
    @OptionGroup var server: DispatcherAddress

    func validate() throws {
        guard Validate.isCommitID(commit) else { throw ValidationError("commit must be a full lowercase hex id, got '\(commit)'") }
        guard Validate.isBranchName(branch) else { throw ValidationError("'\(branch)' is not a valid branch name") }
        guard Validate.isRepository(repo) else { throw ValidationError("--repo must be a path or URL") }
    }

    /// A URL (`https://…`, `ssh://…`) or scp-like address (`git@host:path`), which only the runners can reach.
    static func isRemote(_ repo: String) -> Bool {
        if repo.contains("://") { return true }
        guard let colon = repo.firstIndex(of: ":") else { return false }
        return !repo[..<colon].contains("/")
    }

    func run() throws {
        // A local path must be a repository here (and is sent absolute, so runners anywhere on this machine find it):
        // a mistyped path is an error, not a build of whatever the runners' clones hold.
        var repository = repo
        var local: GitRepository?
        if !Self.isRemote(repo) {
            repository = URL(fileURLWithPath: repo).standardizedFileURL.path
            guard FileManager.default.fileExists(atPath: repository) else { throw Failure("--repo \(repo): no such file or directory") }
            do { local = try GitRepository(path: repository) } catch { throw Failure("--repo \(repo) is not a git repository: \(error)") }
        }
        if let local {
            guard local.hasCommit(commit) else { throw Failure("\(repository) has no commit \(commit)") }
        } else {
            FileHandle.standardError.write(Data("note: \(repository) is not a local repository: its \(pipelineFileName) is not read, the runners' test command runs\n".utf8))
        }
        let client = try server.connect()
        defer { client.close() }
        let mark = try markUpdate(client, local: local, repository: repository)
        // The pipeline file travels with the dispatch, read from a local repository at the commit.
        let message = local.map { DispatchBuilder.dispatch(of: commit, in: $0, repo: repository, branch: branch, mark: mark) }
            ?? .dispatch(repo: repository, commit: commit, branch: branch, pipeline: .none, mark: mark)
        switch try Self.request(client, message, "record the build") {
        case .queued(let build, let jobs, let created):
            print("build \(build)\(created ? "" : " (already dispatched)") jobs \(jobs.map(String.init).joined(separator: ","))")
        case let other:
            throw Failure(reply: other)
        }
    }

    /// What this dispatch does to the branch's last-dispatched mark (which the observer builds from): it moves
    /// only forward, to a descendant of the mark, and only if the mark is still the one checked; where that
    /// cannot be checked (a URL), never.
    func markUpdate(_ client: WireClient, local: GitRepository?, repository: String) throws -> MarkUpdate {
        guard let local else { return .never }
        switch try Self.request(client, .lastDispatched(repo: repository, branch: branch), "read the last dispatched commit") {
        case .last(_, _, let mark):
            if mark.isEmpty { return .never }  // sets it where there is none, and leaves one set meanwhile
            return local.isDescendant(commit, of: mark) ? .ifStill(mark) : .never
        case let other: throw Failure(reply: other)
        }
    }

    /// One request; a `store` answer (the database is busy for now) is asked again with backoff, up to five
    /// times. Asking again is safe: `dispatch` is idempotent and `last` only reads.
    static func request(_ client: WireClient, _ message: ClientMessage, _ what: String) throws -> ServerMessage {
        var delay = 0.5
        for attempt in 1...5 {
            let reply = try client.request(message)
            guard case .error(.store, let why) = reply, attempt < 5 else { return reply }
            FileHandle.standardError.write(Data("note: the dispatcher could not \(what) yet (\(why)); asking again in \(delay) s\n".utf8))
            Thread.sleep(forTimeInterval: delay)
            delay *= 2
        }
        preconditionFailure("not reached")
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Print the dispatcher's view.")
    @OptionGroup var server: DispatcherAddress

    func run() throws {
        let client = try server.connect()
        defer { client.close() }
        switch try client.request(.status) {
        case .status(let queued, let running, let runners, let waiting):
            print("queued \(queued), running \(running), runners connected \(runners)" + (WaitingQueues.describe(waiting).map { "; " + $0 } ?? ""))
        case let other:
            throw Failure(reply: other)
        }
    }
}

struct AddJobCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-job",
        abstract: "Queue a one-off shell command on the fleet and print its build id.",
        discussion: "The command runs through /bin/sh -c on a runner of the queue, in an empty folder (no checkout)."
    )

    @Argument(help: "The shell command.") var command: String
    @Option(help: "The queue whose runners may take it.") var queue = defaultQueue
    @Option(help: "Higher runs first (\(priorityRange.lowerBound) to \(priorityRange.upperBound)).") var priority = 0
    @Option(help: "Kill it after this long (30s, 5m, 1h).") var timeout: String?
    @OptionGroup var server: DispatcherAddress

    func validate() throws {
        guard command.contains(where: { !$0.isWhitespace }) else { throw ValidationError("the command is empty") }
        guard Validate.isRunnerName(queue) else { throw ValidationError("--queue must be 1-64 of letters, digits, '.', '_', '-'") }
        guard priorityRange.contains(priority) else { throw ValidationError("--priority must be from \(priorityRange.lowerBound) to \(priorityRange.upperBound)") }
        if let timeout { _ = try timeFlag(timeout, "--timeout") }
    }

    func run() throws {
        let client = try server.connect()
        defer { client.close() }
        let job = AdHocJob(command: command, queue: queue, priority: priority, timeoutSeconds: try timeout.map { try timeFlag($0, "--timeout").seconds })
        switch try DispatchCommand.request(client, .addJob(job), "queue the job") {
        case .queued(let build, let jobs, _):
            print("build \(build) jobs \(jobs.map(String.init).joined(separator: ","))")
        case let other: throw Failure(reply: other)
        }
    }
}

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a build's unfinished jobs (or one job): queued ones end at once, running ones are killed on their runner.",
        discussion: "Name a build by its id (12 or build:12) or a job as job:34."
    )

    @Argument(help: "A build id (12, build:12) or a job (job:34).") var target: String
    @OptionGroup var server: DispatcherAddress

    var parsed: CancelTarget? {
        let parts = target.split(separator: ":", maxSplits: 1).map(String.init)
        switch (parts.count, parts.first) {
        case (1, _): return Int64(parts[0]).flatMap { $0 > 0 ? .build($0) : nil }
        case (2, "build"): return Int64(parts[1]).flatMap { $0 > 0 ? .build($0) : nil }
        case (2, "job"): return Int64(parts[1]).flatMap { $0 > 0 ? .job($0) : nil }
        default: return nil
        }
    }

    func validate() throws {
        guard parsed != nil else { throw ValidationError("say a build id (12 or build:12) or a job (job:34); got '\(target)'") }
    }

    func run() throws {
        guard let parsed else { throw ValidationError("bad target") }
        let client = try server.connect()
        defer { client.close() }
        switch try client.request(.cancel(parsed)) {
        case .ok: print("cancelled \(target)")
        case let other: throw Failure(reply: other)
        }
    }
}

struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Make the dispatcher reread its --config folder (like kill -HUP); prints the errors of an invalid one, which is not taken."
    )
    @OptionGroup var server: DispatcherAddress

    func run() throws {
        let client = try server.connect()
        defer { client.close() }
        switch try client.request(.reload) {
        case .ok: print("configuration reloaded")
        case .error(let code, let message):
            FileHandle.standardError.write(Data("dispatcher refused the reload (\(code)); the old configuration stays:\n\(message)\n".utf8))
            throw ExitCode(1)
        case let other: throw Failure(reply: other)
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "List recent builds from the database, or local runs with --local.",
        discussion: "With --stage or --job, lists the matching jobs instead of builds."
    )

    @Option(help: "The store: a SQLite file, or postgres://USER@HOST:PORT/DATABASE (default: DEVCI_DB or ~/.devci/devci.sqlite).") var db: String?
    @Flag(help: "Read the reports of `devci run --local` instead of the database.") var local = false
    @Option(help: "Only this repository (a substring of its path; with --local, its folder name).") var repo: String?
    @Option(help: "Only runs of this pipeline file (with --local).") var pipeline: String?
    @Option(name: .customLong("run"), help: "Only this build id (or, with --local, run number).") var runNumber: Int?
    @Option(help: "Only runs of this task.") var task: String?
    @Option(help: "Only jobs of this stage.") var stage: String?
    @Option(help: "Only this job.") var job: String?
    @Option(help: "How many builds.") var limit = 20
    @Flag(help: "Print each build's tests, failed ones first, and the commit that broke it when a bisection found it.") var tests = false
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        if local { return try runLocal() }
        let location = try storeLocation(db)
        if case .sqlite(let path) = location, !FileManager.default.fileExists(atPath: path) {
            throw Failure("no database at \(path): start the dispatcher first, or pass --db")
        }
        let store: any BuildReader
        do { store = try openReader(at: db ?? SQLStore.defaultPath()) } catch { throw Failure("cannot read the database \(location): \(error)") }
        let builds = try store.builds(BuildFilter(task: task), offset: 0, limit: runNumber == nil ? max(1, limit) : 100_000)
            .filter { b in (repo.map { b.repo.contains($0) } ?? true) && (runNumber.map { b.id == $0 } ?? true) }
        if stage != nil || job != nil {
            var rows: [JobSummary] = []
            for b in builds { rows += try store.jobs(build: b.id).filter(matches) }
            print(json ? try TextReport.json(rows) : TextReport.jobs(rows))
            return
        }
        let bisections = try builds.compactMap { try store.bisection(explaining: $0.id) }
        if tests {
            let reports = try builds.map { b in TextReport.BuildTests(build: b.id, status: b.status, tests: try store.tests(build: b.id),
                                                                     bisection: bisections.first { $0.badBuild == b.id }) }
            print(json ? try TextReport.json(reports) : TextReport.tests(reports))
            return
        }
        print(json ? try TextReport.json(builds) : TextReport.builds(builds) + TextReport.culprits(bisections))
    }

    func matches(_ j: JobSummary) -> Bool { (stage.map { j.stage == $0 } ?? true) && (job.map { j.name == $0 } ?? true) }

    func runLocal() throws {
        let reports = LocalReports(root: LocalReports.defaultRoot()).all().filter { r in
            (repo.map { r.repository == $0 } ?? true) && (pipeline.map { r.pipeline.contains($0) } ?? true) && (runNumber.map { r.run == $0 } ?? true)
        }.suffix(max(1, limit))
        if stage != nil || job != nil {
            let jobs = reports.flatMap { r in r.jobs.filter { j in (stage.map { j.stage == $0 } ?? true) && (job.map { j.name == $0 } ?? true) }
                .map { (r, $0) } }
            print(json ? try TextReport.json(jobs.map(\.1)) : LocalReportTable.jobs(jobs))
            return
        }
        print(json ? try TextReport.json(Array(reports)) : LocalReportTable.runs(Array(reports)))
    }
}

struct ArtifactsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "artifacts",
        abstract: "Download the artifacts a build kept, from the dispatcher, into a folder (one subfolder per job).",
        discussion: "Exits 1 when the build kept none (of the job, when --job is given)."
    )

    @Argument(help: "The build's id.") var build: Int64
    @Option(help: "Only this job's artifacts.") var job: String?
    @Option(help: "Where to write them (default: ./artifacts-<build>).") var out: String?
    @Flag(help: "Only list them.") var list = false
    @OptionGroup var server: DispatcherAddress

    func validate() throws {
        guard build > 0 else { throw ValidationError("the build id must be positive") }
        if let job, !Validate.isRunnerName(job) { throw ValidationError("--job must be a job name") }
    }

    func run() throws {
        let client = try server.connect()
        defer { client.close() }
        let entries = try ArtifactTransfer.list(client, build: build, job: job)
        guard !entries.isEmpty else {
            throw Failure("build \(build) kept no artifacts\(job.map { " of job '\($0)'" } ?? "")")
        }
        let folder = URL(fileURLWithPath: out ?? "artifacts-\(build)").standardizedFileURL.path
        for entry in entries {
            if list {
                print("\(entry.job)/\(entry.path)\t\(entry.size)")
                continue
            }
            try ArtifactTransfer.download(client, build: build, entry: entry, into: "\(folder)/\(entry.job)")
            print("\(folder)/\(entry.job)/\(entry.path) (\(ByteSize.format(entry.size)))")
        }
    }
}
