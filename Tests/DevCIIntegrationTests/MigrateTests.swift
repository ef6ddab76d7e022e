import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// Issue 13, point 3: `devci migrate` copies a SQLite installation's history into PostgreSQL, checks the copy,
/// refuses to overwrite history without --force, and a dispatcher on the copy carries on where the old one stopped.
final class MigrateTests: HarnessTestCase {
    func testAnInstallationMovesToPostgreSQLWithItsHistoryAndCarriesOn() throws {
        guard let server = ProcessInfo.processInfo.environment["DEVCI_TEST_POSTGRES_URL"], !server.isEmpty else {
            if ProcessInfo.processInfo.environment["CI"] != nil { throw Failure("DEVCI_TEST_POSTGRES_URL is not set") }
            throw XCTSkip("no PostgreSQL server for this run (scripts/test.sh starts one)")
        }
        // History on SQLite: a pass, a failure with its log, a runner, the observer's mark.
        let origin = try h.makeOrigin()
        let first = try h.commit("echo 'héllo <b>'", to: origin)
        let (dispatcher, address) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-a"), address, name: "a")
        let observerClone = try h.clone(origin, as: "clone-obs")
        let observer = try h.startObserver([observerClone], address)
        _ = try h.waitForFinalBuild(try h.waitUntilBuilt())
        let second = try h.commit("echo broken; exit 3", to: origin)
        try h.waitUntil("the second commit is built") { try h.builds().count == 2 && h.builds().allSatisfy { $0.status.isFinal } }
        let sqlite = h.dbPath
        let target = try h.newPostgresDatabase(on: server)

        // Not while a dispatcher writes the file.
        let busy = try h.run(["migrate", "--from", "sqlite:" + sqlite, "--to", target])
        XCTAssertNotEqual(busy.status, 0)
        XCTAssertTrue(busy.output.contains("another dispatcher is using the database"), busy.output)
        kill(observer.processIdentifier, SIGTERM)
        kill(dispatcher.processIdentifier, SIGTERM)
        dispatcher.waitUntilExit()
        observer.waitUntilExit()

        let copied = try h.run(["migrate", "--from", "sqlite:" + sqlite, "--to", target])
        XCTAssertEqual(copied.status, 0, copied.output)
        XCTAssertTrue(copied.output.contains("verified: every table holds the same number of rows"), copied.output)

        let before = try SQLStore(path: sqlite, readOnly: true), after = try h.writer(at: target)
        XCTAssertEqual(try after.recentBuilds(limit: 10), try before.recentBuilds(limit: 10))
        for build in try before.recentBuilds(limit: 10) {
            XCTAssertEqual(try after.jobs(build: build.id), try before.jobs(build: build.id))
            XCTAssertEqual(try after.events(build: build.id), try before.events(build: build.id))
            for job in try before.jobs(build: build.id) { XCTAssertEqual(try after.logs(job: job.id), try before.logs(job: job.id)) }
        }
        XCTAssertEqual(try after.runners().map(\.name), ["a"])
        XCTAssertEqual(try after.lastDispatched(repo: origin, branch: "main"), second)
        XCTAssertTrue(try after.logs(job: try after.jobs(build: try XCTUnwrap(after.recentBuilds(limit: 2).last?.id))[0].id)
            .contains { $0.text == "héllo <b>" })
        XCTAssertEqual(try after.recentBuilds(limit: 10).map(\.commit), [second, first])

        // A second copy into the same database would overwrite history: refused, unless forced.
        let again = try h.run(["migrate", "--from", "sqlite:" + sqlite, "--to", target])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.output.contains("already holds DevCI history: nothing was copied"), again.output)
        let forced = try h.run(["migrate", "--from", sqlite, "--to", target, "--force"])
        XCTAssertEqual(forced.status, 0, forced.output)
        XCTAssertEqual(try after.recentBuilds(limit: 10).count, 2, "replaced, not doubled")

        // The dispatcher carries on from the copy: the observer's mark holds (no old commit again), ids go on.
        h.use(database: target)
        let (_, moved) = try h.startDispatcher()
        try h.startRunner(try h.clone(origin, as: "clone-b"), moved, name: "b")
        try h.startObserver([observerClone], moved)
        let third = try h.commit("echo third", to: origin)
        try h.waitUntil("the new commit is built on PostgreSQL") { try h.builds().contains { $0.commit == third && $0.status.isFinal } }
        let all = try h.builds()
        XCTAssertEqual(all.map(\.commit), [first, second, third], "nothing built twice")
        XCTAssertEqual(all.last?.id, 3)
    }
}
