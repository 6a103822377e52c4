/// Decoding of ggml tensor encodings into `Float`, block by block over raw buffers.
///
/// The arithmetic follows ggml's reference dequantisers operation for operation (the same
/// products in the same order, no fused multiply-adds), so results equal those of ggml and of
/// the `gguf` Python package bit for bit.
public enum Dequantizer {
    /// Encodings this build can decode.
    public static let supportedTypes: Set<GGMLType> = [
        .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0,
        .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq4_nl, .iq4_xs,
    ]

    public static func canDecode(_ type: GGMLType) -> Bool { supportedTypes.contains(type) }

    /// Decodes `count` elements stored as `type` at the start of `bytes` into `output[0..<count]`.
    /// `count` must be a whole number of blocks.
    public static func dequantize(type: GGMLType, bytes: UnsafeRawBufferPointer, count: Int,
                                  into output: UnsafeMutableBufferPointer<Float>) throws {
        guard canDecode(type) else { throw DequantizationError.unsupportedType(type) }
        guard count >= 0, count % type.blockSize == 0 else {
            throw DequantizationError.partialBlock(type: type, count: count)
        }
        let blocks = count / type.blockSize
        let needed = blocks * type.bytesPerBlock
        guard bytes.count >= needed else {
            throw DequantizationError.inputTooShort(type: type, count: count, needed: needed, available: bytes.count)
        }
        guard output.count >= count else {
            throw DequantizationError.outputTooSmall(count: count, available: output.count)
        }
        guard count > 0 else { return }
        let src = bytes.baseAddress!
        let dst = output.baseAddress!
        switch type {
        case .f32: dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .f16: decodeF16(src, count, dst)
        case .bf16: decodeBF16(src, count, dst)
        case .q4_0: decodeQ4_0(src, blocks, dst)
        case .q4_1: decodeQ4_1(src, blocks, dst)
        case .q5_0: decodeQ5_0(src, blocks, dst)
        case .q5_1: decodeQ5_1(src, blocks, dst)
        case .q8_0: decodeQ8_0(src, blocks, dst)
        case .q2_K: decodeQ2_K(src, blocks, dst)
        case .q3_K: decodeQ3_K(src, blocks, dst)
        case .q4_K: decodeQ4_K(src, blocks, dst)
        case .q5_K: decodeQ5_K(src, blocks, dst)
        case .q6_K: decodeQ6_K(src, blocks, dst)
        case .q8_K: decodeQ8_K(src, blocks, dst)
        case .iq4_nl: decodeIQ4_NL(src, blocks, dst)
        case .iq4_xs: decodeIQ4_XS(src, blocks, dst)
        default: throw DequantizationError.unsupportedType(type)
        }
    }

    /// Decodes ggml rows `rows` of `tensor` (a row is `dimensions[0]` contiguous elements) into
    /// `output[0..<rows.count * columnCount]`.
    public static func dequantizeRows(of tensor: GGUFTensorInfo, in file: GGUFFile, rows: Range<Int>,
                                      into output: UnsafeMutableBufferPointer<Float>) throws {
        guard canDecode(tensor.type) else {
            throw GGUFError.unsupportedEncoding(file: file.url.path, tensor: tensor.name, type: tensor.type.description)
        }
        guard rows.lowerBound >= 0, rows.upperBound <= tensor.rowCount else {
            throw WeightStoreError.rowsOutOfRange(file: file.url.path, tensor: tensor.name, rows: rows,
                                                  rowCount: tensor.rowCount)
        }
        let columns = tensor.columnCount
        guard output.count >= rows.count * columns else {
            throw WeightStoreError.outputTooSmall(file: file.url.path, tensor: tensor.name,
                                                  needed: rows.count * columns, available: output.count)
        }
        try file.withBytes(of: tensor, rows: rows) { raw in
            try dequantize(type: tensor.type, bytes: raw, count: rows.count * columns, into: output)
        }
    }

    /// All of `tensor`, decoded, in ggml order (row-major over `dimensions.reversed()`).
    public static func dequantize(_ tensor: GGUFTensorInfo, in file: GGUFFile) throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: tensor.elementCount) { buffer, initialized in
            try dequantizeRows(of: tensor, in: file, rows: 0..<tensor.rowCount, into: buffer)
            initialized = tensor.elementCount
        }
    }
}

