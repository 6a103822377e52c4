import ModelFormats

/// The graph's names for a decoder's weights; a family's table maps them to its checkpoint
/// names, and leaves out those its graph does not have.
public enum DecoderWeight: String, CaseIterable, Sendable {
    case embedding, attentionNorm, query, key, value, queryBias, keyBias, valueBias, queryNorm, keyNorm, output
    case postAttentionNorm, mlpNorm, gate, up, down, postMLPNorm, finalNorm, lmHead
    /// Fused checkpoints (Phi-3): Q | K | V rows in one tensor, gate | up rows in one tensor,
    /// read as one row slice per part (so a rank reads only its heads and columns of each).
    case queryKeyValue, gateUp
}

/// Where one graph weight lives in each checkpoint format; `{layer}` stands for the layer.
public struct CheckpointNames: Sendable, Equatable {
    public var huggingFace: String
    public var gguf: String

    public init(huggingFace: String, gguf: String) {
        self.huggingFace = huggingFace
        self.gguf = gguf
    }

    public static let layerPlaceholder = "{layer}"

    public func name(in format: CheckpointFormat, layer: Int?) -> String {
        let template = format == .gguf ? gguf : huggingFace
        guard let layer else { return template }
        return template.replacingOccurrences(of: Self.layerPlaceholder, with: String(layer))
    }
}

/// A family's weight adapter table: graph name → checkpoint names.
public struct WeightNameTable: Sendable {
    public private(set) var names: [DecoderWeight: CheckpointNames]

    public init(_ names: [DecoderWeight: CheckpointNames]) {
        self.names = names
    }

    /// Llama's names, which most families share.
    public static let llama = WeightNameTable([
        .embedding: CheckpointNames(huggingFace: "model.embed_tokens.weight", gguf: "token_embd.weight"),
        .attentionNorm: CheckpointNames(huggingFace: "model.layers.{layer}.input_layernorm.weight", gguf: "blk.{layer}.attn_norm.weight"),
        .query: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.q_proj.weight", gguf: "blk.{layer}.attn_q.weight"),
        .key: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.k_proj.weight", gguf: "blk.{layer}.attn_k.weight"),
        .value: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.v_proj.weight", gguf: "blk.{layer}.attn_v.weight"),
        .output: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.o_proj.weight", gguf: "blk.{layer}.attn_output.weight"),
        .mlpNorm: CheckpointNames(huggingFace: "model.layers.{layer}.post_attention_layernorm.weight", gguf: "blk.{layer}.ffn_norm.weight"),
        .gate: CheckpointNames(huggingFace: "model.layers.{layer}.mlp.gate_proj.weight", gguf: "blk.{layer}.ffn_gate.weight"),
        .up: CheckpointNames(huggingFace: "model.layers.{layer}.mlp.up_proj.weight", gguf: "blk.{layer}.ffn_up.weight"),
        .down: CheckpointNames(huggingFace: "model.layers.{layer}.mlp.down_proj.weight", gguf: "blk.{layer}.ffn_down.weight"),
        .finalNorm: CheckpointNames(huggingFace: "model.norm.weight", gguf: "output_norm.weight"),
        .lmHead: CheckpointNames(huggingFace: "lm_head.weight", gguf: "output.weight"),
    ])

    /// Q/K/V biases (Qwen2).
    public static let attentionBiases: [DecoderWeight: CheckpointNames] = [
        .queryBias: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.q_proj.bias", gguf: "blk.{layer}.attn_q.bias"),
        .keyBias: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.k_proj.bias", gguf: "blk.{layer}.attn_k.bias"),
        .valueBias: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.v_proj.bias", gguf: "blk.{layer}.attn_v.bias"),
    ]

    /// Per-head query and key norms (Qwen3, Gemma 3).
    public static let queryKeyNorms: [DecoderWeight: CheckpointNames] = [
        .queryNorm: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.q_norm.weight", gguf: "blk.{layer}.attn_q_norm.weight"),
        .keyNorm: CheckpointNames(huggingFace: "model.layers.{layer}.self_attn.k_norm.weight", gguf: "blk.{layer}.attn_k_norm.weight"),
    ]

