import DevCIWire
import NIOCore
import XCTest

/// Golden lines: these bytes are the wire. A change here is a protocol change (docs/PROTOCOL.md).
final class LineCodecTests: XCTestCase {
    let sha = "0123456789abcdef0123456789abcdef01234567"

    func testClientGoldenLines() throws {
        let golden: [(ClientMessage, String)] = [
            (.auth(token: "s3cret"), "auth token=s3cret"),
            (.register(name: "build-1", slots: 2), "register name=build-1 slots=2"),
            (.heartbeat, "heartbeat"),
            (.claim(job: 7, attempt: 2), "claim job=7 attempt=2"),
            (.started(job: 7, attempt: 2), "started job=7 attempt=2"),
            (.log(job: 7, attempt: 2, stream: .err, timestampMillis: 1_700_000_000_123, text: "FAIL: 100% <b>x</b>\ty"),
             "log job=7 attempt=2 stream=err ts=1700000000123 text=FAIL:%20100%25%20<b>x</b>%09y"),
            (.log(job: 1, attempt: 1, stream: .out, timestampMillis: 5, text: ""), "log job=1 attempt=1 stream=out ts=5 text="),
            (.result(job: 7, attempt: 2, outcome: .failed, exitCode: 1, reason: "exit status 1"),
             "result job=7 attempt=2 status=failed exit=1 reason=exit%20status%201"),
            (.dispatch(repo: "/srv/my repo", commit: sha, branch: "feature/x", pipeline: .none),
             "dispatch repo=/srv/my%20repo commit=\(sha) branch=feature/x"),
            (.dispatch(repo: "/r", commit: sha, branch: "main", pipeline: .text("jobs:\n  a:\n    run: make")),
             "dispatch repo=/r commit=\(sha) branch=main pipeline=jobs:%0A%20%20a:%0A%20%20%20%20run:%20make"),
            (.dispatch(repo: "/r", commit: sha, branch: "main", pipeline: .unreadable("too large")),
             "dispatch repo=/r commit=\(sha) branch=main pipeline_error=too%20large"),
            (.dispatch(repo: "/r", commit: sha, branch: "main", pipeline: .none, title: "Fix <b>bug</b>", author: "Ada L."),
             "dispatch repo=/r commit=\(sha) branch=main title=Fix%20<b>bug</b> author=Ada%20L."),
            (.dispatch(repo: "/r", commit: sha, branch: "main", pipeline: .none, mark: .never),
             "dispatch repo=/r commit=\(sha) branch=main mark=0"),
            (.dispatch(repo: "/r", commit: sha, branch: "main", pipeline: .none, mark: .ifStill(String(repeating: "b", count: 40))),
             "dispatch repo=/r commit=\(sha) branch=main mark=\(String(repeating: "b", count: 40))"),
            (.result(job: 7, attempt: 2, outcome: .timedOut, exitCode: 137, reason: "timed out after 10m"),
             "result job=7 attempt=2 status=timed_out exit=137 reason=timed%20out%20after%2010m"),
            (.result(job: 7, attempt: 2, outcome: .cancelled, exitCode: -1, reason: "runner shutting down", giveBack: .shutdown),
             "result job=7 attempt=2 status=cancelled exit=-1 reason=runner%20shutting%20down give_back=shutdown"),
            (.tests(job: 7, attempt: 2, results: [TestResult(suite: "t.C", name: "test_a", status: .failed, duration: 0.5, message: "2 != 3")]),
             "tests job=7 attempt=2 results=[{\"duration\":0.5,\"message\":\"2%20!=%203\",\"name\":\"test_a\",\"status\":\"failed\",\"suite\":\"t.C\"}]"),
            (.untested(UntestedCommit(repo: "/r", branch: "main", commit: sha, before: String(repeating: "b", count: 40), pipeline: .text("jobs: {}"),
                                      title: "tidy", author: "Ada")),
             "untested repo=/r commit=\(sha) branch=main before=\(String(repeating: "b", count: 40)) title=tidy author=Ada pipeline=jobs:%20{}"),
            (.status, "status"),
            (.lastDispatched(repo: "/r", branch: "main"), "last repo=/r branch=main"),
            (.register(name: "r1", slots: 2, queues: ["fast", "gpu"]), "register name=r1 slots=2 queues=fast,gpu"),
            (.addJob(AdHocJob(command: "make clean && make", queue: "fast", priority: -5, timeoutSeconds: 90)),
             "add_job command=make%20clean%20&&%20make queue=fast priority=-5 timeout=90s"),
            (.addJob(AdHocJob(command: "true")), "add_job command=true queue=default priority=0"),
            (.cancel(.build(12)), "cancel build=12"),
            (.cancel(.job(34)), "cancel job=34"),
            (.reload, "reload"),
            (.awaitPush(repos: ["/r", "https://x/y z.git"], timeoutMillis: 1500), "await_push repos=/r%0Ahttps://x/y%20z.git timeout_ms=1500"),
        ]
        for (message, line) in golden {
            XCTAssertEqual(LineCodec.encode(message), line)
            XCTAssertEqual(try LineCodec.decodeClient(line), message, line)
        }
    }