public enum DequantizationError: Error, CustomStringConvertible, Equatable {
    case unsupportedType(GGMLType)
    case partialBlock(type: GGMLType, count: Int)
    case inputTooShort(type: GGMLType, count: Int, needed: Int, available: Int)
    case outputTooSmall(count: Int, available: Int)

    public var description: String {
        switch self {
        case .unsupportedType(let type):
            "cannot decode \(type) data (supported: \(Dequantizer.supportedTypes.map(\.description).sorted().joined(separator: ", ")))"
        case .partialBlock(let type, let count):
            "\(count) elements is not a whole number of \(type) blocks of \(type.blockSize)"
        case .inputTooShort(let type, let count, let needed, let available):
            "\(count) \(type) elements need \(needed) bytes, only \(available) given"
        case .outputTooSmall(let count, let available):
            "output holds \(available) floats, \(count) needed"
        }
    }
}

// MARK: - Scalar conversions

/// IEEE half to single precision, exact for every input (subnormals, infinities, NaN payloads).
@inline(__always)
func floatFromHalf(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let magnitude = UInt32(h & 0x7FFF) << 13
    // Reinterpreting the shifted bits as a float gives the value scaled by 2^-112 (the exponent
    // bias difference); multiplying back is exact for normals and subnormals alike.
    let scaled = Float(bitPattern: magnitude) * Float(bitPattern: 0x7780_0000)  // 2^112
    let isSpecial = (h & 0x7C00) == 0x7C00
    let bits = isSpecial ? (magnitude | 0x7F80_0000) : scaled.bitPattern
    return Float(bitPattern: bits | sign)
}

@inline(__always)
func floatFromBFloat16(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

@inline(__always)
private func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    floatFromHalf(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self).littleEndian)
}

@inline(__always)
private func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
}

@inline(__always)
private func signedByte(_ p: UnsafeRawPointer, _ offset: Int) -> Int8 {
    p.load(fromByteOffset: offset, as: Int8.self)
}

// MARK: - Plain encodings

private func decodeF16(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    for i in 0..<count { dst[i] = half(src, 2 * i) }
}

private func decodeBF16(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        dst[i] = floatFromBFloat16(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)
    }
}

// MARK: - 32-element blocks

/// The 18-byte blocks of Q4_0 and IQ4_NL: fp16 d, then 16 bytes of nibbles; element j < 16 is
/// the low nibble of byte j, j >= 16 the high nibble of byte j-16; value d * level(q). The two
/// encodings differ only in what a nibble stands for.
@inline(__always)
private func decodeNibbleBlocks(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>,
                                level: (UInt8) -> Float) {
    for b in 0..<blocks {
        let block = src + b * 18
        let out = dst + b * 32
        let d = half(block, 0)
        for j in 0..<16 {
            let q = byte(block, 2 + j)
            out[j] = d * level(q & 0x0F)
            out[j + 16] = d * level(q >> 4)
        }
    }
}

// Q4_0: nibbles centred on 8; value d * (q - 8).
private func decodeQ4_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    decodeNibbleBlocks(src, blocks, dst) { Float(Int32($0) - 8) }
}

// Q4_1: fp16 d, fp16 m, nibbles as Q4_0; value d * q + m.
private func decodeQ4_1(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 20
        let out = dst + b * 32
        let d = half(block, 0)
        let m = half(block, 2)
        for j in 0..<16 {
            let q = byte(block, 4 + j)
            out[j] = d * Float(q & 0x0F) + m
            out[j + 16] = d * Float(q >> 4) + m
        }
    }
}

// Q5_0: fp16 d, 32 high bits (bit j for element j), nibbles as Q4_0; value d * (q - 16).
private func decodeQ5_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 22
        let out = dst + b * 32
        let d = half(block, 0)
        let high = block.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian
        for j in 0..<16 {
            let q = byte(block, 6 + j)
            let lo = Int32(q & 0x0F) | Int32((high >> UInt32(j)) & 1) << 4
            let hi = Int32(q >> 4) | Int32((high >> UInt32(j + 16)) & 1) << 4
            out[j] = d * Float(lo - 16)
            out[j + 16] = d * Float(hi - 16)
        }
    }
}

// Q5_1: fp16 d, fp16 m, high bits and nibbles as Q5_0; value d * q + m.
private func decodeQ5_1(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 24
        let out = dst + b * 32
        let d = half(block, 0)
        let m = half(block, 2)
        let high = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
        for j in 0..<16 {
            let q = byte(block, 8 + j)
            let lo = UInt32(q & 0x0F) | ((high >> UInt32(j)) & 1) << 4
            let hi = UInt32(q >> 4) | ((high >> UInt32(j + 16)) & 1) << 4
            out[j] = d * Float(lo) + m
            out[j + 16] = d * Float(hi) + m
        }
    }
}

