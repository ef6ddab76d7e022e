import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 5: the reporter as a real process on loopback, reading a real SQLite file filled through the store.
final class ReporterTests: XCTestCase {
    var h: Harness!

    override func setUpWithError() throws {
        h = try Harness(name)
    }

    override func tearDown() {
        h?.tearDown()
    }

    @discardableResult
    func startReporter() throws -> Int {
        try startReporterProcess().port
    }

    func startReporterProcess() throws -> (process: Process, port: Int) {
        let p = try h.spawn("reporter", ["reporter", "--port", "0", "--db", h.dbPath])
        var port = 0
        try h.waitUntil("the reporter listens") {
            guard p.isRunning else { throw Failure("the reporter exited:\n\(h.log(of: p))") }
            guard let r = h.log(of: p).range(of: "listening on http://127.0.0.1:") else { return false }
            port = Int(h.log(of: p)[r.upperBound...].prefix { $0.isNumber }) ?? 0
            return port > 0
        }
        return (p, port)
    }

    /// A build with a hostile title and log, written through the store's own API.
    func fill(_ store: SQLiteStore, logLines: Int = 3) throws -> (build: Int64, jobs: [Int64]) {
        let r = try store.enqueue(repo: "/srv/git/shop.git", branch: "main", commit: String(repeating: "a", count: 40),
                                  jobs: [NewJob(name: "compile", stage: "build"),
                                         NewJob(name: "unit", stage: "test", dependencies: ["compile"]),
                                         NewJob(name: "lint", stage: "test", dependencies: ["compile"], allowFailure: true)], at: Date())
        try store.describe(build: r.build, title: "Fix <script>alert(1)</script>", author: "Mallory <m@x>")
        let ids = r.jobs.map(\.id)
        try store.record(JobTransition(job: ids[0], state: .running, attempt: 1, runner: "r1"))
        try store.appendLogs((0..<logLines).map { LogRecord(job: ids[0], attempt: 1, stream: $0 % 2 == 0 ? .out : .err,
                                                               timestampMillis: 1_700_000_000_000 + Int64($0), text: "line \($0) <b>bold</b>") })
        try store.record(JobTransition(job: ids[0], state: .success, attempt: 1, runner: "r1", exitCode: 0))
        try store.record(JobTransition(job: ids[1], state: .queued, attempt: 1, runner: "r1",
                                       reason: "runner r1 stopped heartbeating: lease on attempt 1 expired; requeued (reassignment 1 of 3)",
                                       reassignments: 1))
        try store.record(JobTransition(job: ids[1], state: .failed, attempt: 2, runner: "r2", reason: "exit status 1", exitCode: 1))
        try store.record(JobTransition(job: ids[2], state: .failed, attempt: 1, runner: "r2", exitCode: 1))
        try store.recordRunner(name: "r1", state: "connected", host: "127.0.0.1", at: Date())
        return (r.build, ids)
    }

