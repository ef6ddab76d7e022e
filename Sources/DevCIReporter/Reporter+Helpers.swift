import DevCIStore
import DevCIWire
import Foundation
import Hummingbird

extension Reporter {
    /// The dashboard's filters (`?repo=&branch=&status=`), the same for the page and its live stream; 400 on an unknown status.
    func buildFilter(_ request: Request) throws -> BuildFilter {
        let q = request.uri.queryParameters
        func value(_ key: Substring) -> String? { q[key].map(String.init).flatMap { $0.isEmpty ? nil : $0 } }
        let status = value("status")
        if let status, !Self.statuses.contains(status) {
            throw HTTPError(.badRequest, message: "status must be one of \(Self.statuses.joined(separator: ", "))")
        }
        if let task = value("task"), !Validate.isRunnerName(task) { throw HTTPError(.badRequest, message: "task is not a valid task name") }
        if let tag = value("tag"), !Validate.isRunnerName(tag) { throw HTTPError(.badRequest, message: "tag is not a valid tag") }
        return BuildFilter(repo: value("repo"), branch: value("branch"), status: status, task: value("task"), tag: value("tag"))
    }

    func wantsJSON(_ request: Request) -> Bool { Self.wantsJSON(request) }

    /// JSON for `/api/` and for any request that accepts it; HTML otherwise. Error pages follow the same rule.
    static func wantsJSON(_ request: Request) -> Bool {
        request.uri.path.hasPrefix("/api/") || (request.headers[.accept]?.contains("application/json") ?? false)
    }

    /// A path parameter as the repository or branch is named: router parameters arrive percent-encoded
    /// (`my%20repo`), names do not.
    func decoded(_ context: BasicRequestContext, _ name: String) -> String {
        let raw = context.parameters.get(name) ?? ""
        return raw.removingPercentEncoding ?? raw
    }

    /// A name made safe for one path segment of a link (spaces, `#`, `?` and `/` encoded); Mustache then escapes it for HTML.
    static func pathEncoded(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name
    }

    func id(_ context: BasicRequestContext) throws -> Int64 {
        guard let text = context.parameters.get("id"), let id = Int64(text), id > 0 else {
            throw HTTPError(.notFound, message: "No such page.")
        }
        return id
    }

    /// A query value that must be a whole number (≥ 1, or ≥ 0): 400 otherwise.
    func positiveInt(_ text: String?, name: String, allowZero: Bool = false) throws -> Int? {
        guard let text, !text.isEmpty else { return nil }
        guard let n = Int(text), n >= (allowZero ? 0 : 1) else {
            throw HTTPError(.badRequest, message: "\(name) must be a whole number\(allowZero ? "" : " from 1")")
        }
        return n
    }

    func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func page(title: String, summary: SystemSummary?, content: String, request: Request) -> Response {
        let header: Any = summary.map { summary -> [String: Any] in
            ["queued": summary.queued, "running": summary.running, "runners": summary.runners, "waitingText": summary.waitingText ?? false]
        } ?? false
        var model: [String: Any] = ["title": title, "summary": header, "content": content]
        model.merge(viewerModel(request)) { $1 }
        return html(Templates.render("layout", model))
    }

    func asset(_ text: String, _ type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "max-age=300"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func jsonResponse(_ value: [String: AnyEncodable]) throws -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: try encoder.encode(value))))
    }

    func buildRow(_ b: BuildSummary) -> [String: Any] {
        ["id": b.id, "status": b.displayStatus, "statusClass": statusClass(b), "repoName": Self.repoName(b.repo), "what": b.runDescription,
         "hasRepo": !b.repo.isEmpty,
         "repoPath": Self.pathEncoded(Self.repoName(b.repo)), "branch": b.branch,
         "shortCommit": String(b.commit.prefix(10)), "title": b.title, "author": b.author.isEmpty ? false : b.author,
         "runner": b.runner ?? "–", "started": Self.time(b.startedAt), "duration": Self.duration(b.startedAt, b.finishedAt),
         "startedMillis": Self.epochMillis(b.startedAt).map(String.init) ?? "", "finishedMillis": Self.epochMillis(b.finishedAt).map(String.init) ?? "",
         "attempts": b.attempts]
    }

    func statusClass(_ b: BuildSummary) -> String { b.buildStatus == .passedWithAllowedFailures ? "allowed" : b.status.rawValue }

    func query(_ filter: BuildFilter, page: Int) -> String {
        var items = [URLQueryItem]()
        for (name, value) in [("repo", filter.repo), ("branch", filter.branch), ("status", filter.status), ("task", filter.task), ("tag", filter.tag)] {
            if let value { items.append(URLQueryItem(name: name, value: value)) }
        }
        items.append(URLQueryItem(name: "page", value: String(page)))
        var c = URLComponents()
        c.queryItems = items
        return c.percentEncodedQuery ?? ""
    }

    /// A repository's short name: the last part of its path or URL, without `.git`.
    static func repoName(_ repo: String) -> String {
        let last = repo.split(separator: "/").last.map(String.init) ?? repo
        return last.hasSuffix(".git") ? String(last.dropLast(4)) : last
    }

    static let timeFormat: DateFormatter = {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        f.timeZone = TimeZone(identifier: "UTC")
        f.locale = Locale(identifier: "en_US_POSIX")
        return f
    }()

    static func time(_ date: Date?) -> String { date.map { timeFormat.string(from: $0) } ?? "–" }

    /// A time as the page's script reads it (milliseconds since 1970), to keep durations and times current.
    static func epochMillis(_ date: Date?) -> Int64? { date.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) } }

    static func millis(_ ms: Int64) -> String {
        let d = Date(timeIntervalSince1970: Double(ms) / 1000)
        return timeFormat.string(from: d) + String(format: ".%03d", Int(ms % 1000))
    }

    static func duration(_ start: Date?, _ end: Date?) -> String {
        guard let start else { return "–" }
        let s = (end ?? Date()).timeIntervalSince(start)
        return s < 60 ? String(format: "%.1fs", s) : String(format: "%dm%02ds", Int(s) / 60, Int(s) % 60)
    }
}

/// Lets one JSON object hold values of different types.
struct AnyEncodable: Encodable {
    let encode: (Encoder) throws -> Void
    init<T: Encodable>(_ value: T) { encode = value.encode }
    func encode(to encoder: Encoder) throws { try encode(encoder) }
}
