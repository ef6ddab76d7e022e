import DevCIStore
import DevCIWire
import Foundation
import Hummingbird
import Logging

/// How the reporter is started.
public struct ReporterConfig: Sendable {
    public var host: String
    public var port: Int
    public var databasePath: String
    /// How many log lines of each job a build page shows; the rest is in the text download.
    public var logTail: Int
    public var pageSize: Int
    /// Who may see and do what (`--config`, `--auth`), followed as the folder changes.
    public var accessSource = AccessSource(fixed: AccessPolicy(mode: .publicRead, config: .empty))
    public var access: AccessPolicy { accessSource.current }
    public let signIns = SignInLimiter()
    public var sessionKeys = SessionKeys.random()
    /// Whether cookies are marked `Secure` (all but plain HTTP on loopback).
    public var secureCookies = false
    public let revoked = RevokedSessions()
    /// Where re-runs and cancels are asked for, and the token to ask with (the reporter never writes the database).
    public var dispatchers: [HostPort] = []
    public var token: String?
    /// Where the dispatcher keeps artifacts (`--artifacts`); nil: beside a SQLite database, `~/.devci/artifacts` for PostgreSQL.
    public var artifactsPath: String?

    public init(host: String = "127.0.0.1", port: Int = 5000, databasePath: String, logTail: Int = 200, pageSize: Int = 50) {
        self.host = host
        self.port = port
        self.databasePath = databasePath
        self.logTail = logTail
        self.pageSize = pageSize
    }
}

/// The web reporter: HTML for people, JSON for machines, SVG badges and charts, and live updates through
/// Server-Sent Events, all read from the database the dispatcher writes. It never writes.
public struct Reporter: Sendable {
    public let config: ReporterConfig
    let database: LazyStore
    /// Artifacts the dispatcher keeps.
    var artifactFolder: ArtifactFolder {
        if let path = config.artifactsPath { return ArtifactFolder(root: path) }
        return (try? StoreLocation.resolve(config.databasePath).defaultArtifacts()) ?? ArtifactFolder.beside(database: config.databasePath)
    }
    /// What a query value may hold unescaped.
    static let queryValue = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/")
    let logger: Logger
    /// Set once the reporter is shutting down.
    let stopping = OnceFlag()

    /// Never fails for want of a database: until the dispatcher has created it, every page says so (503).
    public init(config: ReporterConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        database = LazyStore(path: config.databasePath, logger: logger)
    }

    /// The read-only store, or `DatabaseUnavailable` (a 503 page) while there is none to read.
    var store: any BuildReader {
        get throws { try database.open() }
    }