    func testServerGoldenLines() throws {
        let golden: [(ServerMessage, String)] = [
            (.hello(protocolVersion: 1, authRequired: true), "hello proto=1 server=devci auth=required"),
            (.ok(what: "auth"), "ok for=auth"),
            (.error(code: .unknownVerb, message: "unknown message 'x'"), "error code=unknown_verb message=unknown%20message%20'x'"),
            (.registered(name: "r1", heartbeatMillis: 1000, leaseMillis: 3000), "registered name=r1 heartbeat_ms=1000 lease_ms=3000"),
            (.assign(JobAssignment(job: 3, attempt: 1, build: 2, repo: "/r", commit: sha, branch: "main")),
             "assign job=3 attempt=1 build=2 name=test repo=/r commit=\(sha) branch=main"),
            (.assign(JobAssignment(job: 4, attempt: 2, build: 2, name: "unit", repo: "/r", commit: sha, branch: "main",
                                   script: #"{"env":{},"steps":[{"name":"t","run":"make test"}]}"#)),
             #"assign job=4 attempt=2 build=2 name=unit repo=/r commit=\#(sha) branch=main script={"env":{},"steps":[{"name":"t","run":"make%20test"}]}"#),
            (.cancel(job: 3, attempt: 1, reason: "lease expired"), "cancel job=3 attempt=1 reason=lease%20expired"),
            (.accepted(job: 3, attempt: 1), "accepted job=3 attempt=1"),
            (.discarded(job: 3, attempt: 1, reason: "late"), "discarded job=3 attempt=1 reason=late"),
            (.queued(build: 2, jobs: [3, 4], created: true), "queued build=2 jobs=3,4 created=true"),
            (.status(queued: 1, running: 2, runners: 3), "status queued=1 running=2 runners=3"),
            (.last(repo: "/r", branch: "main", commit: ""), "last repo=/r branch=main commit="),
            (.status(queued: 1, running: 0, runners: 1, waiting: ["fast", "gpu"]), "status queued=1 running=0 runners=1 waiting=fast,gpu"),
            (.assign(JobAssignment(job: 5, attempt: 1, build: 3, name: "adhoc", repo: "", commit: "", branch: "", script: "{}")),
             "assign job=5 attempt=1 build=3 name=adhoc script={}"),
            (.pushed(repos: ["/r"]), "pushed repos=/r"),
            (.pushed(repos: []), "pushed repos="),
        ]
        for (message, line) in golden {
            XCTAssertEqual(LineCodec.encode(message), line)
            XCTAssertEqual(try LineCodec.decodeServer(line), message, line)
        }
    }

    func testBadLinesGiveErrorsWithCodes() {
        let bad: [(String, String)] = [
            ("", "empty"),
            ("frobnicate", "unknown_verb"),
            ("claim job=1", "missing_field"),
            ("claim job=x attempt=1", "bad_field"),
            ("claim job=-1 attempt=1", "bad_field"),
            ("claim job=1 attempt=1 extra=2", "unknown_field"),
            ("claim job=1 job=2 attempt=1", "malformed"),
            ("claim job", "malformed"),
            ("log job=1 attempt=1 stream=out ts=1 text=%ZZ", "bad_escape"),
            ("log job=1 attempt=1 stream=out ts=1 text=%FF", "bad_utf8"),
            ("log job=1 attempt=1 stream=weird ts=1 text=", "bad_field"),
            ("tests job=1 attempt=1 results=not-json", "bad_field"),
            ("tests job=1 attempt=1 results=[{\"name\":\"a\"}]", "bad_field"),
            ("tests job=1 attempt=1 results=[{\"suite\":\"s\",\"name\":\"a\",\"status\":\"flaky\",\"duration\":1}]", "bad_field"),
            ("untested repo=/r commit=abc branch=main before=abc", "bad_field"),
            ("dispatch repo=/r commit=HEAD branch=main", "bad_field"),
            ("dispatch repo=/r commit=\(sha.uppercased()) branch=main", "bad_field"),
            ("dispatch repo=--upload-pack=evil commit=\(sha) branch=main", "bad_field"),
            ("dispatch repo=/r commit=\(sha) branch=-delete", "bad_field"),
            ("dispatch repo=/r commit=\(sha) branch=a..b", "bad_field"),
            ("dispatch repo=/r commit=\(sha) branch=main mark=yes", "bad_field"),
            ("result job=1 attempt=1 status=failed give_back=busy", "bad_field"),
            ("result job=1 attempt=1 status=cancelled give_back=later", "bad_field"),
            ("register name=a%20b", "bad_field"),
            ("register name=ok slots=0", "bad_field"),
            ("claim job=99999999999999999999 attempt=1", "bad_field"),
            ("claim job=1 attempt=-9223372036854775808", "bad_field"),
            ("register name=a slots=-9223372036854775808", "bad_field"),
            ("register name=a queues=", "bad_field"),
            ("register name=a queues=a,b%20c", "bad_field"),
            ("add_job command=%20%20", "bad_field"),
            ("add_job command=x queue=a/b", "bad_field"),
            ("add_job command=x priority=1001", "bad_field"),
            ("add_job command=x timeout=soon", "bad_field"),
            ("cancel", "missing_field"),
            ("cancel build=0", "bad_field"),
            ("await_push repos=/r timeout_ms=60001", "bad_field"),
            ("await_push repos=-x timeout_ms=1", "bad_field"),
        ]
        for (line, code) in bad {
            XCTAssertThrowsError(try LineCodec.decodeClient(line), line) { error in
                XCTAssertEqual((error as? WireError)?.code.rawValue, code, line)
            }
        }
    }

    func testPercentEncodingRoundTripsAnyText() throws {
        for text in ["", " ", "%", "%%20", "a=b c", "tab\there", "new\nline", "ünï©ødé ✓", "\u{7f}\u{1}", "x ".padding(toLength: 1000, withPad: "é%", startingAt: 0)] {
            let encoded = LineCodec.percentEncode(text)
            XCTAssertFalse(encoded.contains(" ") || encoded.contains("\n"), encoded)
            XCTAssertEqual(try LineCodec.percentDecode(Substring(encoded)), text)
        }
    }

    func testFramingBoundsLinesAndRecovers() {
        var decoder = BoundedLineDecoder(maxLineBytes: 8)
        var buffer = ByteBuffer(string: "status\r\nabcdefghijklmnop")
        var frames: [String] = []
        func drain() {
            while let f = decoder.nextFrame(&buffer) {
                switch f {
                case .line(let s): frames.append("line:" + s)
                case .tooLong: frames.append("tooLong")
                case .invalidUTF8: frames.append("badUTF8")
                }
            }
        }
        drain()
        XCTAssertEqual(frames, ["line:status", "tooLong"])
        XCTAssertEqual(buffer.readableBytes, 0, "an overlong line is not buffered")
        buffer.writeString("more garbage\nok\n")
        buffer.writeBytes([0xff, 0xfe, 0x0a])
        buffer.writeString("12345678\n123456789\n")
        drain()
        XCTAssertEqual(frames, ["line:status", "tooLong", "line:ok", "badUTF8", "line:12345678", "tooLong"])
    }

    func testValidationAndTimeValues() {
        XCTAssertTrue(Validate.isCommitID(sha))
        XCTAssertFalse(Validate.isCommitID(String(sha.dropLast())))
        XCTAssertFalse(Validate.isCommitID("-" + sha.dropFirst()))
        XCTAssertTrue(Validate.isBranchName("release/1.2"))
        for bad in ["", "-x", "a b", "a..b", "a~1", "x.lock", "a//b", "$(rm -rf /)"] {
            XCTAssertFalse(Validate.isBranchName(bad), bad)
        }
        XCTAssertEqual(TimeValue.parse("30s"), .seconds(30))
        XCTAssertEqual(TimeValue.parse("5m"), .seconds(300))
        XCTAssertEqual(TimeValue.parse("1h"), .seconds(3600))
        XCTAssertEqual(TimeValue.parse("1d"), .seconds(86400))
        XCTAssertEqual(TimeValue.parse("1w"), .seconds(604_800))
        XCTAssertEqual(TimeValue.parse("250ms"), .milliseconds(250))
        XCTAssertNil(TimeValue.parse("5"))
        XCTAssertNil(TimeValue.parse("-5s"))
        XCTAssertNil(TimeValue.parse("fives"))
        XCTAssertEqual(HostPort("localhost:8888"), HostPort(host: "localhost", port: 8888))
        XCTAssertEqual(HostPort("[::1]:9"), HostPort(host: "::1", port: 9))
        XCTAssertNil(HostPort("localhost"))
        XCTAssertNil(HostPort("h:70000"))
        XCTAssertEqual(HostPort.list("a:1, [::1]:2,b:3"), [HostPort(host: "a", port: 1), HostPort(host: "::1", port: 2), HostPort(host: "b", port: 3)])
        XCTAssertNil(HostPort.list("a:1,"), "an empty entry")
        XCTAssertNil(HostPort.list("a:1,b"))
        XCTAssertNil(HostPort.list(Array(repeating: "a:1", count: 17).joined(separator: ",")))
        XCTAssertTrue(constantTimeEquals("abc", "abc"))
        XCTAssertFalse(constantTimeEquals("abc", "abd"))
        XCTAssertFalse(constantTimeEquals("abc", "abcd"))
    }
}

/// docs/PROTOCOL.md stays true to the wire: every example line in it decodes.
final class ProtocolDocumentTests: XCTestCase {
    func examples(after heading: String, in text: String) -> [String] {
        guard let start = text.range(of: heading), let open = text.range(of: "```\n", range: start.upperBound..<text.endIndex),
              let close = text.range(of: "```", range: open.upperBound..<text.endIndex) else { return [] }
        return text[open.upperBound..<close.lowerBound].split(separator: "\n").map(String.init)
    }

    func testEveryExampleLineDecodes() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/PROTOCOL.md").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let client = examples(after: "## Messages from peers to the dispatcher", in: text)
        let server = examples(after: "## Messages from the dispatcher", in: text)
        XCTAssertGreaterThan(client.count, 15)
        XCTAssertGreaterThan(server.count, 12)
        for line in client { XCTAssertNoThrow(try LineCodec.decodeClient(line), line) }
        for line in server { XCTAssertNoThrow(try LineCodec.decodeServer(line), line) }
    }
}
