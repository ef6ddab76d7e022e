import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 4 end to end: `.devci.yml` through the dispatcher and runners, and `devci run --local`.
final class PipelineTests: HarnessTestCase {
    /// Commits a pipeline file and dispatches the commit the way a person would, with `devci dispatch`.
    func build(_ pipeline: String, runners: Int = 2) throws -> (build: Int64, jobs: [JobSummary]) {
        let origin = try h.makeOrigin()
        try pipeline.write(toFile: origin + "/.devci.yml", atomically: true, encoding: .utf8)
        try h.git(["add", ".devci.yml"], in: origin)
        let sha = try h.commit("exit 0", to: origin)
        let (_, address) = try h.startDispatcher()
        for i in 0..<runners { try h.startRunner(try h.clone(origin, as: "clone-\(i)"), address, name: "r\(i)") }
        let out = try h.run(["dispatch", sha, "--repo", origin, "--dispatcher-server", address.description])
        XCTAssertEqual(out.status, 0, out.output)
        let id = try XCTUnwrap(Int64(out.output.split(separator: " ")[1]))
        _ = try h.waitForFinalBuild(id, timeout: 60)
        return (id, try h.store().jobs(build: id))
    }

    func testFourJobsOverTwoRunnersRunInParallelAndAnAllowedFailureLeavesTheBuildPassing() throws {
        let (id, jobs) = try build("""
            stages: [build, test]
            jobs:
              compile: {stage: build, run: "echo compiled > out.txt"}
              unit: {stage: test, needs: [compile], run: "sleep 2; echo unit ok"}
              integration: {stage: test, needs: [compile], run: "sleep 2; echo integration ok"}
              lint: {stage: test, needs: [compile], run: "echo 'style: bad' >&2; exit 1", allow_failure: true}
            """)
        let byName = Dictionary(uniqueKeysWithValues: jobs.map { ($0.name, $0) })
        XCTAssertEqual(byName.mapValues(\.status), ["compile": .success, "unit": .success, "integration": .success, "lint": .failed])
        let build = try XCTUnwrap(try h.build(id))
        XCTAssertEqual(build.status, .success)
        XCTAssertEqual(build.displayStatus, "passed with allowed failures")
        // unit and integration ran at the same time, on different runners.
        let u = try XCTUnwrap(byName["unit"]), i = try XCTUnwrap(byName["integration"])
        XCTAssertLessThan(try XCTUnwrap(u.startedAt), try XCTUnwrap(i.finishedAt))
        XCTAssertLessThan(try XCTUnwrap(i.startedAt), try XCTUnwrap(u.finishedAt))
        XCTAssertNotEqual(u.runner, i.runner)
        // Both started after compile finished (needs), and their logs name their steps.
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(u.startedAt), try XCTUnwrap(byName["compile"]?.finishedAt))
        let log = try h.store().logs(job: u.id).map(\.text)
        XCTAssertTrue(log.contains("step 1/1: unit") && log.contains("unit ok"), "\(log)")
    }

    func testAFailingJobSkipsItsDependantsAndFailsTheBuild() throws {
        let (id, jobs) = try build("""
            stages: [build, test, deploy]
            jobs:
              compile: {stage: build, run: "exit 2"}
              unit: {stage: test, needs: [compile], run: "true"}
              docs: {stage: test, needs: [], run: "true"}
              ship: {stage: deploy, run: "true"}
            """)
        let byName = Dictionary(uniqueKeysWithValues: jobs.map { ($0.name, $0) })
        XCTAssertEqual(byName.mapValues(\.status), ["compile": .failed, "unit": .skipped, "docs": .success, "ship": .skipped])
        XCTAssertEqual(byName["unit"]?.reason, "skipped: 'compile' failed")
        XCTAssertEqual(try h.build(id)?.status, .failed)
    }

    func testRetriesKeepEveryAttemptsLogAndTimeoutsAreRecorded() throws {
        let (_, jobs) = try build("""
            jobs:
              flaky:
                run: 'echo "try $DEVCI_ATTEMPT"; [ "$DEVCI_ATTEMPT" -ge 2 ]'
                retries: 2
                retry_delay: 0s
              slow:
                run: sleep 30
                timeout: 1s
            """)
        let flaky = try XCTUnwrap(jobs.first { $0.name == "flaky" })
        XCTAssertEqual(flaky.status, .success)
        XCTAssertEqual(flaky.attempt, 2)
        XCTAssertEqual(flaky.retriesUsed, 1)
        let lines = try h.store().logs(job: flaky.id)
        XCTAssertEqual(lines.filter { $0.stream == .out }.map { "\($0.attempt): \($0.text)" }, ["1: try 1", "2: try 2"])
        XCTAssertTrue(try h.store().events(job: flaky.id).contains { $0.state == .queued && ($0.reason ?? "").contains("retry 1 of 2") })
        let slow = try XCTUnwrap(jobs.first { $0.name == "slow" })
        XCTAssertEqual(slow.status, .timedOut)
    }

    func testAnInvalidPipelineFailsTheBuildAtOnceWithTheErrorAsItsLog() throws {
        let (id, jobs) = try build("jobs:\n  unit:\n    run: make\n    neds: [x]\n", runners: 0)
        XCTAssertEqual(try h.build(id)?.status, .failed)
        XCTAssertEqual(jobs.map(\.name), ["pipeline"])
        let log = try h.store().logs(job: jobs[0].id).map(\.text)
        XCTAssertEqual(log, [".devci.yml:4:5: jobs.unit: unknown key 'neds' in job 'unit' — did you mean 'needs'?"])
    }

    func testADispatcherRestartMidPipelineFinishesTheBuild() throws {
        let origin = try h.makeOrigin()
        try "stages: [a, b]\njobs:\n  first: {stage: a, run: 'sleep 1'}\n  second: {stage: b, run: 'true'}\n  third: {stage: b, needs: [second], run: 'true'}\n"
            .write(toFile: origin + "/.devci.yml", atomically: true, encoding: .utf8)
        try h.git(["add", ".devci.yml"], in: origin)
        let sha = try h.commit("exit 0", to: origin)
        let (dispatcher, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone"), address, name: "r")
        let out = try h.run(["dispatch", sha, "--repo", origin, "--dispatcher-server", address.description])
        let id = try XCTUnwrap(Int64(out.output.split(separator: " ")[1]))
        try h.waitUntil("the first job runs") { try h.store().jobs(build: id).first?.status == .running }
        kill(dispatcher.processIdentifier, SIGKILL)
        dispatcher.waitUntilExit()
        XCTAssertEqual(try h.store().jobs(build: id).map(\.status), [.running, .pending, .pending])
        _ = try h.startDispatcher(port: address.port)
        XCTAssertEqual(try h.waitForFinalBuild(id).status, .success)
        XCTAssertEqual(try h.store().jobs(build: id).map(\.status), [.success, .success, .success])
    }

    func testRunLocalOnTheSampleAndOnABrokenFile() throws {
        let root = URL(fileURLWithPath: h.binary).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sample = h.dir.appendingPathComponent("sample").path
        try FileManager.default.copyItem(atPath: root.appendingPathComponent("test_repo").path, toPath: sample)
        let home = h.dir.appendingPathComponent("home").path
        let p = try h.spawn("run-local", ["run", "--local", sample + "/.devci.yml"], environment: ["HOME": home])
        p.waitUntilExit()
        let out = h.log(of: p)
        XCTAssertEqual(p.terminationStatus, 0, out)
        XCTAssertTrue(out.contains("✓ unit passed"), out)
        let reportPath = home + "/.devci/reports/sample/1.json"
        let data = try XCTUnwrap(FileManager.default.contents(atPath: reportPath))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(json["status"] as? String, "success")
        XCTAssertEqual((json["jobs"] as? [[String: Any]])?.compactMap { $0["name"] as? String }, ["syntax", "unit", "style"])
        XCTAssertEqual(json["stages"] as? [String], ["check", "test"])
        let listed = try h.spawn("report-local", ["report", "--local", "--job", "unit"], environment: ["HOME": home])
        listed.waitUntilExit()
        XCTAssertTrue(h.log(of: listed).contains("sample      1    unit"), h.log(of: listed))

        try "jobs:\n  a:\n    run: x\n    needs: [a]\n".write(toFile: sample + "/.devci.yml", atomically: true, encoding: .utf8)
        let broken = try h.spawn("run-local", ["run", "--local", sample + "/.devci.yml"], environment: ["HOME": home])
        broken.waitUntilExit()
        XCTAssertNotEqual(broken.terminationStatus, 0)
        XCTAssertTrue(h.log(of: broken).contains(":4:13: jobs.a.needs: a job cannot need itself"), h.log(of: broken))
        let lint = try h.run(["lint", sample + "/.devci.yml"])
        XCTAssertNotEqual(lint.status, 0)
    }
}
