import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One dispatcher per database: an exclusive lock on a file beside it, held while the dispatcher runs. The
/// kernel lets go when the process ends, even by `kill -9`, so a crash never leaves a stale lock. The file
/// says who holds it, so a second dispatcher can name the first.
public final class DatabaseLock: Sendable {
    private let fd: Int32
    public let path: String

    /// Takes the lock, or throws naming the dispatcher that holds it. The lock file sits beside the database's
    /// real path, so a second dispatcher reaching the same file through a symbolic link is refused too.
    public init(databasePath: String) throws {
        let dir = URL(fileURLWithPath: databasePath).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        path = Self.realPath(databasePath) + ".lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StoreError("cannot create the lock file \(path) beside the database: \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw StoreError("another dispatcher is using the database \(databasePath) (\(holder.isEmpty ? "see \(path)" : holder)): "
                             + "stop it first, or give this one its own --db")
        }
    }

    /// Writes who holds the lock (process id, address), for the next dispatcher's error message.
    public func describe(_ holder: String) {
        ftruncate(fd, 0)
        let bytes = Array((holder + "\n").utf8)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit { close(fd) }

    /// The path with every symbolic link resolved: the file's own when it exists, else its folder's.
    static func realPath(_ path: String) -> String {
        if let resolved = realpath(path, nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let url = URL(fileURLWithPath: path)
        guard let dir = realpath(url.deletingLastPathComponent().path, nil) else { return path }
        defer { free(dir) }
        return URL(fileURLWithPath: String(cString: dir)).appendingPathComponent(url.lastPathComponent).path
    }
}
