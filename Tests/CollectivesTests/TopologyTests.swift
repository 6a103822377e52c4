import Collectives
import Testing

@Suite("hwloc topology")
struct TopologyTests {
    @Test("the machine has at least one NUMA node with cores, and ranks are dealt round-robin over nodes")
    func discovery() throws {
        let topology = try Topology()
        #expect(topology.numaNodeCount >= 1)
        #expect(topology.coreCount >= 1)
        #expect(topology.coreCount(ofNUMANode: 0) >= 1)
        let nodes = topology.numaNodeCount
        #expect(topology.numaNode(forRank: 0) == 0)
        #expect(topology.numaNode(forRank: nodes) == 0)
        #expect(topology.numaNode(forRank: nodes + 1) == 1 % nodes)
    }

    @Test("binding to an existing node works; a node that does not exist is a named error")
    func binding() throws {
        let topology = try Topology()
        try topology.bindProcess(toNUMANode: 0)
        #expect(throws: TopologyError.noSuchNode(topology.numaNodeCount, available: topology.numaNodeCount)) {
            try topology.bindProcess(toNUMANode: topology.numaNodeCount)
        }
    }
}
