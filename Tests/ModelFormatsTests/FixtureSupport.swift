import Foundation
import Testing
@testable import ModelFormats

enum Fixtures {
    static func url(_ name: String) throws -> URL {
        let base = (name as NSString).deletingPathExtension
        let ext = (name as NSString).pathExtension
        let url = try #require(Bundle.module.url(forResource: base, withExtension: ext, subdirectory: "Fixtures"),
                               "fixture \(name) is missing: run scripts/fixtures/model_formats.py")
        return url
    }

    static func directory(_ name: String) throws -> URL {
        try #require(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"),
                     "fixture directory \(name) is missing: run scripts/fixtures/model_formats.py")
    }

    static let defaultModelPath = "/root/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf"

    /// The default model; a test that needs it fails (never skips) when it is absent.
    static func defaultModel() throws -> URL {
        guard FileManager.default.fileExists(atPath: defaultModelPath) else {
            Issue.record("the default model \(defaultModelPath) is missing: run scripts/fetch-model")
            throw MissingDefaultModel()
        }
        return URL(fileURLWithPath: defaultModelPath)
    }

    struct MissingDefaultModel: Error {}
}

/// A fresh temporary directory, removed by `cleanup()`.
struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("modelformats-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func file(_ name: String, _ data: Data) throws -> URL {
        let file = url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: file)
        return file
    }

    func cleanup() { try? FileManager.default.removeItem(at: url) }
}

/// The error a throwing expression raised, described; fails the test when it does not throw.
func errorDescription(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    do {
        try body()
        Issue.record("expected an error", sourceLocation: sourceLocation)
        return ""
    } catch {
        return "\(error)"
    }
}
