import DevCIProcess
import DevCIWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The container executor: a job's steps in a fresh container of its `image:`, through the Docker Engine API.
/// The workspace is bind-mounted at `/workspace` and is the working directory; the steps run in one shell
/// session under the same driver as on the host, so output, step lines and exit statuses read the same.
/// The container is waited on first and removed after (never auto-removed: Podman then reports 0 for any exit).
public final class ContainerExecutor: Executor {
    /// Where the workspace appears inside the container.
    public static let mountPoint = "/workspace"
    /// Labels every job container carries, so leftovers can be found.
    public static let cloneLabel = "devci.clone"

    let engine: DockerEngine
    private struct State {
        var container: String?
        var stopRequested = false
        var timedOut = false
        var grace = 2
    }
    private let state = NIOLockedValueBox(State())

    public init(engine: DockerEngine) {
        self.engine = engine
    }

    public func run(_ job: ExecutorJob, onOutput: @escaping @Sendable ([OutputLine]) -> Void) -> JobExecutor.Result {
        let done = DispatchSemaphore(value: 0)
        let result = NIOLockedValueBox<JobExecutor.Result?>(nil)
        Task {
            let r = await self.execute(job, onOutput: onOutput)
            result.withLockedValue { $0 = r }
            done.signal()
        }
        done.wait()
        return result.withLockedValue { $0! }
    }

    public func cancel(grace: TimeInterval) {
        let id: String? = state.withLockedValue {
            $0.stopRequested = true
            $0.grace = max(1, Int(grace.rounded(.up)))
            return $0.container
        }
        if let id { stopContainer(id) }
    }

    private func stopContainer(_ id: String) {
        let grace = state.withLockedValue { $0.grace }
        Task { try? await engine.stop(id, grace: grace) }
    }

    private func execute(_ job: ExecutorJob, onOutput: @escaping @Sendable ([OutputLine]) -> Void) async -> JobExecutor.Result {
        guard let spec = job.script?.container else { return .failedToStart("the job names no image") }
        // Only the job's own variables go in: the host's PATH and HOME would break the image's.
        let driver = StepDriver(script: job.script, fallbackCommand: job.fallbackCommand, environment: job.environment.filter { $0.key.hasPrefix("DEVCI_") },
                                secrets: job.secrets)
        let workdir: String
        switch driver.workingDirectory(in: Self.mountPoint) {
        case .success(let dir): workdir = dir
        case .failure(let why): return .failedToStart(why.description)
        }
        do {
            guard try await engine.hasImage(spec.image) else {
                return .failedToStart("image '\(spec.image)' is not on the engine at \(engine.address): import or pull it")
            }
        } catch {
            return .failedToStart(error.description)
        }
        if state.withLockedValue({ $0.stopRequested }) { return .stoppedBeforeStart }
        var host: [String: Any] = ["Binds": ["\(job.directory):\(Self.mountPoint)"], "AutoRemove": false]
        if let memory = spec.memoryBytes {
            host["Memory"] = memory
            host["MemorySwap"] = memory  // no swap: over the limit is out of memory
        }
        if let cpus = spec.nanoCPUs { host["NanoCpus"] = cpus }
        if let network = spec.network { host["NetworkMode"] = network }
        let config: [String: Any] = [
            "Image": spec.image, "Cmd": ["/bin/sh", "-c", StepDriver.source],
            "Env": driver.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            "WorkingDir": workdir, "Labels": job.labels, "Tty": false, "OpenStdin": false,
            "AttachStdout": false, "AttachStderr": false, "HostConfig": host,
        ]
        let id: String
        do {
            id = try await engine.create(config, name: "devci-\(job.labels["devci.job"] ?? "job")-\(UInt32.random(in: 0...UInt32.max))")
        } catch {
            return .failedToStart("cannot create the job's container: \(error)")
        }
        let stopEarly = state.withLockedValue { s -> Bool in
            s.container = id
            return s.stopRequested
        }
        let result = stopEarly ? JobExecutor.Result.stoppedBeforeStart
            : await run(container: id, job, image: spec.image, driver: driver, onOutput: onOutput)
        // Removed before the result goes out, so a job that has ended has no container left.
        try? await engine.remove(id)
        return result
    }

