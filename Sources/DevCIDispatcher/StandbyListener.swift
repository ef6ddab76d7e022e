import DevCIWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a standby dispatcher answers on the wire while another leads: every connection is greeted with
/// `error code=standby` naming the leader, then closed, so a peer given several addresses moves on to the next
/// and `devci status` says which role it reached. It reads nothing and holds nothing; it closes when this
/// dispatcher takes the lead and the real listener takes the port.
public final class StandbyListener: Sendable {
    private let channel: any Channel
    private let leader = NIOLockedValueBox("another dispatcher")

    /// Listens on `host:port` (the address the dispatcher will serve once it leads).
    public init(host: String, port: Int, group: EventLoopGroup) throws {
        let leader = self.leader
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let line = LineCodec.encode(ServerMessage.error(
                    code: .standby, message: "this dispatcher is a standby: \(leader.withLockedValue { $0 }) leads; try the next address")) + "\n"
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Refusal(line: line)) }
            }
            .bind(host: host, port: port).wait()
    }

    /// The address it listens on.
    public var localAddress: SocketAddress? { channel.localAddress }

    /// Who leads, as the refusal names it.
    public func setLeader(_ who: String) {
        leader.withLockedValue { $0 = who }
    }

    public func close() {
        try? channel.close().wait()
    }

    /// Says the line once the connection is up, then hangs up; whatever the peer sends is dropped.
    private final class Refusal: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let line: String

        init(line: String) {
            self.line = line
        }

        func channelActive(context: ChannelHandlerContext) {
            var buffer = context.channel.allocator.buffer(capacity: line.utf8.count)
            buffer.writeString(line)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }
}
