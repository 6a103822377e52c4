import Collectives
import Foundation
import RankThreads
import Testing
@testable import WorkerCore

/// A tensor-parallel group in one process: each rank's executor on its own thread, meeting in
/// a shared-memory group as worker processes do. Every rank runs the same steps; rank 0's
/// logits must equal a single executor's up to float rounding, and its argmax must follow the
/// same greedy path.
@Suite("tensor parallelism in process")
struct TensorParallelParityTests {
    struct Variant: Sendable, CustomTestStringConvertible {
        var model: String
        var world: Int
        var activations: ActivationPrecision
        var overTCP = false
        var testDescription: String {
            "\(model) over \(world) ranks, \(activations) activations\(overTCP ? ", over TCP" : "")"
        }
    }

    static let variants = [
        Variant(model: "tiny-gqa9x3", world: 2, activations: .f32),  // KV heads 2 + 1, query heads 6 + 3
        Variant(model: "tiny-gqa9x3", world: 4, activations: .f32),  // KV head 0 on two ranks
        Variant(model: "tiny-mqa", world: 2, activations: .f32),     // one KV head on both
        Variant(model: "tiny-llama", world: 4, activations: .f32),   // 2 KV heads over 4 ranks
        Variant(model: "tiny-llama-q.gguf", world: 2, activations: .q8),  // Q8_0/Q4_1 columns on block bounds
        Variant(model: "tiny-llama-q.gguf", world: 2, activations: .f32),
        Variant(model: "tiny-gqa9x3", world: 4, activations: .f32, overTCP: true),
        Variant(model: "tiny-llama-q.gguf", world: 2, activations: .q8, overTCP: true),
    ]

    /// The logits a run sees: the prompt's last position, then each forced token's.
    static func trace(_ executor: ModelExecutor, prompt: [Int32], forced: [Int32], id: UInt64) throws -> [[Float]] {
        let table = blockTable(first: Int32(id) * 8, tokens: prompt.count + forced.count)
        var rows = try executor.lastLogits([SequenceWork(id: id, tokens: prompt, startPosition: 0, blockTable: table, sample: false)])
        var position = prompt.count
        for token in forced.dropLast() {
            rows += try executor.lastLogits([SequenceWork(id: id, tokens: [token], startPosition: position,
                                                          blockTable: table, sample: false)])
            position += 1
        }
        return rows
    }

    static func load(_ variant: Variant, rank: Int, group: GroupSettings.Transport?) throws -> ModelExecutor {
        let options = EngineOptions(activations: variant.activations, kvCacheTokens: 2048)
        return try ModelExecutor.load(model: try Fixtures.url(variant.model).path, rank: rank, worldSize: group == nil ? 1 : variant.world,
                                      group: group.map { GroupSettings($0, joinTimeout: .seconds(30)) },
                                      options: options, pool: try ComputePool(threads: 1))
    }

    @Test("rank 0's logits equal one executor's within 1e-4 relative, on the same greedy path", arguments: variants)
    func parity(variant: Variant) throws {
        let single = try Self.load(variant, rank: 0, group: nil)
        let cases = try Fixtures.reference(variant.model.replacingOccurrences(of: ".gguf", with: "") + ".expected.json").cases
        var expected: [[[Float]]] = []
        var forced: [[Int32]] = []
        for (index, item) in cases.enumerated() {
            // The single executor's own greedy path, forced on the group.
            let path = try single.greedy(item.prompt, count: 8, id: UInt64(100 + index))
            forced.append(path)
            expected.append(try Self.trace(single, prompt: item.prompt, forced: path, id: UInt64(index)))
        }
        let paths = forced
        let transport: GroupSettings.Transport = variant.overTCP ? .tcp(freeLoopbackEndpoints(variant.world))
            : .sharedMemory(name: "/tessel-parity-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let ranks = try onRankThreads(variant.world) { rank in
            let executor = try Self.load(variant, rank: rank, group: transport)
            return try cases.enumerated().map { index, item in
                try Self.trace(executor, prompt: item.prompt, forced: paths[index], id: UInt64(index))
            }
        }
        for (index, rows) in ranks[0].enumerated() {
            for (step, row) in rows.enumerated() {
                let error = relativeError(row, expected[index][step])
                #expect(error < 1e-4, "case \(index) step \(step): relative error \(error)")
                let argmax = row.indices.max { row[$0] < row[$1] }!
                #expect(Int32(argmax) == forced[index][step], "case \(index) step \(step): greedy path left")
            }
        }
    }

    @Test("a split that cuts a quantised block is a load error naming the tensor")
    func splitAcrossBlocks() throws {
        // tiny-llama-q's attention output is Q4_1 (blocks of 32 columns); 4 heads of 16 over 4 ranks
        // would give each rank 16 columns.
        let name = "/tessel-split-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let variant = Variant(model: "tiny-llama-q.gguf", world: 4, activations: .q8)
        let messages = try onRankThreads(4) { rank -> String in
            do {
                _ = try Self.load(variant, rank: rank, group: .sharedMemory(name: name))
                return "loaded"
            } catch { return "\(error)" }
        }
        #expect(messages[0].contains("blk.0.attn_output.weight"), "\(messages[0])")
        #expect(messages[0].contains("block boundaries"), "\(messages[0])")
    }
}
