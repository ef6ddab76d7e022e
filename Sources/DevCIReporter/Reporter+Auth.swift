import DevCIStore
import DevCIWire
import Foundation
import Hummingbird
import NIOConcurrencyHelpers

/// Sign-in, sign-out and who may see what. Sessions are signed cookies (`HttpOnly`, `SameSite=Strict`, `Secure`
/// unless the reporter serves plain HTTP on loopback); every form carries a CSRF token; a wrong password is
/// answered after the same second whether or not the user exists.
extension Reporter {
    /// The shortest time a refused sign-in takes, so that neither a wrong name nor a wrong password answers sooner.
    static let refusalTime: Duration = .seconds(1)
    static let formLimit = 16 * 1024

    /// The signed-in user of this request (from its session cookie), or `Viewer.anonymous`.
    func viewer(_ request: Request) -> Viewer {
        guard let session = sessionCookie(request), !config.revoked.contains(session) else { return .anonymous }
        let access = config.access
        return access.viewer(named: config.sessionKeys.user(fromSession: session, bound: { access.users[$0] }))
    }

    /// The session cookie's name: `__Host-` prefixed when it is `Secure`, so a sibling host cannot plant one.
    var cookieName: String { config.secureCookies ? "__Host-" + SessionKeys.cookie : SessionKeys.cookie }

    func sessionCookie(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let kv = pair.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0] == cookieName { return String(kv[1]) }
            }
        }
        return nil
    }

    /// What the layout shows of the viewer: who is signed in, the sign-out form's token, or the sign-in link.
    func viewerModel(_ request: Request) -> [String: Any] {
        let v = viewer(request)
        if let name = v.name, let session = sessionCookie(request) {
            return ["user": ["name": name, "admin": v.isAdministrator, "csrf": config.sessionKeys.csrf(session: session)] as [String: Any]]
        }
        return ["signin": config.access.users.isEmpty || request.uri.path == "/signin" ? false : ["next": request.uri.path] as Any]
    }

    /// 404, worded like a build that does not exist: a build the viewer may not see is not confirmed to exist.
    func ensureVisible(_ build: BuildSummary?, _ id: Int64, _ request: Request) throws -> BuildSummary {
        guard let build, config.access.canSee(task: build.task, viewer(request)) else {
            throw HTTPError(.notFound, message: "There is no build \(id).")
        }
        return build
    }

    /// The build with the ancestor and descendants this viewer may not see left out.
    func redacted(_ build: BuildSummary, _ request: Request) throws -> BuildSummary {
        guard build.upstream != nil || !build.descendants.isEmpty else { return build }
        let access = config.access, v = viewer(request)
        guard !access.hiddenTasks(v).isEmpty else { return build }
        func visible(_ id: Int64) throws -> Bool { try store.build(id).map { access.canSee(task: $0.task, v) } ?? false }
        var b = build
        if let up = b.upstream, try !visible(up) { b.upstream = nil }
        b.descendants = try b.descendants.filter(visible)
        return b
    }

    /// The repositories with at least one build this viewer may see.
    func visibleRepositories(_ request: Request) throws -> [String] {
        let all = try store.repositories()
        let filter = visibleFilter(BuildFilter(), request)
        guard !filter.hiddenTasks.isEmpty else { return all }
        return try all.filter { repo in
            var f = filter
            f.repo = repo
            return try !store.builds(f, offset: 0, limit: 1).isEmpty
        }
    }

    /// The list filter with the tasks this viewer may not see left out.
    func visibleFilter(_ filter: BuildFilter, _ request: Request) -> BuildFilter {
        var f = filter
        f.hiddenTasks = config.access.hiddenTasks(viewer(request))
        return f
    }

    func cookie(_ value: String, maxAge: Int) -> String {
        "\(cookieName)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict\(config.secureCookies ? "; Secure" : "")"
    }

    // MARK: Routes

    func addAuthRoutes(_ router: Router<BasicRequestContext>) {
        router.get("/signin") { request, _ in signInPage(request, next: request.uri.queryParameters.get("next") ?? "/", error: nil, status: .ok) }
        router.post("/signin") { request, _ in try await signIn(request) }
        router.post("/signout") { request, _ in try await signOut(request) }
    }

    func signInPage(_ request: Request, next: String, error: String?, status: HTTPResponse.Status) -> Response {
        let model: [String: Any] = ["csrf": config.sessionKeys.signInToken(), "next": Self.localPath(next), "error": error ?? false,
                                    "required": config.access.mode == .required]
        var response = page(title: "Sign in", summary: nil, content: Templates.render("signin", model), request: request)
        response.status = status
        return response
    }

    /// Only a path on this site: never `//host`, `/\\host` or `https://…`, and nothing a browser would strip or
    /// bend (spaces, tabs, control characters, backslashes): no open redirect.
    static func localPath(_ next: String) -> String {
        let plain = next.utf8.count <= 2048 && next.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value != 0x7f && $0 != "\\" }
        return plain && next.hasPrefix("/") && !next.hasPrefix("//") ? next : "/"
    }

    /// A POST from another site is refused whatever it carries: browsers say where a request comes from
    /// (`Sec-Fetch-Site`, `Origin`), and a form of this reporter comes from this reporter.
    static func isCrossSite(_ request: Request) -> Bool {
        func header(_ name: String) -> String? { request.headers.first { $0.name.canonicalName == name }?.value }
        if let site = header("sec-fetch-site"), !["same-origin", "none"].contains(site) { return true }
        guard let origin = header("origin") else { return false }
        guard let host = request.head.authority ?? header("host") else { return true }
        return origin != "http://\(host)" && origin != "https://\(host)"
    }

    /// The fields of a urlencoded form body (at most 16 KiB).
    static func form(_ request: Request) async throws -> [String: String] {
        var request = request
        let body: ByteBuffer
        do { body = try await request.collectBody(upTo: formLimit) } catch { throw HTTPError(.contentTooLarge, message: "The form is too large.") }
        var fields: [String: String] = [:]
        for pair in String(buffer: body).split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { $0.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            if let k = kv.first, fields[k] == nil { fields[k] = kv.count > 1 ? kv[1] : "" }
        }
        return fields
    }

    func signIn(_ request: Request) async throws -> Response {
        let started = ContinuousClock.now
        let form = try await Self.form(request)
        let next = Self.localPath(form["next"] ?? "/")
        guard config.sessionKeys.isSignInToken(form["csrf"] ?? "") else {
            return signInPage(request, next: next, error: "The form expired or did not come from this page: sign in again.", status: .forbidden)
        }
        let name = form["user"] ?? "", password = form["password"] ?? ""
        let access = config.access
        guard config.signIns.enter() else {
            var busy = signInPage(request, next: next, error: "Too many sign-ins at once: try again in a moment.", status: .serviceUnavailable)
            busy.headers[.retryAfter] = "1"
            return busy
        }
        let user: String? = await withCheckedContinuation { done in
            // bcrypt takes a quarter of a second on purpose: off the request's thread.
            DispatchQueue.global().async { done.resume(returning: name.utf8.count <= 64 && password.utf8.count <= 256 ? access.authenticate(name: name, password: password) : nil) }
        }
        config.signIns.leave()
        guard let user, let hash = access.users[user] else {
            logger.notice("refused a sign-in as '\(String(name.prefix(64).unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "?" : Character($0) }))'")
            try? await Task.sleep(until: started + Self.refusalTime)
            return signInPage(request, next: next, error: "Wrong user name or password.", status: .unauthorized)
        }
        logger.info("\(user) signed in")
        var response = Response(status: .seeOther, headers: [.location: next])
        response.headers[.setCookie] = cookie(config.sessionKeys.session(for: user, bound: hash), maxAge: Int(SessionKeys.lifetime))
        return response
    }

    /// A signed-in user's form: its fields, when its CSRF token is this session's. Otherwise 403: a forged or
    /// replayed form (or one from a session that ended) does nothing.
    func sessionForm(_ request: Request) async throws -> (user: Viewer, session: String, fields: [String: String]) {
        let fields = try await Self.form(request)
        let v = viewer(request)
        guard v.name != nil, let session = sessionCookie(request),
              constantTimeEquals(fields["csrf"] ?? "", config.sessionKeys.csrf(session: session)) else {
            throw HTTPError(.forbidden, message: "That form did not come from this session: nothing was done. Reload the page and try again.")
        }
        return (v, session, fields)
    }

    func signOut(_ request: Request) async throws -> Response {
        let session = try await sessionForm(request).session
        config.revoked.insert(session)
        var response = Response(status: .seeOther, headers: [.location: "/"])
        response.headers[.setCookie] = cookie("", maxAge: 0)
        return response
    }
}

