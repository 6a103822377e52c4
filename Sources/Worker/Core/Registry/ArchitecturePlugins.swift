#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The contract between a worker and a custom-architecture plugin: a dynamic library built
/// against the `TesselWorkerCore` product that exports two C entry points,
///
///     @_cdecl("tessel_plugin_abi_version") public func abiVersion() -> Int32 { ArchitecturePluginABI.version }
///     @_cdecl("tessel_register_architectures") public func register(_ registrar: UnsafeMutableRawPointer) {
///         ArchitecturePluginRegistrar.from(registrar).register(MyArchitecture.family.registration)
///     }
///
/// (`examples/custom-architecture` is a template). The worker is linked with its symbols
/// exported, so the plugin's calls into Tessel bind to the worker's own code and types.
public enum ArchitecturePluginABI {
    /// Emitted into the plugin when it is compiled, so the worker sees the version the plugin
    /// was built against. Bumped whenever the types a plugin uses change shape.
    @_alwaysEmitIntoClient
    public static var version: Int32 { 1 }

    public static let versionSymbol = "tessel_plugin_abi_version"
    public static let registerSymbol = "tessel_register_architectures"
}

/// What a plugin's registration entry point receives: it registers its architectures here.
public final class ArchitecturePluginRegistrar {
    public private(set) var registrations: [ArchitectureRegistration] = []

    init() {}

    public func register(_ registration: ArchitectureRegistration) {
        registrations.append(registration)
    }

    /// The registrar behind the entry point's argument.
    public static func from(_ pointer: UnsafeMutableRawPointer) -> ArchitecturePluginRegistrar {
        Unmanaged<ArchitecturePluginRegistrar>.fromOpaque(pointer).takeUnretainedValue()
    }
}

/// Why a plugin could not be used; every case names the library.
public enum ArchitecturePluginError: Error, CustomStringConvertible, Equatable {
    case unloadable(path: String, reason: String)
    case missingEntryPoint(path: String, symbol: String)
    case abiMismatch(path: String, plugin: Int32, worker: Int32)
    case empty(path: String)
    case duplicate(path: String, what: String, name: String)

    public var description: String {
        switch self {
        case .unloadable(let path, let reason):
            "\(path): cannot load the architecture plugin: \(reason)"
        case .missingEntryPoint(let path, let symbol):
            "\(path): not a Tessel architecture plugin (no '\(symbol)' entry point)"
        case .abiMismatch(let path, let plugin, let worker):
            "\(path): built for Tessel plugin ABI \(plugin), this worker has \(worker); rebuild the plugin against this Tessel"
        case .empty(let path):
            "\(path): the plugin registered no architecture"
        case .duplicate(let path, let what, let name):
            "\(path): \(what) '\(name)' is already registered"
        }
    }
}

extension ArchitectureRegistry {
    /// This registry with the architectures of the plugins at `paths`, loaded in order; a name,
    /// class name or GGUF architecture already registered is refused.
    public func loadingPlugins(_ paths: [String]) throws -> ArchitectureRegistry {
        var all = registrations
        for path in paths {
            for registration in try Self.plugin(at: path) {
                func taken(_ what: String, _ names: [String], _ existing: (ArchitectureRegistration) -> [String]) throws {
                    if let name = names.first(where: { name in all.contains { existing($0).contains(name) } }) {
                        throw ArchitecturePluginError.duplicate(path: path, what: what, name: name)
                    }
                }
                try taken("architecture", [registration.name]) { [$0.name] }
                try taken("Hugging Face class", registration.huggingFaceClassNames) { $0.huggingFaceClassNames }
                try taken("GGUF architecture", registration.ggufArchitectures) { $0.ggufArchitectures }
                all.append(registration)
            }
        }
        return ArchitectureRegistry(all)
    }

    /// Opens one plugin (never closed: its code backs the registrations) and collects what its
    /// entry point registers.
    private static func plugin(at path: String) throws -> [ArchitectureRegistration] {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw ArchitecturePluginError.unloadable(path: path, reason: dlerror().map { String(cString: $0) } ?? "dlopen failed")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let found = dlsym(handle, name) else { throw ArchitecturePluginError.missingEntryPoint(path: path, symbol: name) }
            return found
        }
        typealias VersionFunction = @convention(c) () -> Int32
        typealias RegisterFunction = @convention(c) (UnsafeMutableRawPointer) -> Void
        let version = unsafeBitCast(try symbol(ArchitecturePluginABI.versionSymbol), to: VersionFunction.self)()
        guard version == ArchitecturePluginABI.version else {
            throw ArchitecturePluginError.abiMismatch(path: path, plugin: version, worker: ArchitecturePluginABI.version)
        }
        let register = unsafeBitCast(try symbol(ArchitecturePluginABI.registerSymbol), to: RegisterFunction.self)
        let registrar = ArchitecturePluginRegistrar()
        withExtendedLifetime(registrar) { register(Unmanaged.passUnretained(registrar).toOpaque()) }
        guard !registrar.registrations.isEmpty else { throw ArchitecturePluginError.empty(path: path) }
        return registrar.registrations
    }
}
