import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Which file a path names (device and inode): a deleted and re-created database file has another identity.
struct FileIdentity: Equatable {
    let device: UInt64
    let inode: UInt64

    /// Nil when nothing is at `path`.
    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}
