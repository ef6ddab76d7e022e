import DevCIPipeline
import DevCIStore
import DevCIWire
import Foundation

/// Decides which notifications an ended build sends and writes them out (pure: facts and configuration in,
/// messages out). The messages are stored in the outbox as they are written here, so a retry sends the same text.
public enum NotificationComposer {
    /// Log lines per failing job.
    public static let tailLines = 20
    static let lineLimit = 400

    /// What kind of ending this is: a failure, a fix (a success after a failure), or neither.
    public static func event(status: BuildStatus, previous: BuildStatus?) -> NotificationRule.When? {
        if status.isFailure { return .failure }
        if status.passed, let previous, previous.isFailure { return .fixed }
        return nil
    }


    public static func messages(for facts: NotificationFacts, config: ServerConfig, now: Date) -> [OutboxMessage] {
        let b = facts.build
        let event = event(status: b.status, previous: facts.previous)
        let rules = config.notifications.filter { rule in
            rule.applies(repository: b.repo, task: b.task) && (rule.when.contains(.always) || event.map(rule.when.contains) == true)
        }
        guard !rules.isEmpty else { return [] }
        let mask = config.secretMask
        let text = summary(facts, event: event, reporterURL: config.reporterURL, mask: mask)
        let subject = subjectLine(facts, event: event)
        var out: [OutboxMessage] = []
        for rule in rules {
            if !rule.email.isEmpty, let smtp = config.smtp {
                out.append(OutboxMessage(channel: "email", target: rule.email.joined(separator: ","), subject: subject,
                                         body: mail(from: smtp.from, to: rule.email, subject: subject, text: text, build: b.id, now: now)))
            }
            if let url = rule.webhook {
                let body = rule.format == .slack ? json(["text": "\(subject)\n\(text)"])
                    : webhookJSON(facts, event: event, reporterURL: config.reporterURL, mask: mask)
                out.append(OutboxMessage(channel: "webhook", target: url, subject: subject, body: body))
            }
        }
        // Two rules that say the same thing to the same place send it once.
        var seen = Set<String>()
        return out.filter { seen.insert("\($0.channel) \($0.target)").inserted }
    }

    static func subjectLine(_ f: NotificationFacts, event: NotificationRule.When?) -> String {
        let b = f.build
        let what = event == .fixed ? "fixed" : b.status.display
        let name = b.task.map { "task \($0)" } ?? "\(b.repo) \(b.branch)"
        let commit = b.commit.isEmpty ? "" : " \(b.commit.prefix(10))"
        if let c = f.culprit?.culprit { return clean("[DevCI] build \(b.id) \(what): \(name)\(commit), broken by \(c.prefix(10))") }
        let flaky = event == .failure && f.onlyFlakyFailures ? " (only known-flaky tests failed)" : ""
        return clean("[DevCI] build \(b.id) \(what): \(name)\(commit)\(flaky)")
    }

    static func summary(_ f: NotificationFacts, event: NotificationRule.When?, reporterURL: String, mask: SecretMask) -> String {
        let b = f.build
        var lines = ["Build \(b.id) \(event == .fixed ? "is fixed: it passed after a failure" : b.status.display)."]
        if let task = b.task { lines.append("Task:       \(task)") }
        if !b.repo.isEmpty {
            lines.append("Repository: \(b.repo)")
            lines.append("Branch:     \(b.branch)")
            lines.append("Commit:     \(b.commit)")
        }
        if !b.author.isEmpty { lines.append("Author:     \(clean(b.author))") }
        if !b.title.isEmpty { lines.append("Title:      \(clean(mask.mask(b.title)))") }
        lines.append("Status:     \(b.status.rawValue)")
        if let c = f.culprit, let commit = c.culprit {
            lines.append("")
            lines.append("Broken by \(commit.prefix(10))\(c.culpritAuthor.isEmpty ? "" : ", \(clean(c.culpritAuthor))")\(c.culpritTitle.isEmpty ? "" : ": \(clean(mask.mask(c.culpritTitle)))")")
            lines.append("(\(clean(c.reason ?? "found by bisection")))")
        }
        if f.onlyFlakyFailures {
            lines.append("")
            lines.append("Every test that failed is known to be flaky: this failure may not be the change's.")
        }
        if !f.failedTests.isEmpty {
            lines.append("")
            lines.append("Failed tests:")
            for t in f.failedTests {
                lines.append("  \(clean(t.fullName)) (\(t.status.rawValue)\(t.knownFlaky ? ", known flaky" : ""))")
                if let m = t.message?.split(separator: "\n").first { lines.append("    " + clean(mask.mask(String(m)))) }
            }
        }
        if !f.failing.isEmpty {
            lines.append("")
            lines.append("Failing jobs:")
            for job in f.failing {
                lines.append("  \(job.name) (\(job.status.rawValue)), its last \(job.tail.count) lines:")
                for l in job.tail { lines.append("    | " + clean(mask.mask(l))) }
            }
        }
        lines.append("")
        lines.append("\(reporterURL)/builds/\(b.id)")
        return lines.joined(separator: "\n")
    }

