import DevCIWire
import XCTest

/// The one roll-up of a build's status from its jobs'.
final class BuildStatusTests: XCTestCase {
    func job(_ s: JobState, allowed: Bool = false) -> BuildStatus.Job { .init(state: s, allowFailure: allowed) }

    func testEveryStateOfARunIsReachable() {
        XCTAssertEqual(BuildStatus.rollUp([job(.queued), job(.pending)]), .queued)
        XCTAssertEqual(BuildStatus.rollUp([job(.assigned), job(.pending)]), .started, "a runner took the first job, which has not begun")
        XCTAssertEqual(BuildStatus.rollUp([job(.running), job(.assigned)]), .running)
        XCTAssertEqual(BuildStatus.rollUp([job(.success), job(.assigned)]), .running, "under way once a job has ended")
        XCTAssertEqual(BuildStatus.rollUp([job(.success), job(.pending)]), .running)
        XCTAssertEqual(BuildStatus.rollUp([job(.success)]), .success)
        XCTAssertEqual(BuildStatus.rollUp([job(.success), job(.failed, allowed: true)]), .passedWithAllowedFailures)
        XCTAssertEqual(BuildStatus.rollUp([job(.failed), job(.skipped)]), .failed)
        XCTAssertEqual(BuildStatus.rollUp([job(.error), job(.failed)]), .error)
        XCTAssertEqual(BuildStatus.rollUp([job(.timedOut)]), .timedOut)
        XCTAssertEqual(BuildStatus.rollUp([job(.cancelled), job(.cancelled)]), .cancelled)
        // `skipped` is a run that never ran (one run at a time, debounce): stored as such, never rolled up.
        XCTAssertTrue(BuildStatus.skipped.isFinal)
        XCTAssertFalse(BuildStatus.started.isFinal)
        XCTAssertEqual(BuildStatus.timedOut.display, "timed out")
    }
}
