import Foundation

/// Hides secret values in log text: every occurrence of a secret (each line of a multi-line one on its own, as a
/// log line holds at most one line of it) becomes `****`. Used by the runner before a line leaves it and by the
/// dispatcher before a line is stored or streamed, so a job's output never carries a secret it printed.
public struct SecretMask: Sendable, Equatable {
    public static let replacement = "****"
    /// The shortest line of a secret that is masked: shorter ones (a lone `}` in a JSON credential) would mask
    /// ordinary text everywhere, and carry nothing worth hiding.
    public static let shortestMasked = 4

    /// Longest first, so that a secret containing another is masked whole.
    let needles: [String]

    public init(_ values: some Sequence<String>) {
        var set = Set<String>()
        for value in values {
            for line in value.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline) {  // "\r\n" is one Character
                for candidate in [String(line), String(line).trimmed] where candidate.count >= Self.shortestMasked {
                    set.insert(candidate)
                }
            }
        }
        needles = set.sorted { $0.count != $1.count ? $0.count > $1.count : $0 < $1 }
    }

    public static let none = SecretMask([String]())
    public var isEmpty: Bool { needles.isEmpty }

    public func mask(_ text: String) -> String {
        guard !needles.isEmpty else { return text }
        var out = text
        for needle in needles where out.contains(needle) {
            out = out.replacing(needle, with: Self.replacement)
        }
        return out
    }
}

extension String {
    /// Without leading and trailing spaces and tabs.
    var trimmed: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\t" }),
              let last = scalars.lastIndex(where: { $0 != " " && $0 != "\t" }) else { return "" }
        return String(scalars[first...last])
    }
}

/// The `secrets` field of `assign`: a JSON object of environment variable names and values.
public enum SecretsField {
    /// The most one `assign` carries, percent-encoded: with the largest script it still fits in one line.
    public static let maxEncodedBytes = 12_000

    public static func json(_ secrets: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? encoder.encode(secrets)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func decode(_ text: String) -> [String: String]? {
        try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))
    }

    /// Whether `name` may be a secret's variable: a shell name, not one of DevCI's own (`DEVCI_…`).
    public static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 64, !name.hasPrefix("DEVCI_") else { return false }
        return (first == "_" || (first.isASCII && first.properties.isAlphabetic))
            && name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }
}
