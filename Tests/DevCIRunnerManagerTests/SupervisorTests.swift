import DevCIRunnerManager
import DevCIWire
import XCTest

/// The runner manager's decisions with a fake clock.
final class SupervisorTests: XCTestCase {
    let t0 = ContinuousClock.now
    var now: ContinuousClock.Instant!
    var s: Supervisor!

    override func setUp() {
        now = t0
        s = Supervisor(desired: 2, config: .init(initialBackoff: .seconds(1), maxBackoff: .seconds(4), healthyAfter: .seconds(60)))
    }

    func on(_ e: Supervisor.Event) -> [Supervisor.Action] { s.handle(e, now: now) }
    func starts(_ a: [Supervisor.Action]) -> [Int] { a.compactMap { if case .start(let n) = $0 { return n } else { return nil } } }
    func stops(_ a: [Supervisor.Action]) -> [Int] { a.compactMap { if case .stop(let n) = $0 { return n } else { return nil } } }

    /// Ticks the fake clock forward in 100 ms steps until a runner starts, for at most a fake minute (never for ever).
    func tickUntilAStart() -> Bool {
        for _ in 0..<600 {
            if !starts(on(.tick)).isEmpty { return true }
            now = now + .milliseconds(100)
        }
        return false
    }

    func testStartsTheDesiredCountOnce() {
        XCTAssertEqual(starts(on(.tick)), [1, 2])
        XCTAssertEqual(starts(on(.tick)), [])
    }

    func testRestartsWithExponentialCappedBackoff() {
        _ = on(.tick)
        var delays: [Double] = []
        for _ in 0..<5 {
            _ = on(.exited(slot: 1, how: "killed by signal 9"))
            let died = now!
            XCTAssertTrue(tickUntilAStart(), "no restart within a fake minute")
            delays.append((now - died).seconds)
        }
        XCTAssertEqual(delays.map { $0.rounded() }, [1, 2, 4, 4, 4])
    }

    func testAHealthyMinuteResetsTheBackoff() {
        _ = on(.tick)
        for _ in 0..<3 {
            _ = on(.exited(slot: 1, how: "exit status 1"))
            XCTAssertTrue(tickUntilAStart(), "no restart within a fake minute")
        }
        now = now + .seconds(61)
        _ = on(.exited(slot: 1, how: "exit status 1"))
        now = now + .seconds(1)
        XCTAssertEqual(starts(on(.tick)), [1], "back after the initial backoff")
    }

    func testScalingUpAndDown() {
        _ = on(.tick)
        XCTAssertEqual(starts(on(.scale(3))), [3])
        let down = on(.scale(1))
        XCTAssertEqual(stops(down), [2, 3])
        XCTAssertTrue(starts(on(.exited(slot: 2, how: "exit status 0"))).isEmpty, "a stopped runner is not restarted")
        XCTAssertEqual(s.liveSlots, [1, 3])
    }

    func testShutdownStopsAllAndFinishesWhenTheyExit() {
        _ = on(.tick)
        XCTAssertEqual(stops(on(.shutdown)), [1, 2])
        XCTAssertFalse(s.isFinished)
        XCTAssertTrue(starts(on(.exited(slot: 1, how: "exit status 0"))).isEmpty)
        _ = on(.exited(slot: 2, how: "exit status 0"))
        XCTAssertTrue(s.isFinished)
    }
}
