import Foundation
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

    /// llama.cpp's converter interleaves each Q/K head's rows for the pairwise rotary layout;
    /// these are turned back into rotate-half order.
    static let ggufInterleavedRotary: Set<LlamaWeightName> = [.query, .key]

    let format: CheckpointFormat
    let store: any WeightStore
    let config: LlamaConfig

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

    private func needsUnpermute(_ weight: LlamaWeightName) -> Bool {
        format == .gguf && Self.ggufInterleavedRotary.contains(weight)
    }

    /// The tensor's descriptor after checking it exists with the expected shape and encoding.
    func checkedDescriptor(_ weight: LlamaWeightName, layer: Int?) throws -> TensorDescriptor {
        let name = checkpointName(weight, layer: layer)
        guard let descriptor = store.descriptor(name) else {
            throw ModelLoadError.missingTensor(file: store.path, tensor: name)
        }
        guard LlamaArchitecture.supportedEncodings.contains(descriptor.encoding) else {
            throw ModelLoadError.unsupportedEncoding(file: store.path, tensor: name, encoding: "\(descriptor.encoding)")
        }
        guard descriptor.shape == shape(of: weight) else {
            throw ModelLoadError.shapeMismatch(file: store.path, tensor: name, expected: shape(of: weight), found: descriptor.shape)
        }
        return descriptor
    }

    /// Decodes several tensors (all `[rows, columns]` with the same columns) stacked by rows
    /// into one float32 matrix, in the graph's layout.
    func matrix(_ weights: [LlamaWeightName], layer: Int? = nil) throws -> Matrix {
        let columns = shape(of: weights[0]).last!
        let rows = weights.reduce(0) { $0 + shape(of: $1)[0] }
        let storage = FloatBuffer(count: rows * columns)
        var row = 0
        for weight in weights {
            _ = try checkedDescriptor(weight, layer: layer)
            let count = shape(of: weight)[0]
            let target = UnsafeMutableBufferPointer(start: storage.pointer + row * columns, count: count * columns)
            try store.readFloats(checkpointName(weight, layer: layer), rows: nil, into: target)
            if needsUnpermute(weight) {
                let source = Array(target)
                Self.interleavedToHalves(source, rows: count, rowBytes: columns * MemoryLayout<Float>.stride,
                                         headDimension: config.headDimension, into: UnsafeMutableRawBufferPointer(target))
            }
            row += count
        }
        return Matrix(rows: rows, columns: columns, storage: storage)
    }

    func vector(_ weight: LlamaWeightName, layer: Int? = nil) throws -> FloatBuffer {
        _ = try checkedDescriptor(weight, layer: layer)
        let storage = FloatBuffer(count: shape(of: weight).reduce(1, *))
        try store.readFloats(checkpointName(weight, layer: layer), rows: nil, into: storage.buffer)
        return storage
    }

    /// The encoded blocks of several tensors stacked by rows (Q/K un-permuted like the float
    /// path), when all share an encoding a decode kernel reads; else nil.
    func quantized(_ weights: [LlamaWeightName], layer: Int? = nil) throws -> QuantizedMatrix? {
        var encoding: QuantizedMatrix.Encoding?
        for weight in weights {
            guard case .ggml(let type) = try checkedDescriptor(weight, layer: layer).encoding,
                  let this = QuantizedMatrix.Encoding(type), encoding == nil || encoding == this else { return nil }
            encoding = this
        }
        guard let encoding else { return nil }
        let columns = shape(of: weights[0]).last!
        let rowBytes = QuantizedMatrix.rowBytes(columns: columns, encoding: encoding)
        let rows = weights.reduce(0) { $0 + shape(of: $1)[0] }
        let storage = ByteBuffer(count: rows * rowBytes)
        var row = 0
        for weight in weights {
            let count = shape(of: weight)[0]
            let target = UnsafeMutableRawBufferPointer(start: storage.pointer + row * rowBytes, count: count * rowBytes)
            try store.withEncodedBytes(checkpointName(weight, layer: layer), rows: nil) { bytes, _ in
                if needsUnpermute(weight) {
                    Self.interleavedToHalves(bytes, rows: count, rowBytes: rowBytes, headDimension: config.headDimension, into: target)
                } else {
                    target.copyMemory(from: bytes)
                }
            }
            row += count
        }
        return QuantizedMatrix(encoding: encoding, rows: rows, columns: columns, storage: storage)
    }

    /// llama.cpp's converter stores row `h * d/2 + i` of each head (rotate-half layout) at row
    /// `2i + h` (pairwise layout); this moves whole rows of `rowBytes` bytes back.
    static func interleavedToHalves(_ source: UnsafeRawBufferPointer, rows: Int, rowBytes: Int, headDimension: Int,
                                    into target: UnsafeMutableRawBufferPointer) {
        precondition(source.count == rows * rowBytes && target.count == source.count && rows % headDimension == 0)
        let half = headDimension / 2
        for head in 0..<(rows / headDimension) {
            let base = head * headDimension
            for i in 0..<half {
                for h in 0..<2 {
                    let from = (base + 2 * i + h) * rowBytes, to = (base + h * half + i) * rowBytes
                    (target.baseAddress! + to).copyMemory(from: source.baseAddress! + from, byteCount: rowBytes)
                }
            }
        }
    }

    static func interleavedToHalves(_ source: [Float], rows: Int, rowBytes: Int, headDimension: Int,
                                    into target: UnsafeMutableRawBufferPointer) {
        source.withUnsafeBytes { bytes in
            interleavedToHalves(bytes, rows: rows, rowBytes: rowBytes, headDimension: headDimension, into: target)
        }
    }

    /// Reads every tensor the graph needs, fusing Q/K/V and gate/up into one matrix each.
    func load() throws -> LlamaWeights {
        let embedding = try matrix([.embedding])
        var layers: [LlamaLayerWeights] = []
        for layer in 0..<config.layerCount {
            func linear(_ weights: [LlamaWeightName]) throws -> Linear {
                Linear(weight: try matrix(weights, layer: layer), quantized: try quantized(weights, layer: layer))
            }
            layers.append(LlamaLayerWeights(
                attentionNorm: try vector(.attentionNorm, layer: layer),
                queryKeyValue: try linear([.query, .key, .value]),
                output: try linear([.output]),
                mlpNorm: try vector(.mlpNorm, layer: layer),
                gateUp: try linear([.gate, .up]),
                down: try linear([.down])))
        }
        let headWeight: LlamaWeightName = config.tieWordEmbeddings ? .embedding : .lmHead
        let lmHead = Linear(weight: config.tieWordEmbeddings ? embedding : try matrix([.lmHead]),
                            quantized: try quantized([headWeight]))
        return LlamaWeights(embedding: embedding, layers: layers, finalNorm: try vector(.finalNorm), lmHead: lmHead)
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
    let embedding: Matrix
    let layers: [LlamaLayerWeights]
    let finalNorm: FloatBuffer
    /// The embedding matrix itself when tied.
    let lmHead: Linear
}
