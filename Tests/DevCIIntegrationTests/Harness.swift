import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Real processes on loopback, a real SQLite file and real git repositories, all in one temporary folder.
final class Harness {
    let dir: URL
    let binary: String
    /// The package's root folder (scripts and benchmarks live there).
    let root: URL
    private(set) var processes: [Process] = []
    private var logs: [ObjectIdentifier: URL] = [:]

    init(_ name: String) throws {
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("devci-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        dbPath = dir.appendingPathComponent("devci.sqlite").path
        // Tests/DevCIIntegrationTests/Harness.swift → the package root → .build/debug/devci
        root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        binary = ProcessInfo.processInfo.environment["DEVCI_BINARY"] ?? root.appendingPathComponent(".build/debug/devci").path
        // A missing binary is a failure, never a skip: CI must not pass by testing nothing.
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw Failure("no devci binary at \(binary): run `swift build --build-tests` first (or set DEVCI_BINARY)")
        }
    }

    /// The store every process of the harness uses (`--db`): a SQLite file in `dir`, or after `usePostgres()` a
    /// fresh database on the test run's PostgreSQL server.
    private(set) var dbPath: String = ""
    var onPostgres: Bool { PostgresAddress.isAddress(dbPath) }
    private var postgresReader: SQLStore?

    /// From now on the harness's processes use a new database on the PostgreSQL server `scripts/test.sh`
    /// started (`DEVCI_TEST_POSTGRES_URL`). Without one: a failure under CI, a skip elsewhere.
    func usePostgres() throws {
        guard let server = ProcessInfo.processInfo.environment["DEVCI_TEST_POSTGRES_URL"], !server.isEmpty else {
            if ProcessInfo.processInfo.environment["CI"] != nil { throw Failure("DEVCI_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh") }
            throw XCTSkip("no PostgreSQL server for this run (scripts/test.sh starts one)")
        }
        dbPath = try newPostgresDatabase(on: server)
    }

    /// A new, empty database on the server at `server`, as a `--db` address.
    func newPostgresDatabase(on server: String) throws -> String {
        let name = "h_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        return try PostgresAdmin.createDatabase(on: PostgresAddress(server), named: name).urlString
    }

    /// Whether there is a database to read yet.
    var databaseExists: Bool { onPostgres || FileManager.default.fileExists(atPath: dbPath) }

    /// What a dispatcher or reporter of this harness is given besides `--db`: on PostgreSQL its artifacts stay in `dir`.
    var storeArguments: [String] { onPostgres ? ["--artifacts", dir.appendingPathComponent("artifacts").path] : [] }

    func tearDown() {
        for p in processes where p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        if ProcessInfo.processInfo.environment["DEVCI_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(at: dir)
        }
    }

    // MARK: Git

