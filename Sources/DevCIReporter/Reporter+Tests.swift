import DevCIStore
import DevCIWire
import Foundation
import Hummingbird

/// The test pages (issue 14): a build's tests, failures first; a repository's flaky tests; a branch's slowest
/// tests and those getting slower; one test's history. Every text from a report is escaped by the templates.
extension Reporter {
    /// Passing and skipped tests shown on a build page before "show all" (failed and flipped ones always are).
    static let passingShown = 0

    static func testStatusClass(_ s: TestResult.Status) -> String {
        switch s {
        case .passed: "success"
        case .failed: "failed"
        case .error: "error"
        case .skipped: "skipped"
        }
    }

    static func seconds(_ s: Double) -> String {
        s < 1 ? String(format: "%.0f ms", s * 1000) : s < 60 ? String(format: "%.2f s", s) : String(format: "%dm%02ds", Int(s) / 60, Int(s) % 60)
    }

    static func historyLink(repo: String, suite: String, name: String) -> String {
        let q = { (v: String) in v.addingPercentEncoding(withAllowedCharacters: Self.queryValue) ?? "" }
        return "/repos/\(pathEncoded(repoName(repo)))/tests/history?suite=\(q(suite))&name=\(q(name))"
    }

    /// The build page's tests section (false when the build has none) and the bisection box.
    func testsModel(_ build: BuildSummary, tests: [BuildTest], all: Bool) -> Any {
        guard !tests.isEmpty else { return false }
        let failed = tests.filter { $0.status.isFailure }
        let flipped = tests.filter(\.flippedHere).count
        let shownOthers = all ? Int.max : Self.passingShown
        var others = 0
        var rows: [[String: Any]] = []
        for t in tests {
            if !t.status.isFailure && !t.flippedHere {
                others += 1
                if others > shownOthers { continue }
            }
            rows.append(["status": t.status.rawValue, "statusClass": Self.testStatusClass(t.status), "flaky": t.knownFlaky, "fullName": t.fullName,
                         "history": Self.historyLink(repo: build.repo, suite: t.suite, name: t.name), "message": t.message ?? false,
                         "job": t.job, "attemptNote": t.flippedHere ? "failed on one attempt, passed on another" : false,
                         "duration": Self.seconds(t.duration)])
        }
        return [
            "failed": failed.count, "passed": tests.filter { $0.status == .passed }.count, "skipped": tests.filter { $0.status == .skipped }.count,
            "flipped": flipped == 0 ? false : flipped as Any,
            "onlyFlaky": tests.onlyKnownFlakyFailures, "repoPath": Self.pathEncoded(Self.repoName(build.repo)),
            "rows": rows, "more": others > shownOthers ? others - shownOthers : false as Any,
        ] as [String: Any]
    }

    func bisectionModel(_ b: BisectionRecord?, builds: [Int64]) -> Any {
        guard let b else { return false }
        let current = b.currentBuild
        return [
            "found": b.culprit.map { ["commit": $0, "title": b.culpritTitle.isEmpty ? false : b.culpritTitle, "author": b.culpritAuthor.isEmpty ? false : b.culpritAuthor] as [String: Any] } ?? false,
            "running": b.state == .running, "stopped": b.state == .stopped, "count": b.candidates.count, "good": b.goodBuild,
            "current": current ?? false as Any, "run": b.buildsRun, "max": BisectionRecord.maxBuilds(b.candidates.count),
            "reason": b.reason ?? "", "builds": builds.isEmpty ? false : ["list": builds.map { ["id": $0] }] as Any,
        ] as [String: Any]
    }

