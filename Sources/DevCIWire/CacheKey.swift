/// A cache's key as `.devci.yml` writes it: literal text (letters, digits, `.`, `_`, `-`) and `{{ hash of FILE }}`
/// parts that the runner fills in with a digest of that workspace file, so the cache follows the file.
public enum CacheKey {
    public enum Part: Equatable, Sendable {
        case literal(String)
        case hashOf(String)
    }

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ key: String) -> Result<[Part], Invalid> {
        guard (1...200).contains(key.utf8.count) else { return .failure(Invalid(description: "a cache key is 1 to 200 characters")) }
        var parts: [Part] = []
        var rest = Substring(key)
        while !rest.isEmpty {
            guard let open = rest.range(of: "{{") else {
                parts.append(.literal(String(rest)))
                break
            }
            if open.lowerBound > rest.startIndex { parts.append(.literal(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                return .failure(Invalid(description: "'{{' without '}}' in the cache key"))
            }
            let inside = rest[open.upperBound..<close.lowerBound].split(separator: " ", omittingEmptySubsequences: true)
            guard inside.count == 3, inside[0] == "hash", inside[1] == "of" else {
                return .failure(Invalid(description: "only {{ hash of FILE }} may stand between '{{' and '}}' in a cache key"))
            }
            let file = String(inside[2])
            guard !file.hasPrefix("/"), !file.split(separator: "/").contains("..") else {
                return .failure(Invalid(description: "'\(file)' must be a relative path inside the workspace"))
            }
            parts.append(.hashOf(file))
            rest = rest[close.upperBound...]
        }
        for case .literal(let text) in parts where !text.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)) }) {
            return .failure(Invalid(description: "'\(text.prefix(40))': a cache key's text is letters, digits, '.', '_' and '-'"))
        }
        return .success(parts)
    }
}
