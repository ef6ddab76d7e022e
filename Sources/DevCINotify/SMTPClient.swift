import DevCIPipeline
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Sends one mail through an SMTP server (RFC 5321): EHLO, STARTTLS when configured (the connection is
/// upgraded before anything else is said, and a server that does not offer it is refused), AUTH PLAIN when a user
/// is given, MAIL FROM, RCPT TO for each address, DATA with dot-stuffing, QUIT. Every reply line is bounded.
/// No SMTP package is on this machine's list, so this small client is written on SwiftNIO and NIOSSL.
public struct SMTPClient: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// A 5xx answer: trying again will not help.
        public var permanent = false
    }

    public var settings: SMTPSettings
    public var user: String?
    public var password: String?
    public var timeout: Duration = .seconds(30)

    public init(settings: SMTPSettings, user: String? = nil, password: String? = nil) {
        self.settings = settings
        self.user = user
        self.password = password
    }

    /// Sends `mail` (headers and text, CRLF line ends) to `recipients`.
    public func send(mail: String, from: String, to recipients: [String]) async throws {
        let settings = self.settings, user = self.user, password = self.password
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Self.converse(settings: settings, user: user, password: password, mail: mail, from: from, to: recipients) }
            group.addTask {
                try await Task.sleep(for: self.timeout)
                throw Failure(description: "the mail server at \(settings.host):\(settings.port) did not finish within \(self.timeout)")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private static func converse(settings: SMTPSettings, user: String?, password: String?, mail: String, from: String, to recipients: [String]) async throws {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .connect(host: settings.host, port: settings.port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let raw = channel.channel
        try await channel.executeThenClose { inbound, outbound in
            var reader = ReplyReader(iterator: inbound.makeAsyncIterator())
            func say(_ line: String) async throws { try await outbound.write(ByteBuffer(string: line + "\r\n")) }
            func expect(_ codes: Set<Int>, after what: String) async throws -> [String] {
                let (code, lines) = try await reader.next()
                guard codes.contains(code) else {
                    throw Failure(description: "the mail server answered \(what) with \(code) \(lines.last ?? "")", permanent: (500...599).contains(code))
                }
                return lines
            }
            _ = try await expect([220], after: "the connection")
            var features = try await { try await say("EHLO devci"); return try await expect([250], after: "EHLO") }()
            if settings.starttls {
                guard features.contains(where: { $0.uppercased().hasPrefix("STARTTLS") }) else {
                    throw Failure(description: "the mail server does not offer STARTTLS (set starttls: false only for a server on a trusted network)", permanent: true)
                }
                try await say("STARTTLS")
                _ = try await expect([220], after: "STARTTLS")
                // Anything already sent in the clear after that 220 was not said over TLS: refuse it (CVE-2011-0411).
                guard reader.buffer.isEmpty else {
                    throw Failure(description: "the mail server sent more before the TLS handshake: refusing the connection", permanent: false)
                }
                var tls = TLSConfiguration.makeClientConfiguration()
                if let ca = settings.caFile { tls.trustRoots = .file(ca) }
                let context = try NIOSSLContext(configuration: tls)
                let handler = try NIOSSLClientHandler(context: context, serverHostname: Self.isIPAddress(settings.host) ? nil : settings.host)
                try await raw.pipeline.addHandler(handler, position: .first).get()
                try await say("EHLO devci")
                features = try await expect([250], after: "EHLO over TLS")
            }
            if let user, let password {
                guard settings.starttls || ["127.0.0.1", "::1", "localhost"].contains(settings.host) else {
                    throw Failure(description: "refusing to send the mail password without STARTTLS to \(settings.host)", permanent: true)
                }
                let plain = Data(("\0" + user + "\0" + password).utf8).base64EncodedString()
                try await say("AUTH PLAIN \(plain)")
                _ = try await expect([235], after: "AUTH")
            }
            let eightBit = features.contains { $0.uppercased().hasPrefix("8BITMIME") }
            try await say("MAIL FROM:<\(from)>" + (eightBit ? " BODY=8BITMIME" : ""))
            _ = try await expect([250], after: "MAIL FROM")
            // One refused address does not stop the others; with none accepted, the message fails as the last refusal says.
            var accepted = 0
            var refusal: Failure?
            for r in recipients {
                try await say("RCPT TO:<\(r)>")
                do {
                    _ = try await expect([250, 251], after: "RCPT TO \(r)")
                    accepted += 1
                } catch let failure as Failure {
                    refusal = failure
                }
            }
            if accepted == 0, let refusal { throw refusal }
            try await say("DATA")
            _ = try await expect([354], after: "DATA")
            try await outbound.write(ByteBuffer(string: dotStuffed(mail) + "\r\n.\r\n"))
            _ = try await expect([250], after: "the message")
            // Accepted: the server's answer to QUIT is not waited for (a slow one must not turn a sent mail into a retry).
            try? await say("QUIT")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// The text with every line that starts with `.` given another (RFC 5321 4.5.2), and bare line feeds made CRLF.
    static func dotStuffed(_ mail: String) -> String {
        mail.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix(".") ? "." + $0 : String($0) }.joined(separator: "\r\n")
    }

    /// Reads replies ("250-first", "250 last") line by line from what arrives, each line at most 2,048 bytes and a
    /// reply at most 100 lines.
    struct ReplyReader {
        var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        var buffer: [UInt8] = []

        mutating func line() async throws -> String {
            while true {
                if let end = buffer.firstIndex(of: 10) {
                    var bytes = Array(buffer[..<end])
                    buffer.removeFirst(end + 1)
                    if bytes.last == 13 { bytes.removeLast() }
                    return String(decoding: bytes, as: UTF8.self)
                }
                guard buffer.count <= 2048 else { throw Failure(description: "the mail server sent a line over 2048 bytes") }
                guard var chunk = try await iterator.next() else { throw Failure(description: "the mail server closed the connection") }
                buffer += chunk.readBytes(length: chunk.readableBytes) ?? []
            }
        }

        mutating func next() async throws -> (Int, [String]) {
            var lines: [String] = []
            while lines.count < 100 {
                let l = try await line()
                guard l.utf8.count >= 3, let code = Int(l.prefix(3)) else { throw Failure(description: "the mail server sent '\(l.prefix(80))'") }
                lines.append(String(l.dropFirst(4)))
                if l.utf8.count == 3 || l.dropFirst(3).first == " " { return (code, lines) }
            }
            throw Failure(description: "the mail server sent a reply of over 100 lines")
        }
    }
}
