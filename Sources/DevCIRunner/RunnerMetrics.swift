import CoreMetrics
import DevCIMetrics
import DevCIWire

/// What a runner counts, served at its `--metrics-port`: jobs run by outcome, their durations, the jobs under
/// way, and the process's own figures.
public struct RunnerMetrics: Sendable {
    public static let help: [String: String] = [
        "devci_runner_jobs_total": "Job attempts this runner ran, by outcome (stopped: cancelled, lease lost or shut down).",
        "devci_runner_job_duration_seconds": "How long this runner's job attempts took, by outcome.",
        "devci_runner_current_jobs": "Job attempts running on this runner now.",
        "devci_runner_slots": "How many jobs this runner runs at once (--parallel).",
    ]

    public let registry = MetricsRegistry(help: RunnerMetrics.help)

    init(slots: Int) {
        for outcome in Outcome.allCases { _ = Counter(label: "devci_runner_jobs_total", dimensions: [("outcome", outcome.rawValue)], factory: registry) }
        Gauge(label: "devci_runner_slots", factory: registry).record(slots)
        running(0)
    }

    func running(_ count: Int) {
        Gauge(label: "devci_runner_current_jobs", factory: registry).record(count)
    }

    func finished(outcome: String, after duration: Duration) {
        Counter(label: "devci_runner_jobs_total", dimensions: [("outcome", outcome)], factory: registry).increment()
        Timer(label: "devci_runner_job_duration_seconds", dimensions: [("outcome", outcome)], factory: registry).record(duration: duration)
    }
}
