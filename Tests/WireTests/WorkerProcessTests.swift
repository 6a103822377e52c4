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
}
