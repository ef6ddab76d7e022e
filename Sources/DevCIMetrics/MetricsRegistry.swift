import CoreMetrics
import Foundation
import Prometheus

/// One process's metrics: recorded through the swift-metrics API (`Counter`, `Timer`, `Gauge` with
/// `factory: registry`), kept in a swift-prometheus registry, and served in Prometheus' text format. Unlike
/// swift-prometheus' own factory, every metric gets the HELP line its name is given in `help`.
///
/// Each process (and each dispatcher a test starts) has its own registry; nothing is bootstrapped globally.
public final class MetricsRegistry: MetricsFactory, Sendable {
    /// What `/metrics` answers with.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public let prometheus = PrometheusCollectorRegistry()
    private let help: [String: String]
    private let durationBuckets: [Duration]
    private let processFigures: ProcessFigures

    /// `help`: each metric's name and its HELP text. `durationBuckets`: the upper bounds of every timer's buckets.
    public init(help: [String: String], durationBuckets: [Duration] = MetricsRegistry.jobDurationBuckets) {
        self.help = help.merging(ProcessFigures.help) { mine, _ in mine }
        self.durationBuckets = durationBuckets
        self.processFigures = ProcessFigures(prometheus: prometheus, help: ProcessFigures.help)
    }

    /// From a tenth of a second to two hours: CI jobs and queue waits, not request latencies.
    public static let jobDurationBuckets: [Duration] = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200].map { .milliseconds(Int64($0 * 1000)) }

    /// The whole exposition, with the process figures read now.
    public func exposition() -> String {
        processFigures.refresh()
        return prometheus.emitToString()
    }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: help[label] ?? "DevCI metric \(label)")
    }

    // MARK: MetricsFactory

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        prometheus.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        prometheus.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return prometheus.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        return prometheus.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        prometheus.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        prometheus.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: durationBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { prometheus.unregisterCounter(c) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { prometheus.unregisterCounter(c) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { prometheus.unregisterGauge(g) }
        if let h = handler as? ValueHistogram { prometheus.unregisterValueHistogram(h) }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { prometheus.unregisterGauge(g) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { prometheus.unregisterDurationHistogram(h) }
    }
}

/// The process's own figures under the names Prometheus' client libraries use (`process_*`), read from `/proc`
/// when the metrics are asked for.
final class ProcessFigures: Sendable {
    static let help = [
        "process_cpu_seconds_total": "User and system CPU time this process has used, in seconds.",
        "process_resident_memory_bytes": "Resident memory of this process, in bytes.",
        "process_virtual_memory_bytes": "Virtual memory of this process, in bytes.",
        "process_open_fds": "File descriptors this process has open.",
        "process_max_fds": "The most file descriptors this process may open.",
        "process_start_time_seconds": "When this process started, in seconds since the Unix epoch.",
    ]

    private let cpu: Prometheus.Counter
    private let resident, virtual, openFDs, maxFDs, startTime: Prometheus.Gauge
    /// The CPU seconds already added to the counter (a counter only goes up, by the difference).
    private let cpuReported = LockedDouble()

    init(prometheus: PrometheusCollectorRegistry, help: [String: String]) {
        func d(_ name: String) -> MetricNameDescriptor { MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name] ?? name) }
        cpu = prometheus.makeCounter(descriptor: d("process_cpu_seconds_total"), labels: [])
        resident = prometheus.makeGauge(descriptor: d("process_resident_memory_bytes"), labels: [])
        virtual = prometheus.makeGauge(descriptor: d("process_virtual_memory_bytes"), labels: [])
        openFDs = prometheus.makeGauge(descriptor: d("process_open_fds"), labels: [])
        maxFDs = prometheus.makeGauge(descriptor: d("process_max_fds"), labels: [])
        startTime = prometheus.makeGauge(descriptor: d("process_start_time_seconds"), labels: [])
    }

    func refresh() {
        guard let stat = Self.readStat() else { return }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        let cpuSeconds = Double(stat.utime + stat.stime) / ticks
        cpuReported.advance(to: cpuSeconds) { cpu.increment(by: $0) }
        resident.set(Double(stat.rssPages) * pageSize)
        virtual.set(Double(stat.vsize))
        if let boot = Self.bootTime() { startTime.set(boot + Double(stat.startTicks) / ticks) }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count).map { $0 - 1 } ?? 0  // less the one listing it
        openFDs.set(Double(max(fds, 0)))
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFDs.set(Double(limit.rlim_cur)) }
    }

    struct Stat {
        var utime: UInt64, stime: UInt64, startTicks: UInt64, vsize: UInt64, rssPages: UInt64
    }

    /// `/proc/self/stat`: the fields after the command name (which may hold spaces and parentheses) by position.
    static func readStat() -> Stat? {
        guard let text = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3 of proc(5)): field n is fields[n - 3].
        func f(_ n: Int) -> UInt64 { n - 3 < fields.count ? UInt64(fields[n - 3]) ?? 0 : 0 }
        return Stat(utime: f(14), stime: f(15), startTicks: f(22), vsize: f(23), rssPages: f(24))
    }

    static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// A number behind a lock.
final class LockedDouble: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0.0

    /// Moves the value up to `target` and passes the step to `apply`, under the lock, so steps never overlap.
    func advance(to target: Double, _ apply: (Double) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        guard target > value else { return }
        apply(target - value)
        value = target
    }
}
