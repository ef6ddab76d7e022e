import DevCIWire
import Foundation

/// One test's result in a build: the last attempt that reported it, and whether its attempts disagreed.
public struct BuildTest: Codable, Sendable, Equatable {
    public var job: String
    public var suite: String
    public var name: String
    public var status: TestResult.Status
    public var duration: Double
    public var message: String?
    public var attempt: Int
    /// It both passed and failed among this build's attempts (a retry or a reassignment).
    public var flippedHere: Bool
    /// Known flaky in its repository (filled in by `tests(build:)`).
    public var knownFlaky = false

    public init(job: String, suite: String, name: String, status: TestResult.Status, duration: Double, message: String?, attempt: Int,
                flippedHere: Bool, knownFlaky: Bool = false) {
        self.job = job
        self.suite = suite
        self.name = name
        self.status = status
        self.duration = duration
        self.message = message
        self.attempt = attempt
        self.flippedHere = flippedHere
        self.knownFlaky = knownFlaky
    }

    public var fullName: String { suite.isEmpty ? name : "\(suite)::\(name)" }
}

extension Array where Element == BuildTest {
    /// Some test failed, and every one that failed is known flaky: the failure may not be the change's.
    public var onlyKnownFlakyFailures: Bool {
        let failed = filter { $0.status.isFailure }
        return !failed.isEmpty && failed.allSatisfy(\.knownFlaky)
    }
}

/// A flaky test of a repository: it both passed and failed on one commit, or flips often in its recent runs.
public struct FlakyTest: Codable, Sendable, Equatable {
    public struct Flip: Codable, Sendable, Equatable {
        public var commit: String
        public var build: Int64
        public var at: Date
    }

    /// The job it runs in.
    public var job: String
    public var suite: String
    public var name: String
    /// Status changes between consecutive runs, over its recent runs less one.
    public var flipRate: Double
    public var runs: Int
    /// Commits on which it both passed and failed, newest first (at most five).
    public var flips: [Flip]
    /// When it was first seen flaky: its earliest flip, or its earliest recent run that flipped.
    public var firstSeen: Date

    public var fullName: String { suite.isEmpty ? name : "\(suite)::\(name)" }
}

/// One run of a test, for its history page.
public struct TestRun: Codable, Sendable, Equatable {
    public var build: Int64
    public var commit: String
    public var branch: String
    public var job: String
    public var attempt: Int
    public var status: TestResult.Status
    public var duration: Double
    public var message: String?
    public var at: Date
}

/// A test's durations on a branch: for the slowest tests and the tests getting slower.
public struct TestTiming: Codable, Sendable, Equatable {
    public var suite: String
    public var name: String
    public var runs: Int
    /// Mean seconds over its recent passing runs, and over their older and newer halves.
    public var mean: Double
    public var olderMean: Double
    public var newerMean: Double

    public var fullName: String { suite.isEmpty ? name : "\(suite)::\(name)" }
    /// How much slower the newer half is than the older (1.0: the same).
    public var slowdown: Double { olderMean > 0 ? newerMean / olderMean : 1 }
}

/// A commit that was not built when it came (the observer's backlog cap), kept for bisection.
public struct UntestedRecord: Sendable, Equatable {
    public var commit: String
    public var title: String
    public var author: String
    public var pipeline: PipelineText
}

