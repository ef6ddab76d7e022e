import DevCIPipeline
import Foundation
import XCTest

/// Issue 14, point 1 (its parser): JUnit XML as real tools write it, kept as fixtures, and hostile XML.
final class TestReportsTests: XCTestCase {
    func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/junit/\(name)"))
    }

    func testPytestsReport() throws {
        // Written by pytest 8 (`pytest --junitxml=… -o junit_family=xunit2`) from a file with each kind of outcome.
        let r = try TestReports.parseJUnit(try fixture("pytest.xml"))
        XCTAssertEqual(r.map(\.name), ["test_passes", "test_fails", "test_skipped", "test_errors", "test_in_class"])
        XCTAssertEqual(r.map(\.status), [.passed, .failed, .skipped, .failed, .passed])
        XCTAssertEqual(r.map(\.suite), ["test_sample", "test_sample", "test_sample", "test_sample", "test_sample.TestGroup"])
        let failure = try XCTUnwrap(r[1].message)
        XCTAssertTrue(failure.hasPrefix("AssertionError: markup & entities stay text"), failure)
        XCTAssertTrue(failure.contains("assert \"<b>\" == \"&amp;\""), "entities decoded once, markup kept as text: \(failure)")
        XCTAssertEqual(r[2].message?.hasPrefix("not on this platform"), true)
        XCTAssertEqual(r[3].message?.hasPrefix("RuntimeError: boom"), true)
    }

    func testGoJUnitReportsReport() throws {
        let r = try TestReports.parseJUnit(try fixture("go-junit-report.xml"))
        XCTAssertEqual(r.map(\.name), ["TestAdd", "TestDivide/by_zero", "TestSlow", "TestSub"])
        XCTAssertEqual(r.map(\.status), [.passed, .failed, .skipped, .passed])
        XCTAssertEqual(Set(r.map(\.suite)), ["example.com/calc"])
        XCTAssertEqual(r[1].message, "Failed\n    calc_test.go:21: Divide(1, 0) = 0, want error")
        XCTAssertEqual(r[2].duration, 0.01, accuracy: 1e-9)
    }

    func testMavenSurefiresReport() throws {
        let r = try TestReports.parseJUnit(try fixture("surefire.xml"))
        XCTAssertEqual(r.map(\.status), [.passed, .failed, .error, .passed], "a flaky failure that passed on rerun is a pass")
        XCTAssertEqual(r[1].suite, "com.example.AppTest")
        XCTAssertTrue(r[1].message?.hasPrefix("expected: <1> but was: <2>\norg.opentest4j.AssertionFailedError") ?? false, "\(r[1])")
        XCTAssertEqual(r[2].message?.hasPrefix("config.yml (No such file or directory)"), true)
    }

    func testSwiftTestsXUnitOutput() throws {
        // Written by `swift test --parallel --xunit-output` (Swift 6.3, XCTest on Linux), which reports a skip as a pass.
        let r = try TestReports.parseJUnit(try fixture("swift-test-xunit.xml"))
        XCTAssertEqual(r.map(\.name), ["testAdds", "testFails", "testSkips"])
        XCTAssertEqual(r.map(\.status), [.passed, .failed, .passed])
        XCTAssertEqual(r[1].suite, "LibTests.LibTests")
        XCTAssertEqual(r[1].message, "failure")
        XCTAssertGreaterThan(r[0].duration, 0)
    }

    func testHostileAndBrokenReportsGetAClearProblemAndNothingElse() throws {
        func problem(_ xml: String) -> String {
            do {
                _ = try TestReports.parseJUnit(Data(xml.utf8))
                return "parsed"
            } catch {
                return "\(error)"
            }
        }
        let laughs = """
            <?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
            <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
            <testsuite><testcase name="&lol3;"/></testsuite>
            """
        XCTAssertTrue(problem(laughs).contains("document type"), problem(laughs))
        let external = #"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><testsuite><testcase name="&x;"/></testsuite>"#
        XCTAssertTrue(problem(external).contains("document type"), problem(external))
        var utf16 = Data([0xFF, 0xFE])
        utf16.append(external.data(using: .utf16LittleEndian)!)
        XCTAssertThrowsError(try TestReports.parseJUnit(utf16)) { XCTAssertTrue("\($0)".contains("not UTF-8"), "\($0)") }
        let deep = String(repeating: "<a>", count: 10_000) + String(repeating: "</a>", count: 10_000)
        XCTAssertTrue(problem("<testsuites>" + deep + "</testsuites>").contains("more than 64 deep"))
        XCTAssertTrue(problem("<testsuite><testcase name=\"x\"></testsuite>").contains("not well-formed XML"), problem("<testsuite><testcase name=\"x\"></testsuite>"))
        XCTAssertTrue(problem("<html><body>not a report</body></html>").contains("no <testsuites> or <testsuite>"))
        XCTAssertTrue(problem("").contains("not well-formed") || problem("").contains("no <testsuites>"), problem(""))
        let huge = Data(count: TestReports.maxBytes + 1)
        XCTAssertThrowsError(try TestReports.parseJUnit(huge)) { XCTAssertTrue("\($0)".contains("at most")) }
        // Many tests: bounded. Long messages: cut.
        let many = "<testsuite>" + String(repeating: "<testcase name=\"t\"/>", count: TestReports.maxTests + 1) + "</testsuite>"
        XCTAssertTrue(problem(many).contains("more than \(TestReports.maxTests) tests"))
        let long = "<testsuite><testcase name=\"t\"><failure>" + String(repeating: "é", count: 100_000) + "</failure></testcase></testsuite>"
        let cut = try TestReports.parseJUnit(Data(long.utf8))
        XCTAssertLessThanOrEqual(cut[0].message?.utf8.count ?? 0, TestReports.maxMessage)
        XCTAssertEqual(cut[0].status, .failed)
    }
}
