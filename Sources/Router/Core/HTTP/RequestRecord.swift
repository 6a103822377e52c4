import NIOConcurrencyHelpers

/// What one HTTP request did, filled in while it runs (from the endpoint and the tasks relaying
/// its tokens) and read once for its access-log line.
public final class RequestRecord: Sendable {
    public let id: String
    private let started = ContinuousClock.now
    private struct State {
        var promptTokens: Int?
        var completionTokens = 0
        var firstToken: ContinuousClock.Instant?
        var error: String?
        var user: String?
    }
    private let state = NIOLockedValueBox(State())

    public init(id: String) { self.id = id }

    func prompted(tokens: Int) { state.withLockedValue { $0.promptTokens = tokens } }

    func generatedToken() {
        let now = ContinuousClock.now
        state.withLockedValue { state in
            state.completionTokens += 1
            if state.firstToken == nil { state.firstToken = now }
        }
    }

    /// The client's `user` field, as OpenAI's API takes it for abuse tracking.
    func user(_ user: String) { state.withLockedValue { $0.user = user } }

    func failed(_ message: String) { state.withLockedValue { $0.error = message } }

    /// The fields of the access-log line, in a fixed order.
    func summary(now: ContinuousClock.Instant = .now) -> [(String, String)] {
        let state = state.withLockedValue { $0 }
        func seconds(_ duration: Duration) -> String { String(format: "%.3f", duration.timeInterval) }
        var fields: [(String, String)] = [("seconds", seconds(now - started))]
        if let user = state.user { fields.append(("user", user)) }
        if let prompt = state.promptTokens {
            fields.append(("prompt_tokens", "\(prompt)"))
            fields.append(("completion_tokens", "\(state.completionTokens)"))
        }
        if let first = state.firstToken { fields.append(("ttft", seconds(first - started))) }
        if let error = state.error { fields.append(("error", error)) }
        return fields
    }
}
