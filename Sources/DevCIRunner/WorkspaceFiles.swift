import Crypto
import DevCIProcess
import DevCIWire
import Foundation

/// The files a job's workspace takes in and gives out besides its checkout: the artifacts of the jobs it needs
/// (before its first step), its own artifacts (after it), and its cache (restored before, saved after a success).
enum WorkspaceFiles {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    // MARK: Artifacts

    /// The workspace's regular files (never through a symbolic link, never in `.git`) that a pattern names: a
    /// glob (`*`, `?`, `[…]` within a part, `**` across parts) or a folder, which takes everything under it.
    static func collect(_ patterns: [String], in workspace: String) -> [(path: String, file: String)] {
        guard let walker = FileManager.default.enumerator(atPath: workspace) else { return [] }
        var out: [(String, String)] = []
        while let rel = walker.nextObject() as? String {
            let type = walker.fileAttributes?[.type] as? FileAttributeType
            if rel == ".git" && type == .typeDirectory {
                walker.skipDescendants()
                continue
            }
            guard type == .typeRegular, ArtifactPath.isSafe(rel) else { continue }
            if patterns.contains(where: { Glob.matches($0, rel) }) { out.append((rel, "\(workspace)/\(rel)")) }
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// Sends the job's artifacts to the dispatcher; the first refusal (over the size limit, say) ends it.
    static func send(_ spec: ArtifactSpec, from workspace: String, job: Int64, attempt: Int, client: () throws -> WireClient,
                     say: (String) -> Void) throws(Failure) {
        let files = collect(spec.paths, in: workspace)
        guard !files.isEmpty else {
            say("artifacts: nothing matched \(spec.paths.joined(separator: ", "))")
            return
        }
        let total = files.reduce(Int64(0)) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1.file)[.size] as? NSNumber)?.int64Value ?? 0) }
        say("artifacts: sending \(files.count) file(s), \(ByteSize.format(total))")
        do {
            let connection = try client()
            defer { connection.close() }
            for (path, file) in files {
                try ArtifactTransfer.upload(connection, job: job, attempt: attempt, path: path, file: file)
            }
        } catch {
            throw Failure(description: "artifacts not kept: \(error)")
        }
    }

    /// Puts the artifacts the named jobs of this build kept into the workspace, at their own paths.
    static func receive(from jobs: [String], build: Int64, into workspace: String, client: () throws -> WireClient,
                        say: (String) -> Void) throws(Failure) {
        do {
            let connection = try client()
            defer { connection.close() }
            for job in jobs {
                let entries = try ArtifactTransfer.list(connection, build: build, job: job)
                for entry in entries { try ArtifactTransfer.download(connection, build: build, entry: entry, into: workspace) }
                say("artifacts of \(job): \(entries.count) file(s), \(ByteSize.format(entries.reduce(0) { $0 + $1.size }))")
            }
        } catch {
            throw Failure(description: "cannot receive the artifacts of \(jobs.joined(separator: ", ")): \(error)")
        }
    }

    // MARK: Caches

    /// A runner's caches: `<clone>.cache/<repository digest>/<key>/`, each saved version in a folder of its own
    /// and `current` a symbolic link to the newest, replaced in one rename. Jobs restore copies and save new
    /// versions, so two jobs sharing a key never see each other's half-written files.
    struct CacheStore {
        let root: String

        init(clonePath: String) {
            root = clonePath + ".cache"
        }

        /// The key with each `{{ hash of FILE }}` filled in from the workspace.
        static func expand(_ key: String, in workspace: String) -> String {
            guard case .success(let parts) = CacheKey.parse(key) else { return "invalid" }
            return parts.map { part in
                switch part {
                case .literal(let text): return text
                case .hashOf(let file):
                    guard let data = FileManager.default.contents(atPath: "\(workspace)/\(file)") else { return "none" }
                    return String(digest(data).prefix(16))
                }
            }.joined()
        }

        static func digest(_ data: Data) -> String {
            SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        }

        func folder(repository: String, key: String) -> String {
            "\(root)/\(Self.digest(Data(repository.utf8)).prefix(16))/\(key)"
        }

        /// Copies the cached paths into the workspace; says whether there was a cache.
        func restore(_ spec: CacheSpec, repository: String, workspace: String, say: (String) -> Void) {
            let key = Self.expand(spec.key, in: workspace)
            let base = folder(repository: repository, key: key)
            guard let version = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(base)/current") else {
                say("cache \(key): none yet")
                return
            }
            var restored = 0
            for path in spec.paths where FileManager.default.fileExists(atPath: "\(base)/\(version)/\(path)") {
                let target = "\(workspace)/\(path)"
                try? FileManager.default.removeItem(atPath: target)
                if copy("\(base)/\(version)/\(path)", to: target) { restored += 1 }
            }
            say("cache \(key): restored \(restored) of \(spec.paths.count) path(s)")
        }

        /// Saves the paths as the key's newest version.
        func save(_ spec: CacheSpec, repository: String, workspace: String, say: (String) -> Void) {
            let key = Self.expand(spec.key, in: workspace)
            let base = folder(repository: repository, key: key)
            let fm = FileManager.default
            let stamp = "\(Int(Date().timeIntervalSince1970))-\(UInt32.random(in: 0...UInt32.max))"
            let partial = "\(base)/.partial-\(stamp)", version = "v-\(stamp)"
            do {
                try fm.createDirectory(atPath: partial, withIntermediateDirectories: true)
                var saved = 0
                for path in spec.paths where fm.fileExists(atPath: "\(workspace)/\(path)") {
                    guard copy("\(workspace)/\(path)", to: "\(partial)/\(path)") else { throw Failure(description: "cannot copy \(path)") }
                    saved += 1
                }
                try fm.moveItem(atPath: partial, toPath: "\(base)/\(version)")
                let link = "\(base)/.link-\(stamp)"
                try fm.createSymbolicLink(atPath: link, withDestinationPath: version)
                guard rename(link, "\(base)/current") == 0 else { throw Failure(description: "cannot switch to the new version: errno \(errno)") }
                say("cache \(key): saved \(saved) path(s)")
                prune(base, keeping: version)
            } catch {
                try? fm.removeItem(atPath: partial)
                say("cache \(key): not saved: \(error)")
            }
        }

        /// Removes older versions, once no restore can still be reading them.
        private func prune(_ base: String, keeping current: String) {
            let fm = FileManager.default
            for name in (try? fm.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix("v-") && name != current {
                let modified = (try? fm.attributesOfItem(atPath: "\(base)/\(name)")[.modificationDate] as? Date) ?? .distantPast
                if Date().timeIntervalSince(modified) > 600 { try? fm.removeItem(atPath: "\(base)/\(name)") }
            }
        }

        /// `cp -a`: keeps links, modes and times (a virtualenv's links must stay links). Paths go as arguments.
        private func copy(_ from: String, to: String) -> Bool {
            try? FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let process = ChildProcess()
            return process.run(["/bin/cp", "-a", "--", from, to], in: "/", environment: ["PATH": "/usr/bin:/bin"]) { _ in } == .exited(0)
        }
    }
}

/// Shell-style globs over `/`-separated paths: `*`, `?` and `[…]` within a part, `**` for any number of parts;
/// a pattern that names a folder (or ends in `/`) takes everything under it.
enum Glob {
    static func matches(_ pattern: String, _ path: String) -> Bool {
        let p = pattern.split(separator: "/").map(String.init), s = path.split(separator: "/").map(String.init)
        return match(p[...], s[...], prefixOK: true)
    }

    private static func match(_ p: ArraySlice<String>, _ s: ArraySlice<String>, prefixOK: Bool) -> Bool {
        guard let first = p.first else { return s.isEmpty || prefixOK }
        if first == "**" {
            var rest = s
            while true {
                if match(p.dropFirst(), rest, prefixOK: prefixOK) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let name = s.first, fnmatch(first, name, FNM_PERIOD) == 0 || (first == name) else { return false }
        return match(p.dropFirst(), s.dropFirst(), prefixOK: prefixOK)
    }
}
