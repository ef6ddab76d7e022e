import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 5: the reporter as a real process on loopback, reading a real SQLite file filled through the store.
final class ReporterTests: HarnessTestCase {
    @discardableResult
    func startReporter() throws -> Int {
        try startReporterProcess().port
    }

    func startReporterProcess() throws -> (process: Process, port: Int) {
        try h.startReporter()
    }

    func testTaskRunsShowTheirTaskAncestorDescendantsAndSkipReasonAndTheDashboardFiltersByTaskTagAndState() throws {
        let store = try h.writer()
        var job = NewJob(name: "t", queues: ["gpu"])
        job.startsQueued = true
        let up = try store.enqueueRun(NewRun(task: "test", cause: .hook, tags: ["ci"], title: "unit <b>tests</b>"), jobs: [NewJob(name: "t")], at: Date())
        try store.record(JobTransition(job: up.jobs[0].id, state: .running, attempt: 1, runner: "r1"))
        try store.record(JobTransition(job: up.jobs[0].id, state: .success, attempt: 1, runner: "r1", exitCode: 0))
        let down = try store.enqueueRun(NewRun(task: "deploy", cause: .upstream, upstream: up.build, tags: ["cd"]), jobs: [job], at: Date())
        let skipped = try store.recordSkipped(NewRun(task: "test", cause: .hook, tags: ["ci"]), reason: "skipped: <i>busy</i>", at: Date())
        let port = try startReporter()

        let downPage = try HTTP.get(port, "/builds/\(down.build)").body
        XCTAssertTrue(downPage.contains("task deploy #1 (upstream)"), downPage)
        XCTAssertTrue(downPage.contains("<a href=\"/builds/\(up.build)\">build \(up.build)</a>, whose success started this run"), downPage)
        XCTAssertTrue(downPage.contains("waiting for a runner on queue &#39;gpu&#39;") || downPage.contains("waiting for a runner on queue &apos;gpu&apos;")
                      || downPage.contains("waiting for a runner on queue 'gpu'"), downPage)
        let upPage = try HTTP.get(port, "/builds/\(up.build)").body
        XCTAssertTrue(upPage.contains("descendants: <a href=\"/builds/\(down.build)\">"), upPage)
        XCTAssertTrue(upPage.contains("unit &lt;b&gt;tests&lt;/b&gt;"), upPage)
        let skipPage = try HTTP.get(port, "/builds/\(skipped)").body
        XCTAssertTrue(skipPage.contains("skipped: &lt;i&gt;busy&lt;/i&gt;"), skipPage)

        func ids(_ query: String) throws -> [Int64] {
            let body = try HTTP.get(port, "/api/builds?" + query).body
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], body)
            return (json["builds"] as? [[String: Any]] ?? []).compactMap { ($0["id"] as? NSNumber)?.int64Value }
        }
        XCTAssertEqual(try ids("task=test"), [skipped, up.build])
        XCTAssertEqual(try ids("tag=cd"), [down.build])
        XCTAssertEqual(try ids("status=skipped"), [skipped])
        XCTAssertEqual(try ids("task=test&status=success"), [up.build])
        XCTAssertEqual(try HTTP.get(port, "/api/builds?task=a%20b").status, 400)
        let home = try HTTP.get(port, "/?task=deploy").body
        XCTAssertTrue(home.contains("<option selected>deploy</option>"), home)
    }

    /// A build with a hostile title and log, written through the store's own API.
    func fill(_ store: SQLStore, logLines: Int = 3) throws -> (build: Int64, jobs: [Int64]) {
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
        try store.recordRunner(name: "r1", state: .connected, host: "127.0.0.1", at: Date())
        return (r.build, ids)
    }

    func testPagesJSONBadgesAndEscaping() throws {
        let store = try h.writer()
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

    // The reporter on PostgreSQL: the same pages from the other store.

    func testTaskRunsAndTheDashboardFiltersOnPostgreSQL() throws {
        try h.usePostgres()
        try testTaskRunsShowTheirTaskAncestorDescendantsAndSkipReasonAndTheDashboardFiltersByTaskTagAndState()
    }

    func testPagesJSONBadgesAndEscapingOnPostgreSQL() throws {
        try h.usePostgres()
        try testPagesJSONBadgesAndEscaping()
    }

    func testTheDashboardCountsRetriesAndShowsTheRunnerThatChangedLastOnPostgreSQL() throws {
        try h.usePostgres()
        try testTheDashboardCountsRetriesAndShowsTheRunnerThatChangedLast()
    }

    func testARunningBuildsLogLinesArriveOverServerSentEventsOnPostgreSQL() throws {
        try h.usePostgres()
        try testARunningBuildsLogLinesArriveOverServerSentEvents()
    }

    func testALargeLogShowsItsTailAndDownloadsWhole() throws {
        let store = try h.writer()
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
        let store = try h.writer()
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

    func testADashboardOpenedAfterAChangeIsToldAtOnce() throws {
        // A real page: rendered, then a build changes, then the page's script opens the stream with what it saw.
        let store = try h.writer()
        _ = try fill(store)
        let (_, port) = try startReporterProcess()
        let page = try HTTP.get(port, "/?branch=dev").body
        let seen = try XCTUnwrap(page.range(of: "data-seen=\"").map { page[$0.upperBound...].prefix { $0 != "\"" } })
        _ = try store.enqueue(repo: "/srv/git/shop.git", branch: "dev", commit: String(repeating: "c", count: 40), jobs: [NewJob(name: "test")], at: Date())
        // Nothing changes after the stream opens, so only the page's stale fingerprint can bring this event.
        let opened = try HTTP.Stream(port, "/events?branch=dev&seen=\(seen)")
        try opened.wait(until: "event: changed", timeout: 10)
        XCTAssertTrue(try HTTP.get(port, "/?branch=dev&fragment=rows").body.contains(String(repeating: "c", count: 10)))
    }

    // MARK: Issue 8

    func testTheReporterWaitsForTheDatabaseAndServesItOnceItExists() throws {
        let (reporter, port) = try startReporterProcess()
        XCTAssertTrue(h.log(of: reporter).contains("no database at \(h.dbPath) yet: serving a waiting page until the dispatcher creates it"))
        let waiting = try HTTP.get(port, "/")
        XCTAssertEqual(waiting.status, 503)
        XCTAssertTrue(waiting.body.contains("waiting for the dispatcher to create the database at \(h.dbPath)"), waiting.body)
        XCTAssertTrue(waiting.body.contains("<meta http-equiv=\"refresh\""), "the waiting page reloads itself")
        let api = try HTTP.get(port, "/api/builds")
        XCTAssertEqual(api.status, 503)
        XCTAssertEqual(api.headers["content-type"], "application/json")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(api.body.utf8)) as? [String: Any])
        XCTAssertTrue((json["error"] as? String)?.contains("waiting for the dispatcher") ?? false, api.body)
        XCTAssertEqual(try HTTP.get(port, "/builds/1", accept: "application/json").headers["content-type"], "application/json")
        let badge = try HTTP.get(port, "/badge/shop/main.svg")
        XCTAssertEqual(badge.status, 503)
        XCTAssertEqual(badge.headers["content-type"], "image/svg+xml", "a badge stays an image")

        let store = try h.writer()
        let (build, _) = try fill(store)
        var home = waiting
        try h.waitUntil("the reporter serves the new database", timeout: 10) {
            home = try HTTP.get(port, "/")
            return home.status == 200
        }
        XCTAssertTrue(home.body.contains("/builds/\(build)\"") && home.body.contains("Fix &lt;script&gt;"), home.body)
        XCTAssertEqual(try HTTP.get(port, "/builds/\(build)").status, 200)
        XCTAssertTrue(reporter.isRunning, "served without a restart")
        XCTAssertEqual(h.log(of: reporter).components(separatedBy: "no database at").count - 1, 1, "said once")
    }

    func testADatabaseItCannotReadGetsAPageThatSaysWhy() throws {
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: h.dbPath))
        let (reporter, port) = try startReporterProcess()
        // Requests over more than one retry interval: each retries the open, the log says it once.
        let start = Date()
        var reply = try HTTP.get(port, "/")
        while Date().timeIntervalSince(start) < 0.6 { reply = try HTTP.get(port, "/runners") }
        XCTAssertEqual(reply.status, 503)
        XCTAssertTrue(reply.body.contains("cannot read the database at \(h.dbPath)"), reply.body)
        XCTAssertEqual(h.log(of: reporter).components(separatedBy: "cannot read the database at").count - 1, 1, h.log(of: reporter))
        XCTAssertTrue(reporter.isRunning)
    }

    func testRepositoryPagesAndBadgesDecodeTheirPath() throws {
        let store = try h.writer()
        let r = try store.enqueue(repo: "/srv/git/my repo.git", branch: "main", commit: String(repeating: "c", count: 40),
                                  jobs: [NewJob(name: "test")], at: Date())
        try store.record(JobTransition(job: r.jobs[0].id, state: .success, attempt: 1, runner: "r1", exitCode: 0))
        let port = try startReporter()
        let page = try HTTP.get(port, "/repos/my%20repo")
        XCTAssertEqual(page.status, 200, page.body)
        XCTAssertTrue(page.body.contains("<h1>my repo</h1>") && page.body.contains("src=\"/badge/my%20repo/main.svg\""), page.body)
        XCTAssertEqual(try HTTP.get(port, "/api/repos/my%20repo").status, 200)
        let badge = try HTTP.get(port, "/badge/my%20repo/main.svg")
        XCTAssertEqual(badge.status, 200)
        XCTAssertTrue(badge.body.contains("passing"), badge.body)
        XCTAssertTrue(try HTTP.get(port, "/").body.contains("href=\"/repos/my%20repo\""), "the dashboard links to it encoded")
        XCTAssertEqual(try HTTP.get(port, "/repos/my%20other").status, 404)
    }

    func testEveryResponseCarriesSecurityHeadersAndNoPageNeedsInlineCode() throws {
        let store = try h.writer()
        let (build, jobs) = try fill(store)
        let port = try startReporter()
        let policy = "default-src 'none'; script-src 'self'; style-src 'self'"
        for path in ["/", "/api/builds", "/builds/\(build)", "/api/builds/\(build)", "/runners", "/repos/shop", "/badge/shop/main.svg",
                     "/jobs/\(jobs[0])/log.txt", "/static/devci.js", "/static/devci.css", "/builds/999", "/nowhere", "/?page=0"] {
            let reply = try HTTP.get(port, path)
            XCTAssertEqual(reply.headers["x-content-type-options"], "nosniff", path)
            XCTAssertTrue(reply.headers["content-security-policy"]?.hasPrefix(policy) ?? false, "\(path): \(reply.headers)")
            if reply.headers["content-type"]?.hasPrefix("text/html") ?? false {
                XCTAssertFalse(reply.body.contains("<script>") || reply.body.contains(" style="), "\(path): inline code")
            }
        }
        let stream = try HTTP.Stream(port, "/builds/\(build)/events?after=0")
        try stream.wait(until: "retry: 1000", timeout: 10)
        XCTAssertTrue(stream.text.lowercased().contains("x-content-type-options: nosniff"), stream.text)
        XCTAssertTrue(stream.text.lowercased().contains("content-security-policy: default-src 'none'"), stream.text)
        let page = try HTTP.get(port, "/builds/\(build)").body
        XCTAssertTrue(page.contains("data-build=\"\(build)\""), "what the script needs is in data- attributes")
    }

    func testTheDashboardCountsRetriesAndShowsTheRunnerThatChangedLast() throws {
        let store = try h.writer()
        let once = try store.enqueue(repo: "/srv/git/shop.git", branch: "main", commit: String(repeating: "d", count: 40),
                                     jobs: (1...4).map { NewJob(name: "j\($0)") }, at: Date())
        for job in once.jobs { try store.record(JobTransition(job: job.id, state: .success, attempt: 1, runner: "r1", exitCode: 0)) }
        let retried = try store.enqueue(repo: "/srv/git/shop.git", branch: "main", commit: String(repeating: "e", count: 40),
                                        jobs: [NewJob(name: "first"), NewJob(name: "second")], at: Date())
        let (first, second) = (retried.jobs[0].id, retried.jobs[1].id)
        try store.record(JobTransition(job: second, state: .running, attempt: 1, runner: "r2"))
        try store.record(JobTransition(job: first, state: .queued, attempt: 1, runner: "r9", reason: "lease expired", reassignments: 1))
        try store.record(JobTransition(job: first, state: .queued, attempt: 2, reason: "retry 1 of 1", retriesUsed: 1))
        try store.record(JobTransition(job: first, state: .running, attempt: 3, runner: "r3"))
        let port = try startReporter()
        let api = try HTTP.get(port, "/api/builds")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(api.body.utf8)) as? [String: Any])
        let builds = try XCTUnwrap(json["builds"] as? [[String: Any]])
        let byID = Dictionary(uniqueKeysWithValues: builds.map { (HTTP.number($0["id"]) ?? 0, $0) })
        XCTAssertEqual(HTTP.number(byID[once.build]?["attempts"]), 1, "four jobs that ran once: one attempt, not four")
        XCTAssertEqual(HTTP.number(byID[retried.build]?["attempts"]), 3, "the first try, one reassignment and one retry")
        XCTAssertEqual(byID[retried.build]?["runner"] as? String, "r3", "the job that changed last, not the highest job id")
        XCTAssertTrue(try HTTP.get(port, "/").body.contains(">Attempts</th>"))
    }

    func testTheBuildStreamSendsAttemptsRunnersAndTimesOfJobs() throws {
        let store = try h.writer()
        let r = try store.enqueue(repo: "/srv/git/shop.git", branch: "main", commit: String(repeating: "f", count: 40),
                                  jobs: [NewJob(name: "test")], at: Date())
        let job = r.jobs[0].id
        let port = try startReporter()
        let stream = try HTTP.Stream(port, "/builds/\(r.build)/events?after=0")
        func jobEvent(_ condition: @escaping ([String: Any]) -> Bool) throws -> [String: Any] {
            try stream.wait(timeout: 10) { text in HTTP.events("job", in: text).contains { HTTP.number($0["id"]) == job && condition($0) } }
            return HTTP.events("job", in: stream.text).last { HTTP.number($0["id"]) == job && condition($0) }!
        }
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        let queued = try jobEvent { _ in true }
        XCTAssertTrue(queued["started"] is NSNull && queued["finished"] is NSNull && queued["runner"] is NSNull, "\(queued)")

        try store.record(JobTransition(job: job, state: .running, attempt: 1, runner: "r1", at: t0))
        let running = try jobEvent { $0["status"] as? String == "running" }
        XCTAssertEqual(HTTP.number(running["attempt"]), 1)
        XCTAssertEqual(running["runner"] as? String, "r1")
        XCTAssertEqual(HTTP.number(running["started"]), 1_700_000_000_000)

        try store.record(JobTransition(job: job, state: .queued, attempt: 1, runner: "r1", reason: "lease on attempt 1 expired",
                                       reassignments: 1, at: t0.addingTimeInterval(5)))
        try store.record(JobTransition(job: job, state: .running, attempt: 2, runner: "r2", at: t0.addingTimeInterval(6)))
        let second = try jobEvent { HTTP.number($0["attempt"]) == 2 && $0["status"] as? String == "running" }
        XCTAssertEqual(second["runner"] as? String, "r2")
        XCTAssertEqual(second["reason"] as? String, "lease on attempt 1 expired")

        try store.record(JobTransition(job: job, state: .success, attempt: 2, runner: "r2", exitCode: 0, at: t0.addingTimeInterval(30)))
        let done = try jobEvent { $0["status"] as? String == "success" }
        XCTAssertEqual(HTTP.number(done["finished"]), 1_700_000_030_000)
        try stream.wait(until: "event: end", timeout: 10)
        let build = try XCTUnwrap(HTTP.events("build", in: stream.text).last)
        XCTAssertEqual(build["status"] as? String, "success")
        XCTAssertEqual(HTTP.number(build["started"]), 1_700_000_000_000)
        XCTAssertEqual(HTTP.number(build["finished"]), 1_700_000_030_000)
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
        XCTAssertFalse(try h.build(build).map { $0.status.isFinal } ?? true, "seen while still running")
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

    static func send(_ fd: Int32, _ path: String, accept: String, method: String = "GET", headers: [String: String] = [:], body: String? = nil) {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: \(accept)\r\nConnection: close\r\n"
        for (k, v) in headers { request += "\(k): \(v)\r\n" }
        if let body { request += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + (body ?? "")
        _ = request.withCString { Glibc.send(fd, $0, strlen($0), 0) }
    }

    static func get(_ port: Int, _ path: String, accept: String = "text/html", headers: [String: String] = [:]) throws -> Reply {
        try request(port, "GET", path, accept: accept, headers: headers)
    }

    /// A POST of a urlencoded form.
    static func post(_ port: Int, _ path: String, form: [(String, String)], headers: [String: String] = [:]) throws -> Reply {
        let body = form.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
        return try request(port, "POST", path, accept: "text/html", headers: headers, body: body)
    }

    static func request(_ port: Int, _ method: String, _ path: String, accept: String, headers: [String: String] = [:], body: String? = nil) throws -> Reply {
        let fd = try connect(port)
        defer { close(fd) }
        send(fd, path, accept: accept, method: method, headers: headers, body: body)
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

    /// A JSON number as a whole number, however JSONSerialization typed it.
    static func number(_ value: Any?) -> Int64? {
        (value as? Int).map(Int64.init) ?? (value as? Int64) ?? (value as? NSNumber)?.int64Value
    }

    /// The data of every Server-Sent Event of this name in a stream's text, oldest first.
    static func events(_ name: String, in text: String) -> [[String: Any]] {
        // A chunk's "\r\n" is one Character in Swift and would hide its "\n": made plain first.
        text.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n")
            guard lines.contains("event: \(name)"), let data = lines.first(where: { $0.hasPrefix("data: ") })?.dropFirst(6) else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
        }
    }

    /// An open response read as it arrives.
    final class Stream {
        let fd: Int32
        private(set) var text = ""

        init(_ port: Int, _ path: String, headers: [String: String] = [:]) throws {
            fd = try HTTP.connect(port)
            var tv = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            HTTP.send(fd, path, accept: "text/event-stream", headers: headers)
        }

        deinit { close(fd) }

        func wait(until needle: String, timeout: TimeInterval) throws {
            try wait(timeout: timeout, what: "'\(needle)'") { $0.contains(needle) }
        }

        /// Reads until what arrived so far satisfies `condition`, or the deadline passes.
        func wait(timeout: TimeInterval, what: String = "the expected events", _ condition: (String) -> Bool) throws {
            let deadline = Date(timeIntervalSinceNow: timeout)
            var buf = [UInt8](repeating: 0, count: 65_536)
            while !condition(text) {
                guard Date() < deadline else { throw Failure("no \(what) within \(timeout) s; got:\n\(text.suffix(2000))") }
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 { text += String(decoding: buf[0..<n], as: UTF8.self) } else if n == 0 { throw Failure("stream closed; got:\n\(text)") }
            }
        }
    }
}
