import DevCIMetrics
import DevCIWire
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// The dispatcher's HTTP side: GitHub's push webhook and the generic task trigger. It only authenticates,
/// bounds and parses; what happens next is the dispatcher's (through its loop, like every wire request).
extension Dispatcher {
    /// The largest body taken (GitHub's own limit is 25 MB; a push payload is far smaller).
    public static let httpBodyLimit = 1 << 20
    /// Answer GitHub well within its 10 s: what is not stored by then is answered 202 and still happens.
    static let webhookReplyDeadline: Duration = .seconds(8)

    /// Starts the HTTP side and returns its bound port once it listens. Throws when it cannot listen.
    public func startHTTP(port: Int) throws -> Int {
        let server = try HTTPServer.start(router: httpRouter(), host: config.httpHost, port: port, serverName: "devci-dispatcher", logger: logger)
        try loop.submit { self.state.value.httpTask = server.task }.wait()
        return server.port
    }

    /// Stops the HTTP side (requests in flight are cut off: they are answered by a restarted dispatcher).
    func stopHTTP() {
        guard let task = try? loop.submit({ self.state.value.httpTask }).wait() else { return }
        task.cancel()
    }

    func httpRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.post("/hooks/github") { request, _ in
            let response = try await self.githubHook(request)
            self.metrics.delivery(hook: "github", status: Int(response.status.code))
            return response
        }
        router.post("/hooks/tasks/:name") { request, context in
            let response = try await self.taskHook(request, name: context.parameters.get("name") ?? "")
            self.metrics.delivery(hook: "task", status: Int(response.status.code))
            return response
        }
        router.get("/metrics") { request, _ in
            // With a token, Prometheus sends it (`authorization: {credentials_file: …}` in its scrape config).
            if let refused = self.refuseWithoutToken(request) { return refused }
            return MetricsEndpoint.response(try await self.metricsExposition().get())
        }
        router.get("/healthz") { _, _ in Self.reply(.ok, ["status": "ok"]) }
        return router
    }

    private func githubHook(_ request: Request) async throws -> Response {
        guard let secret = config.webhookSecret else {
            return Self.reply(.forbidden, ["error": "webhooks are off: start the dispatcher with --webhook-secret or DEVCI_WEBHOOK_SECRET"])
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.httpBodyLimit)
        } catch is NIOTooManyBytesError {
            return Self.reply(.contentTooLarge, ["error": "the body is larger than \(Self.httpBodyLimit) bytes"])
        }
        let bytes = body.readableBytesView
        guard GitHubWebhook.isSigned(Self.header(request, "x-hub-signature-256"), body: bytes, secret: secret) else {
            logger.warning("webhook delivery with a missing or wrong X-Hub-Signature-256 refused")
            return Self.reply(.unauthorized, ["error": "missing or wrong X-Hub-Signature-256"])
        }
        let event = Self.header(request, "x-github-event") ?? ""
        let delivery = Self.header(request, "x-github-delivery") ?? ""
        guard GitHubWebhook.isDeliveryID(delivery) else {
            return Self.reply(.badRequest, ["error": "missing or invalid X-GitHub-Delivery"])
        }
        switch event {
        case "ping": return Self.reply(.ok, ["status": "pong"])
        case "push": break
        default: return Self.reply(.accepted, ["status": "ignored", "reason": "event '\(event.prefix(40))' is not handled"])
        }
        switch GitHubWebhook.decidePush(bytes) {
        case .invalid(let why):
            return Self.reply(.badRequest, ["error": why])
        case .ignore(let why):
            return Self.reply(.accepted, ["status": "ignored", "reason": why])
        case .build(let repositories, let branch, let commits):
            logger.info("webhook push \(delivery): \(repositories[0]) \(branch), \(commits.count) commit(s)")
            let handled = push(Push(delivery: delivery, repositories: repositories, branch: branch, commits: commits))
            let reply: PushReply? = try await Self.within(Self.webhookReplyDeadline, handled, on: loop)
            switch reply {
            case nil: return Self.reply(.accepted, ["status": "accepted", "reason": "still being recorded"])
            case .redelivery?: return Self.reply(.ok, ["status": "redelivery", "reason": "delivery \(delivery) was handled before: nothing is built twice"])
            case .handled(let runs, let observers)?:
                return Self.reply(.ok, ["status": "handled", "runs": runs.map(String.init).joined(separator: ","), "observers": String(observers)])
            }
        }
    }

    private func taskHook(_ request: Request, name: String) async throws -> Response {
        guard config.token != nil || Self.isLoopback(config.httpHost) else {
            return Self.reply(.forbidden, ["error": "the task trigger needs the dispatcher's --token when the HTTP side is not on loopback"])
        }
        if let refused = refuseWithoutToken(request) { return refused }
        guard Validate.isRunnerName(name) else { return Self.reply(.badRequest, ["error": "not a valid task name"]) }
        switch try await triggerTask(name).get() {
        case .queued(let build): return Self.reply(.created, ["status": "queued", "build": String(build)])
        case .skipped(let build, let why): return Self.reply(.ok, ["status": "skipped", "build": String(build), "reason": why])
        case .unknownTask: return Self.reply(.notFound, ["error": "there is no task '\(name)'"])
        case .disabled: return Self.reply(.conflict, ["error": "task '\(name)' is disabled"])
        case .failed(let why): return Self.reply(.internalServerError, ["error": why])
        }
    }

    /// 401 when the dispatcher has a token and the request does not carry it as `Authorization: Bearer <token>`.
    func refuseWithoutToken(_ request: Request) -> Response? {
        guard let token = config.token else { return nil }
        let given = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        guard let given, constantTimeEquals(given, token) else {
            return Self.reply(.unauthorized, ["error": "send the dispatcher's token as 'Authorization: Bearer <token>'"])
        }
        return nil
    }

    /// The future's value, or nil when it takes longer than `deadline`.
    static func within<T: Sendable>(_ deadline: Duration, _ future: EventLoopFuture<T>, on loop: EventLoop) async throws -> T? {
        let promise = loop.makePromise(of: T?.self)
        let timer = loop.scheduleTask(in: .init(deadline)) { promise.succeed(nil) }
        future.whenComplete { result in
            timer.cancel()
            promise.completeWith(result.map { $0 })
        }
        return try await promise.futureResult.get()
    }

    static func isLoopback(_ host: String) -> Bool { ["127.0.0.1", "localhost", "::1"].contains(host) }

    /// A header's value by its (case-insensitive) name.
    static func header(_ request: Request, _ name: String) -> String? {
        request.headers.first { $0.name.canonicalName == name }?.value
    }

    static func reply(_ status: HTTPResponse.Status, _ fields: [String: String]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data + Data("\n".utf8))))
    }
}
