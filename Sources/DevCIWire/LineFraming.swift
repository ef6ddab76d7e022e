import NIOCore

/// One framed line, or the news that a line went over the limit (its bytes were dropped).
public enum FramedLine: Sendable {
    case line(String)
    case tooLong
    case invalidUTF8
}

/// Splits a byte stream at `\n` (a preceding `\r` is dropped), never buffering more than `maxLineBytes`:
/// an overlong line is skipped up to its newline and reported once as `.tooLong`, so the connection can go on.
/// (swift-nio-extras' `LineBasedFrameDecoder` is unbounded, and `ByteToMessageHandler`'s size cap ends the stream.)
public struct BoundedLineDecoder: ByteToMessageDecoder {
    public typealias InboundOut = FramedLine
    public let maxLineBytes: Int
    private var discarding = false

    public init(maxLineBytes: Int = WireLimits.maxLineBytes) {
        self.maxLineBytes = maxLineBytes
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = nextFrame(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while let frame = nextFrame(&buffer) {
            context.fireChannelRead(wrapInboundOut(frame))
        }
        buffer.clear()  // a last line without its newline is dropped: the peer did not finish it
        return .needMoreData
    }

    /// The decoding step without a channel, so tests can drive it with bytes.
    public mutating func nextFrame(_ buffer: inout ByteBuffer) -> FramedLine? {
        while true {
            let view = buffer.readableBytesView
            if let nl = view.firstIndex(of: UInt8(ascii: "\n")) {
                let length = nl - view.startIndex
                if discarding {
                    buffer.moveReaderIndex(forwardBy: length + 1)
                    discarding = false
                    continue
                }
                var bytes = buffer.readSlice(length: length)!
                buffer.moveReaderIndex(forwardBy: 1)
                if bytes.readableBytes > maxLineBytes { return .tooLong }
                if bytes.readableBytesView.last == UInt8(ascii: "\r") { bytes = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 1)! }
                guard let text = bytes.readableBytesView.withContiguousStorageIfAvailable({ String(validating: $0, as: UTF8.self) }) ?? String(validating: Array(bytes.readableBytesView), as: UTF8.self) else {
                    return .invalidUTF8
                }
                return .line(text)
            }
            // No newline yet: an unfinished line over the limit is dropped now, not buffered.
            if view.count > maxLineBytes {
                buffer.moveReaderIndex(forwardBy: view.count)
                if !discarding {
                    discarding = true
                    return .tooLong
                }
            } else if discarding {
                buffer.moveReaderIndex(forwardBy: view.count)
            }
            return nil
        }
    }
}

/// Writes strings as `\n`-terminated lines.
public final class LineEncoder: MessageToByteEncoder {
    public typealias OutboundIn = String
    public init() {}
    public func encode(data: String, out: inout ByteBuffer) throws {
        out.writeString(data)
        out.writeInteger(UInt8(ascii: "\n"))
    }
}
