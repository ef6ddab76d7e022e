import DevCIStore
import DevCIWire
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// Issue 11 end to end, against the real Docker engine that scripts/test.sh starts on a private socket (with the
/// busybox image it imports): jobs in containers, their limits, nothing left behind, artifacts and caches.
final class ContainerTests: HarnessTestCase {
    var engine = ""
    var image = ""

    override func setUpWithError() throws {
        try super.setUpWithError()
        let env = ProcessInfo.processInfo.environment
        guard let host = env["DEVCI_TEST_DOCKER_HOST"], let image = env["DEVCI_TEST_IMAGE"] else {
            // CI always has the engine (scripts/test.sh starts it): there, a missing one is a failure, never a skip.
            if env["CI"] != nil { throw Failure("no DEVCI_TEST_DOCKER_HOST: run the tests through scripts/test.sh") }
            throw XCTSkip("no container engine: run through scripts/test.sh, which starts one")
        }
        engine = host
        self.image = image
    }

    /// `docker` against the test engine; its output.
    @discardableResult
    func docker(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["docker"] + args
        var env = ProcessInfo.processInfo.environment
        env["DOCKER_HOST"] = engine
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Containers, running or not, with this label.
    func containers(_ label: String) throws -> [String] {
        try docker(["ps", "-a", "-q", "--filter", "label=\(label)"]).split(separator: "\n").map(String.init)
    }

    /// A repository whose `.devci.yml` is `pipeline`, a dispatcher, and `runners` runners on the test engine.
    /// `workspaceOwner`: the first clone belongs to this uid (the runner, root here, trusts it through its HOME's
    /// git configuration), so the files a container leaves must be given back to that owner.
    func start(_ pipeline: String, runners: Int = 1, dispatcherExtra: [String] = [], workspaceOwner: uid_t? = nil)
        throws -> (origin: String, address: HostPort, clones: [String])
    {
        let origin = try h.makeOrigin()
        try commitPipeline(pipeline, to: origin)
        _ = try h.commit("exit 0", to: origin, message: "pipeline")
        let (_, address) = try h.startDispatcher(extra: dispatcherExtra)
        var clones: [String] = []
        for i in 0..<runners {
            let clone = try h.clone(origin, as: "clone-\(i)")
            clones.append(clone)
            guard i == 0, let owner = workspaceOwner else {
                try h.startRunner(clone, address, name: "r\(i)", extra: ["--docker-host", engine])
                continue
            }
            XCTAssertEqual(chown(clone, owner, owner), 0)
            let home = h.dir.appendingPathComponent("home").path
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            try "[safe]\n\tdirectory = \(clone)\n\tdirectory = \(clone)/\n".write(toFile: home + "/.gitconfig", atomically: true, encoding: .utf8)
            try h.spawn("runner-r0", ["runner", clone, "--dispatcher-server", address.description, "--name", "r0", "--docker-host", engine],
                        environment: ["HOME": home])
        }
        return (origin, address, clones)
    }

    func commitPipeline(_ pipeline: String, to origin: String) throws {
        try pipeline.replacingOccurrences(of: "IMAGE", with: image).write(toFile: origin + "/.devci.yml", atomically: true, encoding: .utf8)
        try h.git(["add", ".devci.yml"], in: origin)
    }

    func dispatchHead(_ origin: String, _ address: HostPort) throws -> Int64 {
        let sha = try h.git(["rev-parse", "HEAD"], in: origin)
        let out = try h.run(["dispatch", sha, "--repo", origin, "--dispatcher-server", address.description])
        XCTAssertEqual(out.status, 0, out.output)
        return try XCTUnwrap(Int64(out.output.split(separator: " ")[1]), out.output)
    }

    func jobs(_ build: Int64) throws -> [String: JobSummary] {
        Dictionary(uniqueKeysWithValues: try h.store().jobs(build: build).map { ($0.name, $0) })
    }

    func log(_ job: JobSummary) throws -> [LogRecord] { try h.store().logs(job: job.id) }

    /// A job's log as text, for failure messages.
    func texts(_ job: JobSummary?) -> String {
        guard let job, let lines = try? h.store().logs(job: job.id) else { return "(no job)" }
        return lines.map { "[\($0.stream.rawValue)] \($0.text)" }.joined(separator: "\n")
    }

    func testAJobInAnImageSeesTheImageNotTheHostWritesTheWorkspaceAsItsOwnerAndItsExitCodeIsRecorded() throws {
        let (origin, address, clones) = try start("""
            stages: [host, container]
            jobs:
              host:
                stage: host
                run: test -e /etc/debian_version && echo on-the-host
              boxed:
                stage: container
                image: IMAGE
                env: {GREETING: "hello from env"}
                steps:
                  - name: start a service
                    run: (while true; do sleep 1; done) & echo $! > /tmp/service.pid
                  - name: look around
                    run: |
                      cat /etc/devci-image
                      test ! -e /etc/debian_version
                      kill -0 $(cat /tmp/service.pid)
                      echo "$GREETING in $(pwd)"
                      echo to-stderr >&2
                      echo made > made-in-container.txt
                      exit 3
            """, workspaceOwner: 12345)
        _ = clones
        let id = try dispatchHead(origin, address)
        let build = try h.waitForFinalBuild(id, timeout: 90)
        let byName = try jobs(id)
        let boxed = try XCTUnwrap(byName["boxed"]), host = try XCTUnwrap(byName["host"])
        XCTAssertEqual(boxed.status, .failed, texts(boxed))
        XCTAssertEqual(boxed.exitCode, 3)
        XCTAssertEqual(boxed.reason, "exit status 3")
        XCTAssertEqual(host.status, .success, texts(host))
        XCTAssertEqual(build.status, .failed)
        let lines = try log(boxed)
        XCTAssertTrue(lines.contains { $0.stream == .out && $0.text == "devci test image (busybox)" }, "\(lines.map(\.text))")
        XCTAssertTrue(lines.contains { $0.stream == .out && $0.text == "hello from env in /workspace" }, "\(lines.map(\.text))")
        XCTAssertTrue(lines.contains { $0.stream == .err && $0.text == "to-stderr" }, "\(lines.map(\.text))")
        XCTAssertFalse(lines.contains { $0.stream == .err && $0.text.contains("devci test image") })
        XCTAssertTrue(lines.contains { $0.stream == .system && $0.text == "step 2/2: look around" })
        XCTAssertTrue(lines.allSatisfy { $0.timestampMillis > 0 })
        XCTAssertTrue(try log(host).contains { $0.text == "on-the-host" })
        // The file the container wrote is in the runner's workspace, owned by the workspace's owner.
        let made = clones[0] + "/made-in-container.txt"
        XCTAssertEqual(try String(contentsOfFile: made, encoding: .utf8), "made\n")
        let owner = try FileManager.default.attributesOfItem(atPath: made)[.ownerAccountID] as? NSNumber
        XCTAssertEqual(owner?.intValue, 12345)
        XCTAssertEqual(try containers("devci.build=\(id)"), [])
    }

    func testOutOfMemoryNoNetworkAndAMissingImageEachEndTheirJobClearly() throws {
        // A server on the host's loopback: reachable from the host network, not from `network: none`.
        let server = try h.spawnProgram("http", "/usr/bin/env", ["python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        var port = 0
        try h.waitUntil("the HTTP server listens") {
            guard let line = h.log(of: server).split(separator: "\n").first(where: { $0.contains("port ") }),
                  let r = line.range(of: "port ") else { return false }
            port = Int(line[r.upperBound...].prefix { $0.isNumber }) ?? 0
            return port > 0
        }
        let (origin, address, _) = try start("""
            default:
              image: IMAGE
            jobs:
              hungry:
                memory: 8m
                run: dd if=/dev/zero of=/dev/null bs=32M count=1
              cut-off:
                network: none
                cpus: 0.5
                run: printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 \(port) | grep -q '200 OK'
              connected:
                network: host
                run: printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 \(port) | grep -q '200 OK' && echo reached
              missing:
                image: devci-test/not-imported:1
                run: "true"
            """, runners: 2)
        let id = try dispatchHead(origin, address)
        _ = try h.waitForFinalBuild(id, timeout: 90)
        let byName = try jobs(id)
        XCTAssertEqual(byName["hungry"]?.status, .failed)
        XCTAssertEqual(byName["hungry"]?.reason, "out of memory")
        XCTAssertEqual(byName["cut-off"]?.status, .failed, texts(byName["cut-off"]))
        XCTAssertTrue(texts(byName["cut-off"]).contains("can't connect"), texts(byName["cut-off"]))
        XCTAssertTrue(texts(byName["connected"]).contains("reached"), texts(byName["connected"]))
        XCTAssertEqual(byName["connected"]?.status, .success, texts(byName["connected"]))
        XCTAssertEqual(byName["missing"]?.status, .error)
        XCTAssertEqual(byName["missing"]?.reason, "image 'devci-test/not-imported:1' is not on the engine at \(engine): import or pull it")
        XCTAssertEqual(try containers("devci.build=\(id)"), [])
    }

    func testTimeoutCancelAndKill9OfTheRunnerLeaveNoContainerBehind() throws {
        let (origin, address, clones) = try start("""
            jobs:
              slow:
                image: IMAGE
                timeout: 2s
                run: echo started; sleep 60
            """)
        let timedOut = try dispatchHead(origin, address)
        XCTAssertEqual(try h.waitForFinalBuild(timedOut, timeout: 60).status, .timedOut)
        XCTAssertEqual(try containers("devci.build=\(timedOut)"), [])

        // A job that runs until stopped: kill -9 its runner, and the container outlives it...
        try commitPipeline("jobs:\n  forever:\n    image: IMAGE\n    run: echo started; sleep 600\n", to: origin)
        _ = try h.commit("exit 0", to: origin, message: "forever")
        let build = try dispatchHead(origin, address)
        try h.waitUntil("the job's container runs") { try !containers("devci.runner=r0").isEmpty }
        let runner = try XCTUnwrap(h.processes.first { $0.arguments?.contains("r0") == true && $0.arguments?.first == "runner" })
        kill(runner.processIdentifier, SIGKILL)
        runner.waitUntilExit()
        XCTAssertFalse(try containers("devci.runner=r0").isEmpty, "the container should outlive a runner killed with -9")
        // ...until a runner starts on that clone again: it removes the leftover, then takes the job back.
        try h.startRunner(clones[0], address, name: "r0b", extra: ["--docker-host", engine])
        try h.waitUntil("the leftover container is removed") { try containers("devci.runner=r0").isEmpty }
        try h.waitUntil("the job runs again in a new container", timeout: 60) { try !containers("devci.runner=r0b").isEmpty }
        // `devci cancel` ends that one too.
        let out = try h.run(["cancel", String(build), "--dispatcher-server", address.description])
        XCTAssertEqual(out.status, 0, out.output)
        XCTAssertEqual(try h.waitForFinalBuild(build).status, .cancelled)
        try h.waitUntil("the cancelled job's container is removed") { try containers("devci.build=\(build)").isEmpty }

        // SIGTERM: the runner gives the job back and removes its container before it exits.
        _ = try h.commit("exit 0", to: origin, message: "forever again")
        let third = try dispatchHead(origin, address)
        try h.waitUntil("the third build's container runs") { try !containers("devci.build=\(third)").isEmpty }
        let second = try XCTUnwrap(h.processes.last { $0.arguments?.contains("r0b") == true })
        kill(second.processIdentifier, SIGTERM)
        second.waitUntilExit()
        XCTAssertEqual(second.terminationStatus, 0, h.log(of: second))
        XCTAssertEqual(try containers("devci.build=\(third)"), [], "a container outlived its runner's SIGTERM")
    }

    func testARunnerThatLostItsLeaseWhileFrozenEndsItsContainerWhenItWakes() throws {
        let (origin, address, _) = try start("""
            jobs:
              forever:
                image: IMAGE
                run: echo started; sleep 600
            """, runners: 2)
        let build = try dispatchHead(origin, address)
        var first = ""
        try h.waitUntil("the job's container runs") {
            for name in ["r0", "r1"] where try !containers("devci.runner=\(name)").isEmpty { first = name }
            return !first.isEmpty
        }
        let other = first == "r0" ? "r1" : "r0"
        let frozen = try XCTUnwrap(h.processes.first { $0.arguments?.first == "runner" && $0.arguments?.contains(first) == true })
        kill(frozen.processIdentifier, SIGSTOP)
        // The lease expires, the job goes to the other runner...
        try h.waitUntil("the other runner runs the job", timeout: 60) { try !containers("devci.runner=\(other)").isEmpty }
        XCTAssertFalse(try containers("devci.runner=\(first)").isEmpty, "the frozen runner cannot have stopped its container")
        // ...and the frozen one, once it wakes and learns its lease is gone, stops and removes its container.
        kill(frozen.processIdentifier, SIGCONT)
        try h.waitUntil("the woken runner's container is removed", timeout: 30) { try containers("devci.runner=\(first)").isEmpty }
        XCTAssertEqual(try containers("devci.build=\(build)").count, 1)
        let out = try h.run(["cancel", String(build), "--dispatcher-server", address.description])
        XCTAssertEqual(out.status, 0, out.output)
        try h.waitUntil("the cancelled job's container is removed") { try containers("devci.build=\(build)").isEmpty }
    }

    func testArtifactsFlowThroughNeedsDownloadByteForByteAndACacheSurvivesToTheNextBuild() throws {
        let (origin, address, clones) = try start("""
            stages: [build, test]
            jobs:
              compile:
                stage: build
                image: IMAGE
                run: mkdir -p dist && head -c 300000 /dev/urandom > dist/app.bin && sha256sum dist/app.bin > dist/app.sha && echo log > build.log
                artifacts: [dist/, "*.log"]
              test:
                stage: test
                needs: [compile]
                run: sha256sum -c dist/app.sha && test -f build.log && echo verified
              deps:
                stage: build
                image: IMAGE
                cache: {key: "deps-{{ hash of requirements.txt }}", paths: [.venv]}
                run: if [ -f .venv/marker ]; then echo cache-hit; else echo cache-miss; mkdir -p .venv && echo x > .venv/marker; fi
            """, dispatcherExtra: ["--http-port", "0"])
        try "requests==2\n".write(toFile: origin + "/requirements.txt", atomically: true, encoding: .utf8)
        try h.git(["add", "requirements.txt"], in: origin)
        _ = try h.commit("exit 0", to: origin, message: "first")
        let first = try dispatchHead(origin, address)
        XCTAssertEqual(try h.waitForFinalBuild(first, timeout: 90).status, .success, "\((try? jobs(first))?.mapValues { "\($0.status) \($0.reason ?? "")" } ?? [:])")
        let byName = try jobs(first)
        XCTAssertTrue(try log(try XCTUnwrap(byName["test"])).contains { $0.text == "verified" })
        XCTAssertTrue(try log(try XCTUnwrap(byName["deps"])).contains { $0.text == "cache-miss" })

        // The kept file, from the dispatcher's folder, the CLI and the reporter, is the one the job made.
        let kept = h.dir.appendingPathComponent("devci-artifacts/builds/\(first)/compile/dist/app.bin").path
        let original = try XCTUnwrap(FileManager.default.contents(atPath: kept))
        XCTAssertEqual(original.count, 300_000)
        let out = h.dir.appendingPathComponent("downloaded").path
        let cli = try h.run(["artifacts", String(first), "--out", out, "--dispatcher-server", address.description])
        XCTAssertEqual(cli.status, 0, cli.output)
        XCTAssertEqual(FileManager.default.contents(atPath: out + "/compile/dist/app.bin"), original)
        XCTAssertEqual(FileManager.default.contents(atPath: out + "/compile/build.log"), Data("log\n".utf8))
        let reporter = try h.spawn("reporter", ["reporter", "--port", "0", "--db", h.dbPath])
        var base = ""
        try h.waitUntil("the reporter listens") {
            guard let line = h.log(of: reporter).split(separator: "\n").first(where: { $0.contains("http://127.0.0.1:") }),
                  let r = line.range(of: "http://127.0.0.1:") else { return false }
            base = "http://127.0.0.1:" + line[r.upperBound...].prefix { $0.isNumber }
            return true
        }
        let page = try String(decoding: XCTUnwrap(fetch(base + "/builds/\(first)").body), as: UTF8.self)
        XCTAssertTrue(page.contains("/builds/\(first)/artifacts/compile?path=dist/app.bin"), page)
        let download = try fetch(base + "/builds/\(first)/artifacts/compile?path=dist/app.bin")
        XCTAssertEqual(download.body, original)
        XCTAssertEqual(download.headers["Content-Disposition"], "attachment; filename=\"app.bin\"")
        XCTAssertEqual(try fetch(base + "/builds/\(first)/artifacts/compile?path=../../../devci.sqlite").status, 404)
        XCTAssertEqual(try fetch(base + "/builds/\(first)/artifacts/compile?path=/etc/passwd").status, 404)

        // The next build finds the cache, though the workspace's own copy is gone.
        try? FileManager.default.removeItem(atPath: clones[0] + "/.venv")
        XCTAssertFalse(FileManager.default.fileExists(atPath: clones[0] + "/.venv/marker"))
        _ = try h.commit("exit 0", to: origin, message: "second")
        let second = try dispatchHead(origin, address)
        XCTAssertEqual(try h.waitForFinalBuild(second, timeout: 90).status, .success)
        XCTAssertTrue(try log(try XCTUnwrap(try jobs(second)["deps"])).contains { $0.text == "cache-hit" })
    }

    func testAnArtifactOverTheLimitFailsTheJobWithTheReason() throws {
        let (origin, address, _) = try start("""
            jobs:
              big:
                run: head -c 2000000 /dev/zero > big.bin
                artifacts: {paths: [big.bin], when: always}
            """, dispatcherExtra: ["--artifact-limit", "1m"])
        let id = try dispatchHead(origin, address)
        XCTAssertEqual(try h.waitForFinalBuild(id, timeout: 60).status, .failed)
        let big = try XCTUnwrap(try jobs(id)["big"])
        XCTAssertEqual(big.reason, "artifacts not kept: the artifacts of job \(big.id) come to 1.9 MiB, over the limit of 1 MiB per job")
    }

    func testRunLocalRunsImageJobsTheSameWay() throws {
        let dir = h.dir.appendingPathComponent("local").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            jobs:
              boxed:
                image: \(image)
                run: cat /etc/devci-image; echo local > local.txt; exit 4
            """.write(toFile: dir + "/.devci.yml", atomically: true, encoding: .utf8)
        let out = try h.run(["run", "--local", dir + "/.devci.yml", "--docker-host", engine, "--reports", h.dir.appendingPathComponent("reports").path])
        XCTAssertEqual(out.status, 1, out.output)
        XCTAssertTrue(out.output.contains("devci test image (busybox)"), out.output)
        XCTAssertTrue(out.output.contains("boxed failed (exit status 4)"), out.output)
        XCTAssertEqual(try String(contentsOfFile: dir + "/local.txt", encoding: .utf8), "local\n")
    }

    /// A GET with its status, headers and body.
    func fetch(_ url: String) throws -> (status: Int, headers: [String: String], body: Data) {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: (Int, [String: String], Data) = (0, [:], Data())
        URLSession.shared.dataTask(with: URL(string: url)!) { data, response, _ in
            let http = response as? HTTPURLResponse
            var headers: [String: String] = [:]
            for (k, v) in http?.allHeaderFields ?? [:] { headers["\(k)"] = "\(v)" }
            result = (http?.statusCode ?? 0, headers, data ?? Data())
            done.signal()
        }.resume()
        done.wait()
        return result
    }
}