    @discardableResult
    func git(_ args: [String], in path: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        p.arguments = ["-C", path] + args
        var env = ProcessInfo.processInfo.environment
        env["GIT_AUTHOR_NAME"] = "Test"; env["GIT_AUTHOR_EMAIL"] = "test@example.invalid"
        env["GIT_COMMITTER_NAME"] = "Test"; env["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw Failure("git \(args.joined(separator: " ")) failed in \(path)") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A repository whose `ci.sh` is the test command; returns its path.
    func makeOrigin() throws -> String {
        let path = dir.appendingPathComponent("origin").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try git(["init", "-q", "-b", "main"], in: path)
        return path
    }

    /// Commits a `ci.sh` with this body and returns the commit id.
    func commit(_ script: String, to repo: String, message: String = "change") throws -> String {
        try ("#!/bin/sh\n" + script + "\n").write(toFile: repo + "/ci.sh", atomically: true, encoding: .utf8)
        try git(["add", "ci.sh"], in: repo)
        try git(["commit", "-q", "--allow-empty", "-m", message], in: repo)
        return try git(["rev-parse", "HEAD"], in: repo)
    }

    func clone(_ origin: String, as name: String) throws -> String {
        let path = dir.appendingPathComponent(name).path
        try git(["clone", "-q", origin, path], in: dir.path)
        return path
    }

    // MARK: Processes

    @discardableResult
    func spawn(_ name: String, _ args: [String], environment: [String: String] = [:]) throws -> Process {
        try spawnProgram(name, binary, args, environment: environment)
    }

    func spawnProgram(_ name: String, _ program: String, _ args: [String], environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let log = dir.appendingPathComponent("\(name)-\(processes.count).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        processes.append(p)
        logs[ObjectIdentifier(p)] = log
        return p
    }

    /// Like `spawn`, as another user (for a database this process may read but not write, when tests run as root).
    func spawnAs(uid: Int, _ name: String, _ args: [String]) throws -> Process {
        try spawnProgram(name, "/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", binary] + args)
    }

    /// A Python script of the package (`bench/herd.py`), run to completion.
    func runScript(_ path: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = try spawnProgram("script", "/usr/bin/env", ["python3", root.appendingPathComponent(path).path] + args)
        p.waitUntilExit()
        return (p.terminationStatus, log(of: p))
    }

    /// A Python program given as text, left running (a peer that misbehaves on purpose).
    func spawnScript(_ name: String, _ code: String) throws -> Process {
        try spawnProgram(name, "/usr/bin/env", ["python3", "-u", "-c", code])
    }

    /// A plain TCP connection to a loopback port that says nothing; returns its descriptor.
    func rawConnect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard fd >= 0, rc == 0 else { throw Failure("cannot connect to port \(port): \(String(cString: strerror(errno)))") }
        return fd
    }

    /// Whether the peer has closed this socket (whatever it sent before is read and dropped).
    func isClosedByPeer(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { continue }
            if n == 0 { return true }
            return errno != EAGAIN && errno != EWOULDBLOCK
        }
    }