/// With `--auth required`: nothing but the sign-in page and the style sheet and script without a session.
struct RequireSignIn: RouterMiddleware {
    typealias Context = BasicRequestContext
    let reporter: Reporter

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .post, Reporter.isCrossSite(request) {
            throw HTTPError(.forbidden, message: "A form from another site: nothing was done.")
        }
        let path = request.uri.path
        guard reporter.config.access.mode == .required, path != "/signin", !path.hasPrefix("/static/"),
              reporter.viewer(request).name == nil else { return try await next(request, context) }
        if request.method == .get, !Reporter.wantsJSON(request), !(request.headers[.accept]?.contains("text/event-stream") ?? false), !path.hasPrefix("/badge/") {
            let target = "/signin?next=" + (request.uri.description.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "/")
            return Response(status: .seeOther, headers: [.location: target])
        }
        throw HTTPError(.unauthorized, message: "Sign in first.")
    }
}

/// Sessions signed out before they expired (kept until the reporter stops; a session lasts 12 hours).
public final class RevokedSessions: Sendable {
    private let sessions = NIOLockedValueBox(Set<String>())

    public init() {}

    func insert(_ s: String) { sessions.withLockedValue { _ = $0.insert(s) } }
    func contains(_ s: String) -> Bool { sessions.withLockedValue { $0.contains(s) } }
}
