import ArgumentParser
import DevCIStore
import DevCIWire
import Foundation

struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Copy an installation's history from its SQLite file into a PostgreSQL database, and check the copy.",
        discussion: """
            Copies builds, jobs, their events and logs, runners, the observer's marks (each branch's last dispatched \
            commit), webhook deliveries, task schedules and the notification outbox, with their ids, in one transaction, \
            then compares every table's row count. Stop the dispatcher first: the SQLite file's lock is taken, and so is \
            the PostgreSQL database's leader lock, so no dispatcher writes either side meanwhile. Artifacts are files: \
            copy the folder beside the SQLite file to the dispatchers' --artifacts folder.
            """
    )

    @Option(help: "The SQLite file to copy from, as sqlite:PATH or PATH.") var from: String
    @Option(help: "The PostgreSQL database to copy into, as postgres://USER@HOST:PORT/DATABASE (PGPASSWORD for the password).")
    var to: String
    @Flag(help: "Empty the target's DevCI tables first when they hold history (it is replaced, not merged).") var force = false

    var sourcePath: String { from.hasPrefix("sqlite:") ? String(from.dropFirst("sqlite:".count)) : from }

    func validate() throws {
        guard !sourcePath.isEmpty, !sourcePath.contains("://") else { throw ValidationError("--from takes sqlite:PATH (a SQLite file)") }
        guard PostgresAddress.isAddress(to) else { throw ValidationError("--to takes a postgres://USER@HOST:PORT/DATABASE address") }
        do { _ = try PostgresAddress(to) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        let address = try PostgresAddress(to)
        guard FileManager.default.fileExists(atPath: sourcePath) else { throw Failure("no SQLite database at \(sourcePath)") }
        // Nobody writes either side while the copy runs.
        let lock: DatabaseLock
        do { lock = try DatabaseLock(databasePath: sourcePath) } catch { throw Failure("\(error)") }
        defer { withExtendedLifetime(lock) {} }
        let leader = Leadership(address: address, identity: "devci migrate (pid \(getpid()))", logger: .init(label: "devci.migrate"))
        defer { leader.stop() }
        do {
            guard try leader.tryAcquire() else {
                let holder = leader.lastHolder()
                throw Failure("a dispatcher is running on \(address)\(holder.isEmpty ? "" : " (\(holder))"): stop every dispatcher of that database first")
            }
        } catch let failure as Failure { throw failure } catch { throw Failure("cannot reach \(address): \(error)") }
        let source: SQLStore, target: SQLStore
        do { source = try SQLStore(path: sourcePath) } catch { throw Failure("cannot open \(sourcePath): \(error)") }
        do { target = try SQLStore(postgres: address, readOnly: false, connections: 2, applicationName: "devci migrate") } catch {
            throw Failure("cannot open \(address): \(error)")
        }
        if try !StoreCopy.isEmpty(target) && !force {
            throw Failure("\(address) already holds DevCI history: nothing was copied. Pass --force to replace it with \(sourcePath)'s")
        }
        let started = Date()
        let counts: [StoreCopy.Counts]
        do {
            counts = try StoreCopy.copy(from: source, to: target, replace: force) { table, rows in
                print("copied \(table): \(rows) row(s)")
            }
        } catch {
            throw Failure("the copy failed and nothing was written to \(address): \(error)")
        }
        let wrong = counts.filter { $0.source != $0.target }
        print(TextTable.render(["table", "rows in " + sourcePath, "rows in " + address.description], counts.map { [$0.table, String($0.source), String($0.target)] }))
        guard wrong.isEmpty else {
            throw Failure("the copy does not match: \(wrong.map { "\($0.table) has \($0.source) row(s) in the source, \($0.target) in the target" }.joined(separator: "; "))")
        }
        let artifacts = ArtifactFolder.beside(database: sourcePath).root
        print("verified: every table holds the same number of rows (\(counts.reduce(0) { $0 + $1.source }) in all, "
              + "\(String(format: "%.1f", Date().timeIntervalSince(started))) s). Start the dispatchers with --db \(address)"
              + (FileManager.default.fileExists(atPath: artifacts) ? ", and copy \(artifacts) to their --artifacts folder." : "."))
    }
}
