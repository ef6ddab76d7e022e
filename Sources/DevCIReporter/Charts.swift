import DevCIStore
import DevCIWire
import Foundation

/// SVG drawn from numbers and fixed words only: nothing from a repository reaches it unescaped.
enum Charts {
    static func badge(_ build: BuildSummary?) -> String {
        let (word, colour): (String, String)
        switch build?.buildStatus {
        case .success?: (word, colour) = ("passing", "#1a7f37")
        case .passedWithAllowedFailures?: (word, colour) = ("passing*", "#4d8f5a")
        case .failed?, .error?, .timedOut?: (word, colour) = ("failing", "#cf222e")
        case .running?, .started?, .queued?: (word, colour) = ("running", "#bf8700")
        case .cancelled?: (word, colour) = ("cancelled", "#6e7781")
        case .skipped?: (word, colour) = ("skipped", "#6e7781")
        case nil: (word, colour) = ("unknown", "#6e7781")
        }
        let w = 38 + word.count * 7 + 10
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(w)" height="20" role="img" aria-label="build: \(word)">\
            <rect width="38" height="20" fill="#555"/><rect x="38" width="\(w - 38)" height="20" fill="\(colour)"/>\
            <g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">\
            <text x="5" y="14">build</text><text x="43" y="14">\(word)</text></g></svg>
            """
    }

    static func passRate(_ builds: [BuildSummary]) -> String {
        let finished = builds.filter { $0.status.isFinal }
        guard !finished.isEmpty else { return "–" }
        return "\(Int((Double(finished.filter { $0.status == .success }.count) / Double(finished.count) * 100).rounded()))%"
    }

    /// Bars of build durations, oldest to newest, coloured by status.
    static func durations(_ builds: [BuildSummary]) -> String {
        let width = 640, height = 160, pad = 20
        let durations = builds.map { $0.duration ?? 0 }
        let longest = max(durations.max() ?? 1, 0.001)
        let step = builds.isEmpty ? 0 : min(24, Double(width - 2 * pad) / Double(builds.count))
        var bars = ""
        for (i, b) in builds.enumerated() {
            let h = max(2, Double(height - 2 * pad) * (durations[i] / longest))
            let colour = b.status == .success ? (b.allowedFailures > 0 ? "#4d8f5a" : "#1a7f37")
                : [.failed, .error, .timedOut].contains(b.status) ? "#cf222e" : "#6e7781"
            bars += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>build %lld: %.1fs</title></rect>",
                           Double(pad) + Double(i) * step + 1, Double(height - pad) - h, max(1, step - 2), h, colour, b.id, durations[i])
        }
        return """
            <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 \(width) \(height)" width="\(width)" height="\(height)">\
            <line x1="\(pad)" y1="\(height - pad)" x2="\(width - pad)" y2="\(height - pad)" stroke="#d0d7de"/>\(bars)\
            <text x="\(pad)" y="14" font-size="11" fill="#57606a">longest \(String(format: "%.1f", longest))s · \(builds.count) builds · \(passRate(builds)) passed</text></svg>
            """
    }
}
