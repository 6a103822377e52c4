import Foundation

/// JSON as model files hold it (config.json, safetensors headers, shard indexes), parsed.
/// Integers that fit in `Int64` stay exact; other numbers are `Double`. Objects are unordered.
/// (Named apart from the HTTP layer's order-keeping JSON value on purpose.)
public enum ModelJSON: Sendable, Equatable, Decodable, CustomStringConvertible {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([ModelJSON])
    case object([String: ModelJSON])

    public init(from decoder: any Decoder) throws {
        if var list = try? decoder.unkeyedContainer() {
            var items: [ModelJSON] = []
            if let count = list.count { items.reserveCapacity(count) }
            while !list.isAtEnd { items.append(try list.decode(ModelJSON.self)) }
            self = .array(items)
            return
        }
        if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
            var members: [String: ModelJSON] = [:]
            for key in keyed.allKeys { members[key.stringValue] = try keyed.decode(ModelJSON.self, forKey: key) }
            self = .object(members)
            return
        }
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { self = .null }
        else if let b = try? single.decode(Bool.self) { self = .bool(b) }
        else if let i = try? single.decode(Int64.self) { self = .integer(i) }
        else if let d = try? single.decode(Double.self) { self = .number(d) }
        else { self = .string(try single.decode(String.self)) }
    }

    /// Parses `data`; `source` (a path) names the document in the error.
    public static func parse(_ data: Data, source: String) throws -> ModelJSON {
        do {
            return try JSONDecoder().decode(ModelJSON.self, from: data)
        } catch {
            throw ModelJSONError.invalid(source: source, reason: Self.reason(error))
        }
    }

    public static func parse(contentsOf url: URL) throws -> ModelJSON {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelJSONError.unreadable(source: url.path, reason: error.localizedDescription)
        }
        return try parse(data, source: url.path)
    }

    private static func reason(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context):
            let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return underlying ?? context.debugDescription
        default: return "\(error)"
        }
    }

    public subscript(key: String) -> ModelJSON? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public subscript(index: Int) -> ModelJSON? {
        if case .array(let items) = self, items.indices.contains(index) { return items[index] }
        return nil
    }

    public var objectValue: [String: ModelJSON]? { if case .object(let o) = self { o } else { nil } }
    public var arrayValue: [ModelJSON]? { if case .array(let a) = self { a } else { nil } }
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var isNull: Bool { self == .null }

    /// Integers, and floating-point numbers with no fractional part.
    public var intValue: Int? {
        switch self {
        case .integer(let i): return Int(exactly: i)
        case .number(let d): return Int(exactly: d)
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .integer(let i): return Double(i)
        case .number(let d): return d
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .integer(let i): "\(i)"
        case .number(let d): "\(d)"
        case .string(let s): "\"\(s)\""
        case .array(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o):
            "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!.description)" }.joined(separator: ", ") + "}"
        }
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

public enum ModelJSONError: Error, CustomStringConvertible, Equatable {
    case unreadable(source: String, reason: String)
    case invalid(source: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let source, let reason): "\(source): cannot read: \(reason)"
        case .invalid(let source, let reason): "\(source): invalid JSON: \(reason)"
        }
    }
}
