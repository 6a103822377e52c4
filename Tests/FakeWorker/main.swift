// A stand-in for the `worker` executable in supervision tests: same command line, same service
// loop and wire protocol, a tiny arithmetic "model", and failure modes chosen by environment:
//
//   TESSEL_FAKE_WORKER_MODE = serve (default) | fail-to-load | die-on-step | hang-after-handshake
//                             | slow-step (each step takes 20 s, like a rank waiting in a collective)
//                             | stuck-step (a step never ends; the heartbeat thread goes on)
//   TESSEL_FAKE_WORKER_MODE_RANK_<r> = the mode of rank r only (overrides the above)
//   TESSEL_FAKE_WORKER_MARKER = path: with die-on-step, die only if this file does not exist yet
//                               (and create it), so the restarted worker serves normally.
//   TESSEL_FAKE_WORKER_FINGERPRINT_RANK_<r> = fingerprint reported by rank r (default "fake-model").
import Foundation
import Logging
import Wire
import WorkerCore

final class CountingExecutor: StepExecuting {
    let info: ModelInfo
    let progress = ProgressCounter()
    let mode: String
    let marker: String?

    init(fingerprint: String, mode: String, marker: String?) {
        info = ModelInfo(architecture: "fake", vocabSize: 1000, maxContextLength: 4096, fingerprint: fingerprint,
                         kvBlockCount: 64, kvBlockSize: 16)
        self.mode = mode
        self.marker = marker
    }

    func shouldDieOnStep() -> Bool {
        guard mode == "die-on-step" else { return false }
        guard let marker else { return true }
        if FileManager.default.fileExists(atPath: marker) { return false }
        _ = FileManager.default.createFile(atPath: marker, contents: Data())
        return true
    }

    /// Samples "last token + 1", the way a model that learned to count would.
    func execute(_ work: [SequenceWork]) throws -> [SequenceOutcome] {
        if shouldDieOnStep() {
            exit(3)  // a crash in the middle of a step: no reply
        }
        switch mode {
        case "slow-step": sleep(20)
        case "stuck-step": while true { sleep(60) }  // alive, heartbeats going, no progress
        default: progress.advance()
        }
        return work.map { sequence in
            let next = (sequence.tokens.last! + 1) % Int32(info.vocabSize)
            return SequenceOutcome(id: sequence.id, sampled: sequence.sample ? TokenChoice(token: next, logprob: -0.25) : nil,
                                   topLogprobs: [], promptLogprobs: [])
        }
    }
}

func option(_ name: String) -> String? {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(1)
}

let environment = ProcessInfo.processInfo.environment
guard let rank = option("--rank").flatMap(Int.init), let shard = option("--shard"), let listen = option("--listen"),
      let world = shard.split(separator: "/").last.flatMap({ Int($0) })
else { fail("fake worker: usage: --rank N --shard N/W --model PATH --listen ENDPOINT") }
let mode = environment["TESSEL_FAKE_WORKER_MODE_RANK_\(rank)"] ?? environment["TESSEL_FAKE_WORKER_MODE"] ?? "serve"
if mode == "fail-to-load" {
    fail("worker rank \(rank): cannot load model \(option("--model") ?? "?"): fake load failure")
}

let fingerprint = environment["TESSEL_FAKE_WORKER_FINGERPRINT_RANK_\(rank)"] ?? "fake-model"
let executor = CountingExecutor(fingerprint: fingerprint, mode: mode, marker: environment["TESSEL_FAKE_WORKER_MARKER"])
let service = try WorkerService(executor: executor, rank: rank, worldSize: world, endpoint: listen,
                                logger: Logger(label: "fake-worker"))

let stop = WorkerStopSignal()
stop.stopOnTerminationSignals()
if mode == "hang-after-handshake" {
    // Its own loop: answer the handshake, then stay alive but deaf (no heartbeats either).
    let context = try ZeroMQContext()
    let socket = try context.socket(.router)
    try socket.bind(listen)
    while !stop.isStopRequested {
        guard let incoming = try socket.receiveRouterMessage(timeout: .milliseconds(100)) else { continue }
        let (reply, _) = service.handle(incoming.message)
        try socket.send(reply, to: incoming.peer, timeout: .seconds(1))
        if case .handshake = incoming.message.body {
            while true { sleep(60) }
        }
    }
    socket.close()
} else {
    let service = try WorkerService(executor: executor, rank: rank, worldSize: world, endpoint: listen,
                                    logger: Logger(label: "fake-worker"), stopSignal: stop)
    try service.run()
}
FileHandle.standardError.write(Data("fake worker rank \(rank): clean exit\n".utf8))