    /// Serves until SIGINT or SIGTERM; `onListening` gets the bound port.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        // Live streams never end by themselves: on SIGINT/SIGTERM they are told to, so graceful shutdown can finish.
        let stopping = self.stopping
        let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stopping.set() }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "devci-reporter"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        try await app.runService()
    }

    static let statuses = BuildStatus.allCases.filter { $0 != .passedWithAllowedFailures }.map(\.rawValue)

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        // Outermost, so that error pages and the not-found page carry the headers too.
        router.middlewares.add(SecurityHeaders())
        router.middlewares.add(ErrorPages())
        router.middlewares.add(RequireSignIn(reporter: self))
        addAuthRoutes(router)
        addActionRoutes(router)
        router.get("/") { request, _ in try dashboard(request, json: wantsJSON(request)) }
        router.get("/api/builds") { request, _ in try dashboard(request, json: true) }
        router.get("/builds/:id") { request, context in try buildPage(try id(context), json: wantsJSON(request), request) }
        router.get("/api/builds/:id") { request, context in try buildPage(try id(context), json: true, request) }
        router.get("/builds/:id/events") { request, context in try buildEvents(try id(context), request) }
        router.get("/events") { request, _ in try dashboardEvents(request) }
        router.get("/jobs/:id/log.txt") { request, context in try logText(try id(context), request) }
        router.get("/builds/:id/artifacts/:job") { request, context in
            try artifact(try id(context), job: decoded(context, "job"), path: request.uri.queryParameters.get("path") ?? "", request)
        }
        router.get("/runners") { request, _ in try runnersPage(json: wantsJSON(request), request) }
        router.get("/api/runners") { request, _ in try runnersPage(json: true, request) }
        router.get("/repos/:name") { request, context in try repoPage(decoded(context, "name"), json: wantsJSON(request), request) }
        router.get("/api/repos/:name") { request, context in try repoPage(decoded(context, "name"), json: true, request) }
        router.get("/repos/:name/tests") { request, context in try testsPage(decoded(context, "name"), json: wantsJSON(request), request) }
        router.get("/repos/:name/flaky") { request, context in try flakyPage(decoded(context, "name"), json: wantsJSON(request), request) }
        router.get("/repos/:name/tests/history") { request, context in try testHistoryPage(decoded(context, "name"), json: wantsJSON(request), request) }
        router.get("/api/repos/:name/tests") { request, context in try testsPage(decoded(context, "name"), json: true, request) }
        router.get("/api/repos/:name/flaky") { request, context in try flakyPage(decoded(context, "name"), json: true, request) }
        router.get("/api/repos/:name/tests/history") { request, context in try testHistoryPage(decoded(context, "name"), json: true, request) }
        router.get("/badge/:repo/**") { request, context in
            try badge(decoded(context, "repo"), context.parameters.getCatchAll().map { $0.removingPercentEncoding ?? String($0) }.joined(separator: "/"), request)
        }
        router.get("/static/devci.css") { _, _ in asset(Assets.css, "text/css; charset=utf-8") }
        router.get("/static/devci.js") { _, _ in asset(Assets.js, "text/javascript; charset=utf-8") }
        return router
    }

    // MARK: Pages

    func dashboard(_ request: Request, json: Bool) throws -> Response {
        let q = request.uri.queryParameters
        let pageNumber = try positiveInt(q["page"].map(String.init), name: "page") ?? 1
        guard pageNumber <= 100_000 else { throw HTTPError(.badRequest, message: "page is too large") }
        let filter = visibleFilter(try buildFilter(request), request)
        var builds = try store.builds(filter, offset: (pageNumber - 1) * config.pageSize, limit: config.pageSize + 1)
        let hasOlder = builds.count > config.pageSize
        builds = try Array(builds.prefix(config.pageSize)).map { try redacted($0, request) }
        let summary = try store.summary()
        if json { return try jsonResponse(["summary": AnyEncodable(summary), "builds": AnyEncodable(builds), "page": AnyEncodable(pageNumber)]) }
        let rowsModel: [String: Any] = ["builds": builds.map(buildRow)]
        if q["fragment"] == "rows" { return html(Templates.render("rows", rowsModel)) }
        func link(_ p: Int) -> String { "/?" + query(filter, page: p) }
        let repos = try visibleRepositories(request).map { ["value": $0, "name": Self.repoName($0), "selected": $0 == filter.repo] as [String: Any] }
        let model: [String: Any] = [
            "builds": rowsModel["builds"]!, "repos": repos, "branch": filter.branch ?? "", "tag": filter.tag ?? "",
            "tasks": try store.tasks().filter { config.access.canSee(task: $0, viewer(request)) }.map { ["value": $0, "selected": $0 == filter.task] as [String: Any] },
            "statuses": Self.statuses.map { ["value": $0, "selected": $0 == filter.status] as [String: Any] },
            "page": pageNumber, "newer": pageNumber > 1 ? link(pageNumber - 1) : false, "older": hasOlder ? link(pageNumber + 1) : false,
            "fragmentURL": "/?" + query(filter, page: pageNumber) + "&fragment=rows",
            // What the live stream compares against: page 1 is what was just read; other pages look at page 1.
            "seen": (pageNumber == 1 ? DashboardSnapshot(summary: summary, builds: builds)
                                     : try DashboardSnapshot(store, filter, size: config.pageSize)).fingerprint,
        ]
        return page(title: "Builds", summary: summary, content: Templates.render("dashboard", model), request: request)
    }

    func buildPage(_ id: Int64, json: Bool, _ request: Request) throws -> Response {
        let build = try redacted(try ensureVisible(try store.build(id), id, request), request)
        let jobs = try store.jobs(build: id)
        let events = try store.events(build: id)
        let artifacts = Dictionary(grouping: artifactFolder.list(build: id), by: \.job)
        let tests = try store.tests(build: id)
        let bisection = try store.bisection(explaining: id)
        if json {
            return try jsonResponse(["build": AnyEncodable(build), "jobs": AnyEncodable(jobs), "events": AnyEncodable(events),
                                     "artifacts": AnyEncodable(artifacts.values.flatMap { $0 }.sorted { ($0.job, $0.path) < ($1.job, $1.path) }),
                                     "tests": AnyEncodable(tests), "bisection": AnyEncodable(bisection)])
        }
        let byJob = Dictionary(grouping: events, by: \.job)
        var stages: [(String, [[String: Any]])] = []
        for job in jobs {
            let (lines, more) = try tail(job.id)
            let history = (byJob[job.id] ?? []).filter { $0.reason != nil }
            let model: [String: Any] = [
                "id": job.id, "name": job.name, "status": job.status.display, "statusClass": job.status.rawValue,
                "allowFailure": job.allowFailure, "runner": job.runner ?? "–", "attempt": job.attempt,
                "started": Self.time(job.startedAt), "duration": Self.duration(job.startedAt, job.finishedAt), "reason": job.reason ?? "",
                "startedMillis": Self.epochMillis(job.startedAt).map(String.init) ?? "",
                "finishedMillis": Self.epochMillis(job.finishedAt).map(String.init) ?? "",
                "history": history.isEmpty ? false : ["events": history.map { e in
                    ["at": Self.time(e.at), "state": e.state.display, "runner": e.runner ?? false, "reason": e.reason ?? false] as [String: Any]
                }] as Any,
                "lines": lines.map { l in
                    ["stream": l.stream.rawValue, "time": Self.millis(l.timestampMillis), "text": l.text, "attempt": l.attempt,
                     "attemptTag": job.attempt > 1] as [String: Any]
                },
                "truncated": more, "shown": lines.count,
                "artifacts": (artifacts[job.name] ?? []).isEmpty ? false : ["files": (artifacts[job.name] ?? []).map { a in
                    ["path": a.path, "size": ByteSize.format(a.size),
                     "link": "/builds/\(id)/artifacts/\(a.job)?path=\(a.path.addingPercentEncoding(withAllowedCharacters: Self.queryValue) ?? "")"]
                }] as Any,
            ]
            if let i = stages.firstIndex(where: { $0.0 == job.stage }) { stages[i].1.append(model) } else { stages.append((job.stage, [model])) }
        }
        let model: [String: Any] = [
            "id": id, "status": build.displayStatus, "statusClass": statusClass(build), "repo": build.repo, "repoName": Self.repoName(build.repo),
            "repoPath": Self.pathEncoded(Self.repoName(build.repo)),
            "branch": build.branch, "commit": build.commit, "title": build.title.isEmpty ? false : build.title,
            "author": build.author.isEmpty ? false : build.author, "created": Self.time(build.createdAt), "started": Self.time(build.startedAt),
            "duration": Self.duration(build.startedAt, build.finishedAt),
            "what": build.runDescription, "hasRepo": !build.repo.isEmpty, "tags": build.tags.map { ["tag": $0] },
            "scheduled": build.scheduledAt.map { Self.time($0) } ?? false, "ended": build.finishedAt.map { Self.time($0) } ?? false,
            "runner": build.runner ?? false, "reason": build.reason ?? false,
            "ancestor": build.cause == .bisect ? false : build.upstream ?? false as Any,
            "bisects": build.cause == .bisect ? build.upstream ?? false as Any : false,
            "bisection": bisectionModel(bisection, builds: bisection == nil ? [] : build.descendants),
            "tests": testsModel(build, tests: tests, all: request.uri.queryParameters.get("tests") == "all"), "descendants": build.descendants.isEmpty || bisection != nil ? false : ["builds": build.descendants.map { ["id": $0] }] as Any,
            "startedMillis": Self.epochMillis(build.startedAt).map(String.init) ?? "",
            "finishedMillis": Self.epochMillis(build.finishedAt).map(String.init) ?? "",
            "stages": stages.map { ["name": $0.0, "jobs": $0.1] as [String: Any] },
            "after": try store.lastLogID(build: id),
            "actions": actionsModel(build, jobs: jobs, request) as Any,
        ]
        return page(title: "Build \(id)", summary: try store.summary(), content: Templates.render("build", model), request: request)
    }

    /// The last lines of a job's log, and whether there are more before them.
    func tail(_ job: Int64) throws -> ([LogRecord], Bool) {
        let lines = try store.logTail(job: job, limit: config.logTail + 1)
        return lines.count > config.logTail ? (Array(lines.suffix(config.logTail)), true) : (lines, false)
    }

    func runnersPage(json: Bool, _ request: Request) throws -> Response {
        var runners = try store.runners()
        // Jobs of runs this viewer may not see are left out, as everywhere.
        let hidden = Set(config.access.hiddenTasks(viewer(request)))
        if !hidden.isEmpty {
            var visible: [Int64: Bool] = [:]
            func shown(_ job: Int64) throws -> Bool {
                if let known = visible[job] { return known }
                let task = try store.job(job).flatMap { try store.build($0.build) }?.task
                let ok = task.map { !hidden.contains($0) } ?? true
                visible[job] = ok
                return ok
            }
            for i in runners.indices {
                runners[i].currentJobs = try runners[i].currentJobs.filter(shown)
                runners[i].lostRecently = try runners[i].lostRecently.filter(shown)
            }
        }
        if json { return try jsonResponse(["runners": AnyEncodable(runners)]) }
        let jobBuilds = try Dictionary(uniqueKeysWithValues: Set(runners.flatMap { $0.currentJobs + $0.lostRecently }).compactMap { id in
            try store.job(id).map { (id, $0.build) }
        })
        func links(_ ids: [Int64]) -> [[String: Any]] { ids.map { ["id": $0, "link": "/builds/\(jobBuilds[$0] ?? 0)#job-\($0)"] } }
        let model: [String: Any] = ["runners": runners.map { r in
            ["name": r.name, "state": r.state.rawValue, "stateClass": r.state.rawValue, "host": r.host ?? "–", "connectedAt": Self.time(r.connectedAt),
             "lastHeartbeat": Self.time(r.lastHeartbeat), "current": links(r.currentJobs), "jobsRun": r.jobsRun,
             "lost": links(r.lostRecently)] as [String: Any]
        }]
        return page(title: "Runners", summary: try store.summary(), content: Templates.render("runners", model), request: request)
    }

    func repoPage(_ name: String, json: Bool, _ request: Request) throws -> Response {
        guard let repo = try visibleRepositories(request).first(where: { Self.repoName($0) == name }) else {
            throw HTTPError(.notFound, message: "There is no repository named \(name).")
        }
        var filter = BuildFilter(repo: repo)
        filter.withoutBisections = true
        let builds = try store.builds(visibleFilter(filter, request), offset: 0, limit: 40).map { try redacted($0, request) }
        let finished = builds.filter { $0.status.isFinal }
        let passRate = Charts.passRate(builds)
        if json {
            return try jsonResponse(["repo": AnyEncodable(repo), "builds": AnyEncodable(builds), "passRate": AnyEncodable(passRate)])
        }
        let model: [String: Any] = [
            "name": name, "repo": repo, "branch": builds.first?.branch ?? "main", "passRate": passRate, "count": finished.count,
            "badgeURL": "/badge/\(Self.pathEncoded(name))/\(Self.pathEncoded(builds.first?.branch ?? "main")).svg",
            "svg": Charts.durations(builds.reversed()),
            "query": repo.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "",
            "namePath": Self.pathEncoded(name),
            "branchQuery": (builds.first?.branch ?? "main").addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "",
        ]
        return page(title: name, summary: try store.summary(), content: Templates.render("repo", model), request: request)
    }

    func badge(_ name: String, _ rest: String, _ request: Request) throws -> Response {
        guard rest.hasSuffix(".svg") else { throw HTTPError(.notFound, message: "Badges end in .svg.") }
        let branch = String(rest.dropLast(4))
        let store: any BuildReader
        do {
            store = try self.store
        } catch is DatabaseUnavailable {
            // A badge is an image in someone's README: while there is no database it says "unknown", not an HTML page.
            return badgeResponse(nil, status: .serviceUnavailable)
        }
        let repos = try store.repositories().filter { Self.repoName($0) == name }
        var latest: BuildSummary?
        for repo in repos {
            var filter = BuildFilter(repo: repo, branch: branch)
            filter.withoutBisections = true
            if let b = try store.builds(visibleFilter(filter, request), offset: 0, limit: 1).first, b.id > (latest?.id ?? 0) { latest = b }
        }
        return badgeResponse(latest, status: latest == nil ? .notFound : .ok)
    }

    func badgeResponse(_ latest: BuildSummary?, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "image/svg+xml", .cacheControl: "no-cache"],
                 body: .init(byteBuffer: ByteBuffer(string: Charts.badge(latest))))
    }

    /// One kept artifact, as a download: never a path outside the artifact folder, never shown inline.
    func artifact(_ build: Int64, job: String, path: String, _ request: Request) throws -> Response {
        _ = try ensureVisible(try store.build(build), build, request)
        guard let file = artifactFolder.file(build: build, job: job, path: path), let handle = FileHandle(forReadingAtPath: file) else {
            throw HTTPError(.notFound, message: "Build \(build) kept no artifact '\(path.prefix(200))' of job '\(job.prefix(64))'.")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.intValue ?? 0
        // A safe file name: the last part of the path, with anything but letters, digits, '.', '_' and '-' replaced.
        let name = String((path.split(separator: "/").last ?? "artifact").unicodeScalars.map {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0)) ? Character($0) : "_"
        })
        return Response(status: .ok, headers: [.contentType: "application/octet-stream", .contentDisposition: "attachment; filename=\"\(name)\"",
                                               .contentLength: String(size)],
                        body: .init { writer in
                            defer { try? handle.close() }
                            while let chunk = try handle.read(upToCount: 64 << 10), !chunk.isEmpty {
                                try await writer.write(ByteBuffer(data: chunk))
                            }
                            try await writer.finish(nil)
                        })
    }

    func logText(_ job: Int64, _ request: Request) throws -> Response {
        let store = try self.store
        guard let summary = try store.job(job), (try? ensureVisible(try store.build(summary.build), summary.build, request)) != nil else {
            throw HTTPError(.notFound, message: "There is no job \(job).")
        }
        // Streamed in batches: a 50 MB log is never held in memory at once.
        return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init { writer in
            var after: Int64 = 0
            while true {
                let batch = try store.logs(job: job, after: after, limit: 5000)
                guard let last = batch.last else { break }
                after = last.id ?? after
                var buffer = ByteBuffer()
                for l in batch {
                    buffer.writeString("\(Self.millis(l.timestampMillis)) [attempt \(l.attempt)] [\(l.stream.rawValue)] \(l.text)\n")
                }
                try await writer.write(buffer)
            }
            try await writer.finish(nil)
        })
    }
}
