import Foundation

/// A `HOST:PORT` pair as given to `--dispatcher-server` (`[::1]:8888` for IPv6).
public struct HostPort: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        var host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let p = Int(port), (1...65535).contains(p) else { return nil }
        self.host = String(host)
        self.port = p
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// A comma-separated list of addresses (`a:8888,b:8888`): the dispatchers a peer tries in turn, so that it ends
    /// up on the one that leads. Nil when any is invalid, none is given, or more than 16 are.
    public static func list(_ text: String) -> [HostPort]? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard (1...16).contains(parts.count) else { return nil }
        let addresses = parts.compactMap(HostPort.init)
        return addresses.count == parts.count ? addresses : nil
    }
}
