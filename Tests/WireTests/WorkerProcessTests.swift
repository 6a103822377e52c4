import Foundation
import Testing
@testable import RouterCore

@Suite("Worker process")
struct WorkerProcessTests {
    @Test("output without a newline is remembered by its trailing 4096 bytes, not without bound")
    func unterminatedOutput() async throws {
        let (exits, exited) = AsyncStream.makeStream(of: String.self)
        // 5,003 bytes on stderr and no newline, like a progress bar that never ends its line.
        let script = "exec 1>&2; i=0; while [ $i -lt 100 ]; do printf '%050d' 0; i=$((i+1)); done; printf end"
        let process = try WorkerProcess(
            rank: 0, executable: URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", script], environment: [:],
            onExit: { _, _, lastOutput in
                exited.yield(lastOutput)
                exited.finish()
            })
        var iterator = exits.makeAsyncIterator()
        let lastOutput = try #require(await iterator.next())
        #expect(lastOutput.utf8.count == 4096)
        #expect(lastOutput.hasSuffix("0end"))
        #expect(await process.waitForExit(polling: .seconds(5)))
    }

    @Test("an exit is explained by what the worker just wrote, not by an old line about something else")
    func staleOutputDoesNotExplainAnExit() async throws {
        func lastOutput(of script: String) async throws -> String {
            let (exits, exited) = AsyncStream.makeStream(of: String.self)
            _ = try WorkerProcess(
                rank: 0, executable: URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", script], environment: [:],
                onExit: { _, _, lastOutput in
                    exited.yield(lastOutput)
                    exited.finish()
                })
            var iterator = exits.makeAsyncIterator()
            return try #require(await iterator.next())
        }
        #expect(try await lastOutput(of: "echo 'cannot load model: no such file' >&2; exit 1") == "cannot load model: no such file")
        // Written, then silence longer than the explaining age, then a kill.
        let age = Int(WorkerProcess.explainingOutputAge / .seconds(1)) + 1
        #expect(try await lastOutput(of: "echo 'step 7 for request 12 done' >&2; sleep \(age); kill -9 $$") == "")
    }
}
