import DevCIStore
import DevCIWire
import Foundation
import Hummingbird

/// Live updates: Server-Sent Events on the build page and the dashboard, polled from the database
/// (the reporter is another process than the dispatcher and only reads).
extension Reporter {
    /// A build's new log lines, and every change of its jobs and of itself. The first batch carries every
    /// job and the build as they are, so a page rendered a moment before the stream opened misses nothing.
    func buildEvents(_ id: Int64, _ request: Request) throws -> Response {
        let store = try self.store
        _ = try ensureVisible(try store.build(id), id, request)
        let after = try positiveInt(request.uri.queryParameters["after"].map(String.init), name: "after", allowZero: true)
        let stopping = self.stopping
        return sse { writer in
            var cursor = Int64(after ?? 0)
            // The last event sent per job and for the build: any field that changed is sent again.
            var sentJobs: [Int64: String] = [:]
            var sentBuild = ""
            var quiet = 0
            while true {
                var out = ""
                let lines = try store.logs(build: id, after: cursor, limit: 2000)
                for l in lines {
                    out += Self.event("log", ["job": l.job, "attempt": l.attempt, "stream": l.stream.rawValue, "ts": l.timestampMillis, "text": l.text])
                }
                cursor = lines.last?.id ?? cursor
                for job in try store.jobs(build: id) {
                    let event = Self.event("job", Self.jobFields(job))
                    if sentJobs[job.id] != event { out += event; sentJobs[job.id] = event }
                }
                guard let build = try store.build(id) else { break }
                let buildEvent = Self.event("build", buildFields(build))
                if buildEvent != sentBuild { out += buildEvent; sentBuild = buildEvent }
                let finished = build.status.isFinal
                if finished && lines.isEmpty { out += Self.event("end", ["id": id]) }
                quiet = out.isEmpty ? quiet + 1 : 0
                if quiet >= 60 { out = ": keep-alive\n\n"; quiet = 0 }
                if !out.isEmpty { try await writer.write(ByteBuffer(string: out)) }
                if (finished && lines.isEmpty) || stopping.isSet { break }
                // A stream is as long-lived as a page: one whose session ended, or whose viewer lost the build's task,
                // stops (checked about once a second, the rules as the configuration folder says them now).
                if quiet % 4 == 0, !config.access.canSee(task: build.task, viewer(request)) { break }
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// What the build page shows of a job and updates live: state, runner, attempt, times (epoch milliseconds,
    /// null until they happen) and the latest reason.
    static func jobFields(_ job: JobSummary) -> [String: Any] {
        ["id": job.id, "status": job.status.rawValue, "attempt": job.attempt, "runner": job.runner ?? NSNull(), "reason": job.reason ?? NSNull(),
         "started": epochMillis(job.startedAt) ?? NSNull(), "finished": epochMillis(job.finishedAt) ?? NSNull()]
    }

    func buildFields(_ build: BuildSummary) -> [String: Any] {
        ["id": build.id, "status": build.status.rawValue, "display": build.displayStatus, "statusClass": statusClass(build),
         "started": Self.epochMillis(build.startedAt) ?? NSNull(), "finished": Self.epochMillis(build.finishedAt) ?? NSNull()]
    }

    /// `changed` whenever the summary or the dashboard's rows (with these filters) change; the page then fetches its rows.
    /// `seen` is the fingerprint of what the page showed when it was rendered: a change between rendering the page
    /// and opening the stream is announced at once.
    func dashboardEvents(_ request: Request) throws -> Response {
        let filter = visibleFilter(try buildFilter(request), request)
        let store = try self.store, size = config.pageSize, stopping = self.stopping
        let seen = request.uri.queryParameters["seen"].map(String.init)
        // Taken here, before the response's first byte: the client counts the stream as open from that byte,
        // so every change after it is compared against this and announced.
        let first = try DashboardSnapshot(store, filter, size: size)
        return sse { writer in
            var last = first
            var quiet = 0
            if let seen, seen != first.fingerprint {
                let s = first.summary
                try await writer.write(ByteBuffer(string: Self.event("changed", ["queued": s.queued, "running": s.running, "runners": s.runners, "waiting": s.waitingText ?? ""])))
            }
            while !stopping.isSet {
                try await Task.sleep(for: .seconds(1))
                // What the viewer may see now (a session that ended, rules that changed): a change ends the stream,
                // and the page's script opens a new one with the new rules.
                guard visibleFilter(filter, request) == filter else { break }
                let now = try DashboardSnapshot(store, filter, size: size)
                if now != last {
                    let s = now.summary
                    try await writer.write(ByteBuffer(string: Self.event("changed", ["queued": s.queued, "running": s.running, "runners": s.runners, "waiting": s.waitingText ?? ""])))
                    last = now
                    quiet = 0
                } else {
                    quiet += 1
                    if quiet >= 15 {
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        quiet = 0
                    }
                }
            }
        }
    }

    func sse(_ body: @escaping @Sendable (inout any ResponseBodyWriter) async throws -> Void) -> Response {
        Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: .init { writer in
            try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
            try await body(&writer)
            try await writer.finish(nil)
        })
    }

    static func event(_ name: String, _ fields: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8)
        return "event: \(name)\ndata: \(String(decoding: data, as: UTF8.self))\n\n"
    }
}

/// What the dashboard shows (the summary and the first page of rows with the page's filters): when it differs,
/// the page is told to fetch its rows again.
struct DashboardSnapshot: Equatable {
    var summary: SystemSummary
    var builds: [BuildSummary]

    init(summary: SystemSummary, builds: [BuildSummary]) {
        self.summary = summary
        self.builds = builds
    }

    init(_ store: any BuildReader, _ filter: BuildFilter, size: Int) throws {
        self.init(summary: try store.summary(), builds: try store.builds(filter, offset: 0, limit: size))
    }

    /// A short, stable name for this content (FNV-1a over its description), which the page carries as `data-seen`.
    var fingerprint: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(self)".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}
