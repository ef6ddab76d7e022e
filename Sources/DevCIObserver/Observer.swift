import DevCIGit
import DevCIPipeline
import DevCIWire
import Foundation
import Logging

/// How an observer is started.
public struct ObserverConfig: Sendable {
    public var clonePaths: [String]
    /// Branches to watch in every clone; empty means each clone's HEAD branch.
    public var branches: [String]
    /// The dispatcher, first of `dispatchers`: the observer talks to the first of them that answers.
    public var dispatcher: HostPort { dispatchers[0] }
    public var dispatchers: [HostPort]
    public var token: String?
    public var interval: Duration
    public var maxBacklog: Int

    public init(clonePaths: [String], branches: [String] = [], dispatchers: [HostPort], token: String? = nil,
                interval: Duration = .seconds(1), maxBacklog: Int = 50) {
        self.clonePaths = clonePaths
        self.branches = branches
        self.dispatchers = dispatchers.isEmpty ? [HostPort(host: "localhost", port: 8888)] : dispatchers
        self.token = token
        self.interval = interval
        self.maxBacklog = maxBacklog
    }
}

/// Why the observer cannot watch what it was given.
public struct ObserverError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// One watched branch of one clone.
struct Watch {
    let clone: String
    let repository: GitRepository
    /// What the dispatcher and runners know the repository by: the clone's origin.
    let repo: String
    let branch: String
    /// The last commit dispatched, as the dispatcher holds it; `.none` until asked.
    var last: String??
}

/// The repository observer: polls each clone's origin through libgit2 and dispatches every new commit of
/// each watched branch, oldest first. It never exits on a network error: an unreachable dispatcher is
/// reported once and retried on every poll.
public final class Observer: Sendable {
    public let config: ObserverConfig
    let logger: Logger
    /// What is being watched, for the startup line.
    public let description: String
    /// The polling state, reached on `queue` only (checked): `run()` polls there.
    private let queue = DispatchQueue(label: "devci.observer")
    private let state: QueueBound<State>
    private let stopped = OnceFlag()
    /// Signalled by `stop()`, so a poll interval's wait ends at once.
    private let wake = DispatchSemaphore(value: 0)

    private struct State {
        var watches: [Watch] = []
        var client: WireClient?
        /// The dispatcher answered `await_push` with `unknown_verb` (an older one).
        var pushUnsupported = false
        var dispatcherDown = false
        var fetchErrors: [String: String] = [:]
    }

    public init(config: ObserverConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        var watches: [Watch] = []
        for path in config.clonePaths {
            let repository = try GitRepository(path: path)
            let repo = try repository.originURL()
            guard Validate.isRepository(repo) else { throw ObserverError("\(path): unusable origin URL '\(repo)'") }
            var branches = config.branches
            if branches.isEmpty {
                guard let head = try repository.headBranch() else {
                    throw ObserverError("\(path): HEAD is detached: check out a branch or pass --branch")
                }
                branches = [head]
            }
            for branch in branches {
                guard Validate.isBranchName(branch) else { throw ObserverError("'\(branch)' is not a branch name") }
                watches.append(Watch(clone: path, repository: repository, repo: repo, branch: branch, last: .none))
            }
        }
        description = watches.map { "\($0.clone) (\($0.repo)) branch \($0.branch)" }.joined(separator: "; ")
        state = QueueBound(State(watches: watches), queue: queue)
    }

    /// Polls until `stop()`, on the observer's own queue; blocks the calling thread.
    public func run() {
        queue.sync {
            while !isStopped {
                let started = ContinuousClock.now
                pollOnce()
                let wait = config.interval - (ContinuousClock.now - started)
                if wait > .zero, !isStopped { waitForPush(upTo: wait) }
            }
            state.value.client?.close()
        }
    }

