import DevCIStore
import DevCIWire

/// Finding the commit that broke a branch (pure: a bisection's record and a build's verdict in, the next step
/// out). Between the last green build and the first red one lie commits nobody built (the observer's backlog
/// cap skipped them); each step builds the middle one of those still in doubt, so `n` commits take at most
/// ⌈log2(n+1)⌉ builds (never more than log2(n)+1).
public enum Bisection {
    /// What a bisection build's ending says of its commit.
    public enum Verdict: Equatable, Sendable {
        case good
        case bad
        /// It failed, but only in tests known to be flaky: no verdict can be trusted from it.
        case flakyOnly
        /// It did not say (cancelled, skipped, its pipeline unreadable): nothing more to learn.
        case inconclusive(String)
    }

    public enum Step: Equatable, Sendable {
        /// Build this candidate next (an index into `candidates`).
        case build(Int)
        /// The first bad commit: an index into `candidates`, or `candidates.count` for the red build's own commit.
        case found(Int)
        case stopped(String)
    }

    /// The next step of a running bisection.
    public static func next(_ b: BisectionRecord) -> Step {
        if b.bad - b.good <= 1 {
            // The oldest commit kept is bad, and older ones were never kept: the first bad one may be among them.
            if b.bad == 0 && b.truncated {
                return .stopped("\(b.candidates[0].prefix(10)) is bad, and so may be older commits the observer skipped but did not keep (over 1,000): the first bad commit is it or one before it")
            }
            return .found(b.bad)
        }
        return .build((b.good + b.bad) / 2)
    }

    /// The record after the build of candidate `index` ended with `verdict`, and the step that follows.
    public static func record(_ b: BisectionRecord, index: Int, _ verdict: Verdict) -> (BisectionRecord, Step) {
        var b = b
        b.currentBuild = nil
        switch verdict {
        case .good: b.good = max(b.good, index)
        case .bad: b.bad = min(b.bad, index)
        case .flakyOnly:
            return (b, .stopped("\(b.candidates[index].prefix(10)) failed only in tests known to be flaky, so it cannot say whether it is good or bad"))
        case .inconclusive(let why):
            return (b, .stopped("the build of \(b.candidates[index].prefix(10)) did not decide: \(why)"))
        }
        return (b, next(b))
    }

    /// The verdict of a bisection build from how it ended and which of its failing tests are known flaky.
    public static func verdict(status: BuildStatus, failures: [BuildTest]) -> Verdict {
        switch status {
        case .success, .passedWithAllowedFailures: return .good
        case .failed, .error, .timedOut:
            if failures.onlyKnownFlakyFailures { return .flakyOnly }
            return .bad
        default: return .inconclusive("it ended \(status.display)")
        }
    }
}
