import ArgumentParser
import DevCIContainer
import DevCIGit
import DevCIMetrics
import DevCIRunner
import DevCIWire
import Foundation
import NIOPosix

struct RunnerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner",
        abstract: "Run a runner: take jobs from the dispatcher and run them in this clone."
    )

    @Argument(help: "The runner's own clone of the repository.") var clonePath: String
    @OptionGroup var server: DispatcherAddress
    @Option(help: "Unique runner name (default: HOST-PID).") var name: String?
    @Option(help: "Command run for a job of a commit without a pipeline file, through /bin/sh -c.") var testCommand = RunnerConfig.defaultTestCommand
    @Option(help: "How many jobs to run at once, each in its own workspace (the first in the clone itself, the others in <clone>.workspaces/N).") var parallel = 1
    @Option(help: "How long the dispatcher may take to greet and register this runner before it dials again.") var registrationTimeout = "10s"
    @Option(name: .customLong("queue"), help: "A queue whose jobs this runner takes; repeat for several (default: default).") var queues: [String] = []
    @Option(help: "The container engine for jobs with image: (default: DOCKER_HOST or unix:///var/run/docker.sock).") var dockerHost: String?
    @Option(help: "Serve Prometheus metrics at http://<metrics-host>:PORT/metrics (off by default; 0 picks a free port).") var metricsPort: Int?
    @Option(help: "The address the metrics are served on.") var metricsHost = "127.0.0.1"
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let dockerHost { do { _ = try DockerEngine(address: dockerHost) } catch { throw ValidationError(error.description) } }
        if let metricsPort, !(0...65535).contains(metricsPort) { throw ValidationError("--metrics-port must be from 0 to 65535") }
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be from 1 to 64") }
        if let name, !Validate.isRunnerName(name) { throw ValidationError("--name must be 1-64 of letters, digits, '.', '_', '-'") }
        _ = try timeFlag(registrationTimeout, "--registration-timeout")
        for q in queues where !Validate.isRunnerName(q) { throw ValidationError("--queue must be 1-64 of letters, digits, '.', '_', '-'; got '\(q)'") }
        guard queues.count <= 32 else { throw ValidationError("at most 32 --queue") }
        _ = try server.address
    }

    func run() throws {
        let logger = try logging.bootstrap("devci.runner")
        // Before anything is announced: a SIGTERM from then on is never lost.
        let termination = Termination()
        let addresses = try server.addresses
        let address = addresses[0]
        let clone = URL(fileURLWithPath: clonePath).standardizedFileURL.path
        do {
            _ = try GitRepository(path: clone)
        } catch {
            throw Failure("\(clone) is not a git clone: \(error)")
        }
        let runnerName = name ?? Self.defaultName()
        guard Validate.isRunnerName(runnerName) else {
            throw ValidationError("--name must be 1-64 of letters, digits, '.', '_', '-'")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        server.dropStoreCredentials()
        var config = RunnerConfig(clonePath: clone, host: address.host, port: address.port, token: server.takeToken(),
                                  name: runnerName, testCommand: testCommand, parallel: parallel)
        config.registrationTimeout = try timeFlag(registrationTimeout, "--registration-timeout")
        config.alternates = Array(addresses.dropFirst())
        config.dockerHost = dockerHost ?? DockerEngine.defaultAddress()
        config.queues = queues.isEmpty ? [defaultQueue] : queues.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let agent = RunnerAgent(config: config, loop: group.next(), logger: logger)
        logger.info("runner \(runnerName): clone \(clone), dispatcher \(server.dispatcherServer), queues \(config.queues.joined(separator: ", ")), container engine \(config.dockerHost), test command: \(testCommand)")
        var metricsServer: HTTPServer?
        if let metricsPort {
            do {
                metricsServer = try MetricsEndpoint.serve(agent.metrics.registry, host: metricsHost, port: metricsPort, logger: logger)
            } catch {
                throw Failure("cannot serve metrics on \(metricsHost):\(metricsPort): \(error)")
            }
            logger.info("metrics at http://\(metricsHost.contains(":") ? "[\(metricsHost)]" : metricsHost):\(metricsServer!.port)/metrics")
        }
        agent.start()
        try? termination.wait(logger) { agent.shutdown() }
        metricsServer?.stop()
        try? group.syncShutdownGracefully()
    }

    static func defaultName() -> String { "\(hostName())-\(getpid())" }

    /// This host's short name, cut to what a runner name allows.
    static func hostName() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
        let clean = String(host.unicodeScalars.filter { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-") }.prefix(40))
        return clean.isEmpty ? "runner" : clean
    }
}
