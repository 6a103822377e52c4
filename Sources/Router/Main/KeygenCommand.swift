import ArgumentParser
import Foundation
import Wire

/// `router keygen DIR`: the CURVE keys of a cluster.
struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write fresh CURVE keys for a cluster into a directory (for --curve-keys).",
        discussion: """
            Writes the router's key pair (router.key, secret, and router.pub) and the workers' pair \
            (worker.key and worker.pub); secret files are readable by their owner only, and existing \
            files are never overwritten. Give the router host router.key and worker.pub, every worker \
            host worker.key and router.pub, and start both sides with --curve-keys DIR: the router \
            link is then encrypted with CURVE and only the router's key gets in, and the workers' TCP \
            collectives are encrypted and authenticated with a key derived from worker.key.
            """)

    @Argument(help: "Directory to write the keys into (made if missing).")
    var directory: String

    func run() throws {
        let url = URL(fileURLWithPath: directory)
        do { try CurveKeys.generate(into: url) } catch { throw ValidationError("\(error)") }
        print("wrote \(CurveKeys.files.map { url.appendingPathComponent($0).path }.joined(separator: ", "))")
    }
}
