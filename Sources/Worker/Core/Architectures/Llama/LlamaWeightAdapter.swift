import ModelFormats

/// The graph's names for Llama weights.
enum LlamaWeightName: String, CaseIterable, Sendable {
    case embedding, attentionNorm, query, key, value, output, mlpNorm, gate, up, down, finalNorm, lmHead
}

/// Maps checkpoint tensor names to the graph's, in one table per checkpoint format, and says
/// which tensors need a layout change on the way in.
struct LlamaWeightAdapter: Sendable {
    static let layerPlaceholder = "{layer}"

    static let huggingFaceNames: [LlamaWeightName: String] = [
        .embedding: "model.embed_tokens.weight",
        .attentionNorm: "model.layers.{layer}.input_layernorm.weight",
        .query: "model.layers.{layer}.self_attn.q_proj.weight",
        .key: "model.layers.{layer}.self_attn.k_proj.weight",
        .value: "model.layers.{layer}.self_attn.v_proj.weight",
        .output: "model.layers.{layer}.self_attn.o_proj.weight",
        .mlpNorm: "model.layers.{layer}.post_attention_layernorm.weight",
        .gate: "model.layers.{layer}.mlp.gate_proj.weight",
        .up: "model.layers.{layer}.mlp.up_proj.weight",
        .down: "model.layers.{layer}.mlp.down_proj.weight",
        .finalNorm: "model.norm.weight",
        .lmHead: "lm_head.weight",
    ]

    static let ggufNames: [LlamaWeightName: String] = [
        .embedding: "token_embd.weight",
        .attentionNorm: "blk.{layer}.attn_norm.weight",
        .query: "blk.{layer}.attn_q.weight",
        .key: "blk.{layer}.attn_k.weight",
        .value: "blk.{layer}.attn_v.weight",
        .output: "blk.{layer}.attn_output.weight",
        .mlpNorm: "blk.{layer}.ffn_norm.weight",
        .gate: "blk.{layer}.ffn_gate.weight",
        .up: "blk.{layer}.ffn_up.weight",
        .down: "blk.{layer}.ffn_down.weight",
        .finalNorm: "output_norm.weight",
        .lmHead: "output.weight",
    ]

    let format: CheckpointFormat
    let loader: WeightLoader
    let config: LlamaConfig
    /// What every matrix's kernels are chosen from.
    let kernels: KernelChoice
    /// The registration's table of how each weight divides among ranks, and this rank's share.
    let sharding: [String: ShardAxis]
    let shard: LlamaShard

    private var names: [LlamaWeightName: String] {
        format == .gguf ? Self.ggufNames : Self.huggingFaceNames
    }

    func checkpointName(_ weight: LlamaWeightName, layer: Int? = nil) -> String {
        let template = names[weight]!
        guard let layer else { return template }
        return template.replacingOccurrences(of: Self.layerPlaceholder, with: String(layer))
    }

    /// The graph's shape of a weight (PyTorch order).
    func shape(of weight: LlamaWeightName) -> [Int] {
        let hidden = config.hiddenSize, inter = config.intermediateSize
        let qRows = config.headCount * config.headDimension, kvRows = config.kvHeadCount * config.headDimension
        switch weight {
        case .embedding, .lmHead: return [config.vocabSize, hidden]
        case .attentionNorm, .mlpNorm, .finalNorm: return [hidden]
        case .query: return [qRows, hidden]
        case .key, .value: return [kvRows, hidden]
        case .output: return [hidden, qRows]
        case .gate, .up: return [inter, hidden]
        case .down: return [hidden, inter]
        }
    }

    /// llama.cpp's converter permutes each Q/K head's rows for the interleaved rotary layout;
    /// the rotary kernel takes that layout as a flag, so the file's rows are used as they are.
    var rotaryLayout: RotaryLayout { format == .gguf ? .interleaved : .rotateHalf }

