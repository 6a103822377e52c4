import NIOConcurrencyHelpers

/// What `/metrics` reports beyond the scheduler's own counts: request latencies, token counts,
/// finished requests and the workers' step times. One instance per server, made where the server
/// is assembled and handed to the scheduler (which observes requests) and the worker cluster
/// (which observes each rank's step); the scrape reads it with the scheduler's statistics.
public final class ServingMetrics: Sendable {
    /// vLLM's buckets, so dashboards built for it read these the same way.
    static let firstTokenBounds = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                                   7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
    static let interTokenBounds = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                                   10.0, 20.0, 40.0, 80.0]
    static let requestBounds = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                                120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
    static let stepBounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
    static let maskBounds = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1]

    struct State {
        var timeToFirstToken = Histogram(upperBounds: firstTokenBounds)
        var interTokenLatency = Histogram(upperBounds: interTokenBounds)
        var requestLatency = Histogram(upperBounds: requestBounds)
        var queueTime = Histogram(upperBounds: requestBounds)
        /// Indexed by rank; grown when a rank first reports.
        var stepSeconds: [Histogram] = []
        var maskSeconds = Histogram(upperBounds: maskBounds)
        var promptTokens = 0
        var generationTokens = 0
        var finished: [FinishReason: Int] = [:]
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    /// A sequence got its first step after `seconds` in the queue.
    func admitted(afterSeconds seconds: Double) { state.withLockedValue { $0.queueTime.observe(seconds) } }

    /// A sequence's first token, `seconds` after it arrived: its prompt of `promptTokens` is done.
    func firstToken(afterSeconds seconds: Double, promptTokens: Int) {
        state.withLockedValue { state in
            state.timeToFirstToken.observe(seconds)
            state.promptTokens += promptTokens
            state.generationTokens += 1
        }
    }

    /// A later token, `seconds` after the sequence's previous one.
    func nextToken(afterSeconds seconds: Double) {
        state.withLockedValue { state in
            state.interTokenLatency.observe(seconds)
            state.generationTokens += 1
        }
    }

    /// A sequence finished (stop or length) `seconds` after it arrived.
    func finished(_ reason: FinishReason, afterSeconds seconds: Double) {
        state.withLockedValue { state in
            state.requestLatency.observe(seconds)
            state.finished[reason, default: 0] += 1
        }
    }

    /// The router computed one structured-output token mask in `seconds`.
    func constraintMask(seconds: Double) { state.withLockedValue { $0.maskSeconds.observe(seconds) } }

    /// One rank's compute time for one step.
    public func step(rank: Int, seconds: Double) {
        state.withLockedValue { state in
            while state.stepSeconds.count <= rank { state.stepSeconds.append(Histogram(upperBounds: Self.stepBounds)) }
            state.stepSeconds[rank].observe(seconds)
        }
    }

    /// The exposition: vLLM's metric names (`vllm:`, labelled with `model_name`) for what vLLM
    /// reports, `tessel:` for the per-rank step time it has no counterpart for.
    public func render(modelName: String, statistics: SchedulerStatistics) -> String {
        let state = state.withLockedValue { $0 }
        let model = [("model_name", modelName)]
        var out = PrometheusExposition()
        out.gauge("vllm:num_requests_running", help: "Sequences in the running batch.", labels: model,
                  value: Double(statistics.running))
        out.gauge("vllm:num_requests_waiting", help: "Sequences waiting for their first (or, preempted, next) step.",
                  labels: model, value: Double(statistics.waiting))
        let blocks = statistics.usedBlocks + statistics.freeBlocks
        out.gauge("vllm:kv_cache_usage_perc", help: "Fraction of KV cache blocks in use (1 means 100 percent).",
                  labels: model, value: blocks > 0 ? Double(statistics.usedBlocks) / Double(blocks) : 0)
        out.counter("vllm:prefix_cache_queries_total", help: "Tokens looked up in the prefix cache.",
                    samples: [(model, Double(statistics.prefixCacheQueriedTokens))])
        out.counter("vllm:prefix_cache_hits_total", help: "Tokens found in the prefix cache.",
                    samples: [(model, Double(statistics.prefixCacheHitTokens))])
        out.counter("vllm:num_preemptions_total", help: "Sequences preempted (KV blocks given back, recomputed later).",
                    samples: [(model, Double(statistics.preemptions))])
        out.counter("vllm:prompt_tokens_total", help: "Prompt tokens prefilled (each of n choices counts its prompt).",
                    samples: [(model, Double(state.promptTokens))])
        out.counter("vllm:generation_tokens_total", help: "Tokens generated.",
                    samples: [(model, Double(state.generationTokens))])
        out.counter("vllm:request_success_total", help: "Sequences finished, by finish reason.",
                    samples: [FinishReason.stop, .length].map { reason in
                        (model + [("finished_reason", reason.rawValue)], Double(state.finished[reason] ?? 0))
                    })
        out.histogram("vllm:time_to_first_token_seconds", help: "Seconds from arrival to the first token.",
                      series: [(model, state.timeToFirstToken)])
        out.histogram("vllm:inter_token_latency_seconds", help: "Seconds between a sequence's consecutive tokens.",
                      series: [(model, state.interTokenLatency)])
        out.histogram("vllm:e2e_request_latency_seconds", help: "Seconds from arrival to the last token.",
                      series: [(model, state.requestLatency)])
        out.histogram("vllm:request_queue_time_seconds", help: "Seconds from arrival to the first step.",
                      series: [(model, state.queueTime)])
        out.histogram("tessel:worker_step_seconds", help: "Seconds each worker rank computed per step.",
                      series: state.stepSeconds.enumerated().map { rank, histogram in
                          (model + [("rank", "\(rank)")], histogram)
                      })
        out.histogram("tessel:structured_output_mask_seconds",
                      help: "Seconds the router spent computing one constrained sequence's allowed-token mask.",
                      series: [(model, state.maskSeconds)])
        return out.text
    }
}
