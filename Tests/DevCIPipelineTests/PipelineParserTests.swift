import DevCIPipeline
import DevCIWire
import XCTest

final class PipelineParserTests: XCTestCase {
    let full = """
        stages: [build, test]
        env:
          LANG: C
        default:
          timeout: 5m
          retries: 1
        jobs:
          compile:
            stage: build
            steps:
              - name: build
                run: make
              - make docs
          unit:
            stage: test
            needs: [compile]
            run: make test
            timeout: 10m
            retries: 2
            retry_delay: 5s
            env:
              LANG: en_US.UTF-8
              FAST: "1"
            workdir: src
          lint:
            stage: test
            run: make lint
            allow_failure: true
            timeout: 1h
        """

    func testEveryField() throws {
        let p = try PipelineParser.parse(full)
        XCTAssertEqual(p.stages, ["build", "test"])
        XCTAssertEqual(p.env, ["LANG": "C"])
        XCTAssertEqual(p.jobs.map(\.name), ["compile", "unit", "lint"])
        let compile = try XCTUnwrap(p.job("compile"))
        XCTAssertEqual(compile.steps, [.init(name: "build", run: "make"), .init(name: "make docs", run: "make docs")])
        XCTAssertNil(compile.needs)
        XCTAssertEqual(compile.timeout, .seconds(300), "from default")
        XCTAssertEqual(compile.retries, 1, "from default")
        let unit = try XCTUnwrap(p.job("unit"))
        XCTAssertEqual(unit.stage, "test")
        XCTAssertEqual(unit.needs, ["compile"])
        XCTAssertEqual(unit.steps, [.init(name: "unit", run: "make test")])
        XCTAssertEqual(unit.timeout, .seconds(600))
        XCTAssertEqual(unit.retries, 2)
        XCTAssertEqual(unit.retryDelay, .seconds(5))
        XCTAssertEqual(unit.workdir, "src")
        XCTAssertEqual(unit.script(pipelineEnv: p.env).env, ["LANG": "en_US.UTF-8", "FAST": "1"])
        XCTAssertEqual(unit.script(pipelineEnv: p.env).timeoutSeconds, 600)
        let lint = try XCTUnwrap(p.job("lint"))
        XCTAssertTrue(lint.allowFailure)
        XCTAssertEqual(lint.timeout, .seconds(3600))
    }

    func testTimeUnits() throws {
        for (text, seconds) in [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1w", 604_800)] {
            let p = try PipelineParser.parse("jobs:\n  a:\n    run: x\n    timeout: \(text)\n")
            XCTAssertEqual(p.jobs[0].timeout, .seconds(seconds), text)
        }
    }

    func errors(_ text: String) -> [PipelineError] {
        do {
            _ = try PipelineParser.parse(text, file: "ci/.devci.yml")
            XCTFail("no error for:\n\(text)")
            return []
        } catch {
            return error.errors
        }
    }

