import DevCIWire
import Foundation
import XCTest

@testable import DevCIRunner

/// What a workspace gives out (artifacts by glob) and keeps (caches), on real folders.
final class WorkspaceFilesTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "devci-ws-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/ws", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func write(_ path: String, _ text: String = "x") throws {
        let full = dir + "/ws/" + path
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: full, atomically: true, encoding: .utf8)
    }

    func testGlobs() {
        XCTAssertTrue(Glob.matches("*.log", "build.log"))
        XCTAssertFalse(Glob.matches("*.log", "logs/build.log"))
        XCTAssertTrue(Glob.matches("**/*.log", "logs/deep/build.log"))
        XCTAssertTrue(Glob.matches("**/*.log", "build.log"))
        XCTAssertTrue(Glob.matches("dist/", "dist/a/b.bin"))
        XCTAssertTrue(Glob.matches("dist", "dist/a.bin"))
        XCTAssertFalse(Glob.matches("dist", "distribution/a.bin"))
        XCTAssertTrue(Glob.matches("report-?.xml", "report-1.xml"))
        XCTAssertFalse(Glob.matches("*", ".hidden"))
    }

    func testCollectTakesRegularFilesOnlyNeverGitNorLinks() throws {
        try write("dist/app.bin")
        try write("dist/sub/more.bin")
        try write("build.log")
        try write("src/main.c")
        try write(".git/config")
        try FileManager.default.createSymbolicLink(atPath: dir + "/ws/dist/passwd", withDestinationPath: "/etc/passwd")
        let got = WorkspaceFiles.collect(["dist/", "*.log", ".git/", "**/config"], in: dir + "/ws").map(\.path)
        XCTAssertEqual(got, ["build.log", "dist/app.bin", "dist/sub/more.bin"])
    }

    func testACacheIsRestoredByKeyAndTwoSavesNeverMixTheirFiles() throws {
        let store = WorkspaceFiles.CacheStore(clonePath: dir + "/clone")
        let spec = CacheSpec(key: "deps-{{ hash of requirements.txt }}", paths: [".venv", "node_modules"])
        try write("requirements.txt", "requests==2\n")
        var said: [String] = []
        store.restore(spec, repository: "/repo", workspace: dir + "/ws") { said.append($0) }
        XCTAssertTrue(said.last?.hasSuffix(": none yet") == true, "\(said)")
        try write(".venv/bin/python", "v1")
        try FileManager.default.createSymbolicLink(atPath: dir + "/ws/.venv/bin/python3", withDestinationPath: "python")
        store.save(spec, repository: "/repo", workspace: dir + "/ws") { said.append($0) }
        XCTAssertTrue(said.last?.hasSuffix("saved 1 path(s)") == true, "\(said)")
        // Two jobs save at once: each version is whole, and `current` names one of them.
        try write(".venv/bin/python", "v2")
        let workspace = dir + "/ws"
        DispatchQueue.concurrentPerform(iterations: 4) { _ in store.save(spec, repository: "/repo", workspace: workspace) { _ in } }
        try FileManager.default.removeItem(atPath: dir + "/ws/.venv")
        store.restore(spec, repository: "/repo", workspace: dir + "/ws") { said.append($0) }
        XCTAssertTrue(said.last?.hasSuffix("restored 1 of 2 path(s)") == true, "\(said)")
        XCTAssertEqual(try String(contentsOfFile: dir + "/ws/.venv/bin/python", encoding: .utf8), "v2")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/ws/.venv/bin/python3"), "python")
        // Another requirements file is another key: nothing to restore.
        try write("requirements.txt", "requests==3\n")
        store.restore(spec, repository: "/repo", workspace: dir + "/ws") { said.append($0) }
        XCTAssertTrue(said.last?.hasSuffix(": none yet") == true, "\(said)")
    }
}
