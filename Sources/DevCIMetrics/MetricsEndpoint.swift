import Dispatch
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// `GET /metrics` over HTTP: a route for a process that already serves HTTP, and a server of its own for one
/// that does not (a runner's `--metrics-port`).
public enum MetricsEndpoint {
    /// An exposition as the answer to `GET /metrics`.
    public static func response(_ exposition: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = MetricsRegistry.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: exposition)))
    }

    /// Serves `GET /metrics` on `host:port` until the server is stopped.
    public static func serve(_ registry: MetricsRegistry, host: String, port: Int, logger: Logger) throws -> HTTPServer {
        let router = Router()
        router.get("/metrics") { _, _ in response(registry.exposition()) }
        return try HTTPServer.start(router: router, host: host, port: port, serverName: "devci-metrics", logger: logger)
    }
}

/// A Hummingbird application started from synchronous code: `start` returns once it listens (with the port it
/// bound; port 0 picks a free one) or throws when it cannot listen.
public struct HTTPServer: Sendable {
    public let port: Int
    public let task: Task<Void, Error>

    public static func start(router: Router<BasicRequestContext>, host: String, port: Int, serverName: String, logger: Logger) throws -> HTTPServer {
        let bound = NIOLockedValueBox<Result<Int, Error>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in
                bound.withLockedValue { $0 = .success(channel.localAddress?.port ?? port) }
                ready.signal()
            },
            logger: logger)
        let task = Task {
            do {
                try await app.run()
            } catch {
                let first = bound.withLockedValue { b -> Bool in
                    guard b == nil else { return false }
                    b = .failure(error)
                    return true
                }
                if first { ready.signal() }
                throw error
            }
        }
        ready.wait()
        switch bound.withLockedValue({ $0 }) {
        case .success(let p): return HTTPServer(port: p, task: task)
        case .failure(let error): throw error
        case nil: throw HTTPError(.internalServerError, message: "the HTTP server did not start")
        }
    }

    /// Stops listening (requests in flight are cut off).
    public func stop() { task.cancel() }
}
