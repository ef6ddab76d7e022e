import AsyncHTTPClient
import DevCIPipeline
import DevCIStore
import Foundation
import NIOCore
import NIOHTTP1

/// Delivers outbox messages: mail through the configured SMTP server, webhooks as a JSON POST. Each attempt is
/// bounded in time, so an endpoint that hangs costs one attempt, never the dispatcher.
public final class Notifier: Sendable {
    let http: HTTPClient
    let user: String?
    let password: String?

    /// `user` and `password`: the SMTP credentials (from `DEVCI_SMTP_USER` and `DEVCI_SMTP_PASSWORD`).
    public init(user: String?, password: String?) {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow,
                                                     timeout: .init(connect: .seconds(5), read: .seconds(10)))
        configuration.httpVersion = .http1Only
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.user = user
        self.password = password
    }

    public func shutdown() async { try? await http.shutdown() }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public var permanent: Bool
    }

    /// One attempt. Throws `Failure` saying why, and whether trying again could help.
    /// `id`: the outbox row, sent as `X-DevCI-Notification` so that a receiver can drop a repeat (a dispatcher that
    /// died between a delivery and noting it sends that one again).
    public func deliver(_ message: OutboxMessage, id: Int64, smtp: SMTPSettings?) async throws {
        switch message.channel {
        case "email":
            guard let smtp else { throw Failure(description: "no smtp: server is configured", permanent: false) }
            let client = SMTPClient(settings: smtp, user: user, password: password)
            do {
                try await client.send(mail: message.body, from: smtp.from, to: message.target.split(separator: ",").map(String.init))
            } catch let error as SMTPClient.Failure {
                throw Failure(description: error.description, permanent: error.permanent)
            } catch {
                throw Failure(description: "mail to \(smtp.host):\(smtp.port): \(error)", permanent: false)
            }
        case "webhook":
            var request = HTTPClientRequest(url: message.target)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
            request.headers.add(name: "User-Agent", value: "devci-notifier")
            request.headers.add(name: "X-DevCI-Notification", value: String(id))
            request.body = .bytes(ByteBuffer(string: message.body))
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: .seconds(15))
            } catch {
                throw Failure(description: "POST \(message.target): \(error)", permanent: false)
            }
            // The answer's body says nothing that matters: read (at most 64 KiB of it) only to free the connection.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            guard (200..<300).contains(response.status.code) else {
                throw Failure(description: "POST \(message.target) answered \(response.status.code)", permanent: false)
            }
        default:
            throw Failure(description: "unknown channel \(message.channel)", permanent: true)
        }
    }

    /// When to try again after `attempts` failed ones: 2 s, 4 s, 8 s, … up to 10 minutes apart; nil after 12 (about an
    /// hour in all), when the message is given up and says so.
    public static func retryDelay(afterAttempts attempts: Int) -> Duration? {
        guard attempts < 12 else { return nil }
        return .seconds(min(600, 1 << min(attempts, 10)))
    }
}
