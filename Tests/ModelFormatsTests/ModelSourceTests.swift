import Foundation
import Testing
@testable import ModelFormats

@Suite("Model source resolution")
struct ModelSourceTests {
    private static let config = #"{"architectures": ["LlamaForCausalLM"], "hidden_size": 6, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "eos_token_id": [1, 2]}"#

    /// A Hugging Face model directory with the sharded fixture weights.
    private func makeModelDirectory(at directory: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let shards = try Fixtures.directory("sharded")
        for name in try fm.contentsOfDirectory(atPath: shards.path) {
            try fm.copyItem(at: shards.appendingPathComponent(name), to: directory.appendingPathComponent(name))
        }
        try Data(Self.config.utf8).write(to: directory.appendingPathComponent("config.json"))
        try Data("{}".utf8).write(to: directory.appendingPathComponent("tokenizer.json"))
        try Data("{}".utf8).write(to: directory.appendingPathComponent("tokenizer_config.json"))
    }

    @Test("a .gguf path resolves to a GGUF source named after the file")
    func ggufFile() throws {
        let url = try Fixtures.url("dequant_q4_0.gguf")
        let source = try ModelSource.resolve(url.path, environment: [:])
        #expect(source.kind == .gguf(url.standardizedFileURL))
        #expect(source.displayName == "dequant_q4_0")
        #expect(try source.weightFiles() == [url.standardizedFileURL])
        #expect(source.configURL == nil)
        #expect(errorDescription { _ = try source.configJSON() }.contains("GGUF"))
        #expect(try source.openWeights().tensorNames == ["weight", "expected"])
    }

