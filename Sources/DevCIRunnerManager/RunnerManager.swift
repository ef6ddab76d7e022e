import DevCIGit
import DevCIProcess
import DevCIWire
import Foundation
import Logging

/// How a runner manager is started.
public struct RunnerManagerConfig: Sendable {
    /// The clone each runner's working copy is made from.
    public var clonePath: String
    /// Where the runners' working copies live, one folder per runner.
    public var workDirectory: String
    public var desiredCount: Int
    /// Runner names are `<prefix>-<slot>`.
    public var namePrefix: String
    /// The `devci` binary to start runners with.
    public var executable: String
    /// Arguments every runner gets after its clone path (dispatcher address, test command, …).
    public var runnerArguments: [String]
    public var supervisor: Supervisor.Config

    public init(clonePath: String, workDirectory: String, desiredCount: Int, namePrefix: String, executable: String,
                runnerArguments: [String], supervisor: Supervisor.Config = Supervisor.Config()) {
        self.clonePath = clonePath
        self.workDirectory = workDirectory
        self.desiredCount = desiredCount
        self.namePrefix = namePrefix
        self.executable = executable
        self.runnerArguments = runnerArguments
        self.supervisor = supervisor
    }
}

/// Starts `devci runner` processes, each in its own working copy, restarts those that die and stops them
/// all on shutdown. Decisions come from `Supervisor`; this class spawns, reaps and times.
public final class RunnerManager: Sendable {
    public let config: RunnerManagerConfig
    let logger: Logger
    private let queue: DispatchQueue
    private let finished = DispatchSemaphore(value: 0)
    /// Everything that changes, reached on `queue` only (checked); children's exits hop onto it.
    private let state: QueueBound<State>

    private struct State {
        var supervisor: Supervisor
        var processes: [Int: NamedChild] = [:]
        var timer: DispatchSourceTimer?
        var signalledFinish = false
    }

    public init(config: RunnerManagerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        let queue = DispatchQueue(label: "devci.runner-manager")
        self.queue = queue
        state = QueueBound(State(supervisor: Supervisor(desired: config.desiredCount, config: config.supervisor)), queue: queue)
    }

    public func start() {
        queue.async {
            self.handle(.tick)
            let timer = DispatchSource.makeTimerSource(queue: self.queue)
            timer.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100))
            timer.setEventHandler { self.handle(.tick) }
            timer.resume()
            self.state.value.timer = timer
        }
    }

    /// Changes the desired count.
    public func scale(by delta: Int) {
        queue.async { self.handle(.scale(self.state.value.supervisor.desired + delta)) }
    }

    /// Stops every runner and returns once they have all exited.
    public func shutdown() {
        queue.async { self.handle(.shutdown) }
        finished.wait()
    }

    private func handle(_ event: Supervisor.Event) {
        for action in state.value.supervisor.handle(event, now: .now) {
            switch action {
            case .start(let slot): spawn(slot)
            case .stop(let slot): state.value.processes[slot]?.stop(grace: 10)
            case .log(let line): logger.info("\(line)")
            }
        }
        if state.value.supervisor.isFinished && !state.value.signalledFinish {
            state.value.signalledFinish = true
            state.value.timer?.cancel()
            finished.signal()
        }
    }

    func name(of slot: Int) -> String { "\(config.namePrefix)-\(slot)" }

    private func spawn(_ slot: Int) {
        let name = name(of: slot)
        let workCopy = (config.workDirectory as NSString).appendingPathComponent(name)
        do {
            if !FileManager.default.fileExists(atPath: workCopy + "/.git") {
                try FileManager.default.createDirectory(atPath: config.workDirectory, withIntermediateDirectories: true)
                try GitRepository.clone(from: config.clonePath, to: workCopy)
                logger.info("made working copy \(workCopy) from \(config.clonePath)")
            }
        } catch {
            logger.error("cannot make a working copy for runner \(slot): \(error)")
            queue.async { self.handle(.exited(slot: slot, how: "no working copy")) }
            return
        }
        let child = NamedChild(name: name, argv: [config.executable, "runner", workCopy, "--name", name] + config.runnerArguments,
                               directory: workCopy)
        state.value.processes[slot] = child
        child.start { termination in
            self.queue.async {
                if self.state.value.processes[slot] === child { self.state.value.processes[slot] = nil }
                self.handle(.exited(slot: slot, how: "\(termination)"))
            }
        }
        logger.info("started runner \(slot) as \(name) in \(workCopy)")
    }
}
