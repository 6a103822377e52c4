import Foundation

/// HF's `BertNormalizer` (and llama.cpp's WPM preprocessing, which does the same).
struct BertNormalization: Sendable, Equatable {
    /// Drops NUL, U+FFFD and other-category scalars (Cc Cf Cn Co Cs) except \t \n \r; then whitespace becomes a space.
    var cleanText: Bool
    /// Puts spaces around CJK ideographs, so each is a word.
    var chineseCharacters: Bool
    /// NFD, then drops non-spacing marks.
    var stripAccents: Bool
    var lowercase: Bool

    static let otherCategories: Set<Unicode.GeneralCategory> = [.control, .format, .unassigned, .privateUse, .surrogate]

    static func isChineseCharacter(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }

    func apply(_ text: String) -> String {
        if text.utf8.allSatisfy({ $0 < 0x80 }) { return applyASCII(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 8)
        func append(_ scalar: Unicode.Scalar) { UTF8.encode(scalar) { bytes.append($0) } }
        for scalar in text.unicodeScalars {
            let v = scalar.value
            if cleanText {
                if v == 0 || v == 0xFFFD { continue }
                let isTabOrLineBreak = v == 0x09 || v == 0x0A || v == 0x0D
                // Controls go before whitespace becomes a space: U+0085 is both, and dropped.
                if !isTabOrLineBreak, Self.otherCategories.contains(scalar.properties.generalCategory) { continue }
                if isTabOrLineBreak || scalar.properties.isWhitespace {
                    bytes.append(0x20)
                    continue
                }
            }
            if chineseCharacters && Self.isChineseCharacter(v) {
                bytes.append(0x20)
                append(scalar)
                bytes.append(0x20)
            } else {
                append(scalar)
            }
        }
        var result = String(decoding: bytes, as: UTF8.self)
        if stripAccents {
            bytes.removeAll(keepingCapacity: true)
            for scalar in result.decomposedStringWithCanonicalMapping.unicodeScalars
            where scalar.properties.generalCategory != .nonspacingMark {
                append(scalar)
            }
            result = String(decoding: bytes, as: UTF8.self)
        }
        return lowercase ? result.lowercased() : result
    }

    /// The same on ASCII text, byte by byte: no accents or ideographs there, controls are C0 and DEL.
    private func applyASCII(_ text: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if cleanText {
                if byte == 0x09 || byte == 0x0A || byte == 0x0D {
                    output.append(0x20)
                    continue
                }
                if byte < 0x20 || byte == 0x7F { continue }
            }
            output.append(lowercase && byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte)
        }
        return String(decoding: output, as: UTF8.self)
    }
}

/// SentencePiece's precompiled character map (HF `Precompiled`, the `precompiled_charsmap` of a `.model`):
/// a little-endian u32 trie size, a darts-clone double-array trie of that many bytes over the source
/// strings, then NUL-terminated replacement strings the trie's values point into.
struct PrecompiledCharsmap: Sendable, Equatable {
    private let units: [UInt32]
    private let replacements: [UInt8]

    init?(_ data: [UInt8]) {
        guard data.count >= 4 else { return nil }
        let trieSize = Int(UInt32(data[0]) | UInt32(data[1]) << 8 | UInt32(data[2]) << 16 | UInt32(data[3]) << 24)
        guard trieSize % 4 == 0, 4 + trieSize <= data.count else { return nil }
        var units = [UInt32](repeating: 0, count: trieSize / 4)
        for i in units.indices {
            let o = 4 + 4 * i
            units[i] = UInt32(data[o]) | UInt32(data[o + 1]) << 8 | UInt32(data[o + 2]) << 16 | UInt32(data[o + 3]) << 24
        }
        self.units = units
        replacements = Array(data[(4 + trieSize)...])
    }

    /// Calls `body(length, replacement)` for each key that is a prefix of `key`, shortest first, until it
    /// returns false. Keys never contain NUL.
    private func forEachPrefix(of key: some Collection<UInt8>, _ body: (Int, ArraySlice<UInt8>) -> Bool) {
        guard !units.isEmpty else { return }
        // A unit: bit 8 has-leaf, bits 10... offset (shifted 8 more when bit 9 is set), low byte the label
        // (bit 31 marks a leaf unit, whose low 31 bits are the value).
        @inline(__always) func offset(_ unit: UInt32) -> Int { Int((unit >> 10) << ((unit & (1 << 9)) >> 6)) }
        var position = offset(units[0])
        var length = 0
        for byte in key {
            if byte == 0 { return }
            length += 1
            position ^= Int(byte)
            guard position < units.count else { return }
            let unit = units[position]
            guard unit & (1 << 31 | 0xFF) == UInt32(byte) else { return }
            position ^= offset(unit)
            guard position < units.count else { return }
            if unit & (1 << 8) != 0 {
                let start = Int(units[position] & 0x7FFF_FFFF)
                guard start < replacements.count else { return }
                let end = replacements[start...].firstIndex(of: 0) ?? replacements.count
                if !body(length, replacements[start..<end]) { return }
            }
        }
    }

