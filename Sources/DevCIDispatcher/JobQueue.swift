import HeapModule

/// The queued jobs, in the order they are handed out: higher priority first, equal priorities in arrival order,
/// a job taken back from its runner first in line among its priority. Jobs wait in one heap per set of queues
/// they may go to, so a job nobody can take never holds up the others.
struct JobQueue {
    struct Item: Comparable {
        var priority: Int
        var sequence: Int64
        var job: Int64

        /// The heap's minimum is the job to hand out first.
        static func < (a: Item, b: Item) -> Bool {
            a.priority != b.priority ? a.priority > b.priority : a.sequence < b.sequence
        }
    }

    private var heaps: [[String]: Heap<Item>] = [:]
    /// The live entries; a heap item that no longer matches its member is stale and dropped when it surfaces.
    private var members: [Int64: (queues: [String], item: Item)] = [:]
    private var back: Int64 = 0
    private var front: Int64 = 0

    var count: Int { members.count }

    /// How many jobs wait on each queue (a job that any of several queues may take counts on each).
    var countsByQueue: [String: Int] {
        members.values.reduce(into: [:]) { counts, member in for q in member.queues { counts[q, default: 0] += 1 } }
    }

    mutating func append(_ job: Int64, priority: Int, queues: [String]) {
        back += 1
        insert(Item(priority: priority, sequence: back, job: job), queues: queues)
    }

    /// First in line among the jobs of its priority.
    mutating func prepend(_ job: Int64, priority: Int, queues: [String]) {
        front -= 1
        insert(Item(priority: priority, sequence: front, job: job), queues: queues)
    }

    private mutating func insert(_ item: Item, queues: [String]) {
        let key = queues.sorted()
        members[item.job] = (key, item)
        heaps[key, default: Heap()].insert(item)
    }

    mutating func remove(_ job: Int64) {
        members[job] = nil
    }

    /// The sets of queues that have jobs waiting.
    var waitingQueueSets: [[String]] {
        Array(Set(members.values.map(\.queues)))
    }

    /// Takes out the first job (by priority, then arrival) for which `runnerFor` finds a runner, and that runner.
    mutating func popFirst(runnerFor: (_ queues: [String], _ job: Int64) -> String?) -> (job: Int64, runner: String)? {
        var best: (key: [String], item: Item, runner: String)?
        for key in Array(heaps.keys) {
            guard let top = liveTop(key) else { continue }
            if let b = best, b.item < top { continue }
            if let runner = runnerFor(key, top.job) { best = (key, top, runner) }
        }
        guard let best else { return nil }
        _ = heaps[best.key]?.popMin()
        members[best.item.job] = nil
        return (best.item.job, best.runner)
    }

    /// The heap's first item that is still a member, dropping stale ones; the heap goes when it empties.
    private mutating func liveTop(_ key: [String]) -> Item? {
        while let top = heaps[key]?.min {
            if let m = members[top.job], m.item == top { return top }
            _ = heaps[key]?.popMin()
        }
        heaps[key] = nil
        return nil
    }
}
