import Foundation
import ModelFormats

/// Chooses how to read a model's tokenizer.
public enum TokenizerLoader {
    /// From the `tokenizer.ggml.*` metadata of a GGUF file.
    public static func load(gguf: GGUFFile) throws -> any Tokenizer {
        try GGUFTokenizerLoader.load(gguf)
    }

    /// From a Hugging Face model directory (tokenizer.json, tokenizer_config.json, generation_config.json).
    public static func load(directory: URL) throws -> any Tokenizer {
        try HFTokenizerLoader.load(directory: directory)
    }

    /// From a `.gguf` file or a Hugging Face directory, whichever `url` is.
    public static func load(path url: URL) throws -> any Tokenizer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw TokenizerError.missingFile(url.path)
        }
        if isDirectory.boolValue { return try load(directory: url) }
        return try load(gguf: GGUFFile.open(url))
    }

    /// From a resolved model source: its GGUF metadata or its Hugging Face directory.
    public static func load(source: ModelSource) throws -> any Tokenizer {
        switch source.kind {
        case .gguf(let url): try load(gguf: GGUFFile.open(url))
        case .huggingFace(let directory): try load(directory: directory)
        }
    }

    /// From what a user typed as `--model`: a path that exists (a `.gguf` file, or any directory
    /// holding tokenizer.json), else whatever `ModelSource` resolves it to (an `org/name`
    /// Hugging Face cache entry).
    public static func load(model specifier: String) throws -> any Tokenizer {
        let expanded = (specifier as NSString).expandingTildeInPath
        if FileManager.default.fileExists(atPath: expanded) {
            return try load(path: URL(fileURLWithPath: expanded))
        }
        return try load(source: ModelSource.resolve(specifier))
    }
}