    /// Gemma's four norms per layer: Hugging Face's `post_attention_layernorm` is the norm on
    /// the attention output there, not the MLP's input norm as in Llama.
    public static let sandwichNorms: [DecoderWeight: CheckpointNames] = [
        .postAttentionNorm: CheckpointNames(huggingFace: "model.layers.{layer}.post_attention_layernorm.weight",
                                            gguf: "blk.{layer}.post_attention_norm.weight"),
        .mlpNorm: CheckpointNames(huggingFace: "model.layers.{layer}.pre_feedforward_layernorm.weight", gguf: "blk.{layer}.ffn_norm.weight"),
        .postMLPNorm: CheckpointNames(huggingFace: "model.layers.{layer}.post_feedforward_layernorm.weight",
                                      gguf: "blk.{layer}.post_ffw_norm.weight"),
    ]

    /// This table with `entries` added or replacing its own.
    public func adding(_ entries: [DecoderWeight: CheckpointNames]) -> WeightNameTable {
        WeightNameTable(names.merging(entries) { $1 })
    }

    /// This table without `weights` (a fused tensor replacing its parts).
    public func removing(_ weights: [DecoderWeight]) -> WeightNameTable {
        WeightNameTable(names.filter { !weights.contains($0.key) })
    }

    public func names(of weight: DecoderWeight) -> CheckpointNames? { names[weight] }
}

/// The sharding every decoder family uses (Megatron's: Q/K/V and gate/up by output rows,
/// attention output and down by input columns, the vocabulary by rows, norms replicated).
public enum DecoderSharding {
    public static let table: [String: ShardAxis] = [
        DecoderWeight.query.rawValue: .outputRows(.queryHeads),
        DecoderWeight.key.rawValue: .outputRows(.kvHeads),
        DecoderWeight.value.rawValue: .outputRows(.kvHeads),
        DecoderWeight.queryBias.rawValue: .outputRows(.queryHeads),
        DecoderWeight.keyBias.rawValue: .outputRows(.kvHeads),
        DecoderWeight.valueBias.rawValue: .outputRows(.kvHeads),
        DecoderWeight.output.rawValue: .inputColumns(.queryHeads),
        DecoderWeight.gate.rawValue: .outputRows(.mlpColumns),
        DecoderWeight.up.rawValue: .outputRows(.mlpColumns),
        DecoderWeight.down.rawValue: .inputColumns(.mlpColumns),
        DecoderWeight.embedding.rawValue: .outputRows(.vocabulary),
        DecoderWeight.lmHead.rawValue: .outputRows(.vocabulary),
        DecoderWeight.attentionNorm.rawValue: .replicated,
        DecoderWeight.queryNorm.rawValue: .replicated,
        DecoderWeight.keyNorm.rawValue: .replicated,
        DecoderWeight.postAttentionNorm.rawValue: .replicated,
        DecoderWeight.mlpNorm.rawValue: .replicated,
        DecoderWeight.postMLPNorm.rawValue: .replicated,
        DecoderWeight.finalNorm.rawValue: .replicated,
    ]
}

/// Reads a family's weights through its name table, the sharding table and this rank's share,
/// into the shared graph's layout (Q/K/V and gate/up stacked into one product each).
struct DecoderWeightAdapter: Sendable {
    let format: CheckpointFormat
    let loader: WeightLoader
    let config: DecoderConfig
    let names: WeightNameTable
    /// What every matrix's kernels are chosen from.
    let kernels: KernelChoice
    /// The registration's table of how each weight divides among ranks, and this rank's share.
    let sharding: [String: ShardAxis]
    let shard: DecoderShard

    func checkpointName(_ weight: DecoderWeight, layer: Int? = nil) throws -> String {
        guard let entry = names.names(of: weight) else {
            throw ModelLoadError.invalidConfig(file: loader.store.path,
                                               detail: "the config asks for '\(weight.rawValue)' weights, which this family's weight table does not name")
        }
        return entry.name(in: format, layer: layer)
    }

