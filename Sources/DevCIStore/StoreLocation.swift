import Foundation

/// Where the store is, from `--db` or `DEVCI_DB`.
public enum StoreLocation {
    /// The SQLite file a `--db` names (default: `DEVCI_DB`, else `~/.devci/devci.sqlite`). An address is refused:
    /// there is no PostgreSQL store yet, and `postgres://…` must not quietly become a folder called `postgres:`.
    public static func resolve(_ db: String?) throws -> String {
        let path = db ?? SQLStore.defaultPath()
        if let scheme = path.range(of: "://").map({ String(path[..<$0.lowerBound]) }) {
            throw StoreError("--db (or DEVCI_DB) takes the path of a SQLite file; '\(scheme)://' addresses are not supported yet")
        }
        return path
    }
}
