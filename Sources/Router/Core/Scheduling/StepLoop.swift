import Logging
import ServiceLifecycle
import Wire

/// Drives the scheduler: plan a step, send it to the workers, apply the result, repeat; sleeps
/// while there is no work. On graceful shutdown it stops taking requests, finishes the ones it
/// has, then returns; cancelled, it fails the ones it has and refuses new ones.
public struct StepLoop: Service {
    public let scheduler: Scheduler
    public let runner: any StepRunner
    public let logger: Logger
    /// Changes whenever the workers' KV cache was lost (WorkerCluster's `recoveries`).
    public let kvEpoch: @Sendable () -> UInt64

    public init(scheduler: Scheduler, runner: any StepRunner, logger: Logger = Logger(label: "tessel.steps"),
                kvEpoch: @escaping @Sendable () -> UInt64 = { 0 }) {
        self.scheduler = scheduler
        self.runner = runner
        self.logger = logger
        self.kvEpoch = kvEpoch
    }

    public func run() async throws {
        let scheduler = self.scheduler
        do {
            try await withGracefulShutdownHandler {
                try await self.loop()
            } onGracefulShutdown: {
                Task { await scheduler.stopAccepting() }
            }
        } catch {
            // Cancelled (not drained): nothing will plan steps any more, so whatever is queued
            // must end now rather than wait forever, and new requests must be refused.
            await scheduler.stopAccepting()
            await scheduler.failAll(.shuttingDown)
            throw error
        }
    }

    private func loop() async throws {
        var signals = scheduler.workSignals.makeAsyncIterator()
        var epoch = kvEpoch()
        while true {
            try Task.checkCancellation()
            let currentEpoch = kvEpoch()
            if currentEpoch != epoch {
                epoch = currentEpoch
                logger.warning("the workers lost their KV cache; running sequences are recomputed")
                await scheduler.dropComputedKV()
            }
            if let step = await scheduler.planStep() {
                await execute(step)
                continue
            }
            if await scheduler.isIdle, await scheduler.isDraining { return }
            // Nothing to run: wait for a request, a cancellation or the shutdown signal.
            guard await signals.next() != nil else { return }
        }
    }

    /// Runs one planned step; a failure fails exactly the sequences in it.
    func execute(_ step: PlannedStep) async {
        do {
            let started = ContinuousClock.now
            let result = try await runner.run(step.message)
            logger.trace("step \(step.message.stepID)", metadata: [
                "decodes": "\(step.decodeCount)", "prefill_tokens": "\(step.prefillTokenCount)",
                "compute_seconds": "\(result.computeSeconds)",
                "seconds": "\((ContinuousClock.now - started).timeInterval)"])
            for refusal in await scheduler.complete(step, result: result) {
                logger.error("the workers refused a sequence: \(refusal.reason)",
                             metadata: ["request_id": "\(refusal.requestID ?? "-")", "step_id": "\(step.message.stepID)"])
            }
        } catch {
            let requests = await scheduler.requestIDs(of: step)
            logger.error("step \(step.message.stepID) failed: \(error)",
                         metadata: ["request_ids": "\(Array(Set(requests)).sorted().joined(separator: ","))"])
            await scheduler.fail(step, error: .stepFailed("\(error)"))
        }
    }
}

extension Scheduler {
    /// True once `stopAccepting()` was called.
    public var isDraining: Bool { !isAccepting }
}
