import Foundation

/// A value the store reads or binds: the four kinds both databases share (a Bool is an integer, a time is
/// epoch seconds in a double), so one store speaks to SQLite and to PostgreSQL alike.
public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
}

/// A Swift value that binds as, and reads back from, an `SQLValue`.
protocol SQLValueConvertible {
    var sqlValue: SQLValue { get }
    /// The value, or nil when `value` is NULL or another kind.
    static func from(_ value: SQLValue) -> Self?
    /// What a NULL reads as where the column is declared NOT NULL (a row written by another version).
    static var fallback: Self { get }
}

extension Int64: SQLValueConvertible {
    var sqlValue: SQLValue { .int(self) }
    static func from(_ value: SQLValue) -> Int64? {
        switch value {
        case .int(let v): v
        case .double(let v): Int64(exactly: v.rounded()) ?? nil
        case .text(let s): Int64(s)
        case .null: nil
        }
    }
    static var fallback: Int64 { 0 }
}

extension Int: SQLValueConvertible {
    var sqlValue: SQLValue { .int(Int64(self)) }
    static func from(_ value: SQLValue) -> Int? { Int64.from(value).map { Int(truncatingIfNeeded: $0) } }
    static var fallback: Int { 0 }
}

extension Double: SQLValueConvertible {
    var sqlValue: SQLValue { .double(self) }
    static func from(_ value: SQLValue) -> Double? {
        switch value {
        case .double(let v): v
        case .int(let v): Double(v)
        case .text(let s): Double(s)
        case .null: nil
        }
    }
    static var fallback: Double { 0 }
}

extension Bool: SQLValueConvertible {
    var sqlValue: SQLValue { .int(self ? 1 : 0) }
    static func from(_ value: SQLValue) -> Bool? { Int64.from(value).map { $0 != 0 } }
    static var fallback: Bool { false }
}

extension String: SQLValueConvertible {
    var sqlValue: SQLValue { .text(self) }
    static func from(_ value: SQLValue) -> String? {
        switch value {
        case .text(let s): s
        case .int(let v): String(v)
        case .double(let v): String(v)
        case .null: nil
        }
    }
    static var fallback: String { "" }
}

extension Optional: SQLValueConvertible where Wrapped: SQLValueConvertible {
    var sqlValue: SQLValue { self?.sqlValue ?? .null }
    static func from(_ value: SQLValue) -> Wrapped?? { value == .null ? .some(nil) : Wrapped.from(value).map { .some($0) } }
    static var fallback: Wrapped? { nil }
}

/// One row of a result, its columns by name.
struct SQLRow {
    let names: [String: Int]
    let values: [SQLValue]

    subscript<T: SQLValueConvertible>(_ column: String) -> T {
        guard let i = names[column] else { return T.fallback }
        return T.from(values[i]) ?? T.fallback
    }

    /// The first column.
    func first<T: SQLValueConvertible>() -> T? { values.first.flatMap { T.from($0) } }
}

/// Which SQL a driver speaks where the two differ. Everything else is written once, in the SQL both accept.
enum SQLDialect: Sendable {
    case sqlite, postgres

    /// A comma-separated list of an integer column's values.
    func listAgg(_ column: String) -> String {
        switch self {
        case .sqlite: "group_concat(\(column))"
        case .postgres: "string_agg(CAST(\(column) AS text), ',')"
        }
    }
}

/// A connection (inside a transaction when writing): the one seam between the store's SQL and a database.
protocol SQLConnection {
    var dialect: SQLDialect { get }
    /// Runs one statement; returns how many rows it changed.
    @discardableResult func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int
    /// Runs a statement whose answer nobody needs before the transaction ends. PostgreSQL sends it and goes on
    /// without waiting (a failure is thrown by the next statement waited for, or by the commit); SQLite runs it.
    func send(_ sql: String, _ arguments: [SQLValue]) throws
    func rows(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow]
}

extension SQLConnection {
    @discardableResult func execute(_ sql: String, _ arguments: [any SQLValueConvertible] = []) throws -> Int {
        try execute(sql, arguments.map(\.sqlValue))
    }

    func send(_ sql: String, _ arguments: [any SQLValueConvertible] = []) throws {
        try send(sql, arguments.map(\.sqlValue))
    }

    /// Sends statements that change different rows and read nothing the others change (a job, its event and its
    /// build): PostgreSQL runs them as one statement (data-modifying WITH clauses), SQLite one after the other.
    func send(together statements: [(sql: String, arguments: [any SQLValueConvertible])]) throws {
        guard dialect == .postgres, statements.count > 1 else {
            for s in statements { try send(s.sql, s.arguments) }
            return
        }
        let clauses = statements.dropLast().enumerated().map { "s\($0.offset) AS (\($0.element.sql))" }.joined(separator: ", ")
        try send("WITH " + clauses + " " + statements.last!.sql, statements.flatMap(\.arguments))
    }

    func rows(_ sql: String, _ arguments: [any SQLValueConvertible] = []) throws -> [SQLRow] {
        try rows(sql, arguments.map(\.sqlValue))
    }

    /// Inserts many rows, `perStatement` to a statement: one round trip for a burst of them. Not waited on.
    func sendRows(into table: String, columns: [String], _ rows: [[any SQLValueConvertible]], perStatement: Int) throws {
        let tuple = "(" + columns.map { _ in "?" }.joined(separator: ", ") + ")"
        for start in stride(from: 0, to: rows.count, by: perStatement) {
            let chunk = rows[start..<min(start + perStatement, rows.count)]
            try send("INSERT INTO \(table)(\(columns.joined(separator: ", "))) VALUES " + chunk.map { _ in tuple }.joined(separator: ", "),
                     chunk.flatMap { $0 })
        }
    }

    func row(_ sql: String, _ arguments: [any SQLValueConvertible] = []) throws -> SQLRow? {
        try rows(sql, arguments).first
    }

    /// The first column of the first row (nil when there is no row or it is NULL).
    func one<T: SQLValueConvertible>(as: T.Type, _ sql: String, _ arguments: [any SQLValueConvertible] = []) throws -> T? {
        try rows(sql, arguments).first?.first()
    }

    /// The first column of every row.
    func all<T: SQLValueConvertible>(as: T.Type, _ sql: String, _ arguments: [any SQLValueConvertible] = []) throws -> [T] {
        try rows(sql, arguments).compactMap { $0.first() }
    }

    /// Runs an INSERT and returns the new row's id (`RETURNING id`, which both databases understand).
    func insert(_ sql: String, _ arguments: [any SQLValueConvertible]) throws -> Int64 {
        guard let id = try one(as: Int64.self, sql + " RETURNING id", arguments) else { throw StoreError("an insert returned no id: \(sql)") }
        return id
    }
}

/// A database the store runs on: reads, and writes in one transaction each.
protocol SQLDriver: Sendable {
    /// What the messages call it: a file's path, or a server's address without its password.
    var name: String { get }
    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T
    /// `body` in one transaction: all of it is written, or none.
    func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T
    /// Throws when the database is no longer the one opened (or this process no longer the one that may write).
    func verify() throws
}
