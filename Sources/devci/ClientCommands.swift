import ArgumentParser
import DevCIGit
import DevCIPipeline
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

    func run() throws {
        guard Validate.isCommitID(commit) else { throw ValidationError("commit must be a full lowercase hex id, got '\(commit)'") }
        guard Validate.isBranchName(branch) else { throw ValidationError("'\(branch)' is not a valid branch name") }
        // A local path is sent absolute, so runners anywhere on this machine find it.
        var repository = repo
        if !repo.contains("://"), !repo.contains("@"), FileManager.default.fileExists(atPath: repo) {
            repository = URL(fileURLWithPath: repo).standardizedFileURL.path
        }
        guard Validate.isRepository(repository) else { throw ValidationError("--repo must be a path or URL") }
        // The pipeline file travels with the dispatch, read from a local repository at the commit.
        var pipeline = PipelineText.none
        if let local = try? GitRepository(path: repository) {
            guard local.hasCommit(commit) else { throw Failure("\(repository) has no commit \(commit)") }
            pipeline = PipelineText.read(from: local, at: commit)
        } else {
            FileHandle.standardError.write(Data("note: \(repository) is not a local repository: its \(pipelineFileName) is not read, the runners' test command runs\n".utf8))
        }
        let client = try server.connect()
        defer { client.close() }
        switch try client.request(.dispatch(repo: repository, commit: commit, branch: branch, pipeline: pipeline)) {
        case .queued(let build, let jobs, let created):
            print("build \(build)\(created ? "" : " (already dispatched)") jobs \(jobs.map(String.init).joined(separator: ","))")
        case .error(let code, let message):
            throw Failure("dispatcher refused: \(code): \(message)")
        case let other:
            throw Failure("unexpected reply: \(LineCodec.encode(other))")
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Print the dispatcher's view.")
    @OptionGroup var server: DispatcherAddress

    func run() throws {
        let client = try server.connect()
        defer { client.close() }
        switch try client.request(.status) {
        case .status(let queued, let running, let runners):
            print("queued \(queued), running \(running), runners connected \(runners)")
        case let other:
            throw Failure("unexpected reply: \(LineCodec.encode(other))")
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "List recent builds from the database.")

    @Option(help: "SQLite database (default: DEVCI_DB or ~/.devci/devci.sqlite).") var db: String?
    @Option(help: "How many builds.") var limit = 20
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let path = db ?? SQLiteStore.defaultPath()
        guard FileManager.default.fileExists(atPath: path) else {
            throw Failure("no database at \(path): start the dispatcher first, or pass --db")
        }
        let builds = try SQLiteStore(path: path, readOnly: true).recentBuilds(limit: max(1, limit))
        if json {
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(builds), as: UTF8.self))
            return
        }
        if builds.isEmpty {
            print("no builds yet")
            return
        }
        let rows = builds.map { b in
            [String(b.id), b.status, String(b.commit.prefix(12)), b.branch, b.runner ?? "-",
             b.duration.map { String(format: "%.1fs", $0) } ?? "-", String(b.attempts), b.repo, b.reason ?? ""]
        }
        let header = ["BUILD", "STATUS", "COMMIT", "BRANCH", "RUNNER", "DURATION", "ATTEMPTS", "REPOSITORY", "REASON"]
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max()! }
        for row in [header] + rows {
            print(row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  "))
        }
    }
}
