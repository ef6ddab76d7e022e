import ArgumentParser
import DevCIContainer
import DevCIGit
import DevCIProcess
import DevCIRunner
import DevCIRunnerManager
import DevCIWire
import Foundation

struct RunnerManagerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner-manager",
        abstract: "Keep N runners alive, each in its own working copy of a clone.",
        discussion: "Send SIGUSR1 to add a runner and SIGUSR2 to remove one: kill -USR1 <pid>."
    )

    @Argument(help: "The clone the runners' working copies are made from.") var clonePath: String
    @OptionGroup var server: DispatcherAddress
    @Option(help: "How many runners to keep alive.") var desiredCount = 2
    @Option(help: "Where the runners' working copies live (default: ~/.devci/runners).") var workDir: String?
    @Option(help: "Runner names are <prefix>-<n> (default: this host's name).") var namePrefix: String?
    @Option(help: "Passed to every runner.") var testCommand = RunnerConfig.defaultTestCommand
    @Option(name: .customLong("queue"), help: "A queue whose jobs the runners take; repeat for several, passed to every runner (default: default).") var queues: [String] = []
    @Option(help: "The container engine for jobs with image:, passed to every runner (default: DOCKER_HOST or unix:///var/run/docker.sock).") var dockerHost: String?
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let dockerHost { do { _ = try DockerEngine(address: dockerHost) } catch { throw ValidationError(error.description) } }
        guard Validate.isRunnerName((namePrefix ?? RunnerCommand.hostName()) + "-000") else {
            throw ValidationError("--name-prefix must be letters, digits, '.', '_', '-'" + (namePrefix == nil ? " (this host's name is not: pass --name-prefix)" : ""))
        }
        for q in queues where !Validate.isRunnerName(q) { throw ValidationError("--queue must be 1-64 of letters, digits, '.', '_', '-'; got '\(q)'") }
        _ = try server.address
    }

    func run() throws {
        let logger = try logging.bootstrap("devci.runner-manager")
        // Before anything is announced: a SIGTERM from then on is never lost.
        let termination = Termination()
        guard desiredCount >= 0 else { throw ValidationError("--desired-count must be 0 or more") }
        let clone = URL(fileURLWithPath: clonePath).standardizedFileURL.path
        do { _ = try GitRepository(path: clone) } catch { throw Failure("\(clone) is not a git clone: \(error)") }
        let prefix = namePrefix ?? RunnerCommand.hostName()
        let work = workDir.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            ?? (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.devci/runners"
        _ = try server.addresses
        let address = server.dispatcherServer
        // The token reaches runners through the environment (DEVCI_TOKEN), never their command line.
        server.dropStoreCredentials()
        if let token = server.takeToken() { setenv("DEVCI_TOKEN", token, 1) }
        let manager = RunnerManager(
            config: RunnerManagerConfig(
                clonePath: clone, workDirectory: work, desiredCount: desiredCount, namePrefix: prefix,
                executable: currentExecutablePath(),
                runnerArguments: ["--dispatcher-server", address, "--test-command", testCommand, "--log-level", logging.logLevel]
                    + queues.flatMap { ["--queue", $0] } + (dockerHost.map { ["--docker-host", $0] } ?? [])),
            logger: logger)
        logger.info("runner manager: \(desiredCount) runner(s) from \(clone), working copies in \(work), dispatcher \(address); pid \(getpid()): `kill -USR1 \(getpid())` adds a runner, `kill -USR2 \(getpid())` removes one")
        signal(SIGUSR1, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
        let scaling = [(SIGUSR1, 1), (SIGUSR2, -1)].map { sig, delta -> DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { manager.scale(by: delta) }
            source.resume()
            return source
        }
        manager.start()
        try? termination.wait(logger) { manager.shutdown() }
        scaling.forEach { $0.cancel() }
        logger.info("all runners stopped")
    }
}
