import HTTPTypes
import Hummingbird

/// `--api-key`: every `/v1/…` request must carry `Authorization: Bearer <key>`, as vLLM checks
/// it; `/health`, `/metrics`, `/version`, `/tokenize` and `/detokenize` stay open (probes and
/// scrapers carry no key). Anything else is a 401 in OpenAI's shape.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = ServerRequestContext
    let key: String

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") || request.uri.path == "/v1" else { return try await next(request, context) }
        guard let authorization = request.headers[.authorization] else { throw APIError.missingAPIKey }
        guard authorization.hasPrefix("Bearer "),
              Self.equalInConstantTime(authorization.utf8.dropFirst(7), key.utf8) else {
            throw APIError.incorrectAPIKey
        }
        return try await next(request, context)
    }

    /// Compares every byte whatever the first difference, so the time taken does not tell a
    /// client how much of a guessed key was right.
    static func equalInConstantTime<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
        where A.Element == UInt8, B.Element == UInt8
    {
        var difference: UInt8 = a.count == b.count ? 0 : 1
        var left = a.makeIterator(), right = b.makeIterator()
        for _ in 0..<max(a.count, b.count) {
            difference |= (left.next() ?? 0) ^ (right.next() ?? 0)
        }
        return difference == 0
    }
}
