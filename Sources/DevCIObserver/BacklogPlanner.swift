/// Decides which commits of one branch to dispatch, from what was dispatched last and what is there now.
/// Pure: the observer's edges read git and talk to the dispatcher; this only decides.
public enum BacklogPlanner {
    public struct Plan: Equatable, Sendable {
        /// Oldest first.
        public var dispatch: [String]
        /// Older new commits left out because the backlog was over the cap.
        public var skipped: Int
        /// Why the plan is not simply "everything new", for the log.
        public var note: String?

        public init(dispatch: [String], skipped: Int = 0, note: String? = nil) {
            self.dispatch = dispatch
            self.skipped = skipped
            self.note = note
        }
    }

    /// - Parameters:
    ///   - last: the last commit dispatched on this branch, nil when none ever was.
    ///   - tip: the branch's commit now.
    ///   - newCommits: the commits reachable from `tip` and not from `last`, oldest first; nil when `last`
    ///     is not in the history (the branch was force-pushed).
    public static func plan(last: String?, tip: String, newCommits: [String]?, maxBacklog: Int) -> Plan {
        if last == tip { return Plan(dispatch: []) }
        guard let last else {
            // A branch seen for the first time: its history was never promised a build; start at its tip.
            return Plan(dispatch: [tip], note: "first sight of the branch: dispatching its tip only")
        }
        guard let commits = newCommits, !commits.isEmpty else {
            return Plan(dispatch: [tip], note: "history was rewritten since \(last.prefix(12)): dispatching the new tip only")
        }
        let cap = max(1, maxBacklog)
        if commits.count > cap {
            return Plan(dispatch: Array(commits.suffix(cap)), skipped: commits.count - cap,
                        note: "\(commits.count) new commits, over the backlog cap of \(cap): skipping the \(commits.count - cap) oldest")
        }
        return Plan(dispatch: commits)
    }
}
