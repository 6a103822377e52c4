/// Splits template source into text and tag tokens, applying Jinja's whitespace rules as
/// transformers configures them (`trim_blocks`, `lstrip_blocks`, `-`/`+` markers, and the
/// removal of one trailing newline of the source).
struct Token: Sendable {
    enum Kind: Sendable, Equatable {
        case text(String)
        case variableBegin, variableEnd, blockBegin, blockEnd
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        case op(String)
        case end
    }
    let kind: Kind
    let line: Int
}

struct Lexer {
    private let bytes: [UInt8]
    private var position = 0
    private var line = 1
    private var lineStarting = true
    private var tokens: [Token] = []
    private let trimBlocks = true
    private let lstripBlocks = true

    init(source: String) {
        // Jinja normalises \r\n and \r to \n and drops one trailing newline of the template.
        var normalized: [UInt8] = []
        normalized.reserveCapacity(source.utf8.count)
        var previousWasCarriageReturn = false
        for byte in source.utf8 {
            if byte == 0x0D {
                normalized.append(0x0A)
            } else if !(byte == 0x0A && previousWasCarriageReturn) {
                normalized.append(byte)
            }
            previousWasCarriageReturn = byte == 0x0D
        }
        if normalized.last == 0x0A { normalized.removeLast() }
        bytes = normalized
    }

    static let maximumTagTokens = 1000

    static func tokenize(_ source: String) throws -> [Token] {
        var lexer = Lexer(source: source)
        try lexer.run()
        return lexer.tokens
    }

    private func byte(_ offset: Int) -> UInt8? {
        offset < bytes.count ? bytes[offset] : nil
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x0B || byte == 0x0C
    }

    private func countNewlines(_ range: Range<Int>) -> Int {
        var count = 0
        for index in range where bytes[index] == 0x0A { count += 1 }
        return count
    }

