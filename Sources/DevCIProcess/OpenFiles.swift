import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The process's limit on open files: a dispatcher holds one per runner.
public enum OpenFiles {
    /// Raises the soft limit to the hard one; returns the soft limit in force afterwards (0 if unknown).
    @discardableResult
    public static func raiseLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return UInt64(limit.rlim_cur)
    }
}
