import Grammar
import Tokenizers
import Wire

/// The state of one sequence's constrained output (structured output): which tokens may come
/// next, advanced by each sampled token. Owned by one sequence and used only on the scheduler.
public protocol TokenConstraint: AnyObject {
    /// The tokens allowed next, when at most `remainingTokens` more may be generated (this one
    /// included): a constraint narrows them as the budget runs out, so the output can still be
    /// completed within it. Never empty while `isFinished` is false.
    func allowedTokens(remainingTokens: Int) -> TokenMask
    /// Advances past a sampled token; false when it was not allowed.
    func accept(_ token: TokenID) -> Bool
    /// The output is complete and nothing may follow it: the sequence ends with `stop`.
    var isFinished: Bool { get }
}

/// What a request's output must match, as a recipe: each sequence of the request (each of `n`
/// choices, and a preempted one that restarts) starts its own state from it.
public struct OutputConstraint: Sendable, Equatable {
    /// Names the constraint in log lines and equality (two recipes are equal when their
    /// descriptions are: the description is the compiled source).
    public let description: String
    private let start: @Sendable () -> any TokenConstraint

    public init(description: String, start: @escaping @Sendable () -> any TokenConstraint) {
        self.description = description
        self.start = start
    }

    public func makeState() -> any TokenConstraint { start() }

    public static func == (lhs: OutputConstraint, rhs: OutputConstraint) -> Bool { lhs.description == rhs.description }
}

extension GrammarMatcher: TokenConstraint {}
