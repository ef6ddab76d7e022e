import Foundation

/// One kept artifact: a file a job left in its workspace, by its path there.
public struct ArtifactEntry: Codable, Equatable, Sendable {
    public var job: String
    public var path: String
    public var size: Int64

    public init(job: String, path: String, size: Int64) {
        self.job = job
        self.path = path
        self.size = size
    }
}

/// The rules every side applies to an artifact's path before touching a file with it.
public enum ArtifactPath {
    /// Raw bytes per `artifact_put` / `artifact_data` line: 36 KiB is 48 KiB of base64, well inside a line.
    public static let chunkBytes = 36 << 10
    /// The default bound on what one job may keep (`--artifact-limit`).
    public static let defaultLimit: Int64 = 100 << 20

    /// Relative, `/`-separated, no empty, `.` or `..` part, no control characters: it can never leave its folder.
    public static func isSafe(_ path: String) -> Bool {
        guard (1...4096).contains(path.utf8.count), !path.hasPrefix("/") else { return false }
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "\\" }) else { return false }
        return path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part != "." && part != ".." && part.utf8.count <= 255
        }
    }
}

/// The JSON an `artifact_list` line carries.
public enum ArtifactListing {
    /// The most bytes of entries one line carries (the line bound, less room for the verb and escapes).
    public static let maxBytes = 40_000

    public static func json(_ entries: [ArtifactEntry]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(entries)) ?? Data("[]".utf8), as: UTF8.self)
    }

    public static func entries(_ json: String) -> [ArtifactEntry]? {
        try? JSONDecoder().decode([ArtifactEntry].self, from: Data(json.utf8))
    }

    /// The entries from `from` that fit in one line, and where the next line starts (0 when all are given).
    public static func page(_ all: [ArtifactEntry], from: Int) -> (entries: [ArtifactEntry], next: Int) {
        var out: [ArtifactEntry] = []
        var bytes = 2
        var i = from
        while i < all.count {
            let size = json([all[i]]).utf8.count + 8  // percent-escapes of spaces take a little more
            if !out.isEmpty && bytes + size > maxBytes { break }
            out.append(all[i])
            bytes += size
            i += 1
        }
        return (out, i < all.count ? i : 0)
    }
}

/// Moves artifacts over a `WireClient`, one chunk per request: a runner's uploads and its downloads of what the
/// jobs it needs kept, and `devci artifacts`. Every reply is checked; a refusal ends the transfer with its message.
public enum ArtifactTransfer {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Sends one file of an attempt in chunks.
    public static func upload(_ client: WireClient, job: Int64, attempt: Int, path: String, file: String) throws {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw Failure("cannot read \(file)") }
        defer { try? handle.close() }
        let size = Int64(try handle.seekToEnd())
        try handle.seek(toOffset: 0)
        var offset: Int64 = 0
        repeat {
            let chunk = try handle.read(upToCount: ArtifactPath.chunkBytes) ?? Data()
            let reply = try client.request(.artifactPut(job: job, attempt: attempt, path: path, size: size, offset: offset,
                                                        data: chunk.base64EncodedString()))
            guard case .ok = reply else {
                if case .error(_, let message) = reply { throw Failure(message) }
                throw Failure("unexpected reply to artifact_put: \(LineCodec.encode(reply).prefix(120))")
            }
            offset += Int64(chunk.count)
            if chunk.isEmpty { break }
        } while offset < size
    }

    /// Every artifact a build kept (of one job when named).
    public static func list(_ client: WireClient, build: Int64, job: String?) throws -> [ArtifactEntry] {
        var out: [ArtifactEntry] = []
        var from = 0
        repeat {
            switch try client.request(.artifactList(build: build, job: job, from: from)) {
            case .artifactList(let entries, let next):
                out += entries
                from = next
            case .error(_, let message): throw Failure(message)
            case let other: throw Failure("unexpected reply to artifact_list: \(LineCodec.encode(other).prefix(120))")
            }
        } while from > 0
        return out
    }

    /// Writes one kept artifact under `folder` at its own path (made safe first), through a temporary file.
    public static func download(_ client: WireClient, build: Int64, entry: ArtifactEntry, into folder: String) throws {
        guard ArtifactPath.isSafe(entry.path) else { throw Failure("refusing the unsafe artifact path '\(entry.path.prefix(80))'") }
        let target = "\(folder)/\(entry.path)"
        let temporary = "\(target).devci-part"
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            throw Failure("cannot write \(temporary)")
        }
        defer { try? handle.close() }
        var offset: Int64 = 0
        while true {
            switch try client.request(.artifactGet(build: build, job: entry.job, path: entry.path, offset: offset)) {
            case .artifactData(let size, let at, let data):
                guard at == offset, let bytes = Data(base64Encoded: data) else { throw Failure("a chunk of '\(entry.path)' came garbled") }
                try handle.write(contentsOf: bytes)
                offset += Int64(bytes.count)
                if offset >= size || bytes.isEmpty {
                    try handle.close()
                    if FileManager.default.fileExists(atPath: target) { try FileManager.default.removeItem(atPath: target) }
                    try FileManager.default.moveItem(atPath: temporary, toPath: target)
                    return
                }
            case .error(_, let message): throw Failure(message)
            case let other: throw Failure("unexpected reply to artifact_get: \(LineCodec.encode(other).prefix(120))")
            }
        }
    }
}
