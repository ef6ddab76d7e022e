import DevCIWire
import Logging
import XCTest

@testable import DevCIRunner

/// The runner's side of the wire with a fake clock: no socket, no process, no real time.
final class RunnerSessionTests: XCTestCase {
    var now = ContinuousClock.now
    var s = RunnerSession(config: .init(name: "r1", slots: 2, token: "t", maxBackoff: .seconds(5), registrationTimeout: .seconds(10),
                                        dispatcher: "localhost:8888"))
    let sha = String(repeating: "a", count: 40)

    @discardableResult
    func on(_ e: RunnerSession.Event) -> [RunnerSession.Action] { s.handle(e, now: now) }

    func assignment(_ job: Int64, attempt: Int = 1) -> JobAssignment {
        JobAssignment(job: job, attempt: attempt, build: 1, name: "test", repo: "/r", commit: sha, branch: "main", script: nil)
    }

    func sent(_ actions: [RunnerSession.Action]) -> [ClientMessage] {
        actions.flatMap { if case .send(let lines) = $0 { return lines } else { return [] } }
    }

    func logs(_ actions: [RunnerSession.Action], _ level: Logger.Level) -> [String] {
        actions.compactMap { if case .log(level, let text) = $0 { return text } else { return nil } }
    }

    func log(_ job: Int64, _ text: String) -> ClientMessage {
        .log(job: job, attempt: 1, stream: .out, timestampMillis: 1, text: text)
    }

    /// Connected, greeted and registered, as after a clean start.
    func register() {
        on(.connected)
        on(.received(.hello(protocolVersion: WireLimits.protocolVersion, authRequired: true)))
        on(.received(.registered(name: "r1", heartbeatMillis: 1000, leaseMillis: 3000)))
    }

    func testTheGreetingAuthenticatesRegistersClaimsThenHeartbeatsThenReplays() {
        register()
        XCTAssertEqual(sent(on(.received(.assign(assignment(7))))), [.started(job: 7, attempt: 1)])
        let result = ClientMessage.result(job: 8, attempt: 2, outcome: .failed, exitCode: 1, reason: "exit status 1")
        on(.received(.assign(assignment(8, attempt: 2))))
        on(.finished(job: 8, result: result))
        on(.disconnected)
        XCTAssertEqual(sent(on(.output([log(7, "while cut off")]))), [], "kept for the next connection")
        on(.connected)
        let greeting = on(.received(.hello(protocolVersion: WireLimits.protocolVersion, authRequired: true)))
        XCTAssertEqual(sent(greeting), [.auth(token: "t"), .register(name: "r1", slots: 2), .claim(job: 8, attempt: 2), .claim(job: 7, attempt: 1),
                                        .heartbeat, log(7, "while cut off"), result])
        XCTAssertTrue(s.outbox.isEmpty)
        on(.received(.accepted(job: 8, attempt: 2)))
        XCTAssertTrue(s.unacknowledged.isEmpty)
    }

    func testAnotherProtocolVersionIsRefused() {
        on(.connected)
        let a = on(.received(.hello(protocolVersion: WireLimits.protocolVersion + 1, authRequired: false)))
        XCTAssertEqual(a.last, .close)
        XCTAssertEqual(sent(a), [])
    }

