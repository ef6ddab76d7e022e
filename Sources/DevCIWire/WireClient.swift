import Foundation
import NIOCore
import NIOPosix

/// A blocking client for the command line and other short-lived peers: connect, read the greeting,
/// authenticate, then one request and one reply at a time.
public final class WireClient: Sendable {
    private let channel: Channel
    private let inbox: Inbox
    public let greeting: ServerMessage
    public let timeout: TimeInterval

    /// Connects and authenticates (when `token` is given). Throws when the dispatcher is unreachable,
    /// does not greet, or refuses the token.
    public init(address: HostPort, token: String?, timeout: TimeInterval = 10) throws {
        let inbox = Inbox()
        self.inbox = inbox
        self.timeout = timeout
        channel = try ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(Int64(timeout * 1000)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(BoundedLineDecoder()))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineEncoder()))
                    try channel.pipeline.syncOperations.addHandler(InboxHandler(inbox: inbox))
                }
            }
            .connect(host: address.host, port: address.port).wait()
        greeting = try LineCodec.decodeServer(try inbox.next(timeout: timeout))
        if let token {
            let reply = try request(.auth(token: token))
            if case .error(let code, let message) = reply { throw WireError(code, message) }
        }
    }

    /// Connects to the first of `addresses` that greets and authenticates (a standby that refuses, or an address
    /// nobody answers at, is passed over). Throws the last address's error when none does.
    public static func connect(to addresses: [HostPort], token: String?, timeout: TimeInterval = 10) throws -> (client: WireClient, address: HostPort) {
        var last: Error = WireError(.closed, "no dispatcher address given")
        for address in addresses {
            do {
                let client = try WireClient(address: address, token: token, timeout: timeout)
                if case .error(let code, let message) = client.greeting {
                    client.close()
                    throw WireError(code, message)
                }
                return (client, address)
            } catch {
                last = error
            }
        }
        throw last
    }

    /// Sends one message and returns the next line the dispatcher sends.
    public func request(_ message: ClientMessage) throws -> ServerMessage {
        try sendRaw(LineCodec.encode(message))
        return try LineCodec.decodeServer(try inbox.next(timeout: timeout))
    }

    /// Sends text as one line, as is (tests use this to send garbage).
    public func sendRaw(_ line: String) throws {
        try channel.writeAndFlush(line).wait()
    }

    /// Sends bytes as they are, newline not added.
    public func sendBytes(_ bytes: [UInt8]) throws {
        // Written below the line encoder, which takes only strings.
        try channel.pipeline.context(handlerType: ByteToMessageHandler<BoundedLineDecoder>.self).flatMap { context in
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: bytes)))
        }.wait()
    }

    /// The next line received, or nil once the connection is closed.
    public func readLine(timeout: TimeInterval? = nil) throws -> String? {
        do {
            return try inbox.next(timeout: timeout ?? self.timeout)
        } catch let e as WireError where e.code == .closed {
            return nil
        }
    }

    public var isOpen: Bool { channel.isActive }

    public func close() {
        try? channel.close().wait()
    }

    deinit { channel.close(promise: nil) }

    /// Lines received and not yet read.
    final class Inbox: @unchecked Sendable {
        // @unchecked: `lines` and the closed flag are guarded by `condition`.
        private let condition = NSCondition()
        private var lines: [String] = []
        private var closed = false

        func push(_ line: String) {
            condition.lock()
            lines.append(line)
            condition.signal()
            condition.unlock()
        }

        func close() {
            condition.lock()
            closed = true
            condition.broadcast()
            condition.unlock()
        }

        func next(timeout: TimeInterval) throws -> String {
            let deadline = Date(timeIntervalSinceNow: timeout)
            condition.lock()
            defer { condition.unlock() }
            while lines.isEmpty {
                if closed { throw WireError(.closed, "the dispatcher closed the connection") }
                if !condition.wait(until: deadline) { throw WireError(.timeout, "no reply within \(timeout) s") }
            }
            return lines.removeFirst()
        }
    }

    final class InboxHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = FramedLine
        let inbox: Inbox
        init(inbox: Inbox) { self.inbox = inbox }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .line(let text) = unwrapInboundIn(data) { inbox.push(text) }
        }
        func channelInactive(context: ChannelHandlerContext) { inbox.close() }
        func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    }
}
