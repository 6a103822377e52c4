import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import Logging

/// Where the HTTP server listens and how much it accepts.
public struct HTTPServerSettings: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// Largest request body accepted, in bytes; a larger one is a 413.
    public var maxRequestBytes: Int
    /// How long a keep-alive connection may wait for the first byte of its next request before
    /// it is closed. Longer than the 5 s after which httpx (the official OpenAI client's
    /// transport) stops reusing an idle connection: with equal clocks a client can send a request
    /// on a connection just as the server closes it. nil: never.
    public var idleTimeout: Duration?
    /// From a request's first byte, how long its headers may take; from its head, its body. A
    /// connection that overruns is closed. nil: no limit.
    public var requestReadTimeout: Duration?
    /// Open connections served at once; requests on connections beyond it are answered 503 and
    /// the connection closed.
    public var maxConnections: Int
    /// The bearer token `/v1/…` requests must carry; nil: no authentication.
    public var apiKey: String?
    /// One access-log line per request (`--disable-log-requests` turns them off).
    public var logRequests: Bool

    public init(host: String = "127.0.0.1", port: Int = 8000, maxRequestBytes: Int = 32 * 1024 * 1024,
                idleTimeout: Duration? = .seconds(10), requestReadTimeout: Duration? = .seconds(10),
                maxConnections: Int = 1000, apiKey: String? = nil, logRequests: Bool = true) {
        self.apiKey = apiKey
        self.logRequests = logRequests
        self.requestReadTimeout = requestReadTimeout
        self.host = host
        self.port = port
        self.maxRequestBytes = maxRequestBytes
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }
}

/// Answers `/health`: true while the workers can run steps.
public typealias WorkerHealthProbe = @Sendable () async -> Bool

/// The OpenAI-compatible HTTP surface: routes, error shapes and server-sent events.
public enum OpenAIServer {
    /// The routes, usable alone in tests (`Application(router:)` / HummingbirdTesting).
    public static func makeRouter(endpoints: OpenAIEndpoints, settings: HTTPServerSettings = HTTPServerSettings(),
                                  logger: Logger = Logger(label: "tessel.http"),
                                  health: @escaping WorkerHealthProbe) -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        // Outermost, so that it sees the response every error became.
        router.add(middleware: AccessLogMiddleware(logger: logger, logs: settings.logRequests))
        router.add(middleware: OpenAIErrorMiddleware())
        if let key = settings.apiKey { router.add(middleware: APIKeyMiddleware(key: key)) }
        let limit = settings.maxRequestBytes
        let scheduler = endpoints.scheduler

