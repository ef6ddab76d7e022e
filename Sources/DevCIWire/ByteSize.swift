import Foundation

/// Sizes as people write them: `512m`, `1.5g`, `64k`, `100` (bytes); units are powers of 1024, upper or lower
/// case, with an optional `b` (`512mb`). The one parser for `memory:`, `--artifact-limit` and the like.
public enum ByteSize {
    public static func parse(_ text: String) -> Int64? {
        var s = text.trimmingCharacters(in: .whitespaces).lowercased()
        if s.hasSuffix("b") { s.removeLast() }
        var multiplier: Double = 1
        if let unit = s.last, let power = "kmgt".firstIndex(of: unit) {
            multiplier = pow(1024, Double("kmgt".distance(from: "kmgt".startIndex, to: power) + 1))
            s.removeLast()
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let value = Double(s), value >= 0 else { return nil }
        let bytes = value * multiplier
        guard bytes < 9e18 else { return nil }
        return Int64(bytes.rounded())
    }

    /// `512 MiB`, `1.5 GiB`, `300 B`: for messages.
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        return value == value.rounded() ? "\(Int(value)) \(units[unit])" : String(format: "%.1f %@", value, units[unit])
    }
}