    func testUnknownKeyNamesFileLineColumnFieldAndSuggests() {
        let e = errors("jobs:\n  unit:\n    run: make\n    neds: [a]\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(e[0].description, "ci/.devci.yml:4:5: jobs.unit: unknown key 'neds' in job 'unit' — did you mean 'needs'?")
    }

    func testEveryErrorHasItsPlace() {
        let cases: [(String, Int, Int, String, String)] = [
            ("stagez: [a]\njobs:\n  a:\n    run: x\n", 1, 1, "", "unknown key 'stagez' — did you mean 'stages'?"),
            ("jobs:\n  a:\n    run: x\n    timeout: soon\n", 4, 14, "jobs.a.timeout", "expected a time like 30s"),
            ("jobs:\n  a:\n    run: x\n    timeout: 0s\n", 4, 14, "jobs.a.timeout", "expected a time"),
            ("jobs:\n  a:\n    run: x\n    retries: many\n", 4, 14, "jobs.a.retries", "expected a whole number"),
            ("jobs:\n  a:\n    run: x\n    retries: 99\n", 4, 14, "jobs.a.retries", "must be from 0 to 10"),
            ("jobs:\n  a:\n    run: x\n    allow_failure: maybe\n", 4, 20, "jobs.a.allow_failure", "expected true or false"),
            ("jobs:\n  a:\n    run: x\n    retry_delay: later\n", 4, 18, "jobs.a.retry_delay", "expected a time"),
            ("jobs:\n  a:\n    run: x\n    env:\n      1BAD: y\n", 5, 7, "jobs.a.env", "'1BAD' is not a variable name"),
            ("jobs:\n  a:\n    run: x\n    env: [x]\n", 4, 10, "jobs.a.env", "expected a mapping"),
            ("jobs:\n  a:\n    run: x\n    workdir: ../up\n", 4, 14, "jobs.a.workdir", "must be a relative path"),
            ("jobs:\n  a:\n    stage: deploy\n    run: x\nstages: [test]\n", 3, 12, "jobs.a.stage", "stage 'deploy' is not in stages [test]"),
            ("jobs:\n  a:\n    run: x\n    steps: [y]\n", 3, 5, "jobs.a", "give either 'run' or 'steps', not both"),
            ("jobs:\n  a:\n    stage: test\n", 3, 5, "jobs.a", "job 'a' has nothing to run"),
            ("jobs:\n  a:\n    steps:\n      - name: n\n", 4, 9, "jobs.a.steps[0]", "a step needs 'run'"),
            ("jobs:\n  a:\n    steps:\n      - nmae: n\n        run: x\n", 4, 9, "jobs.a.steps[0]", "unknown key 'nmae'"),
            ("jobs:\n  a:\n    run: x\n    needs: [b]\n", 4, 13, "jobs.a.needs", "needs 'b', which is not a job"),
            ("jobs:\n  a:\n    run: x\n    needs: [a]\n", 4, 13, "jobs.a.needs", "a job cannot need itself"),
            ("stages: [one, two]\njobs:\n  a:\n    stage: one\n    run: x\n    needs: [b]\n  b:\n    stage: two\n    run: y\n", 6, 13, "jobs.a.needs",
             "needs 'b', which runs in the later stage 'two'"),
            ("jobs:\n  a b:\n    run: x\n", 2, 3, "jobs", "'a b' is not a valid job name"),
            ("jobs: [a]\n", 1, 7, "jobs", "expected a mapping"),
            ("stages: [a, a]\njobs:\n  x:\n    stage: a\n    run: y\n", 1, 9, "stages", "stage 'a' is listed twice"),
            ("jobs:\n  a:\n    run: x\n  a:\n    run: y\n", 2, 3, "", "duplicate key 'a'"),
            ("jobs:\n  a:\n    run: [x\n", 4, 1, "", "not valid YAML"),
            ("", 1, 1, "", "the file is empty"),
            ("env:\n  A: b\n", 1, 1, "jobs", "missing"),
        ]
        for (text, line, column, field, message) in cases {
            let e = errors(text)
            guard let first = e.first else { continue }
            XCTAssertEqual(first.line, line, "\(text) → \(first)")
            XCTAssertEqual(first.column, column, "\(text) → \(first)")
            XCTAssertEqual(first.field, field, "\(text) → \(first)")
            XCTAssertTrue(first.message.contains(message), "\(text) → \(first)")
        }
    }

    func testAnchorsAndAliasesAreRefusedBeforeTheyExpand() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\njobs:\n  j:\n    run: x\n"
        XCTAssertEqual(errors(bomb).first?.description, "ci/.devci.yml:1:4: anchors and aliases (&name, *name) are not supported: write the value out")
        XCTAssertEqual(errors("jobs:\n  j:\n    run: *r\n").first?.line, 3)
        // Shell commands with & and * are fine.
        XCTAssertNoThrow(try PipelineParser.parse("jobs:\n  j:\n    run: make && ls *.py & wait\n  k:\n    run: \"*quoted* &\"\n  l: {run: 'a && b'} # & *\n"))
    }

    func testNeedsCyclesAreSpelledOut() {
        let e = errors("""
            jobs:
              a:
                run: x
                needs: [c]
              b:
                run: y
                needs: [a]
              c:
                run: z
                needs: [b]
            """)
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].message.contains("needs form a cycle: a → c → b → a"), e[0].description)
        XCTAssertEqual(e[0].line, 4)
    }

    func testAllErrorsAreReportedAtOnce() {
        let e = errors("jobs:\n  a:\n    run: x\n    timeout: soon\n  b:\n    run: y\n    retries: -1\n    bogus: 1\n")
        XCTAssertEqual(e.map(\.line), [4, 7, 8])
    }
}

final class BuildPlanTests: XCTestCase {
    func plan(_ yaml: String) throws -> BuildPlan { BuildPlan(pipeline: try PipelineParser.parse(yaml)) }

    let diamond = """
        stages: [build, test, deploy]
        jobs:
          compile: {stage: build, run: make}
          unit: {stage: test, needs: [compile], run: t}
          lint: {stage: test, run: l, allow_failure: true}
          docs: {stage: test, needs: [], run: d}
          ship: {stage: deploy, run: s}
        """