    /// The graph's shape of a weight (PyTorch order).
    func shape(of weight: DecoderWeight) -> [Int] {
        let hidden = config.hiddenSize, inter = config.intermediateSize, head = config.headDimension
        let qRows = config.headCount * head, kvRows = config.kvHeadCount * head
        switch weight {
        case .embedding, .lmHead: return [config.vocabSize, hidden]
        case .attentionNorm, .postAttentionNorm, .mlpNorm, .postMLPNorm, .finalNorm: return [hidden]
        case .queryNorm, .keyNorm: return [head]
        case .query: return [qRows, hidden]
        case .key, .value: return [kvRows, hidden]
        case .queryBias: return [qRows]
        case .keyBias, .valueBias: return [kvRows]
        case .output: return [hidden, qRows]
        case .queryKeyValue: return [qRows + 2 * kvRows, hidden]
        case .gateUp: return [2 * inter, hidden]
        case .gate, .up: return [inter, hidden]
        case .down: return [hidden, inter]
        }
    }

    func matrix(_ weight: DecoderWeight, layer: Int? = nil) throws -> WeightMatrix {
        try loader.matrix(try checkpointName(weight, layer: layer), shape: shape(of: weight), slice: slice(weight, layer: layer))
    }

    /// This rank's part of `weight`, as the sharding table divides it.
    func slice(_ weight: DecoderWeight, layer: Int?) throws -> WeightSlice {
        guard shard.plan.isSharded else { return .whole }
        func range(_ unit: ShardUnit) throws -> Range<Int> {
            unit == .mlpColumns ? try mlpColumns(layer: layer) : shard.range(unit)
        }
        switch sharding[weight.rawValue] ?? .replicated {
        case .replicated: return .whole
        case .outputRows(let unit): return .rows(try range(unit))
        case .inputColumns(let unit): return .columns(try range(unit))
        }
    }

    /// This rank's MLP columns: gate/up rows and down columns split alike, on the down
    /// projection's blocks, dealt evenly.
    func mlpColumns(layer: Int?) throws -> Range<Int> {
        guard shard.plan.isSharded else { return 0..<config.intermediateSize }
        let down = try checkpointName(.down, layer: layer)
        guard let descriptor = loader.store.descriptor(down) else {
            throw ModelLoadError.missingTensor(file: loader.store.path, tensor: down)
        }
        let block = descriptor.encoding.blockSize
        let blocks = shard.plan.units(of: config.intermediateSize / block)
        return blocks.lowerBound * block..<blocks.upperBound * block
    }

    /// One product over the layer's tensors `parts`, stacked by output rows.
    func linear(_ parts: [DecoderWeight], layer: Int) throws -> Linear {
        Linear(try parts.map { try matrix($0, layer: layer) }, kernels: kernels)
    }

    /// `linear(parts)`, or over row slices of a fused tensor when the family's files fuse them.
    func stacked(_ parts: [DecoderWeight], fused: DecoderWeight, layer: Int) throws -> Linear {
        guard names.names(of: fused) != nil else { return try linear(parts, layer: layer) }
        let head = config.headDimension
        let queries = config.headCount * head, keys = config.kvHeadCount * head
        let rows: [Range<Int>]
        switch fused {
        case .queryKeyValue:
            let q = shard.plan.isSharded ? shard.range(.queryHeads) : 0..<queries
            let kv = shard.plan.isSharded ? shard.range(.kvHeads) : 0..<keys
            rows = [q, kv.lowerBound + queries..<kv.upperBound + queries, kv.lowerBound + queries + keys..<kv.upperBound + queries + keys]
        default:
            let columns = try mlpColumns(layer: layer), size = config.intermediateSize
            rows = [columns, columns.lowerBound + size..<columns.upperBound + size]
        }
        let name = try checkpointName(fused, layer: layer)
        return Linear(try rows.enumerated().map { index, range in
            try loader.matrix(name, shape: shape(of: fused), slice: .rows(range), countsProgress: index == 0)
        }, kernels: kernels)
    }

    /// A vector weight (norms, biases), or this rank's rows of it.
    func vector(_ weight: DecoderWeight, layer: Int? = nil) throws -> FloatBuffer {
        let whole = try loader.vector(try checkpointName(weight, layer: layer), count: shape(of: weight)[0])
        guard case .rows(let rows) = try slice(weight, layer: layer) else { return whole }
        return FloatBuffer(Array(whole.buffer[rows]))
    }

