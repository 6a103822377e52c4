import Foundation
import ModelFormats

/// Gemma 2: sandwich norms (`1 + w` in Hugging Face checkpoints), tanh-GELU, embeddings
/// scaled by √hidden, softcapped attention scores and logits, and sliding-window layers
/// alternating with global ones (the even layers slide).
public enum Gemma2Architecture {
    public static let family = DecoderFamily(
        name: "gemma2", huggingFaceClassNames: ["Gemma2ForCausalLM"], ggufArchitectures: ["gemma2"],
        weightNames: WeightNameTable.llama.adding(WeightNameTable.sandwichNorms), ggufRotaryLayout: .rotateHalf,
        huggingFaceConfig: { json in
            var config = try DecoderConfig(huggingFace: json, tiedByDefault: true, activationKey: "hidden_activation") {
                $0 % 2 == 0 ? .slidingAttention : .fullAttention
            }
            try config.gemma(huggingFace: json)
            config.attentionSoftcap = Float(try json.optionalDouble("attn_logit_softcapping") ?? 0)
            config.finalLogitSoftcap = Float(try json.optionalDouble("final_logit_softcapping") ?? 0)
            return config
        },
        ggufConfig: { metadata, store in
            let window = try metadata.optionalInt("gemma2.attention.sliding_window") ?? 4096
            var config = try DecoderConfig(gguf: metadata,
                                           hasOutputWeight: store.descriptor("output.weight") != nil,
                                           window: { $0 % 2 == 0 ? window : 0 })
            config.gemmaFromGGUF()
            config.attentionSoftcap = Float(try metadata.optionalDouble("gemma2.attn_logit_softcapping") ?? 0)
            config.finalLogitSoftcap = Float(try metadata.optionalDouble("gemma2.final_logit_softcapping") ?? 0)
            return config
        })

    public static let registration = family.registration
}

extension DecoderConfig {
    /// What Gemma 2 and 3 share: sandwich norms, tanh-GELU, embeddings scaled by √hidden, and
    /// scores scaled by `query_pre_attn_scalar^-½`; Hugging Face checkpoints store norms as `w - 1`.
    mutating func gemma(huggingFace json: HuggingFaceConfig) throws {
        gemmaShape()
        normWeightOffset = 1
        attentionScale = Float(1 / (try json.optionalDouble("query_pre_attn_scalar") ?? 256).squareRoot())
    }

    /// The same from GGUF metadata: llama.cpp's converter has added the 1 into the norms, and
    /// the files carry no `query_pre_attn_scalar`: llama.cpp uses the head dimension, except
    /// for the 27B models (46 layers in Gemma 2, 62 in Gemma 3), whose scalar is hidden/heads.
    mutating func gemmaFromGGUF() {
        gemmaShape()
        let largest = layerCount == 46 || layerCount == 62
        attentionScale = 1 / Float(largest ? hiddenSize / headCount : headDimension).squareRoot()
    }

    private mutating func gemmaShape() {
        sandwichNorms = true
        activation = .geluTanh
        embeddingScale = Float(Double(hiddenSize).squareRoot())
    }
}
