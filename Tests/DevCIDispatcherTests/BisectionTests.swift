import DevCIDispatcher
import DevCIStore
import DevCIWire
import XCTest

/// Issue 14, point 4: the bisection's decisions, for every number of untested commits up to 100 and every
/// position of the first bad commit.
final class BisectionTests: XCTestCase {
    func testFindsTheFirstBadCommitWithinLog2NPlusOneBuilds() {
        for n in 1...100 {
            let bound = Int(floor(log2(Double(n)))) + 1
            XCTAssertLessThanOrEqual(BisectionRecord.maxBuilds(n), bound, "n = \(n)")
            for culprit in 0...n {  // n: the red build's own commit broke it
                var b = BisectionRecord(repo: "r", branch: "main", badBuild: 9, goodBuild: 8, candidates: (0..<n).map { "c\($0)" })
                var step = Bisection.next(b)
                var builds = 0
                while case .build(let i) = step {
                    builds += 1
                    XCTAssertTrue(b.good < i && i < b.bad, "only commits still in doubt are built")
                    (b, step) = Bisection.record(b, index: i, i >= culprit ? .bad : .good)
                }
                XCTAssertEqual(step, .found(culprit), "n = \(n), culprit = \(culprit)")
                XCTAssertLessThanOrEqual(builds, BisectionRecord.maxBuilds(n), "n = \(n), culprit = \(culprit)")
            }
        }
    }

    func testStopsOnAFailureOfFlakyTestsOnlyOrABuildThatDidNotDecide() {
        let b = BisectionRecord(repo: "r", branch: "main", badBuild: 9, goodBuild: 8, candidates: (0..<15).map { "c\($0)" })
        guard case .build(let i) = Bisection.next(b) else { return XCTFail() }
        guard case .stopped(let why) = Bisection.record(b, index: i, .flakyOnly).1 else { return XCTFail() }
        XCTAssertTrue(why.contains("flaky"), why)
        guard case .stopped = Bisection.record(b, index: i, .inconclusive("it ended cancelled")).1 else { return XCTFail() }
    }

    func testAFirstBadCommitAtTheCutOfAKeptBacklogIsNotNamed() {
        var b = BisectionRecord(repo: "r", branch: "main", badBuild: 9, goodBuild: 8, candidates: (0..<7).map { "c\($0)" }, truncated: true)
        var step = Bisection.next(b)
        while case .build(let i) = step { (b, step) = Bisection.record(b, index: i, .bad) }
        guard case .stopped(let why) = step else { return XCTFail("\(step)") }
        XCTAssertTrue(why.contains("c0") && why.contains("before it"), why)
        b = BisectionRecord(repo: "r", branch: "main", badBuild: 9, goodBuild: 8, candidates: (0..<7).map { "c\($0)" }, truncated: true)
        step = Bisection.next(b)
        while case .build(let i) = step { (b, step) = Bisection.record(b, index: i, i >= 3 ? .bad : .good) }
        XCTAssertEqual(step, .found(3), "a culprit after the oldest kept commit is found as usual")
    }

    func testVerdicts() {
        func failure(flaky: Bool) -> BuildTest {
            BuildTest(job: "unit", suite: "s", name: "t", status: .failed, duration: 0, message: nil, attempt: 1, flippedHere: false, knownFlaky: flaky)
        }
        XCTAssertEqual(Bisection.verdict(status: .success, failures: []), .good)
        XCTAssertEqual(Bisection.verdict(status: .passedWithAllowedFailures, failures: []), .good)
        XCTAssertEqual(Bisection.verdict(status: .failed, failures: []), .bad, "a failure without test results is a failure")
        XCTAssertEqual(Bisection.verdict(status: .failed, failures: [failure(flaky: true)]), .flakyOnly)
        XCTAssertEqual(Bisection.verdict(status: .failed, failures: [failure(flaky: true), failure(flaky: false)]), .bad)
        XCTAssertEqual(Bisection.verdict(status: .cancelled, failures: []), .inconclusive("it ended cancelled"))
    }
}
