import DevCIWire
import Foundation

/// Where artifacts are kept, beside the database: `<root>/builds/<build>/<job name>/<path>` for kept ones and
/// `<root>/incoming/<job>-<attempt>/` for an attempt's uploads until its result is recorded. The dispatcher
/// writes it (off its event loop); the reporter and tools read it. Every path is checked with `ArtifactPath`.
public struct ArtifactFolder: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    /// `~/.devci/devci.sqlite` → `~/.devci/devci-artifacts`.
    public static func beside(database path: String) -> ArtifactFolder {
        ArtifactFolder(root: (path as NSString).deletingPathExtension + "-artifacts")
    }

    public struct Problem: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    func jobFolder(build: Int64, job: String) -> String { "\(root)/builds/\(build)/\(job)" }

    /// Gives a re-run's kept job the artifacts it kept in the earlier build (hard links where the file system
    /// allows, copies otherwise). Nothing to copy is no error.
    public func copy(from build: Int64, to newBuild: Int64, job: String) {
        let source = jobFolder(build: build, job: job), target = jobFolder(build: newBuild, job: job)
        guard FileManager.default.fileExists(atPath: source) else { return }
        try? FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        if (try? FileManager.default.linkItem(atPath: source, toPath: target)) == nil { try? FileManager.default.copyItem(atPath: source, toPath: target) }
    }
    func incoming(job: Int64, attempt: Int) -> String { "\(root)/incoming/\(job)-\(attempt)" }

    // MARK: Reading

    /// The kept artifacts of a build (of one job when named), sorted by job and path.
    public func list(build: Int64, job: String? = nil) -> [ArtifactEntry] {
        let fm = FileManager.default
        let jobs: [String]
        if let job {
            jobs = [job]
        } else {
            jobs = ((try? fm.contentsOfDirectory(atPath: "\(root)/builds/\(build)")) ?? []).sorted()
        }
        var out: [ArtifactEntry] = []
        for name in jobs where Validate.isRunnerName(name) {
            let base = jobFolder(build: build, job: name)
            guard let walker = fm.enumerator(atPath: base) else { continue }
            var files: [ArtifactEntry] = []
            while let rel = walker.nextObject() as? String {
                guard let attrs = walker.fileAttributes, attrs[.type] as? FileAttributeType == .typeRegular else { continue }
                files.append(ArtifactEntry(job: name, path: rel, size: (attrs[.size] as? NSNumber)?.int64Value ?? 0))
            }
            out += files.sorted { $0.path < $1.path }
        }
        return out
    }

    /// The file of one kept artifact, when the names are safe and it is a regular file inside the folder.
    public func file(build: Int64, job: String, path: String) -> String? {
        guard Validate.isRunnerName(job), ArtifactPath.isSafe(path) else { return nil }
        let base = jobFolder(build: build, job: job)
        let full = "\(base)/\(path)"
        // No symbolic link on the way can lead out: the resolved path must still be inside.
        let resolved = URL(fileURLWithPath: full).resolvingSymlinksInPath().path
        let resolvedBase = URL(fileURLWithPath: base).resolvingSymlinksInPath().path
        guard resolved.hasPrefix(resolvedBase + "/") else { return nil }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDir), !isDir.boolValue else { return nil }
        return resolved
    }

    /// Up to `count` bytes of a kept artifact from `offset`, and its size.
    public func read(build: Int64, job: String, path: String, offset: Int64, count: Int) throws(Problem) -> (size: Int64, data: Data) {
        guard let file = file(build: build, job: job, path: path), let handle = FileHandle(forReadingAtPath: file) else {
            throw Problem("build \(build) has no artifact '\(path)' of job '\(job)'")
        }
        defer { try? handle.close() }
        do {
            let size = Int64(try handle.seekToEnd())
            try handle.seek(toOffset: UInt64(max(0, min(offset, size))))
            return (size, try handle.read(upToCount: count) ?? Data())
        } catch {
            throw Problem("cannot read artifact '\(path)': \(error)")
        }
    }

    // MARK: Writing (the dispatcher)

    /// Writes one chunk of an attempt's upload at `offset` (which must be where the file ends so far).
    public func append(job: Int64, attempt: Int, path: String, offset: Int64, data: Data) throws(Problem) {
        guard ArtifactPath.isSafe(path) else { throw Problem("'\(path.prefix(80))' is not a safe artifact path") }
        let full = "\(incoming(job: job, attempt: attempt))/\(path)"
        let fm = FileManager.default
        do {
            if offset == 0 {
                try fm.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                guard fm.createFile(atPath: full, contents: data) else { throw Problem("cannot create \(full)") }
                return
            }
            guard let handle = FileHandle(forWritingAtPath: full) else { throw Problem("artifact '\(path)' was not started at offset 0") }
            defer { try? handle.close() }
            let end = Int64(try handle.seekToEnd())
            guard end == offset else { throw Problem("artifact '\(path)': chunk at \(offset) but \(end) bytes so far") }
            try handle.write(contentsOf: data)
        } catch let problem as Problem {
            throw problem
        } catch {
            throw Problem("cannot write artifact '\(path)': \(error)")
        }
    }

    /// Makes an attempt's uploads the kept artifacts of its job (replacing an earlier attempt's), in one rename.
    /// Returns how many files were kept.
    @discardableResult
    public func commit(job: Int64, attempt: Int, build: Int64, name: String) throws(Problem) -> Int {
        let from = incoming(job: job, attempt: attempt)
        let fm = FileManager.default
        guard fm.fileExists(atPath: from) else { return 0 }
        let to = jobFolder(build: build, job: name)
        do {
            try fm.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if fm.fileExists(atPath: to) { try fm.removeItem(atPath: to) }
            try fm.moveItem(atPath: from, toPath: to)
        } catch {
            throw Problem("cannot keep the artifacts of job \(job): \(error)")
        }
        return list(build: build, job: name).count
    }

    /// The attempts with uploads not yet kept or dropped, and when each last wrote.
    public func incomingUploads() -> [(job: Int64, attempt: Int, modified: Date)] {
        let base = "\(root)/incoming"
        return ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap { name in
            let parts = name.split(separator: "-")
            guard parts.count == 2, let job = Int64(parts[0]), let attempt = Int(parts[1]) else { return nil }
            let modified = (try? FileManager.default.attributesOfItem(atPath: "\(base)/\(name)")[.modificationDate] as? Date) ?? .distantPast
            return (job, attempt, modified)
        }
    }

    /// Drops an attempt's uploads (its result was not recorded).
    public func discard(job: Int64, attempt: Int) {
        try? FileManager.default.removeItem(atPath: incoming(job: job, attempt: attempt))
    }
}
