import DevCIStore
import DevCIWire
import Foundation
import Hummingbird

/// Re-run, re-run the failed jobs, cancel: forms on the build page for an administrator or an authorized user of
/// the build's task. The reporter stays read-only: it asks the dispatcher over the wire, with the token, naming
/// who asked, and the dispatcher records it.
extension Reporter {
    enum Action: String {
        case rerun, rerunFailed = "rerun-failed", cancel
    }

    /// The build page's forms this viewer may use, or false.
    func actionsModel(_ build: BuildSummary, jobs: [JobSummary], _ request: Request) -> Any {
        let v = viewer(request)
        guard !config.dispatchers.isEmpty, config.access.canAct(task: build.task, v), let session = sessionCookie(request) else { return false }
        let failed = jobs.contains { $0.status == .failed || $0.status == .error || $0.status == .timedOut || $0.status == .cancelled || $0.status == .skipped }
        return ["id": build.id, "csrf": config.sessionKeys.csrf(session: session), "rerun": true,
                "rerunFailed": build.status.isFinal && failed, "cancel": !build.status.isFinal] as [String: Any]
    }

    func addActionRoutes(_ router: Router<BasicRequestContext>) {
        for action in [Action.rerun, .rerunFailed, .cancel] {
            router.post("/builds/:id/\(action.rawValue)") { request, context in try await act(action, try id(context), request) }
        }
    }

    func act(_ action: Action, _ id: Int64, _ request: Request) async throws -> Response {
        let v = try await sessionForm(request).user
        let name = v.name ?? ""
        let build = try ensureVisible(try store.build(id), id, request)
        guard config.access.canAct(task: build.task, v) else {
            throw HTTPError(.forbidden, message: "Only an administrator\(build.task.map { " or an authorized user of task \($0)" } ?? "") may do that.")
        }
        let addresses = config.dispatchers
        guard !addresses.isEmpty else { throw HTTPError(.serviceUnavailable, message: "This reporter has no --dispatcher-server to ask.") }
        let message: ClientMessage = switch action {
        case .rerun: .rerun(build: id, failedOnly: false, by: name)
        case .rerunFailed: .rerun(build: id, failedOnly: true, by: name)
        case .cancel: .cancel(.build(id), by: name)
        }
        let token = config.token
        let reply: Result<ServerMessage, Error> = await withCheckedContinuation { done in
            DispatchQueue.global().async {
                done.resume(returning: Result {
                    let client = try WireClient.connect(to: addresses, token: token).client
                    defer { client.close() }
                    return try client.request(message)
                })
            }
        }
        logger.notice("\(name) asked to \(action.rawValue) build \(id)")
        switch reply {
        case .success(.queued(let newBuild, _, _)): return Response(status: .seeOther, headers: [.location: "/builds/\(newBuild)"])
        case .success(.ok): return Response(status: .seeOther, headers: [.location: "/builds/\(id)"])
        case .success(.error(let code, let text)):
            throw HTTPError(code == .notFound || code == .conflict ? .conflict : .badGateway, message: "The dispatcher said: \(text)")
        case .success(let other): throw HTTPError(.badGateway, message: "The dispatcher answered \(LineCodec.encode(other).prefix(200))")
        case .failure(let error): throw HTTPError(.badGateway, message: "Could not ask the dispatcher at \(addresses.map(\.description).joined(separator: ",")): \(ConnectionTrouble.describe(error))")
        }
    }
}
