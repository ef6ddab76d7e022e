import DevCIStore
import DevCIWire
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import XCTest

@testable import DevCIDispatcher

/// The dispatcher's connection handler on `EmbeddedChannel`s: no socket, and timers on the embedded loop's
/// own clock. Authentication, the bad-line budget, the one-shot `status`, admission and backpressure.
final class ConnectionHandlerTests: XCTestCase {
    var dir: URL!
    var loop: EmbeddedEventLoop!
    var dispatcher: Dispatcher!
    var nextID = 1

    func makeDispatcher(token: String? = nil, maxPending: Int = 1024) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("devci-conn-\(UUID().uuidString)")
        loop = EmbeddedEventLoop()
        let store = try SQLStore(path: dir.appendingPathComponent("devci.sqlite").path)
        dispatcher = Dispatcher(config: DispatcherConfig(token: token, identifyTimeout: .seconds(5), maxPendingConnections: maxPending),
                                store: store, loop: loop, logger: Logger(label: "test"))
    }

    override func tearDown() {
        try? loop?.syncShutdownGracefully()
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    /// A new connection, active, with the handlers the dispatcher's server puts on every child channel.
    func connect() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(BoundedLineDecoder()))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineEncoder()))
        try channel.pipeline.syncOperations.addHandler(DispatcherConnection(id: nextID, dispatcher: dispatcher))
        nextID += 1
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    func say(_ channel: EmbeddedChannel, _ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    /// Every line the dispatcher has written so far.
    func heard(_ channel: EmbeddedChannel) throws -> [String] {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes) ?? "" }
        return text.split(separator: "\n").map(String.init)
    }

    func testWithATokenNothingButAuthComesFirst() throws {
        try makeDispatcher(token: "s3cret")
        let early = try connect()
        XCTAssertEqual(try heard(early), ["hello proto=1 server=devci auth=required"])
        try say(early, "status\nstatus\n")
        XCTAssertEqual(try heard(early), ["error code=auth_required message=send%20'auth%20token=…'%20first"])
        XCTAssertFalse(early.isActive, "closed, and the second line never acted on")

        let wrong = try connect()
        _ = try heard(wrong)
        try say(wrong, "auth token=guess\n")
        XCTAssertEqual(try heard(wrong), ["error code=bad_token message=wrong%20token"])
        XCTAssertFalse(wrong.isActive)

        let right = try connect()
        _ = try heard(right)
        try say(right, "auth token=s3cret\nstatus\n")
        XCTAssertEqual(try heard(right), ["ok for=auth", "status queued=0 running=0 runners=0"])
        XCTAssertFalse(right.isActive, "a status as the first request is one-shot")
        XCTAssertEqual(dispatcher.pendingConnections, 0)
    }

    func testTheFifthBadLineClosesTheConnection() throws {
        try makeDispatcher()
        let channel = try connect()
        _ = try heard(channel)
        try say(channel, "auth token=any\n")  // a good line first (without a token, a no-op), so no one-shot
        try say(channel, (1...6).map { "bogus\($0)\n" }.joined())
        let lines = try heard(channel)
        XCTAssertEqual(lines.filter { $0.hasPrefix("error code=unknown_verb") }.count, 5, "\(lines)")
        XCTAssertEqual(lines.last, "error code=too_many_errors message=closing%20after%205%20bad%20lines")
        XCTAssertFalse(channel.isActive)
    }

    func testASilentConnectionIsClosedAfterTheAuthTimeoutOnTheLoopsClock() throws {
        try makeDispatcher(token: "t")
        let channel = try connect()
        XCTAssertEqual(dispatcher.pendingConnections, 1)
        loop.advanceTime(by: .seconds(4))
        XCTAssertTrue(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(try heard(channel).last, "error code=timeout message=authenticate%20within%205.0%20seconds")
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(dispatcher.pendingConnections, 0, "counted out when it closed")
    }

    func testConnectionsOverTheCapAreRefusedWithoutAGreeting() throws {
        try makeDispatcher(token: "t", maxPending: 2)
        let first = try connect(), second = try connect()
        let third = try connect()
        XCTAssertEqual(try heard(third), ["error code=busy message=too%20many%20connections%20waiting%20to%20authenticate;%20try%20again"])
        XCTAssertFalse(third.isActive)
        try say(first, "auth token=t\n")
        XCTAssertEqual(dispatcher.pendingConnections, 1, "an authenticated one no longer counts")
        let fourth = try connect()
        XCTAssertEqual(try heard(fourth), ["hello proto=1 server=devci auth=required"], "room again")
        XCTAssertTrue(second.isActive && fourth.isActive)
    }

    /// Counts the reads that reach the transport.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    func testAPeerThatDoesNotReadItsRepliesIsNotReadFrom() throws {
        try makeDispatcher()
        let channel = try connect()
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(counter, position: .first)
        channel.read()
        XCTAssertEqual(counter.reads, 1, "reads pass while the peer keeps up")
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.read()
        XCTAssertEqual(counter.reads, 1, "held back while replies pile up")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(counter.reads, 2, "the held-back read goes out once the peer catches up")
    }
}

