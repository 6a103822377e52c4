/// Turns a stream of token bytes into text without ever splitting a UTF-8 character: bytes of
/// an unfinished character wait for the next token. Bytes that can never become a character
/// are replaced by U+FFFD, as a full decode would.
public struct UTF8StreamDecoder: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// Appends bytes; returns the text that is complete.
    public mutating func append(_ bytes: [UInt8]) -> String {
        pending.append(contentsOf: bytes)
        let complete = completePrefixLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[0..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// At the end of the stream: whatever is left, with U+FFFD for an unfinished character.
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// The length of the longest prefix that does not end inside a character that may still be
    /// completed.
    private func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let count = bytes.count
        // Look at most 3 bytes back for the lead byte of an unfinished character.
        var index = count - 1
        var continuation = 0
        while index >= 0, continuation < 3, bytes[index] & 0xC0 == 0x80 {
            continuation += 1
            index -= 1
        }
        guard index >= 0 else { return count }
        let lead = bytes[index]
        let expected: Int
        switch lead {
        case 0xC2...0xDF: expected = 2
        case 0xE0...0xEF: expected = 3
        case 0xF0...0xF4: expected = 4
        default: return count
        }
        let have = count - index
        return have < expected ? index : count
    }
}
