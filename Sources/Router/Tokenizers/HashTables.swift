#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Merge ranks keyed by the pair of token ids they join: open addressing over two flat arrays, so the
/// BPE inner loop does one multiply and (usually) one probe per lookup, with no hashing of strings.
struct MergeTable: Sendable {
    static let absent = UInt64.max
    private var keys: [UInt64]
    /// rank << 32 | merged id
    private var values: [UInt64]
    private let mask: Int
    private(set) var count = 0

    init(expectedCount: Int) {
        var capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        keys = Array(repeating: MergeTable.absent, count: capacity)
        values = Array(repeating: 0, count: capacity)
        mask = capacity - 1
    }

    @inline(__always)
    private static func key(_ left: TokenID, _ right: TokenID) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(of key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// Keeps the first rank given for a pair (the earliest merge line wins, as in llama.cpp).
    mutating func insert(left: TokenID, right: TokenID, rank: UInt32, merged: TokenID) {
        let k = Self.key(left, right)
        var i = slot(of: k)
        while keys[i] != Self.absent {
            if keys[i] == k { return }
            i = (i + 1) & mask
        }
        keys[i] = k
        values[i] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
        count += 1
    }

    /// rank << 32 | merged id, or `MergeTable.absent`.
    @inline(__always)
    func lookup(_ left: TokenID, _ right: TokenID) -> UInt64 {
        let k = Self.key(left, right)
        return keys.withUnsafeBufferPointer { keys in
            var i = slot(of: k)
            while true {
                let found = keys[i]
                if found == k { return values.withUnsafeBufferPointer { $0[i] } }
                if found == Self.absent { return Self.absent }
                i = (i + 1) & mask
            }
        }
    }
}

/// A hash table from byte strings to Int64 values that looks up borrowed bytes without allocating.
struct ByteStringTable: Sendable {
    private struct Slot {
        var hash: UInt64  // 0 = empty
        var offset: Int32
        var length: Int32
        var value: Int64
    }

    private var storage: [UInt8] = []
    private var slots: [Slot]
    private var mask: Int
    private(set) var count = 0

    init(expectedCount: Int = 16) {
        var capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        slots = Array(repeating: Slot(hash: 0, offset: 0, length: 0, value: 0), count: capacity)
        mask = capacity - 1
    }

