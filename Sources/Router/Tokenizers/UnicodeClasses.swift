/// The character classes the pre-tokenizer regexes of tokenizer families use, per Unicode scalar,
/// as bit flags. `\p{L}`, `\p{N}`, `\p{P}`, `\p{S}`, `\p{M}` are the Unicode general categories;
/// `\s` is the White_Space property (what Oniguruma and llama.cpp use).
struct ScalarClass: OptionSet, Sendable {
    let rawValue: UInt8
    static let letter = ScalarClass(rawValue: 1)
    static let number = ScalarClass(rawValue: 2)
    static let whitespace = ScalarClass(rawValue: 4)
    static let punctuation = ScalarClass(rawValue: 8)
    static let symbol = ScalarClass(rawValue: 16)
    static let mark = ScalarClass(rawValue: 32)
    /// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}]` and `[\p{Ll}\p{Lm}\p{Lo}]`: the letter cases of the
    /// o200k and Tekken splits (modifier and other letters are both).
    static let upperLike = ScalarClass(rawValue: 64)
    static let lowerLike = ScalarClass(rawValue: 128)

    static func compute(_ value: UInt32) -> ScalarClass {
        guard let scalar = Unicode.Scalar(value) else { return [] }
        let properties = scalar.properties
        var result: ScalarClass = properties.isWhitespace ? .whitespace : []
        switch properties.generalCategory {
        case .uppercaseLetter, .titlecaseLetter:
            result.formUnion([.letter, .upperLike])
        case .lowercaseLetter:
            result.formUnion([.letter, .lowerLike])
        case .modifierLetter, .otherLetter:
            result.formUnion([.letter, .upperLike, .lowerLike])
        case .decimalNumber, .letterNumber, .otherNumber:
            result.insert(.number)
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            result.insert(.punctuation)
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            result.insert(.symbol)
        case .nonspacingMark, .spacingMark, .enclosingMark:
            result.insert(.mark)
        default:
            break
        }
        return result
    }
}

/// Classes of the Basic Multilingual Plane precomputed once (64 KiB); other planes are looked up.
enum ScalarClassTable {
    static let basicPlane: [UInt8] = (0..<0x10000).map { ScalarClass.compute(UInt32($0)).rawValue }

    @inline(__always)
    static func classOf(_ value: UInt32) -> UInt8 {
        value < 0x10000 ? basicPlane.withUnsafeBufferPointer { $0[Int(value)] } : ScalarClass.compute(value).rawValue
    }
}

/// A UTF-8 text decoded into scalars, with their classes and byte offsets, for the pre-tokenizer scanners.
struct ScalarText {
    var scalars: [UInt32] = []
    var classes: [UInt8] = []
    /// Byte offset of scalar i in the UTF-8 source; `byteOffsets[count]` is the byte length.
    var byteOffsets: [Int32] = []

    var count: Int { scalars.count }

    mutating func load(_ bytes: UnsafeBufferPointer<UInt8>) {
        scalars.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        byteOffsets.removeAll(keepingCapacity: true)
        scalars.reserveCapacity(bytes.count)
        classes.reserveCapacity(bytes.count)
        byteOffsets.reserveCapacity(bytes.count + 1)
        let table = ScalarClassTable.basicPlane
        table.withUnsafeBufferPointer { table in
            var i = 0
            let n = bytes.count
            while i < n {
                let b0 = UInt32(bytes[i])
                var value: UInt32
                var length: Int
                // The input comes from a Swift String, so it is valid UTF-8.
                if b0 < 0x80 {
                    value = b0; length = 1
                } else if b0 < 0xE0 {
                    value = (b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F); length = 2
                } else if b0 < 0xF0 {
                    value = (b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F)
                    length = 3
                } else {
                    value = (b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
                        | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F)
                    length = 4
                }
                scalars.append(value)
                classes.append(value < 0x10000 ? table[Int(value)] : ScalarClass.compute(value).rawValue)
                byteOffsets.append(Int32(i))
                i += length
            }
            byteOffsets.append(Int32(n))
        }
    }
}
