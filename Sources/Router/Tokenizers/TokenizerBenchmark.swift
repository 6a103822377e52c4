import Foundation

/// Encoding throughput on one thread, for `router bench-tokenizer`.
public enum TokenizerBenchmark {
    public struct Result: Sendable, CustomStringConvertible {
        public let bytes: Int
        public let tokens: Int
        /// The first encode, with the tokenizer's word cache empty (if the tokenizer was just loaded).
        public let coldSeconds: Double
        /// The fastest of the repeated encodes, cache warm.
        public let warmSeconds: Double
        public var coldMegabytesPerSecond: Double { Double(bytes) / 1_000_000 / coldSeconds }
        public var warmMegabytesPerSecond: Double { Double(bytes) / 1_000_000 / warmSeconds }
        public var description: String {
            String(format: "%d bytes -> %d tokens; cold %.4f s = %.2f MB/s; warm best %.4f s = %.2f MB/s",
                   bytes, tokens, coldSeconds, coldMegabytesPerSecond, warmSeconds, warmMegabytesPerSecond)
        }
    }

    /// Encodes `text` once (cold), then `repetitions` more times, keeping the fastest (warm).
    /// Plain text: no BOS/EOS, special tokens not parsed.
    public static func run(tokenizer: any Tokenizer, text: String, repetitions: Int = 5) -> Result {
        func timed() -> (Int, Double) {
            let start = DispatchTime.now().uptimeNanoseconds
            let count = tokenizer.encode(text, addSpecialTokens: false, parseSpecial: false).count
            return (count, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let (tokens, cold) = timed()
        var best = cold
        for _ in 0..<max(0, repetitions) { best = min(best, timed().1) }
        return Result(bytes: text.utf8.count, tokens: tokens, coldSeconds: cold, warmSeconds: best)
    }
}
