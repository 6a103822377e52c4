import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A read-only memory mapping of a whole file. Weights are read through the mapping, so a rank
/// touches (and the kernel pages in) only the slices it uses.
public final class MappedFile: Sendable {
    public let path: String
    /// Immutable after init; the mapping is private and read-only.
    nonisolated(unsafe) public let bytes: UnsafeRawBufferPointer

    public init(url: URL) throws {
        path = url.path
        let fd = Glibc.open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw MappedFileError.cannotOpen(file: url.path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw MappedFileError.cannotOpen(file: url.path, reason: String(cString: strerror(errno)))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw MappedFileError.cannotOpen(file: url.path, reason: "not a regular file")
        }
        let size = Int(info.st_size)
        guard size > 0 else { throw MappedFileError.empty(file: url.path) }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw MappedFileError.cannotMap(file: url.path, reason: String(cString: strerror(errno)))
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count)
    }
}

public enum MappedFileError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case cannotMap(file: String, reason: String)
    case empty(file: String)

    public var description: String {
        switch self {
        case .cannotOpen(let file, let reason): "\(file): cannot open: \(reason)"
        case .cannotMap(let file, let reason): "\(file): cannot memory-map: \(reason)"
        case .empty(let file): "\(file): file is empty"
        }
    }
}
