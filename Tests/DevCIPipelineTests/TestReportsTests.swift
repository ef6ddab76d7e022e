import DevCIPipeline
import DevCIWire
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
        // Without a byte order mark, UTF-16 of ASCII is valid UTF-8 (every other byte NUL), and hides `<!DOCTYPE` from a byte search.
        XCTAssertThrowsError(try TestReports.parseJUnit(external.data(using: .utf16LittleEndian)!)) { XCTAssertTrue("\($0)".contains("NUL bytes"), "\($0)") }
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

/// Issue 14, point 1 (without a report file): the test summaries of `python3 -m unittest -v` (Python 3.11) and
/// `pytest -rA` (pytest 9) in a job's log, as those tools printed them for `Fixtures/logs/test_demo.py`.
final class LogTestScannerTests: XCTestCase {
    func scan(_ name: String) throws -> [TestResult] {
        let text = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/logs/\(name)"), encoding: .utf8)
        var scanner = LogTestScanner()
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) { scanner.feed(String(line)) }
        return scanner.found
    }

    func testUnittestVerboseOutput() throws {
        let r = try scan("unittest-v.txt")
        XCTAssertEqual(r.map(\.name), ["test_docstring", "test_errors", "test_expected", "test_fails", "test_ok", "test_skipped"])
        XCTAssertEqual(r.map(\.status), [.passed, .error, .skipped, .failed, .passed, .skipped],
                       "a docstring and printed output between a test and its verdict; an expected failure is not a failure")
        XCTAssertEqual(Set(r.map(\.suite)), ["test_demo.TestDemo"])
        XCTAssertTrue(r[3].message?.hasSuffix("AssertionError: 2 != 3") ?? false, "the FAIL block is the message: \(r[3])")
        XCTAssertTrue(r[1].message?.hasSuffix("RuntimeError: boom") ?? false, "\(r[1])")
        XCTAssertEqual(r[5].message, "'not today'")
    }

    func testPytestSummary() throws {
        let r = try scan("pytest-rA.txt")
        XCTAssertEqual(r.map(\.fullName), ["test_demo.py::TestDemo::test_docstring", "test_demo.py::TestDemo::test_ok", "test_demo.py::test_plain",
                                           "test_demo.py::TestK::test_param", "test_demo.py::TestDemo::test_expected",
                                           "test_demo.py::TestDemo::test_errors", "test_demo.py::TestDemo::test_fails", "test_demo.py::test_plain_fail"],
                       "a skip summary without a node id names no test")
        XCTAssertEqual(r.map(\.status), [.passed, .passed, .passed, .passed, .skipped, .failed, .failed, .failed])
        XCTAssertEqual(r[7].message, "AssertionError: one is not two")
    }

    func testOtherOutputIsNotATest() {
        var scanner = LogTestScanner()
        for line in ["compiling ... ok", "PASSED everything", "Step 1 ... done", "(not a test) ... ok", "x (y z) ... FAIL", "FAILED tests/a.py::b - boom"] {
            scanner.feed(line)
        }
        XCTAssertEqual(scanner.found, [], "outside pytest's summary FAILED lines are not read; odd shapes are not tests")
    }

    func testResultsAreBoundedAndBatchedUnderTheLineLimit() throws {
        let huge = TestResult(suite: String(repeating: "s", count: 5000), name: String(repeating: "n", count: 5000), status: .failed,
                              duration: .infinity, message: String(repeating: "\u{1}", count: 100_000)).bounded
        XCTAssertLessThanOrEqual(huge.suite.utf8.count, TestResult.maxName)
        XCTAssertLessThanOrEqual(huge.message!.utf8.count, TestResult.maxMessage)
        XCTAssertEqual(huge.duration, 0)
        let many = (0..<3000).map { TestResult(suite: "s", name: "test \($0) %", status: .passed, duration: 0.1, message: "a b c") } + [huge]
        let batches = TestResultBatch.batches(many)
        XCTAssertEqual(batches.flatMap { $0 }.count, many.count)
        for b in batches {
            let line = LineCodec.encode(ClientMessage.tests(job: 1, attempt: 1, results: b))
            XCTAssertLessThan(line.utf8.count, WireLimits.maxLineBytes)
            guard case .tests(_, _, let back) = try LineCodec.decodeClient(line) else { return XCTFail("not a tests line") }
            XCTAssertEqual(back, b)
        }
    }
}
