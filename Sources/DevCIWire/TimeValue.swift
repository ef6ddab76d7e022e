import Foundation

extension Duration {
    /// In seconds, fractions kept (for Foundation's and Dispatch's APIs).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    /// In whole milliseconds (for the wire).
    public var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// The one parser of time values: `500ms`, `30s`, `5m`, `1h`, `1d`, `1w`.
public enum TimeValue {
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000)]
        for (suffix, millis) in units where text.hasSuffix(suffix) {
            guard let n = Int64(text.dropLast(suffix.count)), n >= 0, n <= Int64.max / millis / 1000 else { return nil }
            return .milliseconds(n * millis)
        }
        return nil
    }

    /// Seconds written back as the parser reads them: whole milliseconds (`1500ms`), whole seconds when exact (`30s`).
    public static func format(seconds: Double) -> String {
        let ms = Int64((seconds * 1000).rounded())
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}
