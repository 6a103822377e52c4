import ArgumentParser
import Collectives
import Foundation
import Wire

/// `worker bench-allreduce`: one rank of an allreduce latency measurement. Start one process per
/// rank with the same --group or --peers (scripts/bench/collectives.sh does); rank 0 prints, per
/// payload size, the p50/p99 latency beside a single-core memcpy of the same bytes on this machine.
struct BenchCollectives: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-allreduce",
        abstract: "Measure allreduce latency between worker processes, in shared memory or over TCP (run one per rank).")

    @Option(help: "This process's rank.") var rank: Int
    @Option(help: "Ranks in the group.") var world: Int = 2
    @Option(help: "Shared-memory name the ranks meet under (the same for every rank).") var group: String?
    @Option(help: "Or: every rank's TCP endpoint in rank order, tcp://host:port,… (the same for every rank).") var peers: String?
    @Option(help: "Payload sizes in KiB, comma-separated.") var sizes: String = "4,16,64,256,1024,4096"
    @Option(help: "Allreduces timed per size.") var iterations: Int = 2000
    @Option(help: "Processor to pin this rank to (default: unpinned).") var cpu: Int?
    @Option(name: .customLong("curve-keys"), help: "With --peers: seal the payloads with the workers' key from this directory (`router keygen`).")
    var curveKeys: String?

    func run() throws {
        let kib = try sizes.split(separator: ",").map { text -> Int in
            guard let value = Int(text), value > 0 else { throw ValidationError("--sizes: '\(text)' is not a positive size") }
            return value
        }
        if let cpu { try Topology().bindCurrentThread(toProcessors: [cpu]) }
        let largest = (kib.max() ?? 4) << 10
        let members: any Communicator
        switch (group, peers) {
        case (let group?, nil):
            members = try SharedMemoryGroup(name: "/\(group)", rank: rank, worldSize: world, slotBytes: largest,
                                            fingerprint: UInt64(largest), joinTimeout: .seconds(60))
        case (nil, let peers?):
            let endpoints = try CollectiveEndpoint.list(peers)
            guard endpoints.count == world else { throw ValidationError("--peers lists \(endpoints.count) endpoints for --world \(world)") }
            let key = try curveKeys.map { directory in
                CollectiveKey(bytes: try CurveKeys.load(directory: URL(fileURLWithPath: directory), role: .worker).own.secretKey.bytes)!
            }
            members = try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: largest, fingerprint: UInt64(largest),
                                      key: key, joinTimeout: .seconds(60))
        default:
            throw ValidationError("give one of --group (shared memory) and --peers (TCP)")
        }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: largest / 4)
        let copy = UnsafeMutablePointer<Float>.allocate(capacity: largest / 4)
        defer { buffer.deallocate(); copy.deallocate() }
        buffer.initialize(repeating: 1, count: largest / 4)
        copy.initialize(repeating: 0, count: largest / 4)
        func serial(_ count: Int, _ body: (Range<Int>) -> Void) { body(0..<count) }
        if rank == 0 {
            print("ranks \(world) over \(peers == nil ? "shared memory" : curveKeys == nil ? "TCP" : "TCP, sealed"); latency of one allreduce (µs), \(iterations) per size; memcpy: one core copying the same bytes")
            print("size        p50      p99   memcpy  p50/memcpy")
        }
        for size in kib {
            let floats = (size << 10) / 4
            let rounds = max(20, iterations * 16 / max(16, size))
            var samples: [Double] = []
            samples.reserveCapacity(rounds)
            members.barrier()
            for _ in 0..<rounds {
                let start = DispatchTime.now().uptimeNanoseconds
                members.allReduceSum(buffer, count: floats, split: serial)
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
                buffer.update(repeating: 1, count: floats)
            }
            if let failure = members.failure { throw failure }
            var copies: [Double] = []
            for _ in 0..<max(20, rounds / 4) {
                let start = DispatchTime.now().uptimeNanoseconds
                copy.update(from: buffer, count: floats)
                copies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
            }
            members.barrier()
            guard rank == 0 else { continue }
            samples.sort()
            copies.sort()
            let p50 = samples[samples.count / 2], p99 = samples[samples.count * 99 / 100], bound = copies[copies.count / 2]
            print(String(format: "%5d KiB %8.1f %8.1f %8.1f %8.1fx", size, p50, p99, bound, p50 / bound))
        }
    }
}
