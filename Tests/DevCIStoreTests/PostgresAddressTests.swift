import DevCIStore
import XCTest

/// `--db postgres://…`: what is accepted, what is refused with a clear error, and that no message shows a password.
final class PostgresAddressTests: XCTestCase {
    func testAddressesParseAndNeverShowTheirPassword() throws {
        let a = try PostgresAddress("postgres://ci:s%40cret@db.example:6432/devci?sslmode=require", environment: [:])
        XCTAssertEqual([a.host, a.user, a.database, a.password], ["db.example", "ci", "devci", "s@cret"])
        XCTAssertEqual(a.port, 6432)
        XCTAssertTrue(a.requireTLS)
        XCTAssertEqual(a.description, "postgres://ci@db.example:6432/devci")
        XCTAssertEqual(try PostgresAddress(a.urlString, environment: [:]), a, "the URL form goes back to the same address")
        XCTAssertFalse(PostgresAddress.redacted("postgres://ci:s3cret@db/devci").contains("s3cret"))
        XCTAssertEqual(storeName("postgres://ci:s3cret@db/devci"), "postgres://ci:****@db/devci")

        let local = try PostgresAddress("postgresql://ci@127.0.0.1/devci", environment: ["PGPASSWORD": "from-env"])
        XCTAssertEqual(local.port, 5432)
        XCTAssertEqual(local.password, "from-env")
        XCTAssertFalse(local.requireTLS, "loopback: no TLS unless asked")
        XCTAssertTrue(try PostgresAddress("postgres://ci@db.example/devci", environment: [:]).requireTLS, "elsewhere: TLS unless sslmode=disable")
        XCTAssertFalse(try PostgresAddress("postgres://ci@db.example/devci?sslmode=disable", environment: [:]).requireTLS)
    }

    func testBadAddressesAreRefusedSayingWhatToWrite() {
        for (bad, says) in [("postgres://db.example/devci", "names no user"), ("postgres://ci@db.example", "names no database"),
                            ("postgres://ci@db.example/devci?sslmode=maybe", "sslmode=maybe is not known"),
                            ("postgres://ci@db.example/devci?options=-c", "not options="), ("postgres://ci:pw@/devci", "is not a PostgreSQL address")] {
            XCTAssertThrowsError(try PostgresAddress(bad, environment: [:]), bad) { error in
                XCTAssertTrue("\(error)".contains(says), "\(bad): \(error)")
                XCTAssertFalse("\(error)".contains(":pw@"), "no password in \(error)")
            }
        }
        XCTAssertThrowsError(try StoreLocation.resolve("mysql://x@y/z", environment: [:])) { XCTAssertTrue("\($0)".contains("not 'mysql://'")) }
        XCTAssertEqual(try StoreLocation.resolve(nil, environment: ["DEVCI_DB": "postgres://ci@127.0.0.1/devci"]).description,
                       "postgres://ci@127.0.0.1:5432/devci")
    }
}
