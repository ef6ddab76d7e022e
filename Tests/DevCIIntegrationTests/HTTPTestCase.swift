import DevCIWire
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// A test case whose dispatcher has an HTTP side, with configuration folders and HTTP requests.
class HTTPTestCase: HarnessTestCase {
    // MARK: Helpers

    /// A webhook receiver: answers 500 to its first `failing` POSTs, then keeps each body (named by its
    /// X-DevCI-Notification id) and answers 204. Returns its URL.
    func startReceiver(into folder: String, failing: Int) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let p = try h.spawnProgram("receiver", "/usr/bin/env", ["python3", "-u", "-c", """
            import http.server, os, sys
            failing, out, seen = int(sys.argv[1]), sys.argv[2], [0]
            class H(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers['Content-Length']))
                    seen[0] += 1
                    if seen[0] <= failing:
                        self.send_response(500); self.end_headers(); return
                    name = '%03d-%s.json' % (seen[0], self.headers.get('X-DevCI-Notification'))
                    open(os.path.join(out, name), 'wb').write(body)
                    self.send_response(204); self.end_headers()
                def log_message(self, *a): pass
            s = http.server.HTTPServer(('127.0.0.1', 0), H)
            print('port', s.server_address[1])
            s.serve_forever()
            """, String(failing), folder])
        var port = 0
        try h.waitUntil("the webhook receiver listens") {
            port = h.log(of: p).split(separator: "\n").first { $0.hasPrefix("port ") }.flatMap { Int($0.dropFirst(5)) } ?? 0
            return port > 0
        }
        return "http://127.0.0.1:\(port)/hook"
    }

    /// Writes `text` as a configuration file under a fresh folder and returns the folder.
    func configFolder(_ files: [String: String]) throws -> String {
        let dir = h.dir.appendingPathComponent("config-\(UUID().uuidString.prefix(8))")
        for (name, text) in files {
            let url = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        return dir.path
    }

    /// Starts a dispatcher with an HTTP side and returns it, its wire address and its HTTP base URL.
    func startDispatcher(config: String?, extra: [String] = []) throws -> (Process, HostPort, String) {
        let (p, address) = try h.startDispatcher(extra: (config.map { ["--config", $0] } ?? []) + ["--http-port", "0"] + extra)
        var base: String?
        try h.waitUntil("the HTTP side serves") {
            guard let line = h.log(of: p).split(separator: "\n").first(where: { $0.contains("HTTP side serving ") }),
                  let r = line.range(of: "HTTP side serving ") else { return false }
            base = String(line[r.upperBound...].split(separator: " ")[0])
            return true
        }
        return (p, address, try XCTUnwrap(base))
    }

    /// A one-commit origin, a dispatcher with its HTTP side, and one runner on a clone of the origin.
    func startWithRunner(config: String?, extra: [String] = [], runner: String = "a", runnerExtra: [String] = [])
        throws -> (dispatcher: Process, address: HostPort, base: String, origin: String)
    {
        let origin = try h.makeOrigin()
        _ = try h.commit("exit 0", to: origin)
        let (dispatcher, address, base) = try startDispatcher(config: config, extra: extra)
        try h.startRunner(try h.clone(origin, as: "clone-\(runner)"), address, name: runner, extra: runnerExtra)
        return (dispatcher, address, base, origin)
    }

    /// One HTTP POST; returns the status and the body.
    func post(_ url: String, body: Data, headers: [String: String] = [:]) throws -> (Int, String) {
        try request("POST", url, body: body, headers: headers)
    }

    /// One HTTP GET; returns the status and the body.
    func get(_ url: String, headers: [String: String] = [:]) throws -> (Int, String) {
        try request("GET", url, body: nil, headers: headers)
    }

    /// One HTTP GET; returns the status, the body and the Content-Type.
    func getResponse(_ url: String, headers: [String: String] = [:]) throws -> (Int, String, String?) {
        try exchange("GET", url, body: nil, headers: headers)
    }

    func request(_ method: String, _ url: String, body: Data?, headers: [String: String]) throws -> (Int, String) {
        let (status, body, _) = try exchange(method, url, body: body, headers: headers)
        return (status, body)
    }

    func exchange(_ method: String, _ url: String, body: Data?, headers: [String: String]) throws -> (Int, String, String?) {
        var request = URLRequest(url: try XCTUnwrap(URL(string: url)))
        request.httpMethod = method
        request.httpBody = body
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: (Int, String, String?)?
        URLSession.shared.dataTask(with: request) { data, response, _ in
            let http = response as? HTTPURLResponse
            result = (http?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self), http?.value(forHTTPHeaderField: "Content-Type"))
            done.signal()
        }.resume()
        guard done.wait(timeout: .now() + 20) == .success, let result else { throw Failure("\(method) \(url) got no answer") }
        return result
    }
}
