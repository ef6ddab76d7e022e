import Foundation

/// Validation of text that crosses process boundaries. Anything that fails here is refused at the edge,
/// so commit ids and branch names never reach git as an option or a shell at all.
public enum Validate {
    /// A full object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    public static func isCommitID(_ s: String) -> Bool {
        (s.utf8.count == 40 || s.utf8.count == 64) && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// A branch name by git's check-ref-format rules, restricted further to printable ASCII.
    public static func isBranchName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 255, !s.hasPrefix("-"), !s.hasPrefix("/"), !s.hasSuffix("/"),
              !s.hasSuffix(".lock"), !s.hasSuffix("."), !s.contains(".."), !s.contains("//"), !s.contains("@{")
        else { return false }
        let forbidden: Set<UInt8> = Array(" ~^:?*[\\".utf8).reduce(into: []) { $0.insert($1) }
        return s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && !forbidden.contains($0) }
    }

    /// A repository path or URL: non-empty, bounded, never an option, no control characters.
    public static func isRepository(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 4096 && !s.hasPrefix("-") && s.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7f }
    }

    /// A runner name: 1–64 characters of letters, digits, `.`, `_`, `-`.
    public static func isRunnerName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && s.utf8.allSatisfy {
            (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) || $0 == 46 || $0 == 95 || $0 == 45
        }
    }
}

/// Compares two secrets in time that depends only on their lengths, not on where they first differ.
public func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(truncatingIfNeeded: x.count ^ y.count)
    let n = max(x.count, y.count)
    for i in 0..<n {
        let l = i < x.count ? x[i] : 0
        let r = i < y.count ? y[i] : 0
        diff |= l ^ r
    }
    return diff == 0 && x.count == y.count
}

extension Validate {
    /// A mail address as SMTP's `MAIL FROM:<…>` and `RCPT TO:<…>` take it and a header can hold it: local@domain,
    /// printable ASCII without spaces, angle brackets, quotes, commas or semicolons (no header or command injection).
    public static func isMailAddress(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty, s.utf8.count <= 254 else { return false }
        let forbidden: Set<UInt8> = Array("<>()[]\\,;:\"'`".utf8).reduce(into: []) { $0.insert($1) }
        return s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && !forbidden.contains($0) }
    }

    /// An http:// or https:// address with a host, without spaces or control characters.
    public static func isWebURL(_ s: String) -> Bool {
        guard s.utf8.count <= 2048, s.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }), let url = URL(string: s),
              let scheme = url.scheme, scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty else { return false }
        return true
    }
}