    func matrix(_ weight: LlamaWeightName, layer: Int? = nil) throws -> WeightMatrix {
        try loader.matrix(checkpointName(weight, layer: layer), shape: shape(of: weight), slice: slice(weight, layer: layer))
    }

    /// This rank's part of `weight`, as the sharding table divides it.
    func slice(_ weight: LlamaWeightName, layer: Int?) throws -> WeightSlice {
        guard shard.plan.isSharded else { return .whole }
        func range(_ unit: ShardUnit) throws -> Range<Int> {
            guard unit == .mlpColumns else { return shard.range(unit) }
            // Gate/up rows and down columns split alike, on the down projection's blocks.
            let down = checkpointName(.down, layer: layer)
            guard let descriptor = loader.store.descriptor(down) else {
                throw ModelLoadError.missingTensor(file: loader.store.path, tensor: down)
            }
            return shard.plan.elements(of: config.intermediateSize, block: descriptor.encoding.blockSize)
        }
        switch sharding[weight.rawValue] ?? .replicated {
        case .replicated: return .whole
        case .outputRows(let unit): return .rows(try range(unit))
        case .inputColumns(let unit): return .columns(try range(unit))
        }
    }

    func vector(_ weight: LlamaWeightName, layer: Int? = nil) throws -> FloatBuffer {
        try loader.vector(checkpointName(weight, layer: layer), count: shape(of: weight)[0])
    }

    /// Every tensor the graph needs, Q/K/V and gate/up stacked into one product each.
    func load() throws -> LlamaWeights {
        let embedding = try matrix(.embedding)
        var layers: [LlamaLayerWeights] = []
        for layer in 0..<config.layerCount {
            func linear(_ weights: [LlamaWeightName]) throws -> Linear {
                Linear(try weights.map { try matrix($0, layer: layer) }, kernels: kernels)
            }
            layers.append(LlamaLayerWeights(
                attentionNorm: try vector(.attentionNorm, layer: layer),
                queryKeyValue: try linear([.query, .key, .value]),
                output: try linear([.output]),
                mlpNorm: try vector(.mlpNorm, layer: layer),
                gateUp: try linear([.gate, .up]),
                down: try linear([.down])))
        }
        let head = config.tieWordEmbeddings ? embedding : try matrix(.lmHead)
        // The head's logits are what sampling and scoring see: with 8-bit activations it also
        // multiplies their residual, for much less rounding error at little cost (decode reads
        // the same weight bytes once).
        return LlamaWeights(embedding: Embedding(embedding), layers: layers, finalNorm: try vector(.finalNorm),
                            lmHead: Linear(head, kernels: kernels, residualPass: true), shard: shard)
    }
}

struct LlamaLayerWeights: Sendable {
    let attentionNorm: FloatBuffer
    let queryKeyValue: Linear
    let output: Linear
    let mlpNorm: FloatBuffer
    let gateUp: Linear
    let down: Linear
}

struct LlamaWeights: Sendable {
    let embedding: Embedding
    let layers: [LlamaLayerWeights]
    let finalNorm: FloatBuffer
    /// Over the embedding table itself when tied.
    let lmHead: Linear
    /// Which heads and vocabulary rows these weights hold.
    let shard: LlamaShard

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

/// What one rank of a Llama holds: its query and KV heads and its rows of the vocabulary
/// (the MLP's columns depend on each layer's encoding and are worked out per weight).
struct LlamaShard: Sendable {
    let plan: TensorParallelPlan
    let attention: AttentionShard
    let vocabulary: Range<Int>
    let headDimension: Int

    init(config: LlamaConfig, plan: TensorParallelPlan) throws {
        self.plan = plan
        attention = try plan.attentionHeads(queryHeads: config.headCount, kvHeads: config.kvHeadCount)
        vocabulary = plan.units(of: config.vocabSize)
        headDimension = config.headDimension
    }

    var queryHeads: Int { attention.queryHeads.count }
    var kvHeads: Int { attention.kvHeads.count }

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
