import Foundation
import NIOCore
import NIOPosix

/// Connection errors in plain words ("connection refused: is the dispatcher running?").
public enum ConnectionTrouble {
    /// What went wrong reaching a peer, for a person.
    public static func describe(_ error: Error) -> String {
        if let e = error as? NIOConnectionError {
            if let first = e.connectionErrors.first { return describe(first.error) }
            if let dns = e.dnsAAAAError ?? e.dnsAError { return "the host name does not resolve (\(dns))" }
            return "no address to connect to"
        }
        if let e = error as? IOError {
            switch e.errnoCode {
            case ECONNREFUSED: return "connection refused: is the dispatcher running, on that port?"
            case ETIMEDOUT: return "no answer (timed out)"
            case EHOSTUNREACH, ENETUNREACH: return "the host is unreachable"
            case ECONNRESET: return "the connection was reset"
            default: return String(cString: strerror(e.errnoCode))
            }
        }
        if let e = error as? ChannelError {
            switch e {
            case .connectTimeout(let t): return "no answer within \(t.nanoseconds / 1_000_000) ms"
            case .ioOnClosedChannel, .alreadyClosed, .eof: return "the connection closed"
            default: return "\(e)"
            }
        }
        if let e = error as? WireError {
            switch e.code {
            case .timeout: return "the dispatcher did not answer (\(e.message))"
            case .closed: return "the dispatcher closed the connection"
            default: return e.message
            }
        }
        return "\(error)"
    }
}
