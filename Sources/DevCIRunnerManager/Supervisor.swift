import DevCIWire

/// Keeps the desired number of runners alive: which slot to start, restart or stop, and when.
/// A pure state machine driven by events and the current time; the runner manager's edges spawn the
/// processes and report their exits.
public struct Supervisor {
    public typealias Instant = ContinuousClock.Instant

    public struct Config: Sendable, Equatable {
        public var initialBackoff: Duration
        public var maxBackoff: Duration
        /// A runner that ran this long before exiting was healthy: its next restart is immediate again.
        public var healthyAfter: Duration

        public init(initialBackoff: Duration = .milliseconds(500), maxBackoff: Duration = .seconds(30), healthyAfter: Duration = .seconds(60)) {
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.healthyAfter = healthyAfter
        }
    }

    public enum Event: Equatable {
        /// Time passed: start what is due.
        case tick
        /// The runner in this slot exited, with a description of how.
        case exited(slot: Int, how: String)
        /// Change the desired count.
        case scale(Int)
        /// Stop everything for good.
        case shutdown
    }

    public enum Action: Equatable {
        case start(slot: Int)
        case stop(slot: Int)
        case log(String)
    }

    enum SlotState: Equatable {
        case running(since: Instant)
        case stopping
        case waiting(until: Instant)
    }

    struct Slot {
        var state: SlotState
        var backoff: Duration
        var restarts = 0
    }

    public let config: Config
    public private(set) var desired: Int
    private var slots: [Int: Slot] = [:]
    private var shuttingDown = false

    public init(desired: Int, config: Config = Config()) {
        self.desired = max(0, desired)
        self.config = config
    }

    /// Slots with a live process (running or being stopped).
    public var liveSlots: [Int] {
        slots.filter { if case .waiting = $0.value.state { return false } else { return true } }.keys.sorted()
    }

    public var isFinished: Bool { shuttingDown && liveSlots.isEmpty }

    public mutating func handle(_ event: Event, now: Instant) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .tick:
            break
        case .exited(let slot, let how):
            guard var s = slots[slot] else { break }
            if s.state == .stopping || slot > desired || shuttingDown {
                slots[slot] = nil
                actions.append(.log("runner \(slot) stopped (\(how))"))
                break
            }
            if case .running(let since) = s.state, now - since >= config.healthyAfter {
                s.backoff = config.initialBackoff
            }
            s.restarts += 1
            s.state = .waiting(until: now + s.backoff)
            actions.append(.log("runner \(slot) exited (\(how)); restart \(s.restarts) in \(Self.describe(s.backoff))"))
            s.backoff = min(s.backoff * 2, config.maxBackoff)
            slots[slot] = s
        case .scale(let n):
            let n = max(0, n)
            if n != desired { actions.append(.log("desired count \(desired) → \(n)")) }
            desired = n
        case .shutdown:
            shuttingDown = true
            desired = 0
        }
        reconcile(now: now, into: &actions)
        return actions
    }

    private mutating func reconcile(now: Instant, into actions: inout [Action]) {
        for slot in slots.keys.sorted() where slot > desired {
            switch slots[slot]!.state {
            case .running:
                slots[slot]!.state = .stopping
                actions.append(.stop(slot: slot))
            case .waiting:
                slots[slot] = nil
            case .stopping:
                break
            }
        }
        guard !shuttingDown else { return }
        for slot in 1...max(1, desired) where slot <= desired {
            if let s = slots[slot] {
                guard case .waiting(let until) = s.state, until <= now else { continue }
                slots[slot]!.state = .running(since: now)
                actions.append(.start(slot: slot))
            } else {
                slots[slot] = Slot(state: .running(since: now), backoff: config.initialBackoff)
                actions.append(.start(slot: slot))
            }
        }
    }

    static func describe(_ d: Duration) -> String {
        let ms = d.milliseconds
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}