/// A bisection of a branch that went from green to red over commits that were not built.
public struct BisectionRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable { case running, found, stopped }

    public var id: Int64
    public var repo: String
    public var branch: String
    /// The red build it explains, and the green one before it.
    public var badBuild: Int64
    public var goodBuild: Int64
    /// The untested commits between them, oldest first.
    public var candidates: [String]
    /// Indexes into `candidates`: the newest known good (-1: the green build's commit) and the oldest known bad
    /// (`candidates.count`: the red build's commit).
    public var good: Int
    public var bad: Int
    /// The bisection build under way, if any.
    public var currentBuild: Int64?
    public var state: State
    public var culprit: String?
    public var culpritTitle: String
    public var culpritAuthor: String
    /// Why it stopped, or what it found, for people.
    public var reason: String?
    public var buildsRun: Int
    /// Older untested commits than `candidates[0]` were not kept: a first bad `candidates[0]` may not be the first.
    public var truncated = false

    /// The most builds a bisection of `n` untested commits runs: ⌈log2(n+1)⌉.
    public static func maxBuilds(_ n: Int) -> Int {
        var builds = 0, span = n + 1
        while span > 1 { span = (span + 1) / 2; builds += 1 }
        return builds
    }

    public init(id: Int64 = 0, repo: String, branch: String, badBuild: Int64, goodBuild: Int64, candidates: [String], good: Int = -1, bad: Int? = nil,
                currentBuild: Int64? = nil, state: State = .running, culprit: String? = nil, culpritTitle: String = "", culpritAuthor: String = "",
                reason: String? = nil, buildsRun: Int = 0, truncated: Bool = false) {
        self.truncated = truncated
        self.id = id
        self.repo = repo
        self.branch = branch
        self.badBuild = badBuild
        self.goodBuild = goodBuild
        self.candidates = candidates
        self.good = good
        self.bad = bad ?? candidates.count
        self.currentBuild = currentBuild
        self.state = state
        self.culprit = culprit
        self.culpritTitle = culpritTitle
        self.culpritAuthor = culpritAuthor
        self.reason = reason
        self.buildsRun = buildsRun
    }
}

extension SQLStore {
    /// Migration v8, in either dialect: per-attempt test results, the commits left unbuilt, and bisections.
    static func testsSchema(_ dialect: SQLDialect) -> [String] {
        let id = dialect == .sqlite ? "INTEGER PRIMARY KEY AUTOINCREMENT" : "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        let int = dialect == .sqlite ? "INTEGER" : "bigint", real = dialect == .sqlite ? "REAL" : "double precision"
        return [
            """
            CREATE TABLE test_results(
                id \(id), build_id \(int) NOT NULL, job_id \(int) NOT NULL, attempt \(int) NOT NULL,
                suite text NOT NULL, name text NOT NULL, status text NOT NULL, duration \(real) NOT NULL, message text)
            """,
            "CREATE INDEX test_results_build ON test_results(build_id, job_id)",
            "CREATE INDEX test_results_test ON test_results(name, suite, id)",
            """
            CREATE TABLE untested_commits(
                id \(id), repo text NOT NULL, branch text NOT NULL, commit_id text NOT NULL, before_commit text NOT NULL,
                title text NOT NULL DEFAULT '', author text NOT NULL DEFAULT '', pipeline text, pipeline_error text, created_at \(real) NOT NULL,
                cut \(int) NOT NULL DEFAULT 0)
            """,
            "CREATE UNIQUE INDEX untested_commit ON untested_commits(repo, branch, commit_id)",
            "CREATE INDEX untested_before ON untested_commits(repo, branch, before_commit, id)",
            """
            CREATE TABLE bisections(
                id \(id), repo text NOT NULL, branch text NOT NULL, bad_build \(int) NOT NULL, good_build \(int) NOT NULL,
                candidates text NOT NULL, good \(int) NOT NULL, bad \(int) NOT NULL, current_build \(int), state text NOT NULL,
                culprit text, culprit_title text NOT NULL DEFAULT '', culprit_author text NOT NULL DEFAULT '', reason text,
                builds_run \(int) NOT NULL DEFAULT 0, created_at \(real) NOT NULL, finished_at \(real), truncated \(int) NOT NULL DEFAULT 0)
            """,
            "CREATE UNIQUE INDEX bisections_bad ON bisections(bad_build)",
            "CREATE INDEX bisections_running ON bisections(state) WHERE state = 'running'",
        ]
    }

    // MARK: Writing (the dispatcher)

    public func appendTestResults(build: Int64, job: Int64, attempt: Int, _ results: [TestResult]) throws {
        guard !results.isEmpty else { return }
        try write { db in
            try db.sendRows(into: "test_results", columns: ["build_id", "job_id", "attempt", "suite", "name", "status", "duration", "message"],
                            results.map { r in
                                [build, job, attempt, LogText.escapingNUL(r.suite), LogText.escapingNUL(r.name), r.status.rawValue, r.duration,
                                 r.message.map(LogText.escapingNUL) as String?]
                            }, perStatement: 200)
        }
    }

