import Foundation
import JSON
import Tokenizers
import Wire

/// The cost of structured output per constrained token, for `router bench-grammar`: a valid
/// document is tokenized as a model would write it and walked token by token, timing each mask
/// (what the scheduler pays before every constrained step).
public enum GrammarBenchmark {
    public struct Result: Sendable, CustomStringConvertible {
        public let tokens: Int
        public let compileMicroseconds: Double
        /// Each mask of the first constrained request a server sees (every table filled on the way).
        public let cold: [Double]
        /// Each mask of a request whose schema is new to a server that has served others (the
        /// masks shared by every grammar, as of any JSON string, are known).
        public let newSchema: [Double]
        /// Each mask of a later request with the same schema (its grammar cached with its
        /// tables; the sequence's own mask cache starts empty).
        public let warm: [Double]

        static func percentile(_ values: [Double], _ fraction: Double) -> Double {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))]
        }

        public var description: String {
            func line(_ name: String, _ values: [Double]) -> String {
                String(format: "%@: p50 %.1f µs, p99 %.1f µs, max %.1f µs, mean %.1f µs per constrained token", name,
                       Self.percentile(values, 0.5), Self.percentile(values, 0.99), values.max() ?? 0,
                       values.reduce(0, +) / Double(max(values.count, 1)))
            }
            return String(format: "%d tokens; compile %.0f µs\n", tokens, compileMicroseconds)
                + line("  first request on a fresh server", cold) + "\n" + line("  a schema new to the server     ", newSchema)
                + "\n" + line("  the same schema again          ", warm)
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        case refused(position: Int, piece: String)
        case incomplete
        public var description: String {
            switch self {
            case .refused(let position, let piece): return "the document is not valid under the schema: token \(position) (\(piece)) refused"
            case .incomplete: return "the document ends before the schema is satisfied"
            }
        }
    }

    public static func run(request: StructuredOutputRequest, document: String, tokenizer: any Tokenizer,
                           endTokens: Set<TokenID>, repetitions: Int = 5) throws -> Result {
        let vocabulary = GrammarVocabulary(tokenizer: tokenizer, endTokens: endTokens)
        let tokens = tokenizer.encode(document, addSpecialTokens: false, parseSpecial: false) + [endTokens.min()!]
        func microseconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1000 }
        let compileStart = DispatchTime.now().uptimeNanoseconds
        let automaton = try request.grammar()
        let compile = microseconds(since: compileStart)
        func walk(_ tables: GrammarMaskTables) throws -> [Double] {
            let matcher = GrammarMatcher(tables: tables)
            var times: [Double] = []
            for (position, token) in tokens.enumerated() {
                let start = DispatchTime.now().uptimeNanoseconds
                let mask = matcher.allowedTokens()
                _ = mask.wireBytes
                times.append(microseconds(since: start))
                guard mask.contains(token), matcher.accept(token) else {
                    throw Failure.refused(position: position, piece: String(decoding: tokenizer.pieceBytes(token, skipSpecialTokens: false), as: UTF8.self))
                }
            }
            guard matcher.isFinished else { throw Failure.incomplete }
            return times
        }
        let cold = try walk(GrammarMaskTables(automaton: automaton, vocabulary: vocabulary))
        var newSchema: [Double] = [], warm: [Double] = []
        for _ in 0..<max(1, repetitions) {
            let tables = GrammarMaskTables(automaton: try request.grammar(), vocabulary: vocabulary)
            newSchema += try walk(tables)
            warm += try walk(tables)
        }
        return Result(tokens: tokens.count, compileMicroseconds: compile, cold: cold, newSchema: newSchema, warm: warm)
    }
}
