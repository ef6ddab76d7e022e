import DevCIWire
import Foundation
import XCTest

@testable import DevCIRunner

/// Local run reports on disk: typed statuses, and reports saved by earlier versions still read.
final class LocalRunReportTests: XCTestCase {
    func testAReportSavedBeforeStatusesWereTypedStillReads() throws {
        let old = """
            {"repository": "shop", "pipeline": ".devci.yml", "run": 3, "directory": "/srv/shop",
             "startedAt": "2026-11-20T10:00:00Z", "finishedAt": "2026-11-20T10:01:00Z",
             "status": "passed with allowed failures", "stages": ["test"],
             "jobs": [{"name": "lint", "stage": "test", "status": "failed", "allowFailure": true, "attempts": []},
                      {"name": "unit", "stage": "test", "status": "timed_out", "allowFailure": false, "attempts": []}]}
            """
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let report = try decoder.decode(LocalRunReport.self, from: Data(old.utf8))
        XCTAssertEqual(report.status, .passedWithAllowedFailures)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.jobs.map(\.status), [.failed, .timedOut])
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        let again = try decoder.decode(LocalRunReport.self, from: try encoder.encode(report))
        XCTAssertEqual(again, report, "what this version writes, it reads")
    }
}