    /// Every tensor the config's graph needs.
    func load() throws -> DecoderWeights {
        let embedding = try matrix(.embedding)
        var layers: [DecoderLayerWeights] = []
        for layer in 0..<config.layerCount {
            func optional(_ weight: DecoderWeight, when present: Bool) throws -> FloatBuffer? {
                present ? try vector(weight, layer: layer) : nil
            }
            var bias: FloatBuffer?
            if config.attentionBias {
                let parts = try [DecoderWeight.queryBias, .keyBias, .valueBias].map { try vector($0, layer: layer).toArray() }
                bias = FloatBuffer(parts.flatMap { $0 })
            }
            layers.append(DecoderLayerWeights(
                attentionNorm: try vector(.attentionNorm, layer: layer),
                queryKeyValue: try stacked([.query, .key, .value], fused: .queryKeyValue, layer: layer),
                queryKeyValueBias: bias,
                queryNorm: try optional(.queryNorm, when: config.queryKeyNorm),
                keyNorm: try optional(.keyNorm, when: config.queryKeyNorm),
                output: try linear([.output], layer: layer),
                postAttentionNorm: try optional(.postAttentionNorm, when: config.sandwichNorms),
                mlpNorm: try vector(.mlpNorm, layer: layer),
                gateUp: try stacked([.gate, .up], fused: .gateUp, layer: layer),
                down: try linear([.down], layer: layer),
                postMLPNorm: try optional(.postMLPNorm, when: config.sandwichNorms)))
        }
        let head = config.tieWordEmbeddings ? embedding : try matrix(.lmHead)
        // The head's logits are what sampling and scoring see: with 8-bit activations it also
        // multiplies their residual, for much less rounding error at little cost (decode reads
        // the same weight bytes once).
        return DecoderWeights(embedding: Embedding(embedding), layers: layers, finalNorm: try vector(.finalNorm),
                              lmHead: Linear(head, kernels: kernels, residualPass: true), shard: shard)
    }
}

struct DecoderLayerWeights: Sendable {
    let attentionNorm: FloatBuffer
    let queryKeyValue: Linear
    /// This rank's Q | K | V biases, stacked as the product's rows.
    let queryKeyValueBias: FloatBuffer?
    let queryNorm: FloatBuffer?
    let keyNorm: FloatBuffer?
    let output: Linear
    let postAttentionNorm: FloatBuffer?
    let mlpNorm: FloatBuffer
    let gateUp: Linear
    let down: Linear
    let postMLPNorm: FloatBuffer?
}

struct DecoderWeights: Sendable {
    let embedding: Embedding
    let layers: [DecoderLayerWeights]
    let finalNorm: FloatBuffer
    /// Over the embedding table itself when tied.
    let lmHead: Linear
    /// Which heads and vocabulary rows these weights hold.
    let shard: DecoderShard

    /// The encoding most of the matrix bytes are in.
    var dominantEncoding: WeightEncoding {
        var bytes: [WeightEncoding: Int] = [:]
        for layer in layers {
            for linear in [layer.queryKeyValue, layer.output, layer.gateUp, layer.down] {
                for part in linear.parts { bytes[part.encoding, default: 0] += part.byteCount }
            }
        }
        return bytes.max { $0.value < $1.value }?.key ?? embedding.table.encoding
    }
}

/// What one rank of a decoder holds: its query and KV heads and its rows of the vocabulary
/// (the MLP's columns depend on each layer's encoding and are worked out per weight).
struct DecoderShard: Sendable {
    let plan: TensorParallelPlan
    let attention: AttentionShard
    let vocabulary: Range<Int>
    let headDimension: Int

    init(config: DecoderConfig, plan: TensorParallelPlan) throws {
        self.plan = plan
        attention = try plan.attentionHeads(queryHeads: config.headCount, kvHeads: config.kvHeadCount)
        vocabulary = plan.units(of: config.vocabSize)
        headDimension = config.headDimension
    }

    var queryHeads: Int { attention.queryHeads.count }
    var kvHeads: Int { attention.kvHeads.count }
    var queryRuns: [Range<Int>] { attention.queryRuns }

    /// Rows (or columns) of a head- or vocabulary-split weight.
    func range(_ unit: ShardUnit) -> Range<Int> {
        switch unit {
        case .queryHeads: attention.queryHeads.lowerBound * headDimension..<attention.queryHeads.upperBound * headDimension
        case .kvHeads: attention.kvHeads.lowerBound * headDimension..<attention.kvHeads.upperBound * headDimension
        case .vocabulary: vocabulary
        case .mlpColumns: preconditionFailure("MLP columns depend on the layer's encoding")
        }
    }
}
