import Foundation

/// Where the store is, from `--db` or `DEVCI_DB`: a SQLite file (the embedded default) or a PostgreSQL database.
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(PostgresAddress)

    /// `--db` (default: `DEVCI_DB`, else `~/.devci/devci.sqlite`): `postgres://…` is a PostgreSQL database, any
    /// other `scheme://` is refused (it must not quietly become a folder called `mysql:`), the rest is a file's path.
    public static func resolve(_ db: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> StoreLocation {
        let location = db ?? SQLStore.defaultPath(environment: environment)
        if PostgresAddress.isAddress(location) { return .postgres(try PostgresAddress(location, environment: environment)) }
        if let scheme = location.range(of: "://").map({ String(location[..<$0.lowerBound]) }) {
            throw StoreError("--db (or DEVCI_DB) takes the path of a SQLite file or a postgres:// address, not '\(scheme)://'")
        }
        return .sqlite(path: location)
    }

    /// The file's path, or the database's address without its password.
    public var description: String {
        switch self {
        case .sqlite(let path): path
        case .postgres(let address): address.description
        }
    }

    /// Where artifacts are kept when no `--artifacts` says: beside a SQLite file; for PostgreSQL,
    /// `~/.devci/artifacts` (two dispatchers on two hosts must share one folder: see the README).
    public func defaultArtifacts(environment: [String: String] = ProcessInfo.processInfo.environment) -> ArtifactFolder {
        switch self {
        case .sqlite(let path): return ArtifactFolder.beside(database: path)
        case .postgres:
            let home = environment["HOME"] ?? NSHomeDirectory()
            return ArtifactFolder(root: home + "/.devci/artifacts")
        }
    }
}

extension SQLStore {
    /// Opens the store at `location` for writing, creating and migrating its tables.
    public static func open(_ location: StoreLocation, connections: Int = 2) throws -> SQLStore {
        switch location {
        case .sqlite(let path): try SQLStore(path: path)
        case .postgres(let address): try SQLStore(postgres: address, readOnly: false, connections: connections)
        }
    }

    /// Opens a PostgreSQL store: a few connections lent out in turn.
    public convenience init(postgres address: PostgresAddress, readOnly: Bool, connections: Int = 4, applicationName: String = "devci") throws {
        self.init(driver: try PostgresDriver(address: address, readOnly: readOnly, connections: connections, applicationName: applicationName))
    }

    /// The PostgreSQL driver under this store, if that is what it runs on.
    var postgres: PostgresDriver? { driver as? PostgresDriver }
}
