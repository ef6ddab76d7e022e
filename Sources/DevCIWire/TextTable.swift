import Foundation

/// The one way a command prints rows for people: columns padded to their widest cell, the last unpadded.
public enum TextTable {
    public static func render(_ header: [String], _ rows: [[String]]) -> String {
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// Text from a job (a test's name or message) made safe to print on a terminal: control characters, escape
    /// sequences' first byte among them, become `?`.
    public static func clean(_ s: String) -> String {
        String(String.UnicodeScalarView(s.unicodeScalars.map { ($0.value < 0x20 || (0x7f...0x9f).contains($0.value)) ? "?" : $0 }))
    }

    /// Seconds from start to end (or to now), as a cell: `12.3s`, or `-` before it started.
    public static func duration(_ start: Date?, _ end: Date?) -> String {
        guard let start else { return "-" }
        return String(format: "%.1fs", (end ?? Date()).timeIntervalSince(start))
    }
}