    /// Waits out the poll interval, asking the dispatcher to end the wait early when a webhook push names one
    /// of the watched repositories (a push starts its build at once, not at the next poll). A dispatcher that
    /// does not know `await_push`, or cannot be reached, is simply waited out.
    private func waitForPush(upTo wait: Duration) {
        let deadline = ContinuousClock.now + wait
        let repos = Array(Set(state.value.watches.map(\.repo))).sorted()
        while !isStopped, !state.value.pushUnsupported, !repos.isEmpty {
            // In slices well inside the client's read timeout, so that `stop()` is seen soon.
            let slice = min(deadline - ContinuousClock.now, .seconds(2))
            guard slice > .milliseconds(50) else { return }
            switch request(.awaitPush(repos: Array(repos.prefix(16)), timeoutMillis: Int(slice.milliseconds))) {
            case .pushed(let pushed)? where !pushed.isEmpty:
                logger.info("webhook push to \(pushed.joined(separator: ", ")): polling now")
                return
            case .pushed?:
                continue
            case .error(.unknownVerb, _)?:
                logger.notice("the dispatcher does not tell observers of webhook pushes: polling every \(config.interval)")
                state.value.pushUnsupported = true
            default:
                break
            }
            break
        }
        let left = deadline - ContinuousClock.now
        if left > .zero, !isStopped { _ = wake.wait(timeout: .now() + left.seconds) }
    }

    public func stop() {
        stopped.set()
        wake.signal()
    }

    private var isStopped: Bool { stopped.isSet }

    /// One poll of every watch: fetch each clone once, then dispatch what is new on each branch.
    private func pollOnce() {
        var fetched: Set<String> = []
        for i in state.value.watches.indices where !isStopped {
            let w = state.value.watches[i]
            if !fetched.contains(w.clone) {
                fetched.insert(w.clone)
                do {
                    try w.repository.fetchOrigin()
                    if state.value.fetchErrors.removeValue(forKey: w.clone) != nil { logger.notice("fetching \(w.clone) works again") }
                } catch {
                    // Said once per distinct error, not every poll.
                    if state.value.fetchErrors[w.clone] != "\(error)" {
                        logger.error("cannot fetch origin of \(w.clone): \(error)")
                        state.value.fetchErrors[w.clone] = "\(error)"
                    }
                    continue
                }
            }
            if state.value.fetchErrors[w.clone] != nil { continue }
            // Polled on a copy: `poll` itself reaches the state (the connection), which an inout access to it
            // for the whole call would conflict with.
            var watch = state.value.watches[i]
            poll(&watch)
            state.value.watches[i] = watch
        }
    }

    private func poll(_ w: inout Watch) {
        let tip: String
        do {
            guard let t = try w.repository.tip(of: "refs/remotes/origin/\(w.branch)") else {
                if w.last == nil { logger.warning("origin of \(w.clone) has no branch \(w.branch)") }
                return
            }
            tip = t
        } catch {
            logger.error("cannot read \(w.branch) in \(w.clone): \(error)")
            return
        }
        if case .none = w.last {
            guard let reply = request(.lastDispatched(repo: w.repo, branch: w.branch)), case .last(_, _, let commit) = reply else { return }
            w.last = .some(commit.isEmpty ? nil : commit)
            logger.info("\(w.repo) \(w.branch): last dispatched \(commit.isEmpty ? "nothing yet" : String(commit.prefix(12)))")
        }
        guard case .some(let last) = w.last, last != tip else { return }
        let newCommits = try? w.repository.commits(since: last, upTo: tip)
        let plan = BacklogPlanner.plan(last: last, tip: tip, newCommits: newCommits, maxBacklog: config.maxBacklog)
        if let note = plan.note {
            if plan.skipped > 0 { logger.warning("\(w.repo) \(w.branch): \(note)") } else { logger.notice("\(w.repo) \(w.branch): \(note)") }
        }
        if plan.skipped > 0, let first = plan.dispatch.first, let commits = newCommits {
            keepUntested(Array(commits.prefix(plan.skipped).suffix(Self.untestedLimit)), before: first, cut: plan.skipped > Self.untestedLimit, w)
        }
        for commit in plan.dispatch {
            // The pipeline travels with the commit: the dispatcher never needs to reach the repository.
            guard let reply = request(DispatchBuilder.dispatch(of: commit, in: w.repository, repo: w.repo, branch: w.branch)) else { return }
            switch reply {
            case .queued(let build, _, let created):
                w.last = .some(commit)
                logger.info("\(w.repo) \(w.branch) \(commit.prefix(12)): \(created ? "build \(build) queued" : "already build \(build)")")
            case .error(let code, let message) where code == .badField:
                // Refused for good (e.g. a name git allows and DevCI does not): skip it rather than retry forever.
                logger.error("dispatcher refused \(commit.prefix(12)) on \(w.branch) for good: \(message)")
                w.last = .some(commit)
            case .error(let code, let message):
                // Anything else may pass (a busy or full disk): try the same commit again on the next poll.
                logger.error("dispatcher could not take \(commit.prefix(12)) on \(w.branch): \(code): \(message); retrying next poll")
                return
            default:
                logger.error("unexpected reply to dispatch: \(LineCodec.encode(reply))")
                return
            }
        }
    }

