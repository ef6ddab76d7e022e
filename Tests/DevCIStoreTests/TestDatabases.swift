import DevCIStore
import Foundation
import XCTest

/// A database a store test runs on: a SQLite file in a temporary folder, or a fresh database on the real
/// PostgreSQL server `scripts/test.sh` starts for the run (`DEVCI_TEST_POSTGRES_URL`).
struct TestDatabase {
    let kind: String
    /// The `--db` value: a file's path or a `postgres://` address.
    let location: String

    /// Opens it for writing (creating its tables the first time), as a dispatcher does.
    func open() throws -> SQLStore {
        PostgresAddress.isAddress(location) ? try SQLStore(postgres: PostgresAddress(location), readOnly: false) : try SQLStore(path: location)
    }

    /// Runs SQL on it as another program would (a newer DevCI, an operator): python3's sqlite3 or psql.
    func execute(_ sql: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = PostgresAddress.isAddress(location)
            ? ["psql", "-q", "-v", "ON_ERROR_STOP=1", location, "-c", sql]
            : ["python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()", location, sql]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw StoreError("\(p.arguments![0]) could not run: \(sql)") }
    }

    /// SQLite in `dir`, and a new PostgreSQL database when the test run has a server. Without one (a bare
    /// `swift test`), says so once; under CI (`CI` set) its absence is a failure, never a silent pass.
    static func all(in dir: URL, name: String = "devci") throws -> [TestDatabase] {
        var out = [TestDatabase(kind: "SQLite", location: dir.appendingPathComponent("\(name).sqlite").path)]
        if let server = postgresServer() {
            let db = try PostgresAdmin.createDatabase(on: PostgresAddress(server), named: "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))
            out.append(TestDatabase(kind: "PostgreSQL", location: db.urlString))
        }
        return out
    }

    static func postgresServer() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let url = env["DEVCI_TEST_POSTGRES_URL"], !url.isEmpty { return url }
        if env["CI"] != nil { XCTFail("DEVCI_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh, which starts PostgreSQL") }
        else if !saidMissing { saidMissing = true; print("note: DEVCI_TEST_POSTGRES_URL is not set; store tests run on SQLite only (scripts/test.sh starts PostgreSQL)") }
        return nil
    }
    nonisolated(unsafe) static var saidMissing = false
}