    func testPagesJSONBadgesAndEscaping() throws {
        let store = try SQLiteStore(path: h.dbPath)
        let (build, jobs) = try fill(store)
        let port = try startReporter()
        let home = try HTTP.get(port, "/")
        XCTAssertEqual(home.status, 200)
        XCTAssertTrue(home.body.contains("Fix &lt;script&gt;alert(1)&lt;/script&gt;"), home.body)
        XCTAssertFalse(home.body.contains("<script>alert"))
        XCTAssertTrue(home.body.contains("failed"))
        XCTAssertTrue(home.body.contains("runner(s) connected"))
        let page = try HTTP.get(port, "/builds/\(build)")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.body.contains("line 2 &lt;b&gt;bold&lt;/b&gt;"))
        XCTAssertTrue(page.body.contains("class=\"l err\""), "stderr is told apart")
        XCTAssertTrue(page.body.contains("lease on attempt 1 expired"), "why a job was reassigned")
        XCTAssertTrue(page.body.contains("<h2>build</h2>") && page.body.contains("<h2>test</h2>"), "grouped by stage")
        let api = try HTTP.get(port, "/api/builds/\(build)")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(api.body.utf8)) as? [String: Any])
        XCTAssertEqual((json["jobs"] as? [[String: Any]])?.count, 3)
        XCTAssertEqual(try HTTP.get(port, "/", accept: "application/json").headers["content-type"], "application/json")
        let log = try HTTP.get(port, "/jobs/\(jobs[0])/log.txt")
        XCTAssertEqual(log.body.split(separator: "\n").count, 3)
        XCTAssertTrue(log.body.contains("[err] line 1 <b>bold</b>"), "plain text, as it was")
        let badge = try HTTP.get(port, "/badge/shop/main.svg")
        XCTAssertEqual(badge.headers["content-type"], "image/svg+xml")
        XCTAssertTrue(badge.body.contains("failing"))
        XCTAssertEqual(try HTTP.get(port, "/badge/shop/nope.svg").status, 404)
        let repo = try HTTP.get(port, "/repos/shop")
        XCTAssertTrue(repo.body.contains("<svg") && repo.body.contains("pass rate 0%"), repo.body)
        let runners = try HTTP.get(port, "/runners")
        XCTAssertTrue(runners.body.contains("r1") && runners.body.contains("127.0.0.1"))
        XCTAssertEqual(try HTTP.get(port, "/builds/999").status, 404)
        XCTAssertEqual(try HTTP.get(port, "/builds/abc").status, 404)
        XCTAssertEqual(try HTTP.get(port, "/jobs/999/log.txt").status, 404)
        XCTAssertEqual(try HTTP.get(port, "/?page=0").status, 400)
        XCTAssertEqual(try HTTP.get(port, "/?page=x").status, 400)
        XCTAssertEqual(try HTTP.get(port, "/?status=%3Cscript%3E").status, 400)
        XCTAssertEqual(try HTTP.get(port, "/static/../../etc/passwd").status, 404)
        XCTAssertEqual(try HTTP.get(port, "/static/devci.css").status, 200)
        XCTAssertEqual(try HTTP.get(port, "/?status=failed").status, 200)
    }

    func testALargeLogShowsItsTailAndDownloadsWhole() throws {
        let store = try SQLiteStore(path: h.dbPath)
        let (build, jobs) = try fill(store, logLines: 60_000)
        let port = try startReporter()
        let page = try HTTP.get(port, "/builds/\(build)")
        XCTAssertTrue(page.body.contains("Showing the last 200 lines"))
        XCTAssertTrue(page.body.contains("line 59999 "))
        XCTAssertFalse(page.body.contains("line 59799 "))
        XCTAssertLessThan(page.body.utf8.count, 200_000)
        XCTAssertEqual(try HTTP.get(port, "/jobs/\(jobs[0])/log.txt").body.split(separator: "\n").count, 60_000)
    }

    func testTheDashboardStreamSaysWhenBuildsChangeAndShutdownEndsIt() throws {
        let store = try SQLiteStore(path: h.dbPath)
        _ = try fill(store)
        let (reporter, port) = try startReporterProcess()
        let stream = try HTTP.Stream(port, "/events")
        try stream.wait(until: "retry: 1000", timeout: 10)
        _ = try store.enqueue(repo: "/srv/git/shop.git", branch: "dev", commit: String(repeating: "b", count: 40), jobs: [NewJob(name: "test")], at: Date())
        try stream.wait(until: "event: changed", timeout: 10)
        let rows = try HTTP.get(port, "/?fragment=rows")
        XCTAssertTrue(rows.body.hasPrefix("<tr>") && rows.body.contains("dev"), "the rows the page swaps in")
        kill(reporter.processIdentifier, SIGTERM)
        try h.waitUntil("the reporter exits despite the open stream", timeout: 10) { !reporter.isRunning }
        XCTAssertEqual(reporter.terminationStatus, 0)
    }

    func testARunningBuildsLogLinesArriveOverServerSentEvents() throws {
        let origin = try h.makeOrigin()
        let sha = try h.commit("for i in 1 2 3 4 5 6; do echo \"tick $i\"; sleep 0.5; done", to: origin)
        let (_, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone"), address, name: "r")
        let port = try startReporter()
        let (build, _) = try h.dispatch(sha, repo: origin, to: address)
        let stream = try HTTP.Stream(port, "/builds/\(build)/events?after=0")
        try stream.wait(until: "\"text\":\"tick 2\"", timeout: 20)
        XCTAssertFalse(try h.build(build).map { JobState(rawValue: $0.status)?.isFinal ?? false } ?? true, "seen while still running")
        try stream.wait(until: "event: end", timeout: 30)
        XCTAssertTrue(stream.text.contains("\"status\":\"success\""))
    }
}

/// A minimal HTTP/1.1 client over a socket: enough to test the reporter without any framework.
enum HTTP {
    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    static func connect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: in_port_t(UInt16(port).bigEndian),
                               sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { close(fd); throw Failure("cannot connect to 127.0.0.1:\(port)") }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func send(_ fd: Int32, _ path: String, accept: String) {
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: \(accept)\r\nConnection: close\r\n\r\n"
        _ = request.withCString { Glibc.send(fd, $0, strlen($0), 0) }
    }

    static func get(_ port: Int, _ path: String, accept: String = "text/html") throws -> Reply {
        let fd = try connect(port)
        defer { close(fd) }
        send(fd, path, accept: accept)
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            data += buf[0..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw Failure("no HTTP reply for \(path)") }
        let head = text[..<split.lowerBound].split(separator: "\r\n")
        let status = Int(head.first?.split(separator: " ")[1] ?? "") ?? 0
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            if let c = line.firstIndex(of: ":") { headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces) }
        }
        var body = String(text[split.upperBound...])
        if headers["transfer-encoding"] == "chunked" { body = dechunk(body) }
        return Reply(status: status, headers: headers, body: body)
    }

    static func dechunk(_ s: String) -> String {
        var out = [UInt8](), bytes = Array(s.utf8), i = 0
        while i < bytes.count {
            guard let lineEnd = (i..<bytes.count - 1).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }),
                  let size = Int(String(decoding: bytes[i..<lineEnd], as: UTF8.self), radix: 16), size > 0 else { break }
            out += bytes[(lineEnd + 2)..<min(bytes.count, lineEnd + 2 + size)]
            i = lineEnd + 2 + size + 2
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// An open response read as it arrives.
    final class Stream {
        let fd: Int32
        private(set) var text = ""

        init(_ port: Int, _ path: String) throws {
            fd = try HTTP.connect(port)
            var tv = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            HTTP.send(fd, path, accept: "text/event-stream")
        }

        deinit { close(fd) }

        func wait(until needle: String, timeout: TimeInterval) throws {
            let deadline = Date(timeIntervalSinceNow: timeout)
            var buf = [UInt8](repeating: 0, count: 65_536)
            while !text.contains(needle) {
                guard Date() < deadline else { throw Failure("no '\(needle)' within \(timeout) s; got:\n\(text.suffix(2000))") }
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 { text += String(decoding: buf[0..<n], as: UTF8.self) } else if n == 0 { throw Failure("stream closed; got:\n\(text)") }
            }
        }
    }
}