    /// The replacement of the shortest key that is a prefix of `key` (what HF takes).
    func shortestReplacement(_ key: some Collection<UInt8>) -> ArraySlice<UInt8>? {
        var found: ArraySlice<UInt8>?
        forEachPrefix(of: key) { _, replacement in
            found = replacement
            return false
        }
        return found
    }

    /// The longest key that is a prefix of `key`: its length and replacement (what SentencePiece and llama.cpp take).
    func longestReplacement(_ key: some Collection<UInt8>) -> (length: Int, replacement: ArraySlice<UInt8>)? {
        var found: (Int, ArraySlice<UInt8>)?
        forEachPrefix(of: key) { length, replacement in
            found = (length, replacement)
            return true
        }
        return found
    }

    /// As HF applies it: per grapheme cluster shorter than 6 bytes, the replacement found for it if any;
    /// otherwise scalar by scalar.
    func apply(_ text: String) -> String {
        var text = text
        let isASCII = text.utf8.allSatisfy { $0 < 0x80 }
        // Grapheme cluster ends (UTF-8 offsets); in ASCII text every byte is one, except CR LF.
        var clusterEnds: [Int] = []
        if !isASCII {
            clusterEnds.reserveCapacity(text.utf8.count)
            var offset = 0
            for character in text {
                offset += character.utf8.count
                clusterEnds.append(offset)
            }
        }
        return text.withUTF8 { bytes in
            var output: [UInt8] = []
            output.reserveCapacity(bytes.count + bytes.count / 8)
            var start = 0
            var cluster = 0
            while start < bytes.count {
                let end: Int
                if isASCII {
                    end = bytes[start] == 0x0D && start + 1 < bytes.count && bytes[start + 1] == 0x0A ? start + 2 : start + 1
                } else {
                    end = clusterEnds[cluster]
                    cluster += 1
                }
                if end - start < 6, let replaced = shortestReplacement(UnsafeBufferPointer(rebasing: bytes[start..<end])) {
                    output.append(contentsOf: replaced)
                    start = end
                    continue
                }
                var i = start
                while i < end {
                    let lead = bytes[i]
                    let scalarEnd = min(end, i + (lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4))
                    let scalar = UnsafeBufferPointer(rebasing: bytes[i..<scalarEnd])
                    // A one-scalar cluster was looked up already.
                    if scalarEnd - i < end - start, let replaced = shortestReplacement(scalar) {
                        output.append(contentsOf: replaced)
                    } else {
                        output.append(contentsOf: scalar)
                    }
                    i = scalarEnd
                }
                start = end
            }
            return String(decoding: output, as: UTF8.self)
        }
    }
}

/// SentencePiece's own normalization as llama.cpp's UGM runs it: longest-match charsmap replacement over
/// the text, spaces spelled U+2581, a marker in front of the text (`add_dummy_prefix`), and with
/// `remove_extra_whitespaces` every run of spaces one marker before the next word and none at the ends.
struct SentencePieceNormalizer: Sendable, Equatable {
    var charsmap: PrecompiledCharsmap?
    var addDummyPrefix: Bool
    var removeExtraWhitespaces: Bool

    func apply(_ text: String) -> String {
        let input = Array(text.utf8)
        let marker = Array(SentencePiece.spaceMarker.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(input.count + input.count / 4 + 3)
        var markerPrepended = false
        var inWord = false
        var i = 0
        while i < input.count {
            let rest = input[i...]
            let normalized: ArraySlice<UInt8>
            if let match = charsmap?.longestReplacement(rest) {
                normalized = match.replacement
                i += match.length
            } else {
                let lead = input[i]
                let length = min(input.count - i, lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4)
                normalized = input[i..<(i + length)]
                i += length
            }
            for byte in normalized {
                if byte != 0x20 {
                    if !inWord {
                        inWord = true
                        if (addDummyPrefix && !markerPrepended) || removeExtraWhitespaces {
                            output.append(contentsOf: marker)
                            markerPrepended = true
                        }
                    }
                    output.append(byte)
                } else {
                    inWord = false
                    if !removeExtraWhitespaces { output.append(contentsOf: marker) }
                }
            }
        }
        return String(decoding: output, as: UTF8.self)
    }
}
