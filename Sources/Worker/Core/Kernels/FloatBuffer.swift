#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size, zero-filled float32 allocation owned by one object: weights, KV blocks and
/// scratch live in these so hot loops see plain pointers and no ARC or bounds checks.
/// `calloc` hands large requests fresh zero pages from the kernel, so a big KV pool costs
/// resident memory only as blocks are first written.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        self.count = count
        guard let raw = calloc(max(count, 1), MemoryLayout<Float>.stride) else {
            fatalError("cannot allocate \(count) floats")
        }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.update(from: base, count: values.count) }
        }
    }

    deinit {
        free(pointer)
    }

    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }

    public func toArray() -> [Float] { Array(buffer) }
}
