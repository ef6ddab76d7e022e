import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One dispatcher per database: an exclusive lock on a file beside it, held while the dispatcher runs. The
/// kernel lets go when the process ends, even by `kill -9`, so a crash never leaves a stale lock. The file
/// says who holds it, so a second dispatcher can name the first.
public final class DatabaseLock: @unchecked Sendable {
    private let fd: Int32
    public let path: String

    /// Takes the lock, or throws naming the dispatcher that holds it.
    public init(databasePath: String) throws {
        path = databasePath + ".lock"
        let dir = URL(fileURLWithPath: databasePath).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
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
}
