import CoreMetrics
import DevCIMetrics
import DevCIStore
import DevCIWire
import Foundation

/// What the dispatcher counts and measures, recorded through swift-metrics into its own registry and served at
/// `GET /metrics` on its HTTP side. Counters start at zero with the process, as Prometheus expects; gauges are
/// read from the scheduler when the metrics are asked for.
public struct DispatcherMetrics: Sendable {
    public static let help: [String: String] = [
        "devci_jobs_ended_total": "Jobs that ended, by final status.",
        "devci_builds_ended_total": "Builds that ended, by status.",
        "devci_job_queue_wait_seconds": "How long a job waited in the queue before a runner was assigned it.",
        "devci_job_duration_seconds": "How long a job ran, from its assignment to its result, by final status.",
        "devci_jobs_queued": "Jobs waiting for a runner, by queue (a job that several queues may take counts on each).",
        "devci_jobs_running": "Jobs held by a runner under a lease.",
        "devci_runners_connected": "Runners connected and heartbeating.",
        "devci_leases_expired_total": "Leases that expired because their runner went silent, died or did not claim the job.",
        "devci_reassignments_total": "Jobs taken from their runner and queued again (lost or given back).",
        "devci_retries_total": "Failed attempts queued again under the job's retries.",
        "devci_webhook_deliveries_total": "HTTP trigger deliveries, by hook (github, task) and outcome.",
        "devci_notification_deliveries_total": "Notification delivery attempts, by channel (email, webhook) and outcome.",
    ]

    public let registry: MetricsRegistry

    public init(registry: MetricsRegistry = MetricsRegistry(help: DispatcherMetrics.help)) {
        self.registry = registry
        // Every family is present from the start, so a scrape before the first build already lists them.
        for status in JobState.allCases where status.isFinal { _ = counter("devci_jobs_ended_total", [("status", status.rawValue)]) }
        _ = counter("devci_leases_expired_total")
        _ = counter("devci_reassignments_total")
        _ = counter("devci_retries_total")
        for hook in ["github", "task"] { _ = counter("devci_webhook_deliveries_total", [("hook", hook), ("outcome", "handled")]) }
        for channel in ["email", "webhook"] { _ = counter("devci_notification_deliveries_total", [("channel", channel), ("outcome", "sent")]) }
        _ = Timer(label: "devci_job_queue_wait_seconds", factory: registry)
        refresh(queued: [:], running: 0, runners: 0)
    }

    private func counter(_ label: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: label, dimensions: dimensions, factory: registry)
    }

    /// A job's state change as it is written.
    func recorded(_ t: JobTransition, queueWait: Duration?, ran: Duration?) {
        if let queueWait { Timer(label: "devci_job_queue_wait_seconds", factory: registry).record(duration: queueWait) }
        if t.state.isFinal {
            counter("devci_jobs_ended_total", [("status", t.state.rawValue)]).increment()
            if let ran { Timer(label: "devci_job_duration_seconds", dimensions: [("status", t.state.rawValue)], factory: registry).record(duration: ran) }
        }
        switch t.kind {
        case .lost?, .gaveBack?: counter("devci_reassignments_total").increment()
        case .retry?: counter("devci_retries_total").increment()
        case nil: break
        }
    }

    func buildEnded(_ status: BuildStatus) {
        counter("devci_builds_ended_total", [("status", status.rawValue)]).increment()
    }

    func delivery(hook: String, status: Int) {
        let outcome: String
        switch status {
        case 200, 201: outcome = "handled"
        case 202: outcome = "accepted"
        case 400: outcome = "invalid"
        case 401: outcome = "unauthorized"
        case 403: outcome = "refused"
        case 404, 409: outcome = "rejected"
        case 413: outcome = "too_large"
        default: outcome = status >= 500 ? "error" : "other"
        }
        counter("devci_webhook_deliveries_total", [("hook", hook), ("outcome", outcome)]).increment()
    }

    public func notification(channel: String, outcome: String) {
        counter("devci_notification_deliveries_total", [("channel", channel), ("outcome", outcome)]).increment()
    }

    func leasesExpired(_ count: Int) {
        if count > 0 { counter("devci_leases_expired_total").increment(by: count) }
    }

    /// The gauges, from the scheduler's state now; a queue seen once stays listed (at 0 when empty).
    func refresh(queued: [String: Int], running: Int, runners: Int, knownQueues: Set<String> = [defaultQueue]) {
        for q in knownQueues.union(queued.keys) {
            Gauge(label: "devci_jobs_queued", dimensions: [("queue", q)], factory: registry).record(queued[q] ?? 0)
        }
        Gauge(label: "devci_jobs_running", factory: registry).record(running)
        Gauge(label: "devci_runners_connected", factory: registry).record(runners)
    }
}