        // The probe is the truth (a restarted worker is healthy again before any new step); the
        // last step failure only explains a 503. A healthy answer also shows what the scheduler
        // holds, so a client (or a test) can watch work drain.
        let healthResponse: @Sendable () async throws -> Response = {
            if await health() {
                let statistics = await scheduler.statistics
                return jsonResponse(.object([
                    ("status", "ok"),
                    ("sequences_running", .int(statistics.running)),
                    ("sequences_waiting", .int(statistics.waiting)),
                    ("kv_blocks_used", .int(statistics.usedBlocks)),
                    ("kv_blocks_total", .int(statistics.usedBlocks + statistics.freeBlocks)),
                ]), status: .ok)
            }
            let failure = await scheduler.lastStepFailure
            throw APIError.workersUnavailable("the workers are not available" + (failure.map { ": \($0)" } ?? ""))
        }
        let modelsResponse: @Sendable () async throws -> Response = { jsonResponse(endpoints.models(), status: .ok) }
        let versionResponse: @Sendable () async throws -> Response = { jsonResponse(endpoints.version(), status: .ok) }
        let modelName = endpoints.model.name
        let metricsResponse: @Sendable () async throws -> Response = {
            let text = scheduler.metrics.render(modelName: modelName, statistics: await scheduler.statistics)
            var headers = HTTPFields()
            headers[.contentType] = PrometheusExposition.contentType
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        let pageResponse: @Sendable () async throws -> Response = {
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: ChatPage.html)))
        }
        // GET routes answer HEAD too: the same status and headers, no body.
        for (path, response) in [("/", pageResponse), ("health", healthResponse), ("v1/models", modelsResponse), ("version", versionResponse),
                                 ("metrics", metricsResponse)] {
            router.get(RouterPath(path)) { _, _ in try await response() }
            router.head(RouterPath(path)) { _, _ in
                let full = try await response()
                return Response(status: full.status, headers: full.headers)
            }
        }
        router.get("v1/models/{id}") { _, context in
            jsonResponse(try endpoints.model(id: context.parameters.require("id")), status: .ok)
        }
        router.post("v1/completions") { request, context -> Response in
            let body = try await collect(request, limit: limit)
            let record = context.record
            return try await generate(context) { try await endpoints.completions(body: body, record: record) }
        }
        router.post("v1/chat/completions") { request, context -> Response in
            let body = try await collect(request, limit: limit)
            let record = context.record
            return try await generate(context) { try await endpoints.chatCompletions(body: body, record: record) }
        }
        router.post("tokenize") { request, _ -> Response in
            jsonResponse(try endpoints.tokenize(body: try await collect(request, limit: limit)), status: .ok)
        }
        router.post("detokenize") { request, _ -> Response in
            jsonResponse(try endpoints.detokenize(body: try await collect(request, limit: limit)), status: .ok)
        }
        return router
    }

    /// The methods each route answers, as registered in `makeRouter`: what a 405 lists in Allow.
    static let allowedMethods: [String: [HTTPRequest.Method]] = [
        "/": [.get, .head],
        "/health": [.get, .head],
        "/v1/models": [.get, .head],
        "/v1/completions": [.post],
        "/v1/chat/completions": [.post],
        "/version": [.get, .head],
        "/metrics": [.get, .head],
        "/tokenize": [.post],
        "/detokenize": [.post],
    ]

    /// Runs a generating endpoint for as long as its client is there: a non-streaming answer is
    /// cancelled when the client hangs up, a stream ends (during prefill too, before it has
    /// written anything that could fail).
    static func generate(_ context: ServerRequestContext,
                         _ endpoint: @escaping @Sendable () async throws -> EndpointResponse) async throws -> Response {
        guard let presence = await context.clientPresence() else { return respond(try await endpoint()) }
        switch try await presence.cancellingWhenGone(endpoint) {
        case .stream(let chunks): return respond(.stream(presence.ending(chunks)))
        case let other: return respond(other)
        }
    }

    /// The HTTP/1.1 server with Tessel's connection handlers: the connection cap, client presence,
    /// and the keep-alive and request-read clocks.
    public static func server(settings: HTTPServerSettings) -> HTTPServerBuilder {
        let counter = ConnectionCounter(limit: settings.maxConnections)
        return .http1(configuration: HTTP1Channel.Configuration(
            additionalChannelHandlers: [
                ConnectionTimeoutHandler(idle: settings.idleTimeout, request: settings.requestReadTimeout),
                ConnectionLimitHandler(counter: counter), ClientPresenceHandler(),
            ]))
    }

    /// The server as a `Service` (put it last in the `ServiceGroup`: it stops first and drains).
    public static func makeApplication(endpoints: OpenAIEndpoints, settings: HTTPServerSettings,
                                       health: @escaping WorkerHealthProbe, logger: Logger,
                                       onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in })
        -> some ApplicationProtocol
    {
        Application(
            router: makeRouter(endpoints: endpoints, settings: settings, logger: logger, health: health),
            server: server(settings: settings),
            configuration: ApplicationConfiguration(address: .hostname(settings.host, port: settings.port),
                                                    serverName: "tessel"),
            onServerRunning: onServerRunning,
            logger: logger)
    }

    static func collect(_ request: Request, limit: Int) async throws -> Data {
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw APIError.requestTooLarge(limit: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw APIError.requestTooLarge(limit: limit)
        }
    }

    static func respond(_ response: EndpointResponse) -> Response {
        switch response {
        case .json(let value):
            return jsonResponse(value, status: .ok)
        case .stream(let chunks):
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                for await chunk in chunks {
                    try await writer.write(ByteBuffer(string: ServerSentEvents.event(chunk)))
                }
                try await writer.write(ByteBuffer(string: ServerSentEvents.done))
                try await writer.finish(nil)
            })
        }
    }
}

