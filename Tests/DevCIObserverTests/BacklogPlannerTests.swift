import DevCIObserver
import XCTest

final class BacklogPlannerTests: XCTestCase {
    func c(_ i: Int) -> String { String(format: "%040x", i) }

    func testNothingNewDispatchesNothing() {
        XCTAssertEqual(BacklogPlanner.plan(last: c(1), tip: c(1), newCommits: [], maxBacklog: 50).dispatch, [])
    }

    func testEveryNewCommitOldestFirst() {
        let new = (2...21).map(c)
        let plan = BacklogPlanner.plan(last: c(1), tip: c(21), newCommits: new, maxBacklog: 50)
        XCTAssertEqual(plan.dispatch, new)
        XCTAssertEqual(plan.skipped, 0)
        XCTAssertNil(plan.note)
    }

    func testOverTheCapTheNewestAreDispatchedAndTheRestCounted() {
        let new = (2...61).map(c)
        let plan = BacklogPlanner.plan(last: c(1), tip: c(61), newCommits: new, maxBacklog: 50)
        XCTAssertEqual(plan.dispatch, Array(new.suffix(50)))
        XCTAssertEqual(plan.skipped, 10)
        XCTAssertTrue(plan.note?.contains("skipping the 10 oldest") ?? false)
    }

    func testFirstSightDispatchesTheTipOnly() {
        let plan = BacklogPlanner.plan(last: nil, tip: c(9), newCommits: nil, maxBacklog: 50)
        XCTAssertEqual(plan.dispatch, [c(9)])
    }

    func testRewrittenHistoryDispatchesTheNewTip() {
        let plan = BacklogPlanner.plan(last: c(1), tip: c(9), newCommits: nil, maxBacklog: 50)
        XCTAssertEqual(plan.dispatch, [c(9)])
        XCTAssertTrue(plan.note?.contains("rewritten") ?? false)
    }
}
