import Collectives

/// Where `router --workers N` puts its workers: one per NUMA node when the host has that many
/// (each worker binds to its rank's node itself), otherwise disjoint sets of physical cores, one
/// thread per core (on a 2-core host, 2 workers get 1 core each). With fewer cores than
/// workers, cores are shared and the summary says so.
struct WorkerPlacement {
    /// Per rank, the OS processors it runs on; nil: one NUMA node each.
    let processorSets: [[Int]]?
    let summary: String

    init(workers: Int) {
        guard let topology = try? Topology() else {
            processorSets = nil
            summary = "unknown topology (hwloc failed): each worker runs unpinned"
            return
        }
        if topology.numaNodeCount >= workers {
            processorSets = nil
            summary = "one NUMA node per worker (\(topology.numaNodeCount) nodes)"
            return
        }
        // The first hardware thread of every physical core, node by node.
        let cores = (0..<topology.numaNodeCount).flatMap { node in topology.cores(ofNUMANode: node).compactMap(\.first) }
        guard !cores.isEmpty else {
            processorSets = nil
            summary = "no cores found: each worker runs unpinned"
            return
        }
        if cores.count >= workers {
            processorSets = (0..<workers).map { rank in
                Array(cores[EvenSplit.part(rank, of: cores.count, parts: workers)])
            }
        } else {
            processorSets = (0..<workers).map { [cores[$0 % cores.count]] }
        }
        let sets = processorSets!.enumerated().map { "rank \($0.offset): cpu \($0.element.map(String.init).joined(separator: ","))" }
        summary = sets.joined(separator: "; ")
            + (cores.count < workers ? " (\(workers) workers share \(cores.count) cores: expect them to slow each other)" : "")
    }
}
