import Foundation
import Logging
import Testing
import Wire
import WorkerCore
@testable import RouterCore

/// The fake worker (Tests/FakeWorker) is built next to the test binary.
func fakeWorkerExecutable() throws -> URL {
    let directory = try #require(Bundle.main.executableURL).resolvingSymlinksInPath().deletingLastPathComponent()
    let url = directory.appendingPathComponent("tessel-fake-worker")
    try #require(FileManager.default.isExecutableFile(atPath: url.path), "fake worker not built at \(url.path)")
    return url
}

func fastOptions(mode: String = "serve", extra: [String: String] = [:]) -> WorkerClusterOptions {
    var options = WorkerClusterOptions()
    options.startupTimeout = .seconds(20)
    options.healthInterval = .milliseconds(200)
    options.healthTimeout = .seconds(1)
    options.stepTimeout = .seconds(10)
    options.restartBackoff = .milliseconds(100)
    options.maxRestartBackoff = .milliseconds(400)
    options.threadsPerWorker = 1
    options.environment = extra.merging(["TESSEL_FAKE_WORKER_MODE": mode]) { a, _ in a }
    return options
}

func countingStep(id: UInt64, token: Int32) -> Tessel_Wire_Step {
    var sequence = Tessel_Wire_SequenceStep()
    sequence.sequenceID = 1
    sequence.tokens = [token]
    sequence.sample = true
    sequence.blockTable = [0]
    var step = Tessel_Wire_Step()
    step.stepID = id
    step.sequences = [sequence]
    return step
}

/// Spawns `workers` fake workers (Tests/FakeWorker) as the router would and handshakes with them.
func launchFakeCluster(workers: Int, options: WorkerClusterOptions, logger: Logger) async throws -> WorkerCluster {
    try await WorkerCluster.launch(model: "/models/fake.gguf", workers: workers, workerExecutable: try fakeWorkerExecutable(),
                                   options: options, logger: logger)
}