    func testStagesInOrderAndNeedsWithinThem() throws {
        var p = try plan(diamond)
        XCTAssertEqual(p.next(), [.start("compile"), .start("docs")], "docs needs nothing; lint waits for the build stage")
        XCTAssertEqual(p.update("compile", to: .success), [.start("unit"), .start("lint")])
        XCTAssertEqual(p.update("unit", to: .success), [])
        XCTAssertEqual(p.update("docs", to: .success), [])
        XCTAssertEqual(p.outcome, .running)
        XCTAssertEqual(p.update("lint", to: .failed), [.start("ship")], "an allowed failure does not stop the next stage")
        XCTAssertEqual(p.update("ship", to: .success), [])
        XCTAssertEqual(p.outcome, .passedWithAllowedFailures)
    }

    func testAFailedJobSkipsItsDependantsWithTheReason() throws {
        var p = try plan(diamond)
        _ = p.next()
        XCTAssertEqual(p.update("compile", to: .failed), [.skip("unit", reason: "skipped: 'compile' failed"),
                                                           .skip("lint", reason: "skipped: 'compile' failed"),
                                                           .skip("ship", reason: "skipped: 'compile' failed")])
        XCTAssertFalse(p.isFinished, "docs still runs")
        XCTAssertEqual(p.update("docs", to: .success), [])
        XCTAssertTrue(p.isFinished)
        XCTAssertEqual(p.outcome, .failed)
    }

    func testTimedOutAndErrorCountAsFailures() throws {
        var p = try plan("jobs:\n  a: {run: x, timeout: 1s}\n  b: {run: y, needs: [a]}\n")
        _ = p.next()
        XCTAssertEqual(p.update("a", to: .timedOut), [.skip("b", reason: "skipped: 'a' timed out")])
        XCTAssertEqual(p.outcome, .timedOut, "the worst state, as the store and the reporter say it")
        XCTAssertFalse(p.outcome.passed)
    }

    func testASkippedJobSkipsItsDependantsInTurn() throws {
        var p = try plan("jobs:\n  a: {run: x}\n  b: {run: y, needs: [a]}\n  c: {run: z, needs: [b]}\n")
        _ = p.next()
        XCTAssertEqual(p.update("a", to: .error), [.skip("b", reason: "skipped: 'a' error"), .skip("c", reason: "skipped: 'b' was skipped")])
    }

    func testAllSuccessIsSuccess() throws {
        var p = try plan("jobs:\n  a: {run: x}\n  b: {run: y}\n")
        XCTAssertEqual(p.next(), [.start("a"), .start("b")], "one stage: all in parallel")
        _ = p.update("a", to: .success)
        _ = p.update("b", to: .success)
        XCTAssertEqual(p.outcome, .success)
    }

    func testRestoredStatesResumeWhereTheyWere() throws {
        let fresh = try plan(diamond)
        var p = BuildPlan(jobs: fresh.jobs, states: ["compile": .success, "docs": .running, "unit": .queued, "lint": .queued])
        XCTAssertEqual(p.next(), [], "nothing new before unit and lint end")
        _ = p.update("unit", to: .success)
        _ = p.update("docs", to: .success)
        XCTAssertEqual(p.update("lint", to: .success), [.start("ship")])
    }
}

/// Issue 14: `reports: {junit: [...]}`.
final class ReportsKeyTests: XCTestCase {
    func testReportsNameJUnitGlobs() throws {
        let p = try PipelineParser.parse("jobs:\n  unit:\n    run: pytest --junitxml=out/junit.xml\n    reports: {junit: [\"**/junit*.xml\", out/extra.xml]}\n")
        XCTAssertEqual(p.job("unit")?.reports, ReportSpec(junit: ["**/junit*.xml", "out/extra.xml"]))
        XCTAssertEqual(p.job("unit")?.script(pipelineEnv: [:]).reports?.junit, ["**/junit*.xml", "out/extra.xml"], "it travels with the job")
    }

    func testBadReportsAreErrors() {
        for (yaml, expected) in [("reports: {xml: [a.xml]}", "unknown key 'xml'"), ("reports: {junit: [/etc/passwd]}", "relative path"),
                                 ("reports: {junit: [../up.xml]}", "relative path"), ("reports: {}", "name the report files"),
                                 ("reports: [a.xml]", "reports")] {
            XCTAssertThrowsError(try PipelineParser.parse("jobs:\n  unit:\n    run: make\n    \(yaml)\n"), yaml) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(yaml): \(error)")
            }
        }
    }
}