// Q8_0: fp16 d, 32 signed bytes; value q * d.
private func decodeQ8_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 34
        let out = dst + b * 32
        let d = half(block, 0)
        for j in 0..<32 { out[j] = Float(signedByte(block, 2 + j)) * d }
    }
}

/// The non-linear 4-bit grid of IQ4_NL and IQ4_XS.
private let iq4Grid: (Float, Float, Float, Float, Float, Float, Float, Float,
                      Float, Float, Float, Float, Float, Float, Float, Float) =
    (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)

@inline(__always)
private func iq4Value(_ index: UInt8) -> Float {
    withUnsafeBytes(of: iq4Grid) { $0.load(fromByteOffset: Int(index) * 4, as: Float.self) }
}

// IQ4_NL: nibbles index the grid; value d * grid[q].
private func decodeIQ4_NL(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    decodeNibbleBlocks(src, blocks, dst, level: iq4Value)
}

// MARK: - 256-element super-blocks (K-quants)

/// The 6-bit scale and min of sub-block `j` (0..<8) of a Q4_K/Q5_K block, packed in 12 bytes.
@inline(__always)
private func scaleAndMinK4(_ scales: UnsafeRawPointer, _ j: Int) -> (Float, Float) {
    if j < 4 {
        return (Float(byte(scales, j) & 63), Float(byte(scales, j + 4) & 63))
    }
    let scale = (byte(scales, j + 4) & 0x0F) | ((byte(scales, j - 4) >> 6) << 4)
    let minimum = (byte(scales, j + 4) >> 4) | ((byte(scales, j) >> 6) << 4)
    return (Float(scale), Float(minimum))
}

/// Multipliers and offsets of the sub-block pair `p` (0..<4) of a Q4_K/Q5_K block: sub-block
/// 2p takes the low nibbles of its 32 bytes, 2p+1 the high ones.
@inline(__always)
private func pairScalesK4(_ scales: UnsafeRawPointer, _ p: Int, d: Float, dmin: Float)
    -> (d0: Float, min0: Float, d1: Float, min1: Float) {
    let (sc0, m0) = scaleAndMinK4(scales, 2 * p)
    let (sc1, m1) = scaleAndMinK4(scales, 2 * p + 1)
    return (d * sc0, dmin * m0, d * sc1, dmin * m1)
}

// Q2_K: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit values, fp16 d,
// fp16 dmin. Element e: half h = e/128, shift 2*((e%128)/32), byte 32h + e%32.
private func decodeQ2_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 84
        let out = dst + b * 256
        let d = half(block, 80)
        let dmin = half(block, 82)
        for sub in 0..<16 {
            let sc = byte(block, sub)
            let dl = d * Float(sc & 0x0F)
            let ml = dmin * Float(sc >> 4)
            let e0 = sub * 16
            let h = e0 / 128
            let shift = UInt8(2 * ((e0 % 128) / 32))
            let base = 16 + 32 * h + e0 % 32
            for l in 0..<16 {
                let q = (byte(block, base + l) >> shift) & 3
                out[e0 + l] = dl * Float(q) - ml
            }
        }
    }
}

// Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit values, 12 bytes of packed 6-bit scales,
// fp16 d. The value is (low 2 bits) - 4 when the high bit is clear.
private func decodeQ3_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 110
        let out = dst + b * 256
        let d = half(block, 108)
        let scales = block + 96
        for sub in 0..<16 {
            let low = (byte(scales, sub % 8) >> UInt8(4 * (sub / 8))) & 0x0F
            let highBits = (byte(scales, 8 + sub % 4) >> UInt8(2 * (sub / 4))) & 0x03
            let scale = Int32(Int8(bitPattern: low | (highBits << 4))) - 32
            let dl = d * Float(scale)
            let e0 = sub * 16
            let h = e0 / 128
            let shift = UInt8(2 * ((e0 % 128) / 32))
            let maskBit = UInt8(e0 / 32)
            for l in 0..<16 {
                let e = e0 + l
                let q = Int32((byte(block, 32 + 32 * h + e % 32) >> shift) & 3)
                let highSet = (byte(block, e % 32) >> maskBit) & 1
                out[e] = dl * Float(q - (highSet == 0 ? 4 : 0))
            }
        }
    }
}

