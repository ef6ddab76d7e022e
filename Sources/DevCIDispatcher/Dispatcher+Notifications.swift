import DevCINotify
import DevCIPipeline
import DevCIStore
import DevCIWire
import Foundation
import NIOCore

/// Notifications: an ended build's messages go to the outbox in the database (in one transaction with the mark
/// that says its notifications were decided), and a delivery loop of its own sends them, one at a time, noting
/// each before the next: dispatching never waits for a mail server or a webhook, and a crash loses none.
extension Dispatcher {
    /// Puts the ended build's notifications in the outbox (none when no rule applies; the build is marked decided either way).
    func decideNotifications(_ build: Int64) {
        let config = state.value.triggers.config
        _ = writer.submit("queue notifications of build \(build)") { store -> Int in
            // No rule at all: nothing to work out, only the mark that the build was decided.
            if config.notifications.isEmpty {
                try store.queueNotifications(build: build, [], at: Date())
                return 0
            }
            guard let facts = try store.notificationFacts(build: build, logLines: NotificationComposer.tailLines) else { return 0 }
            // A bisection's builds of old commits are expected to fail: what they find is told instead.
            if facts.build.cause == .bisect {
                try store.queueNotifications(build: build, [], at: Date())
                return 0
            }
            let messages = NotificationComposer.messages(for: facts, config: config, now: Date())
            try store.queueNotifications(build: build, messages, at: Date())
            return messages.count
        }.map { count in
            if count > 0 { self.logger.info("build \(build): \(count) notification(s) queued") }
        }
    }

    /// Starts the delivery loop (on start), after deciding for builds that ended while no dispatcher was there to.
    func startNotifier(awaiting: [Int64]) {
        for build in awaiting { decideNotifications(build) }
        let notifier = Notifier(user: config.smtpUser, password: config.smtpPassword)
        let control = notifierControl
        state.value.notifierTask = Task { [self] in
            while !control.stopping && !Task.isCancelled {
                let due = (try? await writer.submit("read due notifications", verify: false) { try $0.dueNotifications(at: Date(), limit: 20) }.get()) ?? []
                for entry in due where !control.stopping && !Task.isCancelled { await deliver(entry, with: notifier) }
                if due.isEmpty { try? await Task.sleep(for: config.notifierPollInterval) }
            }
            await notifier.shutdown()
            control.finished.signal()
        }
    }

    private func deliver(_ entry: OutboxEntry, with notifier: Notifier) async {
        let smtp = notifierControl.smtp
        let what = "\(entry.message.channel) \(entry.id) of build \(entry.build) to \(entry.message.target)"
        var error: String?, retryAt: Date?
        do {
            try await notifier.deliver(entry.message, id: entry.id, smtp: smtp)
        } catch let failure as Notifier.Failure {
            error = failure.description
            retryAt = failure.permanent ? nil : Notifier.retryDelay(afterAttempts: entry.attempts + 1).map { Date().addingTimeInterval($0.seconds) }
        } catch let other {
            error = "\(other)"
            retryAt = Date().addingTimeInterval(2)
        }
        let sent = error == nil
        let (why, again) = (error, retryAt)
        let noted = writer.submit("note notification \(entry.id)") {
            try $0.noteNotificationAttempt(id: entry.id, sent: sent, error: why, retryAt: again, at: Date())
        }
        _ = try? await noted.get()
        let outcome = sent ? "sent" : retryAt == nil ? "given_up" : "retry"
        metrics.notification(channel: entry.message.channel, outcome: outcome)
        switch outcome {
        case "sent": logger.info("notification \(what) sent")
        case "retry": logger.warning("notification \(what) failed (attempt \(entry.attempts + 1)), trying again at \(retryAt!): \(error ?? "")")
        default: logger.error("notification \(what) given up after \(entry.attempts + 1) attempt(s): \(error ?? "")")
        }
    }

    /// Lets a delivery under way finish and be noted (up to 20 s), so that a mail the server took is not sent
    /// again by the next dispatcher; then stops the loop. Call it off the loop, before the writer drains.
    func stopNotifier() {
        guard let task = try? loop.submit({ self.state.value.notifierTask }).wait() else { return }
        notifierControl.stopping = true
        if notifierControl.finished.wait(timeout: .now() + 20) == .timedOut {
            logger.warning("a notification was still being delivered after 20 s: stopping anyway (it is sent again on the next start)")
            task.cancel()
        }
    }
}

/// What the delivery loop shares with the rest of the dispatcher, off the event loop: the mail server as the
/// configuration says now, and whether to stop.
final class NotifierControl: @unchecked Sendable {
    private let lock = NSLock()
    private var _smtp: SMTPSettings?
    private var _stopping = false
    let finished = DispatchSemaphore(value: 0)

    var smtp: SMTPSettings? {
        get { lock.withLock { _smtp } }
        set { lock.withLock { _smtp = newValue } }
    }

    var stopping: Bool {
        get { lock.withLock { _stopping } }
        set { lock.withLock { _stopping = newValue } }
    }
}