    func testsPage(_ name: String, json: Bool, _ request: Request) throws -> Response {
        let repo = try repository(named: name, request)
        let latest = try store.builds(visibleFilter(BuildFilter(repo: repo), request), offset: 0, limit: 1).first?.branch ?? "main"
        let branch = request.uri.queryParameters.get("branch").flatMap { $0.isEmpty ? nil : $0 } ?? latest
        guard Validate.isBranchName(branch) else { throw HTTPError(.badRequest, message: "That is not a branch name.") }
        let builds = 30
        let timings = try store.testTimings(repo: repo, branch: branch, builds: builds)
        let slower = timings.filter { $0.runs >= 4 && $0.slowdown >= 1.25 && $0.newerMean - $0.olderMean >= 0.02 }.sorted { $0.slowdown > $1.slowdown }
        if json {
            return try jsonResponse(["repo": AnyEncodable(repo), "branch": AnyEncodable(branch), "slowest": AnyEncodable(Array(timings.prefix(50))),
                                     "slower": AnyEncodable(Array(slower.prefix(50)))])
        }
        func link(_ t: TestTiming) -> String { Self.historyLink(repo: repo, suite: t.suite, name: t.name) }
        let model: [String: Any] = [
            "name": name, "namePath": Self.pathEncoded(name), "branch": branch, "builds": builds,
            "slowest": timings.prefix(30).map { ["fullName": $0.fullName, "history": link($0), "runs": $0.runs, "mean": Self.seconds($0.mean)] },
            "slower": slower.prefix(30).map { ["fullName": $0.fullName, "history": link($0), "runs": $0.runs, "older": Self.seconds($0.olderMean),
                                                "newer": Self.seconds($0.newerMean), "slowdown": String(format: "×%.2f", $0.slowdown)] },
        ]
        return page(title: "Tests of \(name)", summary: try store.summary(), content: Templates.render("tests", model), request: request)
    }

    func flakyPage(_ name: String, json: Bool, _ request: Request) throws -> Response {
        let repo = try repository(named: name, request)
        let flaky = try store.flakyTests(repo: repo)
        if json { return try jsonResponse(["repo": AnyEncodable(repo), "flaky": AnyEncodable(flaky)]) }
        let model: [String: Any] = [
            "name": name, "window": SQLStore.flakyWindowBuilds, "minRate": String(format: "%.0f%%", SQLStore.flakyFlipRate * 100), "minRuns": SQLStore.flakyMinRuns,
            "tests": flaky.map { t in
                ["fullName": t.fullName, "job": t.job, "history": Self.historyLink(repo: repo, suite: t.suite, name: t.name), "rate": String(format: "%.0f%%", t.flipRate * 100),
                 "runs": t.runs, "flips": t.flips.map { ["build": $0.build, "commit": String($0.commit.prefix(10))] }, "firstSeen": Self.time(t.firstSeen)] as [String: Any]
            },
        ]
        return page(title: "Flaky tests of \(name)", summary: try store.summary(), content: Templates.render("flaky", model), request: request)
    }

    func testHistoryPage(_ name: String, json: Bool, _ request: Request) throws -> Response {
        let repo = try repository(named: name, request)
        let suite = request.uri.queryParameters.get("suite") ?? "", test = request.uri.queryParameters.get("name") ?? ""
        guard !test.isEmpty, test.utf8.count <= TestResult.maxName, suite.utf8.count <= TestResult.maxName else {
            throw HTTPError(.badRequest, message: "Name the test: ?suite=…&name=….")
        }
        let runs = try store.testHistory(repo: repo, suite: suite, name: test, limit: 100)
        let flaky = try store.flakyTests(repo: repo, names: [test]).contains { $0.suite == suite && $0.name == test }
        if json { return try jsonResponse(["repo": AnyEncodable(repo), "suite": AnyEncodable(suite), "name": AnyEncodable(test), "knownFlaky": AnyEncodable(flaky), "runs": AnyEncodable(runs)]) }
        let model: [String: Any] = [
            "name": name, "namePath": Self.pathEncoded(name), "fullName": suite.isEmpty ? test : "\(suite)::\(test)", "count": runs.count, "flaky": flaky,
            "passed": runs.filter { $0.status == .passed }.count, "failed": runs.filter { $0.status.isFailure }.count,
            "skipped": runs.filter { $0.status == .skipped }.count,
            "runs": runs.map { r in
                ["status": r.status.rawValue, "statusClass": Self.testStatusClass(r.status), "build": r.build, "branch": r.branch, "commit": String(r.commit.prefix(10)),
                 "job": r.job, "attempt": r.attempt, "duration": Self.seconds(r.duration), "at": Self.time(r.at),
                 "message": r.status.isFailure ? (r.message ?? false) as Any : false] as [String: Any]
            },
        ]
        return page(title: "Test \(test)", summary: try store.summary(), content: Templates.render("testHistory", model), request: request)
    }

    /// A repository the viewer may see, by its short name.
    func repository(named name: String, _ request: Request) throws -> String {
        guard let repo = try visibleRepositories(request).first(where: { Self.repoName($0) == name }) else {
            throw HTTPError(.notFound, message: "There is no repository named \(name).")
        }
        return repo
    }
}
