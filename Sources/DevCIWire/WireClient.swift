import Foundation
import NIOCore
import NIOPosix

/// A blocking client for the command line and other short-lived peers: connect, read the greeting,
/// authenticate, then one request and one reply at a time.
public final class WireClient: @unchecked Sendable {
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
        } catch let e as WireError where e.code == "closed" {
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
                if closed { throw WireError("closed", "the dispatcher closed the connection") }
                if !condition.wait(until: deadline) { throw WireError("timeout", "no reply within \(timeout) s") }
            }
            return lines.removeFirst()
        }
    }

    final class InboxHandler: ChannelInboundHandler, @unchecked Sendable {
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

/// A `HOST:PORT` pair as given to `--dispatcher-server` (`[::1]:8888` for IPv6).
public struct HostPort: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        var host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let p = Int(port), (1...65535).contains(p) else { return nil }
        self.host = String(host)
        self.port = p
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension Duration {
    /// In seconds, fractions kept (for Foundation's and Dispatch's APIs).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    /// In whole milliseconds (for the wire).
    public var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// The one parser of time values: `500ms`, `30s`, `5m`, `1h`, `1d`, `1w`.
public enum TimeValue {
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000)]
        for (suffix, millis) in units where text.hasSuffix(suffix) {
            guard let n = Int64(text.dropLast(suffix.count)), n >= 0, n <= Int64.max / millis / 1000 else { return nil }
            return .milliseconds(n * millis)
        }
        return nil
    }
}
