import CKernels
import Collectives
import Foundation
import Synchronization
import Testing
@testable import WorkerCore

@Suite("Compute pool")
struct ComputePoolTests {
    @Test("every thread runs every job once, the caller as thread 0, also after the helpers went to sleep")
    func runsEveryThread() throws {
        let pool = try ComputePool(threads: 3, spinMicroseconds: 50)
        let counts = Mutex([Int](repeating: 0, count: 3))
        for round in 0..<200 {
            pool.run { thread, threads in
                #expect(threads == 3)
                counts.withLock { $0[thread] += 1 }
            }
            if round % 50 == 0 { Thread.sleep(forTimeInterval: 0.005) }  // long enough to park
        }
        #expect(counts.withLock { $0 } == [200, 200, 200])
    }

    @Test("ranges split on granule boundaries cover the count exactly once")
    func shares() {
        for count in [1, 5, 64, 191, 1000] {
            for parts in 1...5 {
                var covered = [Int](repeating: 0, count: count)
                for part in 0..<parts {
                    let range = ComputePool.share(count, granule: 4, part: part, parts: parts)
                    if part < parts - 1 { #expect(range.upperBound % 4 == 0 || range.upperBound == count) }
                    for i in range { covered[i] += 1 }
                }
                #expect(covered.allSatisfy { $0 == 1 }, "count \(count) parts \(parts)")
            }
        }
    }

    @Test("threads pinned to this machine's cores report where they run")
    func pinned() throws {
        let topology = try Topology()
        let cores = topology.cores(ofNUMANode: 0)
        #expect(!cores.isEmpty)
        let pool = try ComputePool(threads: cores.count, processorSets: cores, topology: topology)
        let seen = Mutex(Set<Int>())
        pool.run { thread, _ in
            let cpu = Int(tk_current_cpu())
            seen.withLock { _ = $0.insert(cpu) }
            #expect(cores[thread].contains(cpu), "thread \(thread) runs on cpu \(cpu), bound to \(cores[thread])")
        }
        #expect(pool.placement.contains("t0→cpu"))
    }
}
