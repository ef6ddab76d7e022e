import DevCIWire
import XCTest

@testable import DevCIPipeline

final class ServerConfigParserTests: XCTestCase {
    func messages(_ files: [(String, String)]) -> [String] {
        do {
            _ = try ServerConfigParser.parse(files)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    func testFilesMergeIntoOneConfiguration() throws {
        let config = try ServerConfigParser.parse([
            ("a.yml", """
                administrators: [ada]
                queues:
                  gpu: {description: the big machines, priority: 7}
                tasks:
                  nightly:
                    description: everything, slowly
                    command: make all
                    period: 1d
                    timeout: 2h
                    tags: [slow, nightly]
                    queues: [gpu]
                """),
            ("deep/b.yaml", """
                administrators: [bob, ada]
                tasks:
                  deploy:
                    pipeline:
                      jobs:
                        push: {run: ./deploy.sh, timeout: 5m}
                    priority: -3
                    debounce: 30s
                    authorized_users: [ada]
                    triggered_by:
                      - {task: nightly}
                      - {repository: "git@github.com:o/r.git", branches: [main, release]}
                """),
        ])
        XCTAssertEqual(config.administrators, ["ada", "bob"])
        let nightly = try XCTUnwrap(config.tasks["nightly"])
        XCTAssertEqual(nightly.period, .seconds(86_400))
        XCTAssertEqual(nightly.timeout, .seconds(7200))
        XCTAssertEqual(nightly.priority, 7, "the queue's priority, as the task names none")
        XCTAssertEqual(nightly.file, "a.yml")
        XCTAssertEqual(nightly.line, 5)
        let deploy = try XCTUnwrap(config.tasks["deploy"])
        XCTAssertEqual(deploy.priority, -3)
        XCTAssertEqual(deploy.debounce, .seconds(30))
        XCTAssertEqual(deploy.upstreamTasks, ["nightly"])
        XCTAssertTrue(deploy.isTriggered(byPushTo: ["git@github.com:o/r"], branch: "release"))
        XCTAssertFalse(deploy.isTriggered(byPushTo: ["git@github.com:o/r"], branch: "dev"))
        guard case .pipeline(let p) = deploy.work else { return XCTFail() }
        XCTAssertEqual(p.jobs.map(\.name), ["push"])
        XCTAssertEqual(try ServerConfigParser.parse([("empty.yml", "")]), .empty)
    }

    func testEveryMistakeIsNamedWithItsFileAndLine() {
        let errors = messages([
            ("one.yml", "tasks:\n  a:\n    command: x\n    perod: 1h\n"),
            ("two/two.yml", "tasks:\n  a:\n    command: y\n  b:\n    command: z\n    period: often\n    triggered_by: [{task: c}]\n  e:\n    description: nothing\n"),
            ("three.yml", "taks: {}\n"),
        ])
        XCTAssertTrue(errors.contains("one.yml:4:5: tasks.a: unknown key 'perod' in 'tasks.a' — did you mean 'period'?"), "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("task 'a' is defined twice: one.yml:2 and two/two.yml:2") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("two/two.yml:6:") && $0.contains("expected a time like 30s") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("two/two.yml:4:") && $0.contains("names task 'c', which is not defined") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("task 'e' has nothing to run") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("three.yml:1:1") && $0.contains("did you mean 'tasks'?") }, "\(errors)")
    }

    func testACycleOfUpstreamTasksIsSpelledOut() {
        let errors = messages([("c.yml", """
            tasks:
              a: {command: x, triggered_by: [{task: c}]}
              b: {command: y, triggered_by: [{task: a}]}
              c: {command: z, triggered_by: [{task: b}]}
            """)])
        XCTAssertEqual(errors.count, 1, "\(errors)")
        XCTAssertTrue(errors.first?.contains("upstream tasks form a cycle: a triggers b triggers c triggers a") ?? false, "\(errors)")
    }

    func testBadValues() {
        let errors = messages([("v.yml", """
            queues:
              gpu: {priority: 5000}
              "bad queue": {}
            tasks:
              t:
                command: x
                command2: y
                queues: [gpu, "no such"]
                triggered_by: [{repository: "-oProxyCommand=x", branch: "a..b"}, {task: t, branch: main}, {}]
                period: 10ms
              u:
                command: x
                pipeline: {jobs: {j: {run: y}}}
            """)])
        for expected in ["must be from -1000 to 1000", "'bad queue' is not a valid queue name", "unknown key 'command2'", "'no such' is not a valid queue name",
                         "is not a repository address", "'a..b' is not a valid branch name", "'branch' goes with 'repository'",
                         "give 'repository' (a push to it) or 'task'", "must be at least 1s", "give either 'command' or 'pipeline', not both"] {
            XCTAssertTrue(errors.contains { $0.contains(expected) }, "\(expected) not in \(errors)")
        }
    }

    func testAJobTooLargeForTheWireIsRefusedWhenTheConfigurationIsRead() {
        let huge = String(repeating: "echo padding padding padding; ", count: 4000)
        let errors = messages([("big.yml", "tasks:\n  big:\n    command: \"\(huge)\"\n  pipe:\n    pipeline: {jobs: {j: {run: \"\(huge)\"}}}\n")])
        XCTAssertTrue(errors.contains { $0.contains("job 'big' is too large to send to a runner") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.contains("job 'j' is too large to send to a runner") }, "\(errors)")
    }

    func testAFolderIsReadRecursivelyAndHiddenOrOtherFilesAreNot() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("devci-config-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/x/y", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/.git", withIntermediateDirectories: true)
        try "tasks: {a: {command: x}}".write(toFile: dir + "/x/y/a.yaml", atomically: true, encoding: .utf8)
        try "tasks: {b: {command: x}}".write(toFile: dir + "/b.yml", atomically: true, encoding: .utf8)
        try "garbage: [".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        try "garbage: [".write(toFile: dir + "/.git/c.yml", atomically: true, encoding: .utf8)
        XCTAssertEqual(Set(try ServerConfigParser.load(directory: dir).tasks.keys), ["a", "b"])
        try "tasks: [".write(toFile: dir + "/x/broken.yml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ServerConfigParser.load(directory: dir)) { XCTAssertTrue("\($0)".contains("x/broken.yml:"), "\($0)") }
        XCTAssertThrowsError(try ServerConfigParser.load(directory: dir + "/missing"))
    }
}
