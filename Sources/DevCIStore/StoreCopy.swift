import Foundation

/// Copies an installation's whole history from one store to another (`devci migrate`): every table, every row,
/// with its id, in one transaction on the target, then checks that each table holds what the source holds.
public enum StoreCopy {
    /// The tables, parents before children (the target's foreign keys hold at every step).
    public static let tables = ["builds", "jobs", "job_events", "log_lines", "runners", "branch_heads", "webhook_deliveries",
                                "task_schedule", "notifications", "test_results", "untested_commits", "bisections"]

    public struct Counts: Sendable, Equatable {
        public var table: String
        public var source: Int
        public var target: Int
    }

    /// Whether `store` holds any history (a target with some is refused unless forced).
    public static func isEmpty(_ store: SQLStore) throws -> Bool {
        try store.read { db in
            for table in tables where try db.one(as: Int64.self, "SELECT 1 FROM \(table) LIMIT 1") != nil { return false }
            return true
        }
    }

    /// Copies everything in `source` into `target`, emptying the target's tables first (`replace`), and returns
    /// each table's row count on both sides. `progress` hears each table as it is done.
    public static func copy(from source: SQLStore, to target: SQLStore, replace: Bool,
                            progress: (String, Int) -> Void = { _, _ in }) throws -> [Counts] {
        try target.driver.write { out in
            if replace {
                for table in tables.reversed() { try out.execute("DELETE FROM \(table)") }
            }
            for table in tables {
                var copied = 0
                try source.driver.read { input in
                    // Batches in rowid order (every table has one in SQLite), inserted many rows to a statement.
                    var after: Int64 = -1
                    while true {
                        let rows = try input.rows("SELECT rowid AS devci_rowid, * FROM \(table) WHERE rowid > ? ORDER BY rowid LIMIT 2000", [after])
                        guard let first = rows.first else { break }
                        let columns = first.names.sorted { $0.value < $1.value }.map(\.key).filter { $0 != "devci_rowid" }
                        let perStatement = max(1, 30_000 / columns.count)
                        for start in stride(from: 0, to: rows.count, by: perStatement) {
                            let chunk = rows[start..<min(start + perStatement, rows.count)]
                            let tuple = "(" + columns.map { _ in "?" }.joined(separator: ", ") + ")"
                            let sql = "INSERT INTO \(table)(\(columns.joined(separator: ", "))) VALUES "
                                + chunk.map { _ in tuple }.joined(separator: ", ")
                            try out.execute(sql, chunk.flatMap { row in columns.map { row.values[row.names[$0]!] } })
                        }
                        copied += rows.count
                        after = rows.last!["devci_rowid"]
                    }
                }
                progress(table, copied)
            }
            if out.dialect == .postgres {
                // New ids continue after the copied ones.
                for table in ["builds", "jobs", "job_events", "log_lines", "notifications", "test_results", "untested_commits", "bisections"] {
                    _ = try out.rows("SELECT setval(pg_get_serial_sequence('\(table)', 'id'), COALESCE((SELECT MAX(id) FROM \(table)), 0) + 1, false)")
                }
            }
        }
        return try tables.map { table in
            Counts(table: table, source: try source.read { try $0.one(as: Int.self, "SELECT COUNT(*) FROM \(table)") ?? 0 },
                   target: try target.read { try $0.one(as: Int.self, "SELECT COUNT(*) FROM \(table)") ?? 0 })
        }
    }
}