    @inline(__always)
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(bytes.count)
        var i = 0
        let n = bytes.count
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            while i + 8 <= n {
                h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
                h ^= h >> 29
                i += 8
            }
            while i < n {
                h = (h ^ UInt64(bytes[i])) &* 0x0000_0100_0000_01B3
                i += 1
            }
        }
        h ^= h >> 32
        return h | 1
    }

    func find(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        let h = Self.hash(bytes)
        return slots.withUnsafeBufferPointer { slots in
            storage.withUnsafeBufferPointer { storage in
                var i = Int(truncatingIfNeeded: h >> 7) & mask
                while true {
                    let slot = slots[i]
                    if slot.hash == 0 { return nil }
                    if slot.hash == h, Int(slot.length) == bytes.count,
                       bytes.count == 0 || memcmp(storage.baseAddress! + Int(slot.offset), bytes.baseAddress!, bytes.count) == 0 {
                        return slot.value
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }

    func find(_ bytes: [UInt8]) -> Int64? {
        bytes.withUnsafeBufferPointer { find($0) }
    }

    /// Inserts unless the key is present; returns false when it was.
    @discardableResult
    mutating func insert(_ bytes: UnsafeBufferPointer<UInt8>, value: Int64) -> Bool {
        if find(bytes) != nil { return false }
        if (count + 1) * 2 > slots.count { grow() }
        let h = Self.hash(bytes)
        var i = Int(truncatingIfNeeded: h >> 7) & mask
        while slots[i].hash != 0 { i = (i + 1) & mask }
        slots[i] = Slot(hash: h, offset: Int32(storage.count), length: Int32(bytes.count), value: value)
        storage.append(contentsOf: bytes)
        count += 1
        return true
    }

    @discardableResult
    mutating func insert(_ bytes: [UInt8], value: Int64) -> Bool {
        bytes.withUnsafeBufferPointer { insert($0, value: value) }
    }

    mutating func removeAll() {
        storage.removeAll(keepingCapacity: true)
        for i in slots.indices { slots[i].hash = 0 }
        count = 0
    }

    private mutating func grow() {
        let old = slots
        slots = Array(repeating: Slot(hash: 0, offset: 0, length: 0, value: 0), count: old.count * 2)
        mask = slots.count - 1
        for slot in old where slot.hash != 0 {
            var i = Int(truncatingIfNeeded: slot.hash >> 7) & mask
            while slots[i].hash != 0 { i = (i + 1) & mask }
            slots[i] = slot
        }
    }
}

/// A trie over byte strings whose edges live in one open-addressing table keyed by (node, byte): walking
/// a text costs one probe per byte and allocates nothing. Longest-match (WordPiece) and every-prefix
/// (Unigram) searches walk it from a node and read `value(at:)` on the way.
struct ByteTrie: Sendable {
    static let root: Int32 = 0
    static let none: Int32 = -1
    private static let empty = UInt64.max

    /// node << 8 | byte, or `empty`
    private var keys: [UInt64]
    private var children: [Int32]
    private var mask: Int
    private var edges = 0
    /// Per node: the value stored for the string that ends there, or `none`.
    private var values: [Int32] = [ByteTrie.none]

    init(expectedBytes: Int = 16) {
        var capacity = 16
        while capacity < expectedBytes * 2 { capacity <<= 1 }
        keys = Array(repeating: ByteTrie.empty, count: capacity)
        children = Array(repeating: ByteTrie.none, count: capacity)
        mask = capacity - 1
    }

    @inline(__always)
    private func slot(of key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The child of `node` along `byte`, or `none`.
    @inline(__always)
    func child(_ node: Int32, _ byte: UInt8) -> Int32 {
        let key = UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte)
        return keys.withUnsafeBufferPointer { keys in
            var i = slot(of: key)
            while true {
                let found = keys[i]
                if found == key { return children.withUnsafeBufferPointer { $0[i] } }
                if found == Self.empty { return Self.none }
                i = (i + 1) & mask
            }
        }
    }

    @inline(__always)
    func value(at node: Int32) -> Int32 { values.withUnsafeBufferPointer { $0[Int(node)] } }

    /// The node `bytes` lead to from `node`, or `none`.
    func walk(_ bytes: some Sequence<UInt8>, from node: Int32 = ByteTrie.root) -> Int32 {
        var node = node
        for byte in bytes {
            node = child(node, byte)
            if node == Self.none { return node }
        }
        return node
    }

    /// Stores `value` for `bytes` unless a value is there already (the first token with a spelling wins).
    mutating func insert(_ bytes: some Sequence<UInt8>, value: Int32) {
        var node = Self.root
        for byte in bytes {
            var next = child(node, byte)
            if next == Self.none {
                next = Int32(values.count)
                values.append(Self.none)
                addEdge(UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte), next)
            }
            node = next
        }
        if values[Int(node)] == Self.none { values[Int(node)] = value }
    }

    private mutating func addEdge(_ key: UInt64, _ child: Int32) {
        if (edges + 1) * 2 > keys.count { grow() }
        var i = slot(of: key)
        while keys[i] != Self.empty { i = (i + 1) & mask }
        keys[i] = key
        children[i] = child
        edges += 1
    }

    private mutating func grow() {
        let oldKeys = keys, oldChildren = children
        keys = Array(repeating: Self.empty, count: oldKeys.count * 2)
        children = Array(repeating: Self.none, count: oldKeys.count * 2)
        mask = keys.count - 1
        for (i, key) in oldKeys.enumerated() where key != Self.empty {
            var j = slot(of: key)
            while keys[j] != Self.empty { j = (j + 1) & mask }
            keys[j] = key
            children[j] = oldChildren[i]
        }
    }
}
