import ArgumentParser
import DevCIProcess
import DevCIWire
import Foundation

struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start the whole system in one terminal: dispatcher, runner manager, observer and reporter on the sample repository."
    )

    @Option(help: "The dispatcher's port.") var port = 8888
    @Option(help: "How many runners.") var runners = 2
    @Option(help: "Where the sample repositories are (made when missing; default: DEVCI_SAMPLE_DIR, else the folder above this checkout).")
    var sampleDir: String?
    @Option(help: "The store: a SQLite file, or postgres://USER@HOST:PORT/DATABASE (default: DEVCI_DB or ~/.devci/devci.sqlite).") var db: String?
    @Option(help: "The reporter's port (0 leaves the reporter out).") var reporterPort = 5000
    @Option(help: "The dispatcher's configuration folder (tasks, queues), passed on.") var config: String?
    @Option(help: "The dispatcher's HTTP port (webhooks, task triggers), passed on; off when not given.") var httpPort: Int?
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.bootstrap("devci.up")
        let exe = currentExecutablePath()
        guard let root = Self.checkoutRoot(from: exe) else {
            throw Failure("cannot find scripts/make-test-repos.sh above \(exe) or in \(FileManager.default.currentDirectoryPath): run devci up from a DevCI checkout")
        }
        let base = sampleDir ?? ProcessInfo.processInfo.environment["DEVCI_SAMPLE_DIR"] ?? (root as NSString).deletingLastPathComponent
        let make = Process()
        make.executableURL = URL(fileURLWithPath: root + "/scripts/make-test-repos.sh")
        make.arguments = [base]
        try make.run()
        make.waitUntilExit()
        guard make.terminationStatus == 0 else { throw Failure("making the sample repositories in \(base) failed") }
        let sample = URL(fileURLWithPath: base).standardizedFileURL.path
        let server = "localhost:\(port)"
        let level = ["--log-level", logging.logLevel]

        // A process of the tree that exits on its own leaves a CI that no longer builds: `up` stops the rest and
        // exits non-zero, saying which one and how, rather than run on half a system.
        let termination = Termination()
        let tree = ProcessTree { termination.fail($0) }
        let dispatcher = NamedChild(name: "dispatcher", argv: [exe, "dispatcher", "--port", String(port)] + (db.map { ["--db", $0] } ?? [])
                                        + (config.map { ["--config", URL(fileURLWithPath: $0).standardizedFileURL.path] } ?? [])
                                        + (httpPort.map { ["--http-port", String($0)] } ?? []) + level)
        do {
            try tree.start(dispatcher) { (try? WireClient(address: HostPort(host: "localhost", port: port), token: nil, timeout: 1)) != nil }
        } catch {
            throw Failure("\(error)")
        }
        var rest = [
            NamedChild(name: "runner-manager", argv: [exe, "runner-manager", sample + "/test_repo_clone_runner", "--dispatcher-server", server,
                                                      "--desired-count", String(runners)] + level),
            NamedChild(name: "observer", argv: [exe, "observer", sample + "/test_repo_clone_obs", "--dispatcher-server", server] + level),
        ]
        if reporterPort != 0 {
            rest.append(NamedChild(name: "reporter", argv: [exe, "reporter", "--port", String(reporterPort), "--dispatcher-server", server]
                                   + (db.map { ["--db", $0] } ?? [])
                                   + (config.map { ["--config", URL(fileURLWithPath: $0).standardizedFileURL.path] } ?? []) + level))
        }
        for child in rest { try tree.start(child) }
        logger.notice("""
            DevCI is up: dispatcher on \(server), \(runners) runner(s), observer on \(sample)/test_repo_clone_obs\(reporterPort != 0 ? ", results on http://127.0.0.1:\(reporterPort)" : "").
            Commit to \(sample)/test_repo and watch it tested; `devci status`, `devci report`. Ctrl-C stops everything.
            """)
        try termination.wait(logger) { tree.stopAll(grace: 15) }
    }

    /// The DevCI checkout this binary was built in (`.build/<config>/devci`), or the current folder.
    static func checkoutRoot(from executable: String) -> String? {
        var dir = URL(fileURLWithPath: executable).deletingLastPathComponent()
        for _ in 0..<6 {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("scripts/make-test-repos.sh").path) { return dir.path }
            dir = dir.deletingLastPathComponent()
        }
        let cwd = FileManager.default.currentDirectoryPath
        return FileManager.default.fileExists(atPath: cwd + "/scripts/make-test-repos.sh") ? cwd : nil
    }
}