func processIsAlive(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
func eventually(within timeout: Duration, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return condition()
}

@Suite("Worker cluster", .serialized)
struct WorkerClusterTests {
    let logger = Logger(label: "cluster-test")

    @Test("launch handshakes every rank, runs steps on all of them and shutdown reaps the children")
    func launchRunShutdown() async throws {
        let cluster = try await launchFakeCluster(workers: 2, options: fastOptions(), logger: logger)
        #expect(cluster.model == ClusterModelInfo(architecture: "fake", vocabSize: 1000, maxContextLength: 4096,
                                                  fingerprint: "fake-model", kvBlockCount: 64, kvBlockSize: 16,
                                                  worldSize: 2))
        #expect(cluster.endpoints.allSatisfy { $0.hasPrefix("ipc://") })
        let result = try await cluster.run(countingStep(id: 1, token: 41))
        #expect(result.rank == 0 && result.stepID == 1)
        #expect(result.sequences.first?.token == 42)
        let pids = cluster.workerProcessIDs.compactMap { $0 }
        #expect(pids.count == 2)
        await cluster.shutdown()
        #expect(pids.allSatisfy { !processIsAlive($0) })
        await #expect(throws: ClusterError.self) { try await cluster.run(countingStep(id: 2, token: 1)) }
    }

    @Test("a worker that fails to load makes launch throw with the worker's own error line")
    func startupFailureSurfacesWorkerError() async throws {
        await #expect {
            _ = try await WorkerCluster.launch(model: "/models/broken.gguf", workers: 1,
                                               workerExecutable: try fakeWorkerExecutable(),
                                               options: fastOptions(mode: "fail-to-load"), logger: logger)
        } throws: { error in
            let text = "\(error)"
            guard case ClusterError.startupFailed(let rank, _) = error else { return false }
            return rank == 0 && text.contains("cannot load model /models/broken.gguf: fake load failure")
                && text.contains("exited with status 1")
        }
    }

    @Test("ranks reporting different model fingerprints are refused at launch")
    func fingerprintMismatch() async throws {
        let options = fastOptions(extra: ["TESSEL_FAKE_WORKER_FINGERPRINT_RANK_1": "another-model"])
        await #expect {
            _ = try await launchFakeCluster(workers: 2, options: options, logger: logger)
        } throws: { error in
            guard case ClusterError.inconsistentWorkers(let rank, let field, let expected, let found) = error else {
                return false
            }
            return rank == 1 && field == "the model fingerprint" && expected == "fake-model" && found == "another-model"
        }
    }

    @Test("a worker dying mid-step fails that run within seconds, and is restarted and re-handshaken")
    func deathDuringStepAndRestart() async throws {
        let marker = NSTemporaryDirectory() + "tessel-marker-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let cluster = try await WorkerCluster.launch(
            model: "/models/fake.gguf", workers: 1, workerExecutable: try fakeWorkerExecutable(),
            options: fastOptions(mode: "die-on-step", extra: ["TESSEL_FAKE_WORKER_MARKER": marker]), logger: logger)
        let firstPID = try #require(cluster.workerProcessIDs.first ?? nil)

        let started = ContinuousClock.now
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: 1))
        } throws: { error in
            guard case ClusterError.workerExited(let rank, let pid, let status, _) = error else { return false }
            return rank == 0 && pid == firstPID && status == "exited with status 3"
        }
        #expect(ContinuousClock.now - started < .seconds(5))

        #expect(await eventually(within: .seconds(15)) { cluster.isHealthy })
        #expect(cluster.recoveries == 1)
        let secondPID = try #require(cluster.workerProcessIDs.first ?? nil)
        #expect(secondPID != firstPID)
        let result = try await cluster.run(countingStep(id: 2, token: 9))
        #expect(result.sequences.first?.token == 10)
        await cluster.shutdown()
        #expect(!processIsAlive(secondPID))
    }

    @Test("with two ranks, one dying mid-step fails the run at once even while rank 0 is still busy")
    func rankDeathFailsStepFast() async throws {
        var options = fastOptions(extra: ["TESSEL_FAKE_WORKER_MODE_RANK_0": "slow-step",
                                          "TESSEL_FAKE_WORKER_MODE_RANK_1": "die-on-step"])
        options.restartBackoff = .seconds(30)
        options.maxRestartBackoff = .seconds(30)
        let cluster = try await launchFakeCluster(workers: 2, options: options, logger: logger)
        let pids = cluster.workerProcessIDs.compactMap { $0 }
        let started = ContinuousClock.now
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: 1))
        } throws: { error in
            guard case ClusterError.workerExited(let rank, _, let status, _) = error else { return false }
            return rank == 1 && status == "exited with status 3"
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        let stopping = ContinuousClock.now
        await cluster.shutdown()
        #expect(ContinuousClock.now - stopping < .seconds(12))
        #expect(pids.allSatisfy { !processIsAlive($0) })
    }

    @Test("a worker killed while idle is noticed within seconds and steps fail at once meanwhile")
    func deathWhileIdle() async throws {
        var options = fastOptions()
        options.restartBackoff = .seconds(30)  // keep it down long enough to observe
        options.maxRestartBackoff = .seconds(30)
        let cluster = try await launchFakeCluster(workers: 1, options: options, logger: logger)
        let pid = try #require(cluster.workerProcessIDs.first ?? nil)
        kill(pid, SIGKILL)
        #expect(await eventually(within: .seconds(3)) { !cluster.isHealthy })
        let started = ContinuousClock.now
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: 1))
        } throws: { error in
            guard case ClusterError.workerUnavailable(let rank, let reason) = error else { return false }
            return rank == 0 && reason.contains("killed by signal 9")
        }
        #expect(ContinuousClock.now - started < .seconds(1))
        await cluster.shutdown()
    }

    @Test("a worker that is alive but stops answering fails its health checks and is declared down")
    func silentWorker() async throws {
        var options = fastOptions(mode: "hang-after-handshake")
        options.restartBackoff = .seconds(30)
        options.maxRestartBackoff = .seconds(30)
        let cluster = try await launchFakeCluster(workers: 1, options: options, logger: logger)
        let pid = try #require(cluster.workerProcessIDs.first ?? nil)
        #expect(await eventually(within: .seconds(4)) { !cluster.isHealthy })
        #expect(processIsAlive(pid))
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: 1))
        } throws: { error in
            "\(error)".contains("did not answer a health check")
        }
        await cluster.shutdown()
        #expect(!processIsAlive(pid))
    }

    @Test("a worker alive but stuck inside a step (heartbeats going, no progress) is declared stuck within seconds and restarted")
    func stuckWorker() async throws {
        var options = fastOptions(mode: "stuck-step")
        options.stallTimeout = .seconds(2)
        let cluster = try await launchFakeCluster(workers: 1, options: options, logger: logger)
        let pid = try #require(cluster.workerProcessIDs.first ?? nil)
        let started = ContinuousClock.now
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: 1))
        } throws: { error in
            guard case ClusterError.workerStuck(let rank, _, let operation, _) = error else { return false }
            return rank == 0 && operation == "step 1"
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .seconds(2) && elapsed < .seconds(5), "declared stuck after \(elapsed)")
        // The stuck process is replaced by a new one.
        #expect(await eventually(within: .seconds(10)) {
            cluster.isHealthy && (cluster.workerProcessIDs.first ?? nil).map { $0 != pid } == true
        })
        #expect(!processIsAlive(pid))
        await cluster.shutdown()
    }

    @Test("a worker stopped (SIGSTOP) during a step sends no heartbeat and is declared down within seconds, not at the step deadline")
    func stoppedWorker() async throws {
        var options = fastOptions(mode: "slow-step")
        options.stallTimeout = .seconds(8)
        options.stepTimeout = .seconds(60)
        let cluster = try await launchFakeCluster(workers: 1, options: options, logger: logger)
        let pid = try #require(cluster.workerProcessIDs.first ?? nil)
        let stopper = Task {
            try await Task.sleep(for: .milliseconds(700))
            kill(pid, SIGSTOP)
        }
        let started = ContinuousClock.now
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: 1))
        } throws: { error in
            guard case ClusterError.heartbeatLost(let rank, _, _, _) = error else { return false }
            return rank == 0
        }
        _ = try? await stopper.value
        #expect(ContinuousClock.now - started < .seconds(4))
        #expect(await eventually(within: .seconds(10)) { !processIsAlive(pid) })
        await cluster.shutdown()
    }

    @Test("a step's deadline grows with its tokens and their context")
    func stepDeadlineFromSize() async throws {
        var options = fastOptions()
        options.stepTimeout = .seconds(30)
        options.stepTimePerToken = .milliseconds(10)
        let cluster = try await launchFakeCluster(workers: 1, options: options, logger: logger)
        defer { Task { await cluster.shutdown() } }
        var step = Tessel_Wire_Step()
        #expect(cluster.stepDeadline(for: step) == .seconds(30))
        var decode = Tessel_Wire_SequenceStep()
        decode.tokens = [1]
        decode.startPosition = 1023
        step.sequences = [decode]
        #expect(cluster.stepDeadline(for: step) == .seconds(30) + .milliseconds(20))
        var prefill = Tessel_Wire_SequenceStep()
        prefill.tokens = Array(repeating: 1, count: 512)
        prefill.startPosition = 512
        step.sequences = [prefill]
        #expect(cluster.stepDeadline(for: step) == .seconds(30) + .milliseconds(10) * 512 * 2)
        await cluster.shutdown()
    }

    @Test("attach connects to a worker started elsewhere, runs steps on it, and leaves it running at shutdown")
    func attach() async throws {
        let path = "\(NSTemporaryDirectory())tessel-attach-\(getpid()).sock"
        defer { unlink(path) }
        let endpoint = "ipc://\(path)"
        let stop = WorkerStopSignal()
        let logger = self.logger
        let finished = DispatchSemaphore(value: 0)
        Thread {
            do {
                try WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1, endpoint: endpoint,
                                  logger: logger, stopSignal: stop).run()
            } catch {
                Issue.record("worker loop failed: \(error)")
            }
            finished.signal()
        }.start()
        let cluster = try await WorkerCluster.attach(endpoints: [endpoint], options: fastOptions(), logger: logger)
        #expect(cluster.model.architecture == "arithmetic" && cluster.model.worldSize == 1)
        #expect(cluster.workerProcessIDs == [nil])
        let result = try await cluster.run(countingStep(id: 5, token: 20))
        #expect(result.sequences.first?.token == 21)
        await cluster.shutdown()
        // Not the router's to stop: the worker serves on until its own stop signal.
        #expect(finished.wait(timeout: .now() + 1) == .timedOut)
        stop.requestStop()
        #expect(finished.wait(timeout: .now() + 5) == .success)
    }

    @Test("a worker error in a step fails that run with the worker's message and the worker keeps serving")
    func stepErrorKeepsWorker() async throws {
        let path = "\(NSTemporaryDirectory())tessel-step-error-\(getpid()).sock"
        defer { unlink(path) }
        let endpoint = "ipc://\(path)"
        let stop = WorkerStopSignal()
        let logger = self.logger
        Thread {
            _ = try? WorkerService(executor: ArithmeticExecutor(), rank: 0, worldSize: 1, endpoint: endpoint,
                                   logger: logger, stopSignal: stop).run()
        }.start()
        defer { stop.requestStop() }
        let cluster = try await WorkerCluster.attach(endpoints: [endpoint], options: fastOptions(), logger: logger)
        await #expect {
            _ = try await cluster.run(countingStep(id: 1, token: -1))
        } throws: { error in
            guard case ClusterError.stepFailed(0, 1, let message) = error else { return false }
            return message.contains("negative token")
        }
        #expect(cluster.isHealthy)
        #expect(try await cluster.run(countingStep(id: 2, token: 3)).sequences.first?.token == 4)
        await cluster.shutdown()
    }
}

