import ArgumentParser
import DevCIContainer
import DevCIGit
import DevCIPipeline
import DevCIWire
import DevCIRunner
import Foundation

struct LintCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lint", abstract: "Check a pipeline file, or with --config a dispatcher's configuration folder; exit non-zero on any error.")

    @Argument(help: "The pipeline file.") var file = pipelineFileName
    @Option(help: "Check this server configuration folder (every *.yml/*.yaml under it) instead.") var config: String?

    func run() throws {
        if let config {
            let loaded = try loadServerConfig(config)
            let periodic = loaded.tasks.values.filter { $0.period != nil }.count
            print("\(config): ok — \(loaded.tasks.count) task(s) (\(periodic) periodic), \(loaded.queues.count) queue setting(s), \(loaded.administrators.count) administrator(s)")
            return
        }
        let pipeline = try loadPipeline(file)
        print("\(file): ok — \(pipeline.jobs.count) job(s) in \(pipeline.stages.count) stage(s): \(pipeline.stages.joined(separator: " → "))")
    }
}

/// Reads and checks a server configuration folder, printing every error and failing when there is one.
func loadServerConfig(_ directory: String) throws -> ServerConfig {
    do {
        return try ServerConfigParser.load(directory: directory)
    } catch {
        FileHandle.standardError.write(Data((error.description + "\n").utf8))
        throw ExitCode(2)
    }
}

/// Reads and parses a pipeline file, printing every error and failing when there is one.
func loadPipeline(_ file: String) throws -> Pipeline {
    guard let data = FileManager.default.contents(atPath: file) else { throw Failure("cannot read \(file)") }
    guard let text = String(data: data, encoding: .utf8) else { throw Failure("\(file) is not UTF-8 text") }
    do {
        return try PipelineParser.parse(text, file: file)
    } catch {
        FileHandle.standardError.write(Data((error.description + "\n").utf8))
        throw ExitCode(2)
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a pipeline on this machine, in this checkout, with no dispatcher.",
        discussion: "Exits 0 only when the pipeline passed. Saves a JSON report under ~/.devci/reports/<repository>/<run>.json."
    )

    @Flag(help: "Run locally (the only mode for now).") var local = false
    @Argument(help: "The pipeline file (its folder is where jobs run).") var file = pipelineFileName
    @Option(help: "Where reports are saved (default: ~/.devci/reports).") var reports: String?
    @Option(help: "The container engine for jobs with image: (default: DOCKER_HOST or unix:///var/run/docker.sock).") var dockerHost: String?

    func validate() throws {
        if let dockerHost { do { _ = try DockerEngine(address: dockerHost) } catch { throw ValidationError(error.description) } }
        guard local else { throw ValidationError("say --local: devci run --local [file]") }
    }

    func run() throws {
        let pipeline = try loadPipeline(file)
        let directory = URL(fileURLWithPath: file).standardizedFileURL.deletingLastPathComponent().path
        let repo = try? GitRepository(path: directory)
        let repository = URL(fileURLWithPath: directory).lastPathComponent
        let store = LocalReports(root: reports ?? LocalReports.defaultRoot())
        let number = store.nextRun(repository: repository)
        let commit = try? repo?.headCommit()
        print("run \(number) of \(repository): \(pipeline.jobs.count) job(s) in \(directory)\(commit.map { " at \($0.prefix(12))" } ?? "")")
        let run = LocalRun(pipeline: pipeline, file: file, directory: directory) { print($0) }
        run.dockerHost = dockerHost ?? DockerEngine.defaultAddress()
        let report = run.run(repository: repository, runNumber: number, commit: commit)
        let path = try store.save(report)
        print("report: \(path)")
        if !report.passed { throw ExitCode(1) }
    }
}
