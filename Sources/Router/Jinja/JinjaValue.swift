import Foundation

/// A JSON-like value handed to a chat template (messages, tools, extra keyword arguments).
///
/// Objects keep their keys in insertion order, because Python dicts do and templates that
/// print or `tojson` a request's arguments must reproduce the client's key order.
public enum JinjaValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    case object(OrderedObject)
}

/// String-keyed map that remembers insertion order (the shape of a Python dict built from JSON).
public struct OrderedObject: Sendable, Equatable, Sequence {
    public private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    public init() {}

    public init(_ pairs: [(String, JinjaValue)]) {
        for (key, value) in pairs { self[key] = value }
    }

    public var count: Int { keys.count }

    /// Setting an existing key keeps its original position (as a Python dict does).
    public subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public func makeIterator() -> AnyIterator<(key: String, value: JinjaValue)> {
        var index = 0
        return AnyIterator {
            guard index < keys.count else { return nil }
            defer { index += 1 }
            let key = keys[index]
            return (key, storage[key]!)
        }
    }
}

extension JinjaValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JinjaValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self = .object(OrderedObject(elements)) }
}

/// Why a JSON document could not be read, with the byte offset where reading stopped.
public enum JinjaJSONError: Error, CustomStringConvertible, Equatable {
    case unexpectedEnd
    case unexpectedByte(UInt8, offset: Int)
    case invalidNumber(offset: Int)
    case invalidEscape(offset: Int)
    case invalidUTF8(offset: Int)
    case trailingData(offset: Int)

    public var description: String {
        switch self {
        case .unexpectedEnd: "JSON ended unexpectedly"
        case .unexpectedByte(let byte, let offset): "unexpected byte 0x\(String(byte, radix: 16)) in JSON at offset \(offset)"
        case .invalidNumber(let offset): "invalid JSON number at offset \(offset)"
        case .invalidEscape(let offset): "invalid JSON string escape at offset \(offset)"
        case .invalidUTF8(let offset): "invalid UTF-8 in JSON string at offset \(offset)"
        case .trailingData(let offset): "unexpected data after the JSON value at offset \(offset)"
        }
    }
}

extension JinjaValue {
    /// Parses one JSON document (RFC 8259, as strict as Python's `json.loads`) keeping object key
    /// order. Integers without fraction or exponent become `.int` (as Python makes them `int`),
    /// everything else numeric becomes `.double`. The router's request parser is built on this one.
    public static func parseJSON(_ data: Data) throws(JinjaJSONError) -> JinjaValue {
        var reader = JSONReader(bytes: [UInt8](data))
        reader.skipWhitespace()
        let value = try reader.readValue(depth: 0)
        reader.skipWhitespace()
        if reader.position != reader.bytes.count { throw JinjaJSONError.trailingData(offset: reader.position) }
        return value
    }
}

private struct JSONReader {
    let bytes: [UInt8]
    var position = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    func peek() throws(JinjaJSONError) -> UInt8 {
        guard position < bytes.count else { throw JinjaJSONError.unexpectedEnd }
        return bytes[position]
    }

    mutating func expect(_ literal: String, value: JinjaValue) throws(JinjaJSONError) -> JinjaValue {
        for byte in literal.utf8 {
            guard position < bytes.count else { throw JinjaJSONError.unexpectedEnd }
            guard bytes[position] == byte else { throw JinjaJSONError.unexpectedByte(bytes[position], offset: position) }
            position += 1
        }
        return value
    }

