import CHwloc

/// The machine as hwloc sees it: NUMA nodes ("devices" in Tessel's sense) and the cores of
/// each. Workers use it to pin their threads and memory to the node of their rank.
public final class Topology: @unchecked Sendable {
    // hwloc topologies are safe for concurrent reads once loaded; nothing mutates it after init.
    private let handle: hwloc_topology_t

    public init() throws {
        var topology: hwloc_topology_t?
        guard hwloc_topology_init(&topology) == 0, let topology else {
            throw TopologyError.discoveryFailed("hwloc_topology_init failed")
        }
        guard hwloc_topology_load(topology) == 0 else {
            hwloc_topology_destroy(topology)
            throw TopologyError.discoveryFailed("hwloc_topology_load failed")
        }
        handle = topology
    }

    deinit { hwloc_topology_destroy(handle) }

    public var numaNodeCount: Int { max(1, Int(hwloc_get_nbobjs_by_type(handle, HWLOC_OBJ_NUMANODE))) }
    public var coreCount: Int { max(1, Int(hwloc_get_nbobjs_by_type(handle, HWLOC_OBJ_CORE))) }
    public var processingUnitCount: Int { max(1, Int(hwloc_get_nbobjs_by_type(handle, HWLOC_OBJ_PU))) }

    /// The NUMA node a rank belongs on: ranks are dealt round-robin over the nodes.
    public func numaNode(forRank rank: Int) -> Int { rank % numaNodeCount }

    /// Binds the whole process (every thread, including the BLAS pool that OpenBLAS starts
    /// before `main`) and its future memory allocations to one NUMA node. On a machine with one
    /// node this pins to all its cores, which is harmless.
    public func bindProcess(toNUMANode index: Int) throws {
        guard let node = hwloc_get_obj_by_type(handle, HWLOC_OBJ_NUMANODE, UInt32(index)) else {
            throw TopologyError.noSuchNode(index, available: numaNodeCount)
        }
        guard hwloc_set_cpubind(handle, node.pointee.cpuset, Int32(HWLOC_CPUBIND_PROCESS.rawValue)) == 0 else {
            throw TopologyError.bindFailed("cannot bind the process to the cores of NUMA node \(index)")
        }
        // Memory binding can be refused (containers without CAP_SYS_NICE); cores still count.
        _ = hwloc_set_membind(handle, node.pointee.nodeset, HWLOC_MEMBIND_BIND,
                              Int32(HWLOC_MEMBIND_PROCESS.rawValue | HWLOC_MEMBIND_BYNODESET.rawValue))
    }

    /// The physical cores of one NUMA node, each as the OS processor numbers of its hardware
    /// threads: a compute pool runs one thread per core.
    public func cores(ofNUMANode index: Int) -> [[Int]] {
        guard let node = hwloc_get_obj_by_type(handle, HWLOC_OBJ_NUMANODE, UInt32(index)) else { return [] }
        let count = hwloc_get_nbobjs_inside_cpuset_by_type(handle, node.pointee.cpuset, HWLOC_OBJ_CORE)
        return (0..<max(0, Int(count))).compactMap { i in
            hwloc_get_obj_inside_cpuset_by_type(handle, node.pointee.cpuset, HWLOC_OBJ_CORE, UInt32(i))
                .map { Self.members(of: $0.pointee.cpuset) }
        }
    }

    /// Binds the calling thread to the given OS processors (one core's threads, or a `--cpus` set).
    public func bindCurrentThread(toProcessors processors: [Int]) throws {
        guard let set = hwloc_bitmap_alloc() else { throw TopologyError.bindFailed("cannot allocate a cpuset") }
        defer { hwloc_bitmap_free(set) }
        for processor in processors { hwloc_bitmap_set(set, UInt32(processor)) }
        guard hwloc_set_cpubind(handle, set, Int32(HWLOC_CPUBIND_THREAD.rawValue)) == 0 else {
            throw TopologyError.bindFailed("cannot bind a thread to processors \(processors.map(String.init).joined(separator: ","))")
        }
    }

    /// The processor numbers set in an hwloc cpuset.
    private static func members(of set: hwloc_const_cpuset_t) -> [Int] {
        var result: [Int] = []
        var bit = hwloc_bitmap_first(set)
        while bit >= 0 {
            result.append(Int(bit))
            bit = hwloc_bitmap_next(set, bit)
        }
        return result
    }

    /// Cores of one NUMA node, a sensible default for a worker's thread count.
    public func coreCount(ofNUMANode index: Int) -> Int {
        guard let node = hwloc_get_obj_by_type(handle, HWLOC_OBJ_NUMANODE, UInt32(index)) else { return coreCount }
        let count = hwloc_get_nbobjs_inside_cpuset_by_type(handle, node.pointee.cpuset, HWLOC_OBJ_CORE)
        return max(1, Int(count))
    }
}

public enum TopologyError: Error, CustomStringConvertible, Equatable {
    case discoveryFailed(String)
    case noSuchNode(Int, available: Int)
    case bindFailed(String)

    public var description: String {
        switch self {
        case .discoveryFailed(let what): "hardware topology discovery failed: \(what)"
        case .noSuchNode(let index, let available): "NUMA node \(index) does not exist (this host has \(available))"
        case .bindFailed(let what): "hwloc: \(what)"
        }
    }
}
