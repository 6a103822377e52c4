/// Finds stop strings in streamed text. Text that could still turn into a stop string is held
/// back until the next piece settles it, so a client never receives part of a stop string.
/// Matching is on Unicode scalars (what Python's `str` indexes), not on grapheme clusters.
public struct StopStringMatcher: Sendable {
    public let stopStrings: [String]
    private let stops: [[Unicode.Scalar]]
    private let longestStop: Int
    private var pending: [Unicode.Scalar] = []
    public private(set) var stopped = false

    public init(stopStrings: [String]) {
        self.stopStrings = stopStrings
        stops = stopStrings.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty }
        longestStop = stops.map(\.count).max() ?? 0
    }

    /// The result of feeding one piece of text.
    public struct Outcome: Sendable, Equatable {
        /// Text safe to send now.
        public var text: String
        /// A stop string was found: `text` ends right before it and nothing more will come.
        public var stopped: Bool
    }

    /// Adds newly decoded text; returns what can be released.
    public mutating func feed(_ text: String) -> Outcome {
        guard !stopped else { return Outcome(text: "", stopped: true) }
        guard !stops.isEmpty else { return Outcome(text: text, stopped: false) }
        // A stop string can only end inside the new text, so it starts at most longestStop-1
        // scalars before it.
        let searchFrom = max(0, pending.count - (longestStop - 1))
        pending.append(contentsOf: text.unicodeScalars)
        if let stopAt = earliestMatch(from: searchFrom) {
            stopped = true
            let released = String(String.UnicodeScalarView(pending[0..<stopAt]))
            pending.removeAll()
            return Outcome(text: released, stopped: true)
        }
        let held = heldBackCount()
        let releasedCount = pending.count - held
        let released = String(String.UnicodeScalarView(pending[0..<releasedCount]))
        pending.removeFirst(releasedCount)
        return Outcome(text: released, stopped: false)
    }

    /// At the end of generation: the text still held back (it never became a stop string).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return stopped ? "" : String(String.UnicodeScalarView(pending))
    }

    /// Index of the first scalar of the earliest stop string occurring in `pending` at or after `from`.
    private func earliestMatch(from: Int) -> Int? {
        var best: Int?
        for stop in stops where stop.count <= pending.count {
            var start = from
            while start + stop.count <= pending.count {
                if best.map({ start >= $0 }) ?? false { break }
                if pending[start] == stop[0], pending[start..<start + stop.count].elementsEqual(stop) {
                    best = start
                    break
                }
                start += 1
            }
        }
        return best
    }

    /// Length of the longest tail of `pending` that is a proper prefix of some stop string.
    private func heldBackCount() -> Int {
        var held = 0
        for stop in stops {
            var length = min(stop.count - 1, pending.count)
            while length > held {
                if pending[(pending.count - length)...].elementsEqual(stop[0..<length]) {
                    held = length
                    break
                }
                length -= 1
            }
        }
        return held
    }
}