    private func run(container id: String, _ job: ExecutorJob, image: String, driver: StepDriver,
                     onOutput: @escaping @Sendable ([OutputLine]) -> Void) async -> JobExecutor.Result {
        func say(_ text: String) { onOutput([OutputLine(stream: .system, timestampMillis: Int64(Date().timeIntervalSince1970 * 1000), text: text)]) }
        var timer: Task<Void, Never>?
        if let seconds = job.script?.timeoutSeconds {
            timer = Task {
                try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                guard !Task.isCancelled else { return }
                self.state.withLockedValue { $0.timedOut = true; $0.grace = 2 }
                self.stopContainer(id)
            }
        }
        defer { timer?.cancel() }
        do {
            try await engine.start(id)
        } catch {
            await giveBack(job, image: image, say: say)
            return .failedToStart("cannot start the job's container: \(error)")
        }
        // Output streams until the container stops; the exit status comes from a wait, not from the stream.
        let logs = Task {
            var out = LineSplitter(maxLineBytes: WireLimits.maxLogTextBytes), err = LineSplitter(maxLineBytes: WireLimits.maxLogTextBytes)
            func emit(_ stream: LogStream, _ texts: [String]) {
                guard !texts.isEmpty else { return }
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                onOutput(driver.label(texts.map { OutputLine(stream: stream, timestampMillis: now, text: $0) }))
            }
            let failure: String?
            do {
                try await engine.logs(id) { stream, bytes in
                    emit(stream, stream == .err ? err.push(bytes.readableBytesView) : out.push(bytes.readableBytesView))
                }
                failure = nil
            } catch {
                failure = "\(error)"
            }
            emit(.out, out.finish())
            emit(.err, err.finish())
            return failure
        }
        let status: Int
        do {
            status = try await engine.wait(id)
        } catch {
            logs.cancel()
            return .failedToStart("lost the job's container: \(error)")
        }
        if let failure = await logs.value { say("the container's output was cut short: \(failure)") }
        let oom = await outOfMemory(id, status: status, limited: job.script?.container?.memoryBytes != nil && !state.withLockedValue { $0.stopRequested })
        await giveBack(job, image: image, say: say)
        let (stopped, timedOut) = state.withLockedValue { ($0.stopRequested, $0.timedOut) }
        return JobExecutor.Result(termination: .exited(Int32(truncatingIfNeeded: status)), timedOut: timedOut, stopped: stopped && !timedOut,
                                  outOfMemory: oom)
    }

    /// Whether the container ran out of memory: the engine says so, or, with a memory limit, something in it was
    /// killed by SIGKILL (status 137) that DevCI did not stop. The engine's `OOMKilled` comes from an event that it
    /// misses at times when the process the kernel killed is not the container's first (seen here with Docker 28:
    /// false on about one run in three, even asked again two seconds later), and nothing else in a CI job sends SIGKILL.
    private func outOfMemory(_ id: String, status: Int, limited: Bool) async -> Bool {
        if (try? await engine.inspect(id).oomKilled) == true { return true }
        return limited && status == 137
    }

    /// Gives the workspace's files back to its owner: the job ran as the image's user (often root), and a file it
    /// left owned by root would make the runner's next checkout fail. A short container of the same image does it.
    private func giveBack(_ job: ExecutorJob, image: String, say: (String) -> Void) async {
        var info = stat()
        guard stat(job.directory, &info) == 0, info.st_uid != 0 else { return }
        let owner = "\(info.st_uid):\(info.st_gid)"
        let config: [String: Any] = [
            "Image": image, "Cmd": ["chown", "-R", owner, Self.mountPoint], "User": "0", "Labels": job.labels,
            "HostConfig": ["Binds": ["\(job.directory):\(Self.mountPoint)"], "NetworkMode": "none"],
        ]
        var created: String?
        do {
            let id = try await engine.create(config, name: "devci-chown-\(UInt32.random(in: 0...UInt32.max))")
            created = id
            try await engine.start(id)
            let status = try await engine.wait(id)
            if status != 0 { throw DockerEngine.Failure(description: "chown in the image exited \(status)") }
        } catch {
            say("could not give the workspace's files back to \(owner): \(error)")
        }
        if let created { try? await engine.remove(created) }
    }

    /// Removes every container left by an earlier run of a runner on this clone (one killed with -9 could not).
    public static func removeLeftovers(engine: DockerEngine, clone: String) async throws(DockerEngine.Failure) -> Int {
        let ids = try await engine.containers(label: "\(cloneLabel)=\(clone)")
        for id in ids { try await engine.remove(id) }
        return ids.count
    }
}