    /// The most skipped commits kept for bisection per poll (the newest of them): ten builds bisect them.
    static let untestedLimit = 1000

    /// Tells the dispatcher of the commits the backlog cap left unbuilt, so that a failure after them can be
    /// bisected. Best effort: a refusal is logged, and the build of the newer commits goes on.
    private func keepUntested(_ commits: [String], before: String, cut: Bool, _ w: Watch) {
        for commit in commits where !isStopped {
            let message = DispatchBuilder.untested(commit, before: before, in: w.repository, repo: w.repo, branch: w.branch, cut: cut && commit == commits.first)
            guard let reply = request(message) else { return }
            if case .error(let code, let message) = reply {
                if code == .unknownVerb {
                    logger.notice("the dispatcher does not keep untested commits (an older version): a failure after them is not bisected")
                } else {
                    logger.warning("dispatcher did not keep untested \(commit.prefix(12)): \(code): \(message)")
                }
                return
            }
        }
        logger.info("\(w.repo) \(w.branch): \(commits.count) commit(s) left unbuilt before \(before.prefix(12)) kept for bisection")
    }

    /// One request on the kept connection, reconnecting when needed. Nil when the dispatcher is unreachable.
    private func request(_ message: ClientMessage) -> ServerMessage? {
        for _ in 0..<2 {
            // A kept connection may have been closed by the dispatcher meanwhile (idle clients are): its failure
            // is no outage, and the request is simply sent again on a new one.
            var reused = false
            do {
                if state.value.client == nil || state.value.client?.isOpen == false {
                    state.value.client = try WireClient.connect(to: config.dispatchers, token: config.token, timeout: 5).client
                } else {
                    reused = true
                }
                let reply = try state.value.client!.request(message)
                if reused, case .error(.timeout, _) = reply {
                    state.value.client?.close()
                    state.value.client = nil
                    continue
                }
                if state.value.dispatcherDown {
                    // Nothing to re-ask: a dispatch counts only once it is acknowledged, after the database has it.
                    state.value.dispatcherDown = false
                    logger.notice("dispatcher \(config.dispatchers.map(\.description).joined(separator: ",")) is reachable again")
                }
                return reply
            } catch {
                state.value.client?.close()
                state.value.client = nil
                if reused { continue }
                if !state.value.dispatcherDown {
                    state.value.dispatcherDown = true
                    logger.warning("cannot reach the dispatcher at \(config.dispatchers.map(\.description).joined(separator: ",")): \(ConnectionTrouble.describe(error)); polling on and dispatching when it is back")
                } else {
                    logger.debug("still cannot reach the dispatcher: \(ConnectionTrouble.describe(error))")
                }
            }
        }
        return nil
    }
}