    @Test("a local Hugging Face directory exposes config, tokenizer files and weights")
    func localDirectory() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let model = dir.url.appendingPathComponent("Tiny-Llama")
        try makeModelDirectory(at: model)
        let source = try ModelSource.resolve(model.path, environment: [:])
        guard case .huggingFace(let directory) = source.kind else {
            Issue.record("expected a Hugging Face source, got \(source.kind)")
            return
        }
        #expect(directory.path == model.standardizedFileURL.path)
        #expect(source.displayName == "Tiny-Llama")
        let config = try source.configJSON()
        #expect(config["architectures"]?[0]?.stringValue == "LlamaForCausalLM")
        #expect(config["hidden_size"]?.intValue == 6)
        #expect(config["rms_norm_eps"]?.doubleValue == 1e-05)
        #expect(config["rope_theta"]?.doubleValue == 10000)
        #expect(config["tie_word_embeddings"]?.boolValue == false)
        #expect(config["eos_token_id"]?.arrayValue?.compactMap(\.intValue) == [1, 2])
        #expect(source.tokenizerURL?.lastPathComponent == "tokenizer.json")
        #expect(source.tokenizerConfigURL != nil && source.generationConfigURL == nil)
        #expect(try source.weightFiles().map(\.lastPathComponent)
                == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        #expect(try source.openWeights().descriptor("lm_head.weight")?.shape == [4, 6])
    }

    @Test("fingerprint is stable and follows content, not location")
    func fingerprint() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let a = dir.url.appendingPathComponent("a"), b = dir.url.appendingPathComponent("b")
        try makeModelDirectory(at: a)
        try makeModelDirectory(at: b)
        let first = try ModelSource.resolve(a.path, environment: [:]).fingerprint
        #expect(first.hasPrefix("fnv1a64:") && first.count == 24)
        #expect(try ModelSource.resolve(a.path, environment: [:]).fingerprint == first)
        #expect(try ModelSource.resolve(b.path, environment: [:]).fingerprint == first)
        try Data(#"{"hidden_size": 7}"#.utf8).write(to: b.appendingPathComponent("config.json"))
        #expect(try ModelSource.resolve(b.path, environment: [:]).fingerprint != first)
    }

    @Test("org/name resolves through the hub cache, following refs/main and blob symlinks")
    func hubCache() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let fm = FileManager.default
        let hub = dir.url.appendingPathComponent("hf-home/hub")
        let entry = hub.appendingPathComponent("models--TinyOrg--Tiny-Llama")
        // The layout huggingface_hub writes: files in blobs/, snapshots/<rev>/ holding symlinks.
        let staging = dir.url.appendingPathComponent("staging")
        try makeModelDirectory(at: staging)
        try fm.createDirectory(at: entry.appendingPathComponent("blobs"), withIntermediateDirectories: true)
        for revision in ["0123abcd", "fedc9876"] {
            let snapshot = entry.appendingPathComponent("snapshots/\(revision)")
            try fm.createDirectory(at: snapshot, withIntermediateDirectories: true)
            for name in try fm.contentsOfDirectory(atPath: staging.path) {
                let blob = entry.appendingPathComponent("blobs/\(revision)-\(name)")
                try fm.copyItem(at: staging.appendingPathComponent(name), to: blob)
                try fm.createSymbolicLink(atPath: snapshot.appendingPathComponent(name).path,
                                          withDestinationPath: "../../blobs/\(revision)-\(name)")
            }
        }
        try fm.createDirectory(at: entry.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try Data("0123abcd\n".utf8).write(to: entry.appendingPathComponent("refs/main"))

        let environment = ["HF_HOME": dir.url.appendingPathComponent("hf-home").path, "HOME": dir.url.path]
        let source = try ModelSource.resolve("TinyOrg/Tiny-Llama", environment: environment)
        #expect(source.directory.path == entry.appendingPathComponent("snapshots/0123abcd").standardizedFileURL.path)
        #expect(source.displayName == "TinyOrg/Tiny-Llama")
        #expect(try source.openWeights().floats("model.norm.weight").count == 6)
        #expect(!source.fingerprint.isEmpty)

        let pinned = try ModelSource.resolve("TinyOrg/Tiny-Llama@fedc9876", environment: environment)
        #expect(pinned.directory.path == entry.appendingPathComponent("snapshots/fedc9876").standardizedFileURL.path)

        // HF_HUB_CACHE takes precedence over HF_HOME.
        let viaHubCache = try ModelSource.resolve("TinyOrg/Tiny-Llama", environment: ["HF_HUB_CACHE": hub.path, "HOME": "/nonexistent"])
        #expect(viaHubCache.displayName == "TinyOrg/Tiny-Llama")

        // A snapshot path given directly is named after its repository.
        let direct = try ModelSource.resolve(entry.appendingPathComponent("snapshots/fedc9876").path, environment: [:])
        #expect(direct.displayName == "TinyOrg/Tiny-Llama")
    }

    @Test("an unknown model says what was looked for and where")
    func notFound() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let environment = ["HF_HUB_CACHE": dir.url.appendingPathComponent("hub").path, "HOME": dir.url.path]
        let error = errorDescription { _ = try ModelSource.resolve("NoOrg/NoModel", environment: environment) }
        #expect(error.contains("NoOrg/NoModel") && error.contains("models--NoOrg--NoModel")
                && error.contains(dir.url.appendingPathComponent("hub").path)
                && error.contains(dir.url.appendingPathComponent(".cache/huggingface/hub").path))
        let plain = errorDescription { _ = try ModelSource.resolve("/no/such/model.gguf", environment: environment) }
        #expect(plain.contains("/no/such/model.gguf"))
    }

    @Test("a directory without weights or config is rejected with what is missing")
    func incompleteDirectory() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let noConfig = errorDescription { _ = try ModelSource.resolve(dir.url.path, environment: [:]) }
        #expect(noConfig.contains(dir.url.path) && noConfig.contains("config.json"))
        _ = try dir.file("config.json", Data("{}".utf8))
        let noWeights = errorDescription { _ = try ModelSource.resolve(dir.url.path, environment: [:]) }
        #expect(noWeights.contains("safetensors"))
        let text = try dir.file("notes.txt", Data("hello".utf8))
        #expect(errorDescription { _ = try ModelSource.resolve(text.path, environment: [:]) }.contains("not a model file"))
    }
}