    static func webhookJSON(_ f: NotificationFacts, event: NotificationRule.When?, reporterURL: String, mask: SecretMask) -> String {
        let b = f.build
        let failing: [[String: Any]] = f.failing.map { ["name": $0.name, "status": $0.status.rawValue, "log_tail": $0.tail.map { clean(mask.mask($0)) }] }
        var object: [String: Any] = [
            "build": b.id, "status": b.status.rawValue, "event": event?.rawValue ?? "ended", "repository": b.repo, "branch": b.branch,
            "commit": b.commit, "author": b.author, "title": mask.mask(b.title), "url": "\(reporterURL)/builds/\(b.id)", "failing_jobs": failing,
        ]
        if let task = b.task { object["task"] = task }
        object["failed_tests"] = f.failedTests.map { ["suite": $0.suite, "name": $0.name, "status": $0.status.rawValue, "known_flaky": $0.knownFlaky] }
        object["only_flaky_failures"] = f.onlyFlakyFailures
        if let c = f.culprit, let commit = c.culprit {
            object["culprit"] = ["commit": commit, "title": mask.mask(c.culpritTitle), "author": c.culpritAuthor, "builds": c.buildsRun]
        }
        return json(object)
    }

    static func json(_ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A whole mail (RFC 5322): headers, then the text. Header values are ASCII without line breaks; a subject with
    /// other characters is an encoded word (RFC 2047).
    static func mail(from: String, to: [String], subject: String, text: String, build: Int64, now: Date) -> String {
        let date = DateFormatter()
        date.locale = Locale(identifier: "en_US_POSIX")
        date.timeZone = TimeZone(identifier: "UTC")
        date.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        let encodedSubject = subject.unicodeScalars.allSatisfy({ $0.isASCII }) ? subject : encodedWords(subject)
        let domain = from.split(separator: "@").last.map(String.init) ?? "devci.invalid"
        let headers = [
            "From: DevCI <\(from)>", "To: \(to.joined(separator: ", "))", "Subject: \(encodedSubject)", "Date: \(date.string(from: now))",
            "Message-ID: <devci-build-\(build)-\(UInt32.random(in: 0...UInt32.max))@\(domain)>", "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "Auto-Submitted: auto-generated",
        ]
        return headers.joined(separator: "\r\n") + "\r\n\r\n" + text.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
    }

    /// One line of text as a mail and a chat message can hold it: control characters shown as `?`, at most 400
    /// characters and 900 bytes (a mail line may have 998).
    static func clean(_ s: String) -> String {
        let scalars = s.unicodeScalars.map { $0 == "\t" ? " " : ($0.value < 0x20 || $0.value == 0x7f) ? "?" : Character($0) }
        var line = String(scalars)
        if line.count > lineLimit { line = String(line.prefix(lineLimit)) + "…" }
        while line.utf8.count > 900 { line = String(line.dropLast(2)) + "…" }
        return line
    }

    /// A header value in RFC 2047 encoded words of at most 75 characters each, folded onto lines of their own.
    static func encodedWords(_ text: String) -> String {
        var words: [String] = [], chunk = ""
        for c in text {
            // 45 bytes of UTF-8 make 60 of base64: with "=?UTF-8?B?" and "?=" a word stays under 75.
            if chunk.utf8.count + String(c).utf8.count > 45 {
                words.append(chunk)
                chunk = ""
            }
            chunk.append(c)
        }
        if !chunk.isEmpty { words.append(chunk) }
        return words.map { "=?UTF-8?B?\(Data($0.utf8).base64EncodedString())?=" }.joined(separator: "\r\n ")
    }
}
