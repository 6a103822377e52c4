/// GPT-2's reversible map between bytes and printable characters: the vocabulary files of byte-level
/// BPE models spell every byte as one character (space is `Ġ`, newline `Ċ`).
enum ByteLevel {
    /// byte -> scalar
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// scalar -> byte, for scalars below 0x144 (-1 where unmapped).
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (b, scalar) in byteToScalar.enumerated() { table[Int(scalar)] = Int16(b) }
        return table
    }()

    /// The raw bytes a vocabulary string stands for, or nil if it has a character outside the map.
    static func decode(_ token: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(token.utf8.count)
        for scalar in token.unicodeScalars {
            let v = Int(scalar.value)
            guard v < scalarToByte.count, scalarToByte[v] >= 0 else { return nil }
            bytes.append(UInt8(scalarToByte[v]))
        }
        return bytes
    }

    /// Bytes for decoding: mapped characters become their byte, others stay as their UTF-8 (HF's ByteLevel decoder).
    static func decodeLenient(_ token: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for scalar in token.unicodeScalars {
            let v = Int(scalar.value)
            if v < scalarToByte.count, scalarToByte[v] >= 0 {
                bytes.append(UInt8(scalarToByte[v]))
            } else {
                bytes.append(contentsOf: Array(String(scalar).utf8))
            }
        }
        return bytes
    }
}

/// SentencePiece conventions: U+2581 stands for a space, `<0xXX>` tokens for raw bytes.
enum SentencePiece {
    static let spaceMarker = "\u{2581}"

    /// The byte of a `<0xXX>` token.
    static func byteValue(of token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, utf8[0] == 0x3C, utf8[1] == 0x30, utf8[2] == 0x78, utf8[5] == 0x3E else { return nil }
        return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
    }

    static func unescape(_ token: String) -> [UInt8] {
        Array(token.replacingScalars(of: spaceMarker, with: " ").utf8)
    }
}

extension String {
    /// Replaces every occurrence of `target` by its UTF-8 bytes, ignoring grapheme clusters: Foundation's
    /// `replacingOccurrences` would miss a space followed by a combining mark, tokenizers must not.
    func replacingScalars(of target: String, with replacement: String) -> String {
        let source = Array(utf8), pattern = Array(target.utf8), substitute = Array(replacement.utf8)
        guard !pattern.isEmpty, source.count >= pattern.count else { return self }
        var output: [UInt8] = []
        output.reserveCapacity(source.count + source.count / 4)
        var i = 0
        while i < source.count {
            if source[i] == pattern[0], i + pattern.count <= source.count,
               source[i..<(i + pattern.count)].elementsEqual(pattern) {
                output.append(contentsOf: substitute)
                i += pattern.count
            } else {
                output.append(source[i])
                i += 1
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Byte-wise prefix test (`hasPrefix` compares whole characters).
    func hasScalarPrefix(_ prefix: String) -> Bool { utf8.starts(with: prefix.utf8) }
}

/// Tokens that end a turn in chat models; when a vocabulary has one as a control/special token,
/// generation stops on it too.
enum EndOfTurnNames {
    static let all: Set<String> = [
        "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>", "_<EOT>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>", "<|return|>",
        "<|end_of_turn|>", "</s>", "<turn|>",
    ]
}
