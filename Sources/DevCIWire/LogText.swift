/// How a log line is kept: text after an embedded NUL byte must survive the database (SQLite's C strings
/// would end there), so a NUL is shown as the visible symbol U+2400 (␀).
public enum LogText {
    public static func escapingNUL(_ text: String) -> String {
        text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "\u{2400}") : text
    }
}
