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

    /// Drops the pages wholly inside `range` (a part of this mapping) from the process's
    /// resident memory: for a tensor that was copied elsewhere at load. The mapping stays valid;
    /// a later read faults the pages back in from the file.
    public func releaseResidentPages(_ range: UnsafeRawBufferPointer) {
        guard let start = range.baseAddress, range.count > 0 else { return }
        precondition(start >= bytes.baseAddress! && start + range.count <= bytes.baseAddress! + bytes.count,
                     "\(path): released range lies outside the mapping")
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lower = (Int(bitPattern: start) + page - 1) / page * page
        let upper = (Int(bitPattern: start) + range.count) / page * page
        guard upper > lower else { return }
        // Advice only: a failure leaves the pages resident, which is never wrong.
        _ = madvise(UnsafeMutableRawPointer(bitPattern: lower), upper - lower, MADV_DONTNEED)
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
