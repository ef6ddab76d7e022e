import Foundation
import Hummingbird

/// Turns errors into pages: a readable HTML page (or JSON), never a crash or a stack trace.
struct ErrorPages: RouterMiddleware {
    typealias Context = BasicRequestContext

    /// How often a waiting page reloads itself (and `Retry-After` for machines), in seconds.
    static let waitingReload = 2

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as DatabaseUnavailable {
            // Already logged once by the store; every request says it again, and the page reloads until it is over.
            return page(.serviceUnavailable, error.description, request, reload: Self.waitingReload)
        } catch let error as HTTPError {
            return page(error.status, error.body ?? error.status.reasonPhrase, request)
        } catch let error as HTTPResponseError {
            return page(error.status, error.status.reasonPhrase, request)
        } catch {
            context.logger.error("\(request.uri.path): \(error)")
            return page(.internalServerError, "The reporter could not read the database.", request)
        }
    }

    func page(_ status: HTTPResponse.Status, _ message: String, _ request: Request, reload: Int? = nil) -> Response {
        var response: Response
        if Reporter.wantsJSON(request) {
            let body = (try? JSONSerialization.data(withJSONObject: ["error": message, "status": status.code])) ?? Data()
            response = Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: body)))
        } else {
            let content = Templates.render("error", ["code": "\(status.code) \(status.reasonPhrase)", "message": message])
            let html = Templates.render("layout", ["title": status.reasonPhrase, "content": content, "reload": reload ?? false] as [String: Any])
            response = Response(status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: html)))
        }
        if let reload { response.headers[.retryAfter] = String(reload) }
        return response
    }
}

/// Headers on every response (pages, JSON, streams, assets, badges, logs, errors). The policy lets a page run
/// only the reporter's own script and style sheet: no inline script or style, so markup that slipped past
/// escaping could not run. The pages need nothing more: their script reads data- attributes, the SVG charts
/// use presentation attributes (fill, stroke), which style-src does not govern, and badges are same-origin images.
struct SecurityHeaders: RouterMiddleware {
    typealias Context = BasicRequestContext

    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
        // Browsers must not guess: a log that looks like HTML stays text.
        response.headers[.xContentTypeOptions] = "nosniff"
        return response
    }
}