    mutating func readValue(depth: Int) throws(JinjaJSONError) -> JinjaValue {
        guard depth < 512 else { throw JinjaJSONError.unexpectedByte(try peek(), offset: position) }
        switch try peek() {
        case UInt8(ascii: "{"):
            position += 1
            var object = OrderedObject()
            skipWhitespace()
            if try peek() == UInt8(ascii: "}") { position += 1; return .object(object) }
            while true {
                skipWhitespace()
                guard try peek() == UInt8(ascii: "\"") else { throw JinjaJSONError.unexpectedByte(bytes[position], offset: position) }
                let key = try readString()
                skipWhitespace()
                guard try peek() == UInt8(ascii: ":") else { throw JinjaJSONError.unexpectedByte(bytes[position], offset: position) }
                position += 1
                skipWhitespace()
                object[key] = try readValue(depth: depth + 1)
                skipWhitespace()
                let next = try peek()
                position += 1
                if next == UInt8(ascii: "}") { return .object(object) }
                guard next == UInt8(ascii: ",") else { throw JinjaJSONError.unexpectedByte(next, offset: position - 1) }
            }
        case UInt8(ascii: "["):
            position += 1
            var elements: [JinjaValue] = []
            skipWhitespace()
            if try peek() == UInt8(ascii: "]") { position += 1; return .array(elements) }
            while true {
                skipWhitespace()
                elements.append(try readValue(depth: depth + 1))
                skipWhitespace()
                let next = try peek()
                position += 1
                if next == UInt8(ascii: "]") { return .array(elements) }
                guard next == UInt8(ascii: ",") else { throw JinjaJSONError.unexpectedByte(next, offset: position - 1) }
            }
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: "t"): return try expect("true", value: .bool(true))
        case UInt8(ascii: "f"): return try expect("false", value: .bool(false))
        case UInt8(ascii: "n"): return try expect("null", value: .none)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try readNumber()
        case let byte:
            throw JinjaJSONError.unexpectedByte(byte, offset: position)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, nothing looser.
    mutating func readNumber() throws(JinjaJSONError) -> JinjaValue {
        let start = position
        var isInteger = true
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < bytes.count, isDigit(bytes[position]) else { throw JinjaJSONError.invalidNumber(offset: start) }
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else {
            skipDigits()
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            isInteger = false
            position += 1
            guard position < bytes.count, isDigit(bytes[position]) else { throw JinjaJSONError.invalidNumber(offset: start) }
            skipDigits()
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            isInteger = false
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard position < bytes.count, isDigit(bytes[position]) else { throw JinjaJSONError.invalidNumber(offset: start) }
            skipDigits()
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if isInteger, let value = Int(text) { return .int(value) }
        guard let value = Double(text) else { throw JinjaJSONError.invalidNumber(offset: start) }
        return .double(value)
    }

    func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    mutating func skipDigits() {
        while position < bytes.count, isDigit(bytes[position]) { position += 1 }
    }

    mutating func readHex4() throws(JinjaJSONError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw JinjaJSONError.unexpectedEnd }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw JinjaJSONError.invalidEscape(offset: position)
            }
            value = value * 16 + digit
            position += 1
        }
        return value
    }

    mutating func readString() throws(JinjaJSONError) -> String {
        position += 1  // opening quote
        var utf8: [UInt8] = []
        while true {
            guard position < bytes.count else { throw JinjaJSONError.unexpectedEnd }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                break
            }
            // RFC 8259 (and Python's strict mode) wants control characters escaped.
            if byte < 0x20 { throw JinjaJSONError.unexpectedByte(byte, offset: position) }
            if byte != UInt8(ascii: "\\") {
                utf8.append(byte)
                position += 1
                continue
            }
            position += 1
            guard position < bytes.count else { throw JinjaJSONError.unexpectedEnd }
            let escape = bytes[position]
            position += 1
            switch escape {
            case UInt8(ascii: "\""): utf8.append(0x22)
            case UInt8(ascii: "\\"): utf8.append(0x5C)
            case UInt8(ascii: "/"): utf8.append(0x2F)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var code = try readHex4()
                if (0xD800..<0xDC00).contains(code), position + 1 < bytes.count,
                    bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
                {
                    let save = position
                    position += 2
                    let low = try readHex4()
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        position = save
                    }
                }
                // A lone surrogate cannot live in a Swift string; U+FFFD stands in for it.
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                utf8.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw JinjaJSONError.invalidEscape(offset: position - 1)
            }
        }
        guard let string = String(validating: utf8, as: UTF8.self) else {
            throw JinjaJSONError.invalidUTF8(offset: position)
        }
        return string
    }
}