// Q4_K: fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles. Pair p of
// 32-element sub-blocks uses bytes 32p..<32p+32: low nibbles first, then high nibbles.
private func decodeQ4_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 144
        let out = dst + b * 256
        let d = half(block, 0)
        let dmin = half(block, 2)
        for p in 0..<4 {
            let (d0, min0, d1, min1) = pairScalesK4(block + 4, p, d: d, dmin: dmin)
            let qs = block + 16 + 32 * p
            let o = out + 64 * p
            for l in 0..<32 {
                let q = byte(qs, l)
                o[l] = d0 * Float(q & 0x0F) - min0
                o[l + 32] = d1 * Float(q >> 4) - min1
            }
        }
    }
}

// Q5_K: as Q4_K with 32 bytes of high bits after the scales: bit j of byte l is the fifth bit
// of element 32j + l.
private func decodeQ5_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 176
        let out = dst + b * 256
        let d = half(block, 0)
        let dmin = half(block, 2)
        let qh = block + 16
        for p in 0..<4 {
            let (d0, min0, d1, min1) = pairScalesK4(block + 4, p, d: d, dmin: dmin)
            let qs = block + 48 + 32 * p
            let o = out + 64 * p
            let bit0 = UInt8(2 * p), bit1 = UInt8(2 * p + 1)
            for l in 0..<32 {
                let q = byte(qs, l)
                let h = byte(qh, l)
                let lo = (q & 0x0F) | (((h >> bit0) & 1) << 4)
                let hi = (q >> 4) | (((h >> bit1) & 1) << 4)
                o[l] = d0 * Float(lo) - min0
                o[l + 32] = d1 * Float(hi) - min1
            }
        }
    }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales, fp16 d.
// Within each 128-element half h: element l + 32t takes nibble (t/2) of ql[64h + l + 32(t%2)]
// and bits 2t of qh[32h + l]; value (d * scale[e/16]) * (q - 32).
private func decodeQ6_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 210
        let out = dst + b * 256
        let d = half(block, 208)
        for h in 0..<2 {
            let ql = block + 64 * h
            let qh = block + 128 + 32 * h
            let o = out + 128 * h
            for t in 0..<4 {
                let nibbleShift = UInt8(4 * (t / 2))
                let lowOffset = 32 * (t % 2)
                let highShift = UInt8(2 * t)
                let dl0 = d * Float(signedByte(block, 192 + 8 * h + 2 * t))
                let dl1 = d * Float(signedByte(block, 192 + 8 * h + 2 * t + 1))
                for l in 0..<32 {
                    let low = (byte(ql, lowOffset + l) >> nibbleShift) & 0x0F
                    let high = (byte(qh, l) >> highShift) & 0x03
                    let q = Int32(low | (high << 4)) - 32
                    o[32 * t + l] = (l < 16 ? dl0 : dl1) * Float(q)
                }
            }
        }
    }
}

// Q8_K: f32 d, 256 signed bytes, 16 int16 block sums (unused here); value d * q.
private func decodeQ8_K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 292
        let out = dst + b * 256
        let d = Float(bitPattern: block.loadUnaligned(as: UInt32.self).littleEndian)
        for j in 0..<256 { out[j] = d * Float(signedByte(block, 4 + j)) }
    }
}

// IQ4_XS: fp16 d, 16 bits of high scale bits, 4 bytes of low scale nibbles, 128 bytes of grid
// indices; sub-block j (32 elements) has scale (low | high << 4) - 32 and uses bytes 16j..<16j+16,
// low nibbles first.
private func decodeIQ4_XS(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + b * 136
        let out = dst + b * 256
        let d = half(block, 0)
        let scalesHigh = block.loadUnaligned(fromByteOffset: 2, as: UInt16.self).littleEndian
        for j in 0..<8 {
            let low = (byte(block, 4 + j / 2) >> UInt8(4 * (j % 2))) & 0x0F
            let high = UInt8((scalesHigh >> UInt16(2 * j)) & 0x03)
            let dl = d * Float(Int32(low | (high << 4)) - 32)
            let qs = block + 8 + 16 * j
            let o = out + 32 * j
            for l in 0..<16 {
                let q = byte(qs, l)
                o[l] = dl * iq4Value(q & 0x0F)
                o[l + 16] = dl * iq4Value(q >> 4)
            }
        }
    }
}