/// The framing of OpenAI's streams: one `data:` line per JSON chunk, a blank line after each,
/// and a final `data: [DONE]`.
public enum ServerSentEvents {
    public static func event(_ payload: JSONValue) -> String { "data: \(payload.serialized)\n\n" }
    public static let done = "data: [DONE]\n\n"

    /// Splits an event stream back into its `data:` payloads (for tests and clients).
    public static func payloads(in text: String) -> [String] {
        text.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n", omittingEmptySubsequences: true)
            let data = lines.filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
            return data.isEmpty ? nil : data.joined(separator: "\n")
        }
    }
}

func jsonResponse(_ value: JSONValue, status: HTTPResponse.Status) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized)))
}

/// Turns every error, including Hummingbird's own 404 for an unknown route, into OpenAI's shape.
struct OpenAIErrorMiddleware: RouterMiddleware {
    typealias Context = ServerRequestContext

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            context.record?.failed(error.message)
            var response = jsonResponse(error.json, status: HTTPResponse.Status(code: error.status))
            if let seconds = error.retryAfterSeconds { response.headers[.retryAfter] = "\(seconds)" }
            return response
        } catch let error as HTTPError {
            let apiError: APIError
            if error.status == .notFound, let allowed = OpenAIServer.allowedMethods[request.uri.path] {
                // A known path asked with a method it does not answer.
                let names = allowed.map(\.rawValue)
                var response = jsonResponse(APIError.methodNotAllowed(method: request.method.rawValue, path: request.uri.path,
                                                                      allowed: names).json,
                                            status: .methodNotAllowed)
                response.headers[.allow] = names.joined(separator: ", ")
                return response
            } else if error.status == .notFound {
                apiError = .notFound(method: request.method.rawValue, path: request.uri.path)
            } else {
                apiError = APIError(status: error.status.code, message: error.body ?? error.status.reasonPhrase,
                                    type: error.status.code >= 500 ? "internal_server_error" : "invalid_request_error")
            }
            return jsonResponse(apiError.json, status: HTTPResponse.Status(code: apiError.status))
        } catch {
            let apiError = APIError.internalError("\(error)")
            context.record?.failed(apiError.message)
            return jsonResponse(apiError.json, status: .internalServerError)
        }
    }
}

/// One access-log line per request, written when its response body has been sent: the request
/// id, method, path, status, seconds taken and, for generation, prompt and completion tokens and
/// the time to the first token (an error's message too). The id is the client's `x-request-id`
/// when it sent a usable one (up to 128 visible ASCII characters), else a new one; the response
/// carries it back in `x-request-id`, and the request's sequences carry it into the step loop's
/// log lines.
struct AccessLogMiddleware: RouterMiddleware {
    typealias Context = ServerRequestContext
    static var requestIDField: HTTPField.Name { HTTPField.Name("x-request-id")! }

    let logger: Logger
    /// False: the id is still given and carried, no line is written.
    let logs: Bool

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let record = RequestRecord(id: Self.requestID(offered: request.headers[Self.requestIDField]))
        var context = context
        context.record = record
        var response = try await next(request, context)
        response.headers[Self.requestIDField] = record.id
        guard logs else { return response }
        let body = response.body, logger = self.logger
        let method = request.method.rawValue, path = request.uri.path, status = response.status.code
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            func log(_ outcome: String) {
                var metadata: Logger.Metadata = ["request_id": "\(record.id)"]
                for (key, value) in record.summary() { metadata[key] = "\(value)" }
                logger.info("\(method) \(path) \(status)\(outcome)", metadata: metadata)
            }
            do {
                try await body.write(writer)
            } catch {
                log(" (response not completed: \(error))")
                throw error
            }
            log("")
        }
        return response
    }

    static func requestID(offered: String?) -> String {
        if let offered, !offered.isEmpty, offered.utf8.count <= 128,
           offered.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            return offered
        }
        return "req-" + String(UInt64.random(in: .min ... .max), radix: 16)
    }
}