@Suite("Worker process signals")
struct WorkerSignalTests {
    @Test("SIGTERM makes a worker close its socket and exit with status 0, even if SIGTERM was ignored by its parent")
    func sigtermExitsCleanly() async throws {
        let process = Process()
        process.executableURL = try fakeWorkerExecutable()
        let path = "\(NSTemporaryDirectory())tessel-sigterm-\(getpid()).sock"
        defer { unlink(path) }
        process.arguments = ["--rank", "0", "--shard", "0/1", "--model", "unused", "--listen", "ipc://\(path)"]
        let errors = Pipe()
        process.standardError = errors
        // An ignored disposition is inherited across exec; the worker must still stop on SIGTERM.
        let previous = signal(SIGTERM, SIG_IGN)
        defer { signal(SIGTERM, previous) }
        try process.run()
        try await Task.sleep(for: .milliseconds(500))
        process.terminate()
        let exited = await eventually(within: .seconds(5)) { !process.isRunning }
        #expect(exited)
        if !exited { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0)
        let output = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(output.contains("clean exit"))
    }
}

@Suite("Handshake checks")
struct HandshakeCheckTests {
    @Test("a worker reporting an empty KV cache, context or vocabulary is refused at the handshake")
    func emptySizesRefused() throws {
        var reply = Tessel_Wire_HandshakeReply()
        reply.kvBlockCount = 64
        reply.kvBlockSize = 16
        reply.maxContextLength = 2048
        reply.vocabSize = 49152
        try WorkerCluster.checkUsable(reply, rank: 0, endpoint: "ipc://test")
        for field in [\Tessel_Wire_HandshakeReply.kvBlockCount, \.kvBlockSize, \.maxContextLength, \.vocabSize] {
            var empty = reply
            empty[keyPath: field] = 0
            #expect(throws: ClusterError.self) {
                try WorkerCluster.checkUsable(empty, rank: 1, endpoint: "ipc://test")
            }
        }
    }
}
