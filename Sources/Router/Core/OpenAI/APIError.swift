/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, CustomStringConvertible, Equatable, Sendable {
    public var status: Int
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Sent as `Retry-After` (seconds) with the error.
    public var retryAfterSeconds: Int?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil,
                retryAfterSeconds: Int? = nil) {
        self.retryAfterSeconds = retryAfterSeconds
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "HTTP \(status) \(type): \(message)" }

    public var json: JSONValue {
        .object([
            ("error", .object([
                ("message", .string(message)),
                ("type", .string(type)),
                ("param", param.map(JSONValue.string) ?? .null),
                ("code", code.map(JSONValue.string) ?? .null),
            ])),
        ])
    }

    /// A request the server understood but cannot accept (bad value, wrong type, missing field).
    public static func invalidRequest(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static func invalidType(_ param: String, expected: String, got value: JSONValue) -> APIError {
        .invalidRequest("'\(param)' must be \(expected), got \(value.typeName)", param: param, code: "invalid_type")
    }

    public static func invalidValue(_ param: String, _ reason: String) -> APIError {
        .invalidRequest("'\(param)' \(reason)", param: param, code: "invalid_value")
    }

    public static func missing(_ param: String) -> APIError {
        .invalidRequest("'\(param)' is a required property", param: param, code: "missing_required_parameter")
    }

    public static func modelNotFound(_ model: String) -> APIError {
        APIError(status: 404, message: "The model '\(model)' does not exist", type: "invalid_request_error",
                 param: "model", code: "model_not_found")
    }

    public static func notFound(method: String, path: String) -> APIError {
        APIError(status: 404, message: "Unknown route: \(method) \(path)", type: "invalid_request_error",
                 param: nil, code: "unknown_url")
    }

    public static func methodNotAllowed(method: String, path: String, allowed: [String]) -> APIError {
        APIError(status: 405, message: "\(path) does not answer \(method); it answers \(allowed.joined(separator: ", "))",
                 type: "invalid_request_error", param: nil, code: "method_not_allowed")
    }

    /// No `Authorization: Bearer` header on a `/v1` route of a server started with `--api-key`.
    public static let missingAPIKey = APIError(
        status: 401,
        message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        type: "invalid_request_error", param: nil, code: "invalid_api_key")

    /// A bearer token that is not the server's `--api-key` (the key itself is never echoed).
    public static let incorrectAPIKey = APIError(
        status: 401, message: "Incorrect API key provided.", type: "invalid_request_error", param: nil,
        code: "invalid_api_key")

    public static func requestTooLarge(limit: Int) -> APIError {
        APIError(status: 413, message: "the request body is larger than \(limit) bytes", type: "invalid_request_error",
                 param: nil, code: "request_too_large")
    }

    public static func tooManyConnections(limit: Int) -> APIError {
        APIError(status: 503, message: "the server has \(limit) connections open, its limit; retry after closing one",
                 type: "service_unavailable", param: nil, code: "too_many_connections")
    }

    /// The waiting queue is full: a 429 asking the client to come back in a second (the queue
    /// moves by a step at a time, so any longer fixed wait would only leave capacity idle).
    public static func queueFull(_ reason: String) -> APIError {
        APIError(status: 429, message: reason, type: "rate_limit_error", param: nil, code: "queue_full",
                 retryAfterSeconds: 1)
    }

    public static func workersUnavailable(_ reason: String) -> APIError {
        APIError(status: 503, message: reason, type: "service_unavailable", param: nil, code: "workers_unavailable")
    }

    public static func internalError(_ reason: String) -> APIError {
        APIError(status: 500, message: reason, type: "internal_server_error", param: nil, code: nil)
    }
}
