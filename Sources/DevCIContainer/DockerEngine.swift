import AsyncHTTPClient
import DevCIWire
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat

/// A client of the Docker Engine HTTP API (v1.41, which Podman's Docker-compatible service also speaks) over the
/// engine's Unix socket, through AsyncHTTPClient. Only what running a job takes: images, containers, their logs.
public final class DockerEngine: Sendable {
    /// The API version every path is prefixed with.
    public static let apiVersion = "v1.41"
    /// `unix:///var/run/docker.sock`: as the user gave it, for messages.
    public let address: String
    public let socketPath: String
    let client: HTTPClient

    /// Why the engine could not do something; the description is for the job's log and the runner's.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// The engine answered 404: no such image or container.
        public var notFound = false
    }

    /// `unix:///path`, `unix://path` or a bare absolute path; nothing else (the engine's TCP port is root on the host).
    public init(address: String) throws(Failure) {
        let path: String
        if address.hasPrefix("unix://") {
            path = String(address.dropFirst("unix://".count))
        } else if address.hasPrefix("/") {
            path = address
        } else {
            throw Failure(description: "the container engine's address must be unix:///path/to/docker.sock, not '\(address)'")
        }
        guard path.hasPrefix("/") else { throw Failure(description: "the container engine's socket must be an absolute path, not '\(path)'") }
        socketPath = path
        self.address = "unix://\(path)"
        client = Self.sharedClient
    }

    /// One client for the process (never shut down): a short connect timeout, so an engine that is not there is
    /// said at once rather than after the request's whole deadline.
    static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(3)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// The address a runner uses when none is given: `DOCKER_HOST`, else Docker's own default.
    public static func defaultAddress(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        environment["DOCKER_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "unix:///var/run/docker.sock"
    }

    // MARK: Requests

    func url(_ path: String, _ query: [(String, String)] = []) -> String {
        var uri = "/\(Self.apiVersion)\(path)"
        if !query.isEmpty {
            var c = URLComponents()
            c.queryItems = query.map { URLQueryItem(name: $0.0, value: $0.1) }
            uri += "?" + (c.percentEncodedQuery ?? "")
        }
        return URL(httpURLWithSocketPath: socketPath, uri: uri)!.absoluteString
    }

    /// Sends a request and reads the whole answer (bounded); a status of 400 or more throws with the engine's message.
    @discardableResult
    func call(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], json: Any? = nil, timeout: TimeAmount = .seconds(60))
        async throws(Failure) -> ByteBuffer
    {
        let response = try await open(method, path, query: query, json: json, timeout: timeout)
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: 8 << 20)
        } catch {
            throw unreachable(error)
        }
        guard response.status.code < 400 else {
            let message = (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any])?["message"] as? String
            let text = message ?? String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines).prefix(200).description
            throw Failure(description: text.isEmpty ? "the engine answered \(response.status.code)" : text, notFound: response.status.code == 404)
        }
        return body
    }

    /// Sends a request and returns the response with its body still streaming.
    func open(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], json: Any? = nil, timeout: TimeAmount)
        async throws(Failure) -> HTTPClientResponse
    {
        var request = HTTPClientRequest(url: url(path, query))
        request.method = method
        // The socket path would be the Host header, which the engine refuses as malformed.
        request.headers.replaceOrAdd(name: "Host", value: "docker")
        if let json {
            let data: Data
            do { data = try JSONSerialization.data(withJSONObject: json) } catch { throw Failure(description: "cannot encode the request: \(error)") }
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: data))
        }
        guard FileManager.default.fileExists(atPath: socketPath) else {
            throw Failure(description: "cannot reach the container engine at \(address): there is no socket at \(socketPath) (is the engine running?)")
        }
        do {
            return try await client.execute(request, timeout: timeout)
        } catch {
            throw unreachable(error)
        }
    }

    func unreachable(_ error: Error) -> Failure {
        Failure(description: "cannot reach the container engine at \(address): \(Self.describe(error))")
    }

    static func describe(_ error: Error) -> String {
        let text = "\(error)"
        if text.contains("connectTimeout") || text.contains("Connection refused") || text.contains("No such file") || text.contains("ENOENT") {
            return "nothing answers on that socket (is the engine running?)"
        }
        return text
    }

    static func object(_ body: ByteBuffer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]) ?? [:]
    }

    // MARK: The API

    /// Answers when the engine is up.
    public func ping() async throws(Failure) {
        try await call(.GET, "/_ping", timeout: .seconds(5))
    }

    /// Whether the engine holds this image (no registry is asked).
    public func hasImage(_ name: String) async throws(Failure) -> Bool {
        do throws(Failure) {
            try await call(.GET, "/images/\(name)/json", timeout: .seconds(10))
            return true
        } catch where error.notFound {
            return false
        }
    }

    /// Creates a container and returns its id.
    public func create(_ config: [String: Any], name: String) async throws(Failure) -> String {
        let body = try await call(.POST, "/containers/create", query: [("name", name)], json: config)
        guard let id = Self.object(body)["Id"] as? String else { throw Failure(description: "the engine created a container but gave no id") }
        return id
    }

    public func start(_ id: String) async throws(Failure) {
        try await call(.POST, "/containers/\(id)/start")
    }

    /// Waits for the container to stop and returns its exit status.
    public func wait(_ id: String) async throws(Failure) -> Int {
        // Waits as long as the job may run: the job's own timeout stops the container, which ends this wait.
        let body = try await call(.POST, "/containers/\(id)/wait", query: [("condition", "not-running")], timeout: .hours(24 * 7))
        return (Self.object(body)["StatusCode"] as? Int) ?? -1
    }

    /// Whether the engine killed a process of the container for memory, and its exit code.
    public func inspect(_ id: String) async throws(Failure) -> (oomKilled: Bool, exitCode: Int) {
        let state = Self.object(try await call(.GET, "/containers/\(id)/json"))["State"] as? [String: Any] ?? [:]
        return ((state["OOMKilled"] as? Bool) ?? false, (state["ExitCode"] as? Int) ?? -1)
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    public func stop(_ id: String, grace: Int) async throws(Failure) {
        do throws(Failure) {
            try await call(.POST, "/containers/\(id)/stop", query: [("t", String(grace))], timeout: .seconds(Int64(grace) + 30))
        } catch where error.notFound {}
    }

    /// Removes the container, killing it first if it runs; gone already is fine.
    public func remove(_ id: String) async throws(Failure) {
        do throws(Failure) {
            try await call(.DELETE, "/containers/\(id)", query: [("force", "1"), ("v", "1")])
        } catch where error.notFound {}
    }

    /// The ids of every container (running or not) with this label.
    public func containers(label: String) async throws(Failure) -> [String] {
        let filters = String(decoding: try! JSONSerialization.data(withJSONObject: ["label": [label]]), as: UTF8.self)
        let body = try await call(.GET, "/containers/json", query: [("all", "1"), ("filters", filters)])
        let list = (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [[String: Any]]) ?? []
        return list.compactMap { $0["Id"] as? String }
    }

    /// The container's output from its start, following it until it stops: stdout and stderr apart.
    public func logs(_ id: String, onChunk: (LogStream, ByteBuffer) -> Void) async throws(Failure) {
        let response = try await open(.GET, "/containers/\(id)/logs", query: [("follow", "1"), ("stdout", "1"), ("stderr", "1")],
                                      timeout: .hours(24 * 7))
        guard response.status.code < 400 else { throw Failure(description: "the engine refused the container's logs (\(response.status.code))") }
        var frames = FrameDecoder()
        do {
            for try await chunk in response.body {
                frames.push(chunk)
                while let (stream, payload) = frames.next() { onChunk(stream, payload) }
            }
        } catch {
            throw unreachable(error)
        }
    }
}

/// Splits the engine's multiplexed stream (no TTY): frames of an 8-byte header (stream 1 stdout or 2 stderr,
/// three zero bytes, a big-endian 32-bit length) and that many bytes.
struct FrameDecoder {
    private var buffer = ByteBuffer()

    mutating func push(_ bytes: ByteBuffer) {
        var b = bytes
        buffer.writeBuffer(&b)
    }

    mutating func next() -> (LogStream, ByteBuffer)? {
        guard buffer.readableBytes >= 8,
              let kind = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let size = buffer.getInteger(at: buffer.readerIndex + 4, endianness: .big, as: UInt32.self),
              buffer.readableBytes >= 8 + Int(size)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: 8)
        let payload = buffer.readSlice(length: Int(size))!
        if buffer.readableBytes == 0 { buffer.clear() }
        return (kind == 2 ? .err : .out, payload)
    }
}
