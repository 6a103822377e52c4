import Foundation

/// Where a model comes from, resolved from what the user passed as `--model`:
/// - a `.gguf` file (or a directory holding exactly one `.gguf` and no `config.json`);
/// - a local Hugging Face model directory (`config.json` plus `*.safetensors` or
///   `model.safetensors.index.json`; tokenizer and generation configs when present);
/// - a Hugging Face cache entry `org/name`, found under `$HF_HUB_CACHE`, `$HF_HOME/hub` or
///   `~/.cache/huggingface/hub` as `models--org--name/snapshots/<revision>/` (the revision named
///   by `refs/main` when present, otherwise the most recently modified snapshot).
public struct ModelSource: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case gguf(URL)
        case huggingFace(directory: URL)
    }

    public let kind: Kind
    /// What the user passed.
    public let specifier: String
    /// The name to show clients (`/v1/models`): `org/name` for cache entries, the directory name
    /// for a local directory, the file name without `.gguf` for a GGUF file.
    public let displayName: String
    /// A cheap content fingerprint for the router↔worker handshake, computed at resolution:
    /// a 64-bit FNV-1a hash over, for each file of the model (weights, index, config and
    /// tokenizer files), its name, its size and its first and last 64 KiB. Modification times
    /// are left out on purpose: workers on other hosts hold copies with other mtimes.
    /// Format: `fnv1a64:` and 16 hex digits.
    public let fingerprint: String

    /// A source of the given kind; reads the headers of its files for the fingerprint.
    public init(kind: Kind, specifier: String, displayName: String) throws {
        self.kind = kind
        self.specifier = specifier
        self.displayName = displayName
        self.fingerprint = try Self.fingerprint(of: kind)
    }

    public static let configFileName = "config.json"
    public static let tokenizerFileName = "tokenizer.json"
    public static let tokenizerConfigFileName = "tokenizer_config.json"
    public static let generationConfigFileName = "generation_config.json"

    /// Resolves `specifier`; `environment` supplies `HF_HUB_CACHE`, `HF_HOME` and `HOME`.
    public static func resolve(_ specifier: String,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ModelSource {
        let expanded = specifier.hasPrefix("~/")
            ? (environment["HOME"] ?? NSHomeDirectory()) + specifier.dropFirst(1)
            : specifier
        let url = URL(fileURLWithPath: expanded).standardizedFileURL
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if !isDirectory.boolValue {
                guard url.pathExtension.lowercased() == "gguf" || hasGGUFMagic(url) else {
                    throw ModelSourceError.unrecognisedFile(path: url.path)
                }
                return try ModelSource(kind: .gguf(url), specifier: specifier,
                                   displayName: url.deletingPathExtension().lastPathComponent)
            }
            return try directorySource(url, specifier: specifier, displayName: cacheRepoName(of: url) ?? url.lastPathComponent)
        }
        guard let repo = HuggingFaceRepo(specifier) else {
            throw ModelSourceError.notFound(specifier: specifier, looked: [url.path])
        }
        var looked: [String] = [url.path]
        for root in hubCacheRoots(environment) {
            let entry = root.appendingPathComponent(repo.cacheFolderName)
            looked.append(entry.path)
            guard FileManager.default.fileExists(atPath: entry.path) else { continue }
            let snapshot = try snapshotDirectory(in: entry, revision: repo.revision)
            return try directorySource(snapshot, specifier: specifier, displayName: repo.name)
        }
        throw ModelSourceError.notFound(specifier: specifier, looked: looked)
    }

    /// The hub cache roots in the order Hugging Face tools use them.
    public static func hubCacheRoots(_ environment: [String: String]) -> [URL] {
        var roots: [String] = []
        if let hubCache = environment["HF_HUB_CACHE"], !hubCache.isEmpty { roots.append(hubCache) }
        if let home = environment["HF_HOME"], !home.isEmpty { roots.append(home + "/hub") }
        let userHome = environment["HOME"] ?? NSHomeDirectory()
        roots.append(userHome + "/.cache/huggingface/hub")
        var seen = Set<String>()
        return roots.map { URL(fileURLWithPath: $0).standardizedFileURL }.filter { seen.insert($0.path).inserted }
    }

    private static func snapshotDirectory(in entry: URL, revision: String?) throws -> URL {
        let snapshots = entry.appendingPathComponent("snapshots")
        let fm = FileManager.default
        if let revision {
            // A branch or tag name under refs/, or a commit hash under snapshots/.
            let ref = entry.appendingPathComponent("refs").appendingPathComponent(revision)
            let named = (try? String(contentsOf: ref, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            let directory = snapshots.appendingPathComponent(named ?? revision)
            guard fm.fileExists(atPath: directory.path) else {
                throw ModelSourceError.missingSnapshot(entry: entry.path, detail: "no snapshot for revision '\(revision)' (looked for \(directory.path))")
            }
            return directory
        }
        let mainRef = entry.appendingPathComponent("refs/main")
        if let hash = (try? String(contentsOf: mainRef, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines),
           !hash.isEmpty {
            let directory = snapshots.appendingPathComponent(hash)
            guard fm.fileExists(atPath: directory.path) else {
                throw ModelSourceError.missingSnapshot(entry: entry.path, detail: "refs/main names \(hash), but \(directory.path) does not exist")
            }
            return directory
        }
        let names = ((try? fm.contentsOfDirectory(atPath: snapshots.path)) ?? []).filter { !$0.hasPrefix(".") }
        let dated = names.map { name -> (URL, Date) in
            let url = snapshots.appendingPathComponent(name)
            let date = (try? fm.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? .distantPast
            return (url, date)
        }
        guard let newest = dated.max(by: { ($0.1, $0.0.path) < ($1.1, $1.0.path) }) else {
            throw ModelSourceError.missingSnapshot(entry: entry.path, detail: "no refs/main and no directory under \(snapshots.path)")
        }
        return newest.0
    }

    /// A directory is a Hugging Face model directory when it has `config.json`; without one,
    /// a single `.gguf` inside makes it a GGUF source.
    private static func directorySource(_ directory: URL, specifier: String, displayName: String) throws -> ModelSource {
        let fm = FileManager.default
        let config = directory.appendingPathComponent(configFileName)
        let names = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
        if !fm.fileExists(atPath: config.path) {
            let ggufs = names.filter { $0.lowercased().hasSuffix(".gguf") }
            if ggufs.count == 1 {
                let file = directory.appendingPathComponent(ggufs[0])
                return try ModelSource(kind: .gguf(file), specifier: specifier,
                                   displayName: file.deletingPathExtension().lastPathComponent)
            }
            throw ModelSourceError.notAModelDirectory(path: directory.path,
                detail: ggufs.isEmpty ? "no \(configFileName) and no .gguf file"
                                      : "no \(configFileName), and \(ggufs.count) .gguf files (\(ggufs.joined(separator: ", "))): name one")
        }
        let hasIndex = names.contains(SafetensorsWeightStore.indexFileName)
        guard hasIndex || names.contains(where: { $0.hasSuffix(".safetensors") }) else {
            throw ModelSourceError.notAModelDirectory(path: directory.path,
                detail: "\(configFileName) is there but no \(SafetensorsWeightStore.indexFileName) and no *.safetensors file")
        }
        return try ModelSource(kind: .huggingFace(directory: directory), specifier: specifier, displayName: displayName)
    }

    /// `org/name` when `directory` is a snapshot inside a hub cache entry.
    private static func cacheRepoName(of directory: URL) -> String? {
        let parts = directory.pathComponents
        guard parts.count >= 3, parts[parts.count - 2] == "snapshots" else { return nil }
        let folder = parts[parts.count - 3]
        guard folder.hasPrefix("models--") else { return nil }
        return folder.dropFirst("models--".count).replacingOccurrences(of: "--", with: "/")
    }

    private static func hasGGUFMagic(_ url: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 4)) == Data("GGUF".utf8)
    }

    // MARK: - Files of the source

    /// The model directory (Hugging Face) or the directory holding the `.gguf` file.
    public var directory: URL {
        switch kind {
        case .gguf(let file): file.deletingLastPathComponent()
        case .huggingFace(let directory): directory
        }
    }

    public var ggufURL: URL? { if case .gguf(let url) = kind { url } else { nil } }

    private func optionalFile(_ name: String) -> URL? {
        guard case .huggingFace(let directory) = kind else { return nil }
        let url = directory.appendingPathComponent(name)
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    /// `config.json` (Hugging Face sources only).
    public var configURL: URL? { optionalFile(Self.configFileName) }
    public var tokenizerURL: URL? { optionalFile(Self.tokenizerFileName) }
    public var tokenizerConfigURL: URL? { optionalFile(Self.tokenizerConfigFileName) }
    public var generationConfigURL: URL? { optionalFile(Self.generationConfigFileName) }

    /// The bytes of `config.json`, for decoding into an architecture's `Codable` config.
    public func configData() throws -> Data {
        guard case .huggingFace(let directory) = kind else {
            throw ModelSourceError.noConfig(source: displayName, detail: "a GGUF source keeps its configuration in GGUF metadata")
        }
        let url = directory.appendingPathComponent(Self.configFileName)
        do { return try Data(contentsOf: url) } catch {
            throw ModelSourceError.noConfig(source: displayName, detail: "cannot read \(url.path): \(error.localizedDescription)")
        }
    }

    /// `config.json`, parsed.
    public func configJSON() throws -> ModelJSON {
        guard case .huggingFace(let directory) = kind else {
            throw ModelSourceError.noConfig(source: displayName, detail: "a GGUF source keeps its configuration in GGUF metadata")
        }
        let url = directory.appendingPathComponent(Self.configFileName)
        return try ModelJSON.parse(try configData(), source: url.path)
    }

    /// The weight files: the `.gguf` file, or the safetensors shards (those named by the index
    /// when there is one, else every `*.safetensors`), sorted.
    public func weightFiles() throws -> [URL] { try Self.weightFiles(of: kind) }

    private static func weightFiles(of kind: Kind) throws -> [URL] {
        switch kind {
        case .gguf(let url):
            return [url]
        case .huggingFace(let directory):
            let index = directory.appendingPathComponent(SafetensorsWeightStore.indexFileName)
            if FileManager.default.fileExists(atPath: index.path) {
                let shards = Set(try SafetensorsWeightStore.readWeightMap(index).values).sorted()
                return shards.map { directory.appendingPathComponent($0) }
            }
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            return names.filter { $0.hasSuffix(".safetensors") }.sorted().map { directory.appendingPathComponent($0) }
        }
    }

    /// Opens the GGUF file of a GGUF source (metadata: configuration and tokenizer); nil for a
    /// Hugging Face source.
    public func openGGUF() throws -> GGUFFile? {
        guard case .gguf(let url) = kind else { return nil }
        return try GGUFFile.open(url)
    }

    /// Opens the weights: a `GGUFWeightStore` or a `SafetensorsWeightStore`.
    public func openWeights() throws -> any WeightStore {
        switch kind {
        case .gguf(let url): try GGUFWeightStore(url: url)
        case .huggingFace(let directory): try SafetensorsWeightStore(directory: directory)
        }
    }

    // MARK: - Fingerprint

    private static func fingerprint(of kind: Kind) throws -> String {
        var files = try weightFiles(of: kind)
        if case .huggingFace(let directory) = kind {
            let fm = FileManager.default
            files += [configFileName, tokenizerFileName, tokenizerConfigFileName, generationConfigFileName]
                .map { directory.appendingPathComponent($0) }
                .filter { fm.fileExists(atPath: $0.path) }
            let index = directory.appendingPathComponent(SafetensorsWeightStore.indexFileName)
            if FileManager.default.fileExists(atPath: index.path) { files.append(index) }
        }
        var hash = FNV1a64()
        for file in files {
            hash.add(Data(file.lastPathComponent.utf8))
            let handle: FileHandle
            do { handle = try FileHandle(forReadingFrom: file) } catch {
                throw ModelSourceError.unreadable(path: file.path, reason: error.localizedDescription)
            }
            defer { try? handle.close() }
            do {
                let size = try handle.seekToEnd()
                withUnsafeBytes(of: size.littleEndian) { hash.add($0) }
                let window: UInt64 = 64 * 1024
                try handle.seek(toOffset: 0)
                hash.add(try handle.read(upToCount: Int(min(size, window))) ?? Data())
                if size > window {
                    try handle.seek(toOffset: max(window, size - window))
                    hash.add(try handle.readToEnd() ?? Data())
                }
            } catch {
                throw ModelSourceError.unreadable(path: file.path, reason: error.localizedDescription)
            }
        }
        return String(format: "fnv1a64:%016llx", hash.value)
    }
}

/// `org/name` or `org/name@revision`.
struct HuggingFaceRepo: Equatable {
    let name: String
    let revision: String?

    init?(_ specifier: String) {
        let parts = specifier.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let name = String(parts[0])
        let pieces = name.split(separator: "/", omittingEmptySubsequences: false)
        guard pieces.count == 2, pieces.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }),
              !name.hasPrefix("/"), !name.hasPrefix("~") else { return nil }
        if parts.count == 2 && parts[1].isEmpty { return nil }
        self.name = name
        self.revision = parts.count == 2 ? String(parts[1]) : nil
    }

    var cacheFolderName: String { "models--" + name.replacingOccurrences(of: "/", with: "--") }
}

struct FNV1a64 {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        value = h
    }

    mutating func add(_ data: Data) { data.withUnsafeBytes { add($0) } }
}

public enum ModelSourceError: Error, CustomStringConvertible, Equatable {
    case notFound(specifier: String, looked: [String])
    case unrecognisedFile(path: String)
    case notAModelDirectory(path: String, detail: String)
    case missingSnapshot(entry: String, detail: String)
    case noConfig(source: String, detail: String)
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let specifier, let looked):
            "model '\(specifier)' not found: it is not a file or directory, nor a Hugging Face cache entry (looked at: \(looked.joined(separator: ", ")))"
        case .unrecognisedFile(let path):
            "\(path): not a model file (expected a .gguf file or a Hugging Face model directory)"
        case .notAModelDirectory(let path, let detail):
            "\(path): not a model directory: \(detail)"
        case .missingSnapshot(let entry, let detail):
            "\(entry): Hugging Face cache entry has no usable snapshot: \(detail)"
        case .noConfig(let source, let detail):
            "\(source): no config.json: \(detail)"
        case .unreadable(let path, let reason):
            "\(path): cannot read: \(reason)"
        }
    }
}
