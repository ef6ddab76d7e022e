import ArgumentParser
import DevCIObserver
import Foundation

struct ObserverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "observer",
        abstract: "Watch clones' origins through libgit2 and dispatch every new commit, oldest first."
    )

    @Argument(help: "One or more clones to watch (each polls its own origin).") var clonePaths: [String]
    @OptionGroup var server: DispatcherAddress
    @Option(help: "A branch to watch in every clone (repeatable; default: each clone's HEAD branch).") var branch: [String] = []
    @Option(help: "How often to poll.") var interval = "1s"
    @Option(help: "The most new commits of one branch dispatched in one poll; older ones are skipped, and said so.") var maxBacklog = 50
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard maxBacklog >= 1 else { throw ValidationError("--max-backlog must be at least 1") }
        _ = try timeFlag(interval, "--interval")
    }

    func run() throws {
        let logger = try logging.bootstrap("devci.observer")
        // Before anything is announced: a SIGTERM from then on is never lost.
        let termination = Termination()
        let config = ObserverConfig(clonePaths: clonePaths.map { URL(fileURLWithPath: $0).standardizedFileURL.path }, branches: branch,
                                    dispatchers: try server.addresses, token: server.takeToken(),
                                    interval: try timeFlag(interval, "--interval"), maxBacklog: maxBacklog)
        let observer: Observer
        do {
            observer = try Observer(config: config, logger: logger)
        } catch {
            throw Failure("cannot watch: \(error)")
        }
        logger.info("observing \(observer.description); dispatcher \(server.dispatcherServer), every \(interval)")
        let done = DispatchSemaphore(value: 0)
        Thread {
            observer.run()
            done.signal()
        }.start()
        try? termination.wait(logger) { observer.stop() }
        done.wait()
    }
}