    func testBackoffDoublesUpToItsCapAndStartsOverOnceRegistered() {
        var delays: [Duration] = []
        for _ in 0..<8 {
            for case .reconnect(let d) in on(.connectFailed("connection refused")) { delays.append(d) }
        }
        XCTAssertEqual(delays, [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600),
                                .milliseconds(3200), .seconds(5), .seconds(5)])
        register()
        XCTAssertEqual(s.backoff, RunnerSession.initialBackoff)
    }

    func testAnOutageIsSaidOnceAndItsEndWithItsLength() {
        XCTAssertEqual(logs(on(.connectFailed("connection refused")), .warning).count, 1)
        now = now + .seconds(2)
        XCTAssertEqual(logs(on(.connectFailed("connection refused")), .warning), [])
        now = now + .seconds(1)
        on(.connected)
        on(.received(.hello(protocolVersion: WireLimits.protocolVersion, authRequired: false)))
        let back = logs(on(.received(.registered(name: "r1", heartbeatMillis: 1000, leaseMillis: 3000))), .notice)
        XCTAssertEqual(back, ["the dispatcher is back after 3.0 s and 2 failed attempt(s)"])
    }

    func testJobsTakeFreeSlotsAndAFullRunnerRefusesWithAGiveBack() {
        register()
        XCTAssertTrue(on(.received(.assign(assignment(1)))).contains(.startJob(assignment(1), slot: 0)))
        XCTAssertTrue(on(.received(.assign(assignment(2)))).contains(.startJob(assignment(2), slot: 1)))
        let third = on(.received(.assign(assignment(3))))
        XCTAssertEqual(sent(third), [.result(job: 3, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "runner busy", giveBack: .busy)])
        XCTAssertFalse(third.contains { if case .startJob = $0 { return true } else { return false } })
        on(.finished(job: 1, result: .result(job: 1, attempt: 1, outcome: .success, exitCode: 0, reason: "")))
        XCTAssertTrue(on(.received(.assign(assignment(4)))).contains(.startJob(assignment(4), slot: 0)), "slot 0 is free again")
    }

    func testACancelStopsOnlyTheAttemptItNames() {
        register()
        on(.received(.assign(assignment(1, attempt: 2))))
        XCTAssertEqual(on(.received(.cancel(job: 1, attempt: 1, reason: "old"))), [])
        XCTAssertTrue(on(.received(.cancel(job: 1, attempt: 2, reason: "lease expired"))).contains(.cancelJob(1, grace: 2)))
    }

    func testTheOutboxIsBoundedAndSaysWhatItDropped() {
        register()
        on(.disconnected)
        on(.output((0..<(RunnerSession.outboxLimit + 5)).map { log(1, "line \($0)") }))
        XCTAssertEqual(s.outbox.count, RunnerSession.outboxLimit)
        on(.connected)
        let greeting = on(.received(.hello(protocolVersion: WireLimits.protocolVersion, authRequired: false)))
        XCTAssertEqual(logs(greeting, .warning), ["dropped 5 log line(s) while disconnected"])
    }

    func testStoppingGivesEveryJobBackBeforeHangingUpAndReportsNothingAfter() {
        register()
        on(.received(.assign(assignment(1))))
        let stop = on(.stop)
        XCTAssertTrue(stop.contains(.cancelJob(1, grace: 1)))
        XCTAssertEqual(sent(stop), [.result(job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "runner shutting down", giveBack: .shutdown), .heartbeat])
        XCTAssertEqual(stop.last, .closeAfterWrites, "the give-back is on the wire before the hang-up")
        XCTAssertEqual(on(.finished(job: 1, result: .result(job: 1, attempt: 1, outcome: .cancelled, exitCode: -1, reason: "stopped"))), [])
        XCTAssertFalse(on(.disconnected).contains { if case .reconnect = $0 { return true } else { return false } }, "no redial")
    }

    func testNoRegistrationInTimeHangsUpToDialAgain() {
        XCTAssertEqual(on(.connected), [.armRegistrationDeadline(RunnerSession.greetingTimeout)], "a live dispatcher greets at once")
        let greeting = on(.received(.hello(protocolVersion: WireLimits.protocolVersion, authRequired: false)))
        XCTAssertEqual(greeting.first, .armRegistrationDeadline(.seconds(10)), "then the whole registration timeout")
        XCTAssertEqual(on(.registrationTimedOut).last, .close)
        on(.disconnected)
        XCTAssertEqual(on(.registrationTimedOut), [], "a stale deadline does nothing")
    }

    func testAConnectionThatNeverGreetsIsLeftAfterTheGreetingTimeout() {
        on(.connected)
        // A frozen dispatcher's kernel accepts the connection, and nothing more comes.
        let left = on(.registrationTimedOut)
        XCTAssertEqual(left.last, .close)
        XCTAssertTrue(logs(left, .warning).first?.contains("said nothing") ?? false, "\(left)")
    }

    func testADispatcherThatAnswersHeartbeatsAndGoesSilentForALeaseIsLeft() {
        register()
        XCTAssertEqual(sent(on(.heartbeatDue)), [.heartbeat])
        // Dispatchers before this one never answer a heartbeat: their silence means nothing.
        now += .seconds(10)
        XCTAssertEqual(sent(on(.heartbeatDue)), [.heartbeat])
        on(.received(.ok(what: "heartbeat")))
        now += .seconds(2)
        XCTAssertEqual(sent(on(.heartbeatDue)), [.heartbeat], "2 s of a 3 s lease: still there")
        now += .milliseconds(1500)
        let left = on(.heartbeatDue)
        XCTAssertEqual(left.last, .close, "silent for longer than a lease: frozen or cut off")
        XCTAssertEqual(sent(left), [])
        // A standby's greeting is a refusal: hang up and try the next address.
        on(.disconnected)
        on(.connected)
        XCTAssertEqual(on(.received(.error(code: .standby, message: "this dispatcher is a standby"))).last, .close)
    }

}