    /// Keeps a commit the observer left unbuilt; the same commit sent again (a later poll, after a dispatch
    /// that failed) takes the newer `before`.
    public func noteUntested(_ u: UntestedCommit, at: Date) throws {
        let (text, error): (String?, String?) = switch u.pipeline {
        case .none: (nil, nil)
        case .text(let t): (LogText.escapingNUL(t), nil)
        case .unreadable(let why): (nil, LogText.escapingNUL(why))
        }
        _ = try write { db in
            try db.execute("""
                INSERT INTO untested_commits(repo, branch, commit_id, before_commit, title, author, pipeline, pipeline_error, created_at, cut)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (repo, branch, commit_id) DO UPDATE SET before_commit = excluded.before_commit, cut = excluded.cut
                """, [u.repo, u.branch, u.commit, u.before, LogText.escapingNUL(u.title), LogText.escapingNUL(u.author), text, error,
                      at.timeIntervalSince1970, u.cut])
        }
    }

    /// The untested commits that came before `before` on a branch, oldest first, and whether older ones were
    /// left out (the observer keeps the newest 1,000).
    public func untested(repo: String, branch: String, before: String) throws -> (commits: [String], cut: Bool) {
        let rows = try read { db in
            try db.rows("SELECT commit_id, cut FROM untested_commits WHERE repo = ? AND branch = ? AND before_commit = ? ORDER BY id",
                        [repo, branch, before])
        }
        return (rows.map { $0["commit_id"] }, rows.contains { $0["cut"] as Bool })
    }

    public func untestedCommit(repo: String, branch: String, commit: String) throws -> UntestedRecord? {
        try read { db in
            try db.rows("SELECT * FROM untested_commits WHERE repo = ? AND branch = ? AND commit_id = ?", [repo, branch, commit]).first.map { r in
                let text: String? = r["pipeline"], error: String? = r["pipeline_error"]
                return UntestedRecord(commit: r["commit_id"], title: r["title"], author: r["author"],
                                      pipeline: text.map(PipelineText.text) ?? error.map(PipelineText.unreadable) ?? .none)
            }
        }
    }

    /// The commit build of the same repository and branch before this one (skipped and cancelled ones left out).
    public func previousCommitBuild(before build: BuildSummary) throws -> BuildSummary? {
        let id = try read { db in
            try db.one(as: Int64.self, """
                SELECT id FROM builds WHERE id < ? AND repo = ? AND branch = ? AND cause = 'commit' AND status NOT IN ('skipped', 'cancelled')
                ORDER BY id DESC LIMIT 1
                """, [build.id, build.repo, build.branch])
        }
        return try id.flatMap { try self.build($0) }
    }

    /// The commit build of the same repository and branch after this one, if any.
    public func nextCommitBuild(after build: BuildSummary) throws -> BuildSummary? {
        let id = try read { db in
            try db.one(as: Int64.self, """
                SELECT id FROM builds WHERE id > ? AND repo = ? AND branch = ? AND cause = 'commit' AND status NOT IN ('skipped', 'cancelled')
                ORDER BY id LIMIT 1
                """, [build.id, build.repo, build.branch])
        }
        return try id.flatMap { try self.build($0) }
    }

    /// The last commit builds that failed, newest first.
    public func recentFailedCommitBuilds(limit: Int) throws -> [BuildSummary] {
        let ids = try read { db in
            try db.all(as: Int64.self, """
                SELECT id FROM builds WHERE cause = 'commit' AND status IN ('failed', 'error', 'timed_out') ORDER BY id DESC LIMIT ?
                """, [limit])
        }
        return try ids.compactMap { try self.build($0) }
    }