    private func text(_ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    /// Finds the next `{{`, `{%` or `{#` at or after `from`.
    private func nextTagStart(from: Int) -> Int? {
        var index = from
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "{") {
                let next = bytes[index + 1]
                if next == UInt8(ascii: "{") || next == UInt8(ascii: "%") || next == UInt8(ascii: "#") { return index }
            }
            index += 1
        }
        return nil
    }

    /// Text before a tag, after `-` stripping or `lstrip_blocks`.
    private func strippedTextEnd(textStart: Int, tagStart: Int, sign: UInt8?, isVariable: Bool) -> Int {
        if sign == UInt8(ascii: "-") {
            var end = tagStart
            while end > textStart, Lexer.isSpace(bytes[end - 1]) { end -= 1 }
            // Python's str.rstrip also removes Unicode spaces; templates only put ASCII whitespace here.
            return end
        }
        if sign != UInt8(ascii: "+"), lstripBlocks, !isVariable {
            var lineStart = tagStart
            while lineStart > textStart, bytes[lineStart - 1] != 0x0A { lineStart -= 1 }
            let afterNewline = lineStart > textStart
            if (afterNewline || lineStarting) && lineStart < tagStart
                && (lineStart..<tagStart).allSatisfy({ Lexer.isSpace(bytes[$0]) })
            {
                return lineStart
            }
        }
        return tagStart
    }

    private mutating func emitText(_ range: Range<Int>, strippedEnd: Int) {
        if strippedEnd > range.lowerBound {
            tokens.append(Token(kind: .text(text(range.lowerBound..<strippedEnd)), line: line))
        }
        line += countNewlines(range)
    }

    private mutating func run() throws {
        while position < bytes.count {
            guard let tagStart = nextTagStart(from: position) else {
                let range = position..<bytes.count
                tokens.append(Token(kind: .text(text(range)), line: line))
                line += countNewlines(range)
                position = bytes.count
                break
            }
            let kind = bytes[tagStart + 1]
            var afterOpen = tagStart + 2
            var sign: UInt8?
            if let mark = byte(afterOpen), mark == UInt8(ascii: "-") || mark == UInt8(ascii: "+") {
                sign = mark
                afterOpen += 1
            }
            if kind == UInt8(ascii: "%"), let rawBodyStart = rawBlockBodyStart(after: afterOpen) {
                emitText(position..<tagStart, strippedEnd: strippedTextEnd(
                    textStart: position, tagStart: tagStart, sign: sign, isVariable: false))
                lineStarting = bytes[rawBodyStart - 1] == 0x0A
                line += countNewlines(tagStart..<rawBodyStart)
                try lexRaw(bodyStart: rawBodyStart)
                continue
            }
            emitText(position..<tagStart, strippedEnd: strippedTextEnd(
                textStart: position, tagStart: tagStart, sign: sign, isVariable: kind == UInt8(ascii: "{")))
            position = afterOpen
            switch kind {
            case UInt8(ascii: "#"): try lexComment(openLine: line)
            case UInt8(ascii: "%"): try lexTag(isBlock: true)
            default: try lexTag(isBlock: false)
            }
        }
        tokens.append(Token(kind: .end, line: line))
    }

    private mutating func lexComment(openLine: Int) throws {
        var index = position
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "#") && bytes[index + 1] == UInt8(ascii: "}") {
                var end = index + 2
                let marker = index > position ? bytes[index - 1] : nil
                if marker == UInt8(ascii: "-") {
                    while end < bytes.count, Lexer.isSpace(bytes[end]) { end += 1 }
                } else if marker != UInt8(ascii: "+"), trimBlocks, byte(end) == 0x0A {
                    end += 1
                }
                line += countNewlines(position..<end)
                lineStarting = bytes[end - 1] == 0x0A
                position = end
                return
            }
            index += 1
        }
        throw JinjaError.syntax("missing end of comment tag", line: openLine)
    }

    /// If `{%` at the current tag opens `raw`, the offset where its body begins.
    private func rawBlockBodyStart(after start: Int) -> Int? {
        var index = start
        while let current = byte(index), Lexer.isSpace(current) { index += 1 }
        guard index + 3 <= bytes.count, text(index..<index + 3) == "raw" else { return nil }
        index += 3
        while let current = byte(index), Lexer.isSpace(current) { index += 1 }
        if byte(index) == UInt8(ascii: "-"), byte(index + 1) == UInt8(ascii: "%"), byte(index + 2) == UInt8(ascii: "}") {
            index += 3
            while let current = byte(index), Lexer.isSpace(current) { index += 1 }
            return index
        }
        if byte(index) == UInt8(ascii: "%"), byte(index + 1) == UInt8(ascii: "}") { return index + 2 }
        return nil
    }

    private mutating func lexRaw(bodyStart: Int) throws {
        var search = bodyStart
        while let tagStart = nextTagStart(from: search) {
            search = tagStart + 1
            guard bytes[tagStart + 1] == UInt8(ascii: "%") else { continue }
            var index = tagStart + 2
            var sign: UInt8?
            if let mark = byte(index), mark == UInt8(ascii: "-") || mark == UInt8(ascii: "+") { sign = mark; index += 1 }
            while let current = byte(index), Lexer.isSpace(current) { index += 1 }
            guard index + 6 <= bytes.count, text(index..<index + 6) == "endraw" else { continue }
            index += 6
            while let current = byte(index), Lexer.isSpace(current) { index += 1 }
            var end: Int
            if byte(index) == UInt8(ascii: "+"), byte(index + 1) == UInt8(ascii: "%"), byte(index + 2) == UInt8(ascii: "}") {
                end = index + 3
            } else if byte(index) == UInt8(ascii: "-"), byte(index + 1) == UInt8(ascii: "%"), byte(index + 2) == UInt8(ascii: "}") {
                end = index + 3
                while let current = byte(end), Lexer.isSpace(current) { end += 1 }
            } else if byte(index) == UInt8(ascii: "%"), byte(index + 1) == UInt8(ascii: "}") {
                end = index + 2
                if trimBlocks, byte(end) == 0x0A { end += 1 }
            } else {
                continue
            }
            let bodyLine = line
            let strippedEnd = strippedTextEnd(textStart: bodyStart, tagStart: tagStart, sign: sign, isVariable: false)
            if strippedEnd > bodyStart {
                tokens.append(Token(kind: .text(text(bodyStart..<strippedEnd)), line: bodyLine))
            }
            line += countNewlines(bodyStart..<end)
            lineStarting = bytes[end - 1] == 0x0A
            position = end
            return
        }
        throw JinjaError.syntax("missing end of raw directive", line: line)
    }

    private static func twoCharOperator(_ first: UInt8, _ second: UInt8) -> String? {
        switch (first, second) {
        case (UInt8(ascii: "/"), UInt8(ascii: "/")): "//"
        case (UInt8(ascii: "*"), UInt8(ascii: "*")): "**"
        case (UInt8(ascii: "="), UInt8(ascii: "=")): "=="
        case (UInt8(ascii: "!"), UInt8(ascii: "=")): "!="
        case (UInt8(ascii: "<"), UInt8(ascii: "=")): "<="
        case (UInt8(ascii: ">"), UInt8(ascii: "=")): ">="
        default: nil
        }
    }

    private static func isOperator(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "*"), UInt8(ascii: "%"),
            UInt8(ascii: "~"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "("), UInt8(ascii: ")"),
            UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "="),
            UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "|"), UInt8(ascii: ","), UInt8(ascii: ";"):
            true
        default:
            false
        }
    }

    private mutating func lexTag(isBlock: Bool) throws {
        let openLine = line
        tokens.append(Token(kind: isBlock ? .blockBegin : .variableBegin, line: line))
        let firstToken = tokens.count
        var balance: [UInt8] = []
        while true {
            // Real tags are a few dozen tokens; a bound keeps every expression tree shallow enough
            // to parse and evaluate without exhausting the stack.
            guard tokens.count - firstToken <= Lexer.maximumTagTokens else {
                throw JinjaError.syntax("a tag of more than \(Lexer.maximumTagTokens) tokens", line: openLine)
            }
            while let current = byte(position), Lexer.isSpace(current) {
                if current == 0x0A { line += 1 }
                position += 1
            }
            guard let current = byte(position) else {
                throw JinjaError.syntax("unexpected end of template, expected '\(isBlock ? "%}" : "}}")'", line: openLine)
            }
            if balance.isEmpty, let end = tagEnd(isBlock: isBlock) {
                tokens.append(Token(kind: isBlock ? .blockEnd : .variableEnd, line: line))
                line += countNewlines(position..<end)
                lineStarting = bytes[end - 1] == 0x0A
                position = end
                return
            }
            let tokenLine = line
            if current == UInt8(ascii: "_") || Lexer.isLetter(current) {
                let start = position
                while let next = byte(position), next == UInt8(ascii: "_") || Lexer.isLetter(next) || Lexer.isDigit(next) {
                    position += 1
                }
                tokens.append(Token(kind: .name(text(start..<position)), line: tokenLine))
            } else if Lexer.isDigit(current) {
                tokens.append(Token(kind: try lexNumber(), line: tokenLine))
            } else if current == UInt8(ascii: "'") || current == UInt8(ascii: "\"") {
                tokens.append(Token(kind: .string(try lexString(quote: current)), line: tokenLine))
            } else {
                if let next = byte(position + 1), let twoChar = Lexer.twoCharOperator(current, next) {
                    tokens.append(Token(kind: .op(twoChar), line: tokenLine))
                    position += 2
                    continue
                }
                guard Lexer.isOperator(current) else {
                    throw JinjaError.syntax("unexpected char '\(Character(Unicode.Scalar(current)))'", line: tokenLine)
                }
                switch current {
                case UInt8(ascii: "("): balance.append(UInt8(ascii: ")"))
                case UInt8(ascii: "["): balance.append(UInt8(ascii: "]"))
                case UInt8(ascii: "{"): balance.append(UInt8(ascii: "}"))
                case UInt8(ascii: ")"), UInt8(ascii: "]"), UInt8(ascii: "}"):
                    guard let expected = balance.popLast() else {
                        throw JinjaError.syntax("unexpected '\(Character(Unicode.Scalar(current)))'", line: tokenLine)
                    }
                    guard expected == current else {
                        throw JinjaError.syntax(
                            "unexpected '\(Character(Unicode.Scalar(current)))', expected '\(Character(Unicode.Scalar(expected)))'",
                            line: tokenLine)
                    }
                default: break
                }
                tokens.append(Token(kind: .op(String(Character(Unicode.Scalar(current)))), line: tokenLine))
                position += 1
            }
        }
    }

    /// The offset after the closing delimiter if one starts at `position`.
    private func tagEnd(isBlock: Bool) -> Int? {
        let close = isBlock ? UInt8(ascii: "%") : UInt8(ascii: "}")
        if byte(position) == UInt8(ascii: "-"), byte(position + 1) == close, byte(position + 2) == UInt8(ascii: "}") {
            var end = position + 3
            while let next = byte(end), Lexer.isSpace(next) { end += 1 }
            return end
        }
        if isBlock, byte(position) == UInt8(ascii: "+"), byte(position + 1) == close, byte(position + 2) == UInt8(ascii: "}") {
            return position + 3
        }
        if byte(position) == close, byte(position + 1) == UInt8(ascii: "}") {
            var end = position + 2
            if isBlock, trimBlocks, byte(end) == 0x0A { end += 1 }
            return end
        }
        return nil
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private mutating func lexNumber() throws -> Token.Kind {
        let start = position
        func digits() {
            while let next = byte(position), Lexer.isDigit(next) || (next == UInt8(ascii: "_") && byte(position + 1).map(Lexer.isDigit) == true) {
                position += 1
            }
        }
        digits()
        var isFloat = false
        if byte(position) == UInt8(ascii: "."), let next = byte(position + 1), Lexer.isDigit(next) {
            isFloat = true
            position += 1
            digits()
        }
        if let e = byte(position), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            var look = position + 1
            if let sign = byte(look), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { look += 1 }
            if let digit = byte(look), Lexer.isDigit(digit) {
                isFloat = true
                position = look
                digits()
            }
        }
        let literal = text(start..<position).replacingOccurrences(of: "_", with: "")
        if isFloat {
            guard let value = Double(literal) else { throw JinjaError.syntax("invalid number '\(literal)'", line: line) }
            return .float(value)
        }
        guard let value = Int(literal) else { throw JinjaError.syntax("integer literal '\(literal)' is too large", line: line) }
        return .integer(value)
    }

    /// Reads a quoted literal; escapes follow Python's `unicode-escape` decoding, as Jinja's do.
    private mutating func lexString(quote: UInt8) throws -> String {
        let openLine = line
        position += 1
        var scalars = String.UnicodeScalarView()
        var chunkStart = position
        func flush(_ end: Int) {
            scalars.append(contentsOf: text(chunkStart..<end).unicodeScalars)
        }
        while true {
            guard let current = byte(position) else {
                throw JinjaError.syntax("unterminated string literal", line: openLine)
            }
            if current == quote {
                flush(position)
                position += 1
                return String(scalars)
            }
            if current == 0x0A { line += 1 }
            guard current == UInt8(ascii: "\\"), let escape = byte(position + 1) else {
                position += 1
                continue
            }
            flush(position)
            position += 2
            switch escape {
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "'"): scalars.append("'")
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "a"): scalars.append("\u{07}")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "v"): scalars.append("\u{0B}")
            case 0x0A: line += 1  // backslash-newline continues the line
            case UInt8(ascii: "x"), UInt8(ascii: "u"), UInt8(ascii: "U"):
                let width = escape == UInt8(ascii: "x") ? 2 : (escape == UInt8(ascii: "u") ? 4 : 8)
                guard position + width <= bytes.count, let code = UInt32(text(position..<position + width), radix: 16),
                    let scalar = Unicode.Scalar(code)
                else {
                    throw JinjaError.syntax("invalid \\\(Character(Unicode.Scalar(escape))) escape in string literal", line: line)
                }
                scalars.append(scalar)
                position += width
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var code = UInt32(escape - UInt8(ascii: "0"))
                var taken = 1
                while taken < 3, let digit = byte(position), digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "7") {
                    code = code * 8 + UInt32(digit - UInt8(ascii: "0"))
                    position += 1
                    taken += 1
                }
                scalars.append(Unicode.Scalar(code)!)
            default:
                // Unknown escapes stay as written, backslash included.
                scalars.append("\\")
                position -= 1
            }
            chunkStart = position
        }
    }
}