    func log(of p: Process) -> String {
        guard let url = logs[ObjectIdentifier(p)], let data = try? Data(contentsOf: url) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Starts a dispatcher (on a free port unless given) and waits for it to listen. Short leases keep tests quick.
    /// `db`: another database than the harness's own (a second dispatcher).
    func startDispatcher(port: Int = 0, db: String? = nil, extra: [String] = [], environment: [String: String] = [:]) throws -> (Process, HostPort) {
        let p = try spawn("dispatcher", ["dispatcher", "--port", String(port), "--db", db ?? dbPath,
                                         "--heartbeat", "300ms", "--lease", "1500ms"] + storeArguments + extra, environment: environment)
        var address: HostPort?
        try waitUntil("the dispatcher listens", timeout: 20) {
            guard p.isRunning else { throw Failure("the dispatcher exited:\n\(self.log(of: p))") }
            guard let line = self.log(of: p).split(separator: "\n").first(where: { $0.contains("listening on ") && $0.contains("(protocol") }),
                  let range = line.range(of: "listening on ") else { return false }
            address = HostPort(String(line[range.upperBound...].split(separator: " ")[0]))
            return address != nil
        }
        return (p, try XCTUnwrap(address))
    }

    /// Starts a reporter on a free port of this harness's database and waits for it to listen.
    func startReporter(extra: [String] = []) throws -> (process: Process, port: Int) {
        let p = try spawn("reporter", ["reporter", "--port", "0", "--db", dbPath] + storeArguments + extra)
        var port = 0
        try waitUntil("the reporter listens") {
            guard p.isRunning else { throw Failure("the reporter exited:\n\(self.log(of: p))") }
            guard let r = self.log(of: p).range(of: "listening on http://127.0.0.1:") else { return false }
            port = Int(self.log(of: p)[r.upperBound...].prefix { $0.isNumber }) ?? 0
            return port > 0
        }
        return (p, port)
    }

    /// A loopback port nobody listens on now (the kernel picks it; the socket is closed before it is used).
    func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw Failure("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    @discardableResult
    func startRunner(_ clone: String, _ address: HostPort, name: String, extra: [String] = []) throws -> Process {
        try spawn("runner-\(name)", ["runner", clone, "--dispatcher-server", address.description, "--name", name,
                                     "--test-command", "sh ci.sh"] + extra)
    }

    @discardableResult
    func startObserver(_ clones: [String], _ address: HostPort, extra: [String] = []) throws -> Process {
        try spawn("observer", ["observer"] + clones + ["--dispatcher-server", address.description, "--interval", "200ms"] + extra)
    }

    @discardableResult
    func startManager(_ clone: String, _ address: HostPort, count: Int, prefix: String = "m") throws -> Process {
        try spawn("runner-manager", ["runner-manager", clone, "--dispatcher-server", address.description, "--desired-count", String(count),
                                     "--work-dir", dir.appendingPathComponent("work").path, "--name-prefix", prefix,
                                     "--test-command", "sh ci.sh"])
    }

    /// Process ids whose full command line matches the extended regular expression.
    func pids(matching pattern: String) throws -> [Int32] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        p.arguments = ["-f", pattern]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
    }

    /// Every build of the database, oldest first.
    func builds() throws -> [BuildSummary] {
        // Until the dispatcher has created its tables there is nothing to read.
        guard databaseExists, let all = try? store().recentBuilds(limit: 100_000) else { return [] }
        return all.reversed()
    }

    func run(_ args: [String]) throws -> (status: Int32, output: String) {
        let p = try spawn("cli", args)
        p.waitUntilExit()
        return (p.terminationStatus, log(of: p))
    }

    // MARK: Waiting

    /// Polls `condition` until it holds or the deadline passes; never a bare sleep.
    func waitUntil(_ what: String, timeout: TimeInterval = 30, _ condition: () throws -> Bool) throws {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw Failure("timed out after \(timeout) s waiting until \(what)\n\(diagnostics())")
    }

    func diagnostics() -> String {
        processes.map { "--- \($0.arguments?.prefix(2).joined(separator: " ") ?? "") (pid \($0.processIdentifier))\n\(String(log(of: $0).suffix(3000)))" }
            .joined(separator: "\n")
    }

    // MARK: The database

    /// The harness's database (or another) opened for writing, as a dispatcher would (tests that fill it themselves).
    func writer(at location: String? = nil) throws -> SQLStore {
        let location = location ?? dbPath
        return PostgresAddress.isAddress(location) ? try SQLStore(postgres: PostgresAddress(location), readOnly: false) : try SQLStore(path: location)
    }

    /// From now on the harness's processes and reads use `location` (a file or a `postgres://` address).
    func use(database location: String) {
        dbPath = location
        postgresReader = nil
    }

    func store() throws -> SQLStore {
        guard onPostgres else { return try SQLStore(path: dbPath, readOnly: true) }
        // One reader for the harness: a PostgreSQL store is a pool of connections, not a file to reopen.
        if let postgresReader { return postgresReader }
        let reader = try SQLStore(postgres: PostgresAddress(dbPath), readOnly: true)
        postgresReader = reader
        return reader
    }

    func build(_ id: Int64) throws -> BuildSummary? {
        guard databaseExists else { return nil }
        return try store().recentBuilds(limit: 10_000).first { $0.id == id }
    }

    func waitForFinalBuild(_ id: Int64, timeout: TimeInterval = 30) throws -> BuildSummary {
        var result: BuildSummary?
        try waitUntil("build \(id) finishes", timeout: timeout) {
            result = try build(id)
            return result.map { $0.status.isFinal } ?? false
        }
        return result!
    }

    /// Final states recorded for a job: exactly one, always.
    func finalEvents(job: Int64) throws -> [JobEvent] {
        try store().events(job: job).filter { $0.state.isFinal }
    }

    func dispatch(_ commit: String, repo: String, to address: HostPort, pipeline: PipelineText = .none) throws -> (build: Int64, job: Int64) {
        let client = try WireClient(address: address, token: nil)
        defer { client.close() }
        guard case .queued(let build, let jobs, _) = try client.request(.dispatch(repo: repo, commit: commit, branch: "main", pipeline: pipeline)) else {
            throw Failure("dispatch refused")
        }
        return (build, jobs[0])
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A test case with a fresh `Harness` (temporary folder, processes it starts) for each test, torn down after it.
class HarnessTestCase: XCTestCase {
    var h: Harness!

    override func setUpWithError() throws {
        h = try Harness(name)
    }

    override func tearDown() {
        h?.tearDown()
    }
}