    public func saveBisection(_ b: BisectionRecord, at: Date) throws -> Int64 {
        let candidates = String(decoding: (try? JSONEncoder().encode(b.candidates)) ?? Data("[]".utf8), as: UTF8.self)
        return try write { db in
            if b.id == 0 {
                return try db.insert("""
                    INSERT INTO bisections(repo, branch, bad_build, good_build, candidates, good, bad, current_build, state, culprit, culprit_title,
                        culprit_author, reason, builds_run, created_at, finished_at, truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, [b.repo, b.branch, b.badBuild, b.goodBuild, candidates, b.good, b.bad, b.currentBuild, b.state.rawValue, b.culprit,
                          b.culpritTitle, b.culpritAuthor, b.reason, b.buildsRun, at.timeIntervalSince1970,
                          b.state == .running ? nil : at.timeIntervalSince1970 as Double?, b.truncated])
            }
            try db.execute("""
                UPDATE bisections SET good = ?, bad = ?, current_build = ?, state = ?, culprit = ?, culprit_title = ?, culprit_author = ?, reason = ?,
                    builds_run = ?, finished_at = ? WHERE id = ?
                """, [b.good, b.bad, b.currentBuild, b.state.rawValue, b.culprit, b.culpritTitle, b.culpritAuthor, b.reason, b.buildsRun,
                      b.state == .running ? nil : at.timeIntervalSince1970 as Double?, b.id])
            return b.id
        }
    }

    /// The bisection that explains a red build, or that a bisection build belongs to.
    public func bisection(explaining build: Int64) throws -> BisectionRecord? {
        try bisections("bad_build = ?", [build]).first
    }

    public func bisection(building build: Int64) throws -> BisectionRecord? {
        try bisections("current_build = ?", [build]).first
    }

    public func runningBisections() throws -> [BisectionRecord] {
        try bisections("state = 'running'", [])
    }

    private func bisections(_ condition: String, _ values: [any SQLValueConvertible]) throws -> [BisectionRecord] {
        try read { db in
            try db.rows("SELECT * FROM bisections WHERE \(condition) ORDER BY id", values).map { r in
                let list: String = r["candidates"]
                return BisectionRecord(id: r["id"], repo: r["repo"], branch: r["branch"], badBuild: r["bad_build"], goodBuild: r["good_build"],
                                       candidates: (try? JSONDecoder().decode([String].self, from: Data(list.utf8))) ?? [], good: r["good"], bad: r["bad"],
                                       currentBuild: r["current_build"], state: Self.typed(r["state"], or: BisectionRecord.State.stopped),
                                       culprit: r["culprit"], culpritTitle: r["culprit_title"], culpritAuthor: r["culprit_author"], reason: r["reason"],
                                       buildsRun: r["builds_run"], truncated: r["truncated"])
            }
        }
    }

    // MARK: Reading (the reporter, and the dispatcher's decisions)

    /// How many of its recent builds a repository's flaky tests are found in.
    public static let flakyWindowBuilds = 500
    /// A test flipping this often over at least `flakyMinRuns` runs is flaky even without a commit that both
    /// passed and failed (a test broken once and fixed once flips twice, well under it).
    public static let flakyFlipRate = 0.3
    public static let flakyMinRuns = 10

    /// A build's tests, failures first, each with whether it is known flaky in its repository.
    public func tests(build: Int64) throws -> [BuildTest] {
        let rows = try read { db in
            try db.rows("""
                SELECT t.suite, t.name, t.status, t.duration, t.message, t.attempt, t.id, j.name AS job FROM test_results t
                JOIN jobs j ON j.id = t.job_id WHERE t.build_id = ? ORDER BY t.id
                """, [build])
        }
        var byTest: [String: BuildTest] = [:]
        var order: [String] = []
        for r in rows {
            let key = "\(r["job"] as String)\u{1}\(r["suite"] as String)\u{1}\(r["name"] as String)"
            let status: TestResult.Status = Self.typed(r["status"], or: .error)
            let test = BuildTest(job: r["job"], suite: r["suite"], name: r["name"], status: status, duration: r["duration"], message: r["message"],
                                 attempt: r["attempt"], flippedHere: false)
            if var seen = byTest[key] {
                let flipped = seen.flippedHere || (seen.status.isFailure && status == .passed) || (seen.status == .passed && status.isFailure)
                // The latest attempt's word counts.
                if test.attempt >= seen.attempt { seen = test }
                seen.flippedHere = flipped
                byTest[key] = seen
            } else {
                byTest[key] = test
                order.append(key)
            }
        }
        var tests = order.compactMap { byTest[$0] }
        guard let repo = try self.build(build)?.repo, tests.contains(where: { $0.status.isFailure || $0.flippedHere }) else { return tests }
        // Only the tests in question are looked up (by name, an index seek), not the repository's whole history.
        let names = Array(Set(tests.filter { $0.status.isFailure || $0.flippedHere }.map(\.name)).prefix(200))
        let flaky = Set(try flakyTests(repo: repo, names: names).map { Self.testKey($0.job, $0.suite, $0.name) })
        for i in tests.indices { tests[i].knownFlaky = tests[i].flippedHere || flaky.contains(Self.testKey(tests[i].job, tests[i].suite, tests[i].name)) }
        let rank: (BuildTest) -> Int = { $0.status.isFailure ? 0 : $0.flippedHere ? 1 : $0.status == .skipped ? 3 : 2 }
        return tests.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }

    /// The repository's flaky tests over its recent builds, the most flaky first (task runs left out: they are
    /// not the repository's tests, and may be hidden from the viewer).
    public func flakyTests(repo: String) throws -> [FlakyTest] { try flakyTests(repo: repo, names: nil) }

    /// The flaky tests among those with these names (all of the repository's when nil). Bounded work: SQL finds
    /// the tests that both passed and failed in the window (at most 500), and only their runs are read.
    public func flakyTests(repo: String, names: [String]?) throws -> [FlakyTest] {
        if names?.isEmpty == true { return [] }
        return try read { db in
            let since = try db.one(as: Int64.self, """
                SELECT MIN(id) FROM (SELECT id FROM builds WHERE repo = ? AND task IS NULL ORDER BY id DESC LIMIT \(Self.flakyWindowBuilds)) recent
                """, [repo]) ?? 0
            let only = names.map { " AND t.name IN (" + $0.map { _ in "?" }.joined(separator: ", ") + ")" } ?? ""
            let base = """
                FROM test_results t JOIN builds b ON b.id = t.build_id JOIN jobs j ON j.id = t.job_id
                WHERE b.repo = ? AND b.task IS NULL AND t.build_id >= ? AND t.status IN ('passed', 'failed', 'error')
                """
            let args: [any SQLValueConvertible] = [repo, since] + (names ?? []).map { $0 as any SQLValueConvertible }
            let candidates = try db.rows("""
                SELECT j.name AS job, t.suite, t.name \(base)\(only) GROUP BY j.name, t.suite, t.name
                HAVING SUM(CASE WHEN t.status = 'passed' THEN 1 ELSE 0 END) > 0 AND SUM(CASE WHEN t.status <> 'passed' THEN 1 ELSE 0 END) > 0
                LIMIT 500
                """, args)
            let wanted = Set(candidates.map { Self.testKey($0["job"], $0["suite"], $0["name"]) })
            // Each candidate's runs, oldest first: flips on one commit, and flips between consecutive runs (a
            // bisection's builds go back and forth between good and bad commits by design: they count for the first only).
            struct Runs { var statuses: [Bool] = []; var byCommit: [String: (pass: Bool, fail: Bool, build: Int64, at: Double)] = [:]; var firstFlip: Double? }
            var tests: [String: Runs] = [:]
            var order: [String] = []
            let candidateNames = Array(Set(candidates.map { $0["name"] as String }))
            for start in stride(from: 0, to: candidateNames.count, by: 200) {
                let chunk = Array(candidateNames[start..<min(start + 200, candidateNames.count)])
                for r in try db.rows("""
                    SELECT j.name AS job, t.suite, t.name, t.status, t.id, t.build_id, b.commit_id, b.created_at, b.cause \(base)
                    AND t.name IN (\(chunk.map { _ in "?" }.joined(separator: ", "))) ORDER BY t.id
                    """, [repo, since] + chunk.map { $0 as any SQLValueConvertible }) {
                    let key = Self.testKey(r["job"], r["suite"], r["name"])
                    guard wanted.contains(key) else { continue }
                    if tests[key] == nil { order.append(key); tests[key] = Runs() }
                    let failed = (r["status"] as String) != "passed"
                    let commit: String = r["commit_id"], at: Double = r["created_at"], build: Int64 = r["build_id"]
                    if (r["cause"] as String) != BuildCause.bisect.rawValue {
                        if let last = tests[key]!.statuses.last, last != failed, tests[key]!.firstFlip == nil { tests[key]!.firstFlip = at }
                        tests[key]!.statuses.append(failed)
                    }
                    var c = tests[key]!.byCommit[commit] ?? (false, false, build, at)
                    if failed { c.fail = true } else { c.pass = true }
                    c.build = max(c.build, build)
                    tests[key]!.byCommit[commit] = c
                }
            }
            var out: [FlakyTest] = []
            for key in order {
                let t = tests[key]!
                let recent = t.statuses.suffix(50)
                let changes = zip(recent, recent.dropFirst()).filter { $0 != $1 }.count
                let rate = recent.count > 1 ? Double(changes) / Double(recent.count - 1) : 0
                let flips = t.byCommit.filter { $0.value.pass && $0.value.fail }
                    .map { FlakyTest.Flip(commit: $0.key, build: $0.value.build, at: Date(timeIntervalSince1970: $0.value.at)) }
                    .sorted { $0.build > $1.build }
                guard !flips.isEmpty || (recent.count >= Self.flakyMinRuns && rate >= Self.flakyFlipRate) else { continue }
                let parts = key.split(separator: "\u{1}", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
                let first = min(flips.map(\.at.timeIntervalSince1970).min() ?? .infinity, t.firstFlip ?? .infinity)
                out.append(FlakyTest(job: parts[0], suite: parts[1], name: parts[2], flipRate: rate, runs: t.statuses.count,
                                     flips: Array(flips.prefix(5)), firstSeen: Date(timeIntervalSince1970: first.isFinite ? first : 0)))
            }
            return out.sorted { ($0.flips.count, $0.flipRate) > ($1.flips.count, $1.flipRate) }
        }
    }

    /// A test within its job: the same test in two jobs (two Python versions, say) is two tests.
    static func testKey(_ job: String, _ suite: String, _ name: String) -> String { "\(job)\u{1}\(suite)\u{1}\(name)" }


    /// A test's runs in a repository, newest first.
    public func testHistory(repo: String, suite: String, name: String, limit: Int = 100) throws -> [TestRun] {
        try read { db in
            try db.rows("""
                SELECT t.status, t.duration, t.message, t.attempt, b.id AS build, b.commit_id, b.branch, b.created_at, j.name AS job
                FROM test_results t JOIN builds b ON b.id = t.build_id JOIN jobs j ON j.id = t.job_id
                WHERE t.name = ? AND t.suite = ? AND b.repo = ? AND b.task IS NULL ORDER BY t.id DESC LIMIT ?
                """, [name, suite, repo, limit]).map { r in
                TestRun(build: r["build"], commit: r["commit_id"], branch: r["branch"], job: r["job"], attempt: r["attempt"],
                        status: Self.typed(r["status"], or: .error), duration: r["duration"], message: r["message"],
                        at: Date(timeIntervalSince1970: r["created_at"]))
            }
        }
    }

    /// The durations of a branch's passing tests over its last `builds` builds, the slowest first: worked out in
    /// SQL (one row per test), the older half of the builds against the newer.
    public func testTimings(repo: String, branch: String, builds: Int = 30) throws -> [TestTiming] {
        try read { db in
            let ids = try db.all(as: Int64.self, """
                SELECT id FROM builds WHERE repo = ? AND branch = ? AND cause <> 'bisect' AND task IS NULL ORDER BY id DESC LIMIT ?
                """, [repo, branch, builds]).sorted()
            guard !ids.isEmpty else { return [] }
            let middle = ids.count >= 2 ? ids[ids.count / 2 - 1] : 0
            return try db.rows("""
                SELECT t.suite, t.name, COUNT(*) AS runs, AVG(t.duration) AS mean,
                    AVG(CASE WHEN t.build_id <= ? THEN t.duration END) AS older, AVG(CASE WHEN t.build_id > ? THEN t.duration END) AS newer
                FROM test_results t WHERE t.status = 'passed' AND t.build_id IN (\(ids.map { _ in "?" }.joined(separator: ", ")))
                GROUP BY t.suite, t.name
                """, [middle, middle] + ids.map { $0 as any SQLValueConvertible }).map { r in
                TestTiming(suite: r["suite"], name: r["name"], runs: r["runs"], mean: r["mean"], olderMean: (r["older"] as Double?) ?? 0,
                           newerMean: (r["newer"] as Double?) ?? 0)
            }.sorted { ($0.mean, $0.fullName) > ($1.mean, $1.fullName) }
        }
    }
}
