import Wire

/// What the router knows of the model the workers serve, from their handshakes.
public struct ClusterModelInfo: Sendable, Equatable {
    public var architecture: String
    public var vocabSize: Int
    public var maxContextLength: Int
    public var fingerprint: String
    public var kvBlockCount: Int
    public var kvBlockSize: Int
    public var worldSize: Int
    /// Per KV group, the positions its layers attend back over (0: the whole context); a
    /// sequence's block table holds one block of each group per block of positions.
    public var kvGroupWindows: [Int]

    public init(architecture: String, vocabSize: Int, maxContextLength: Int, fingerprint: String,
                kvBlockCount: Int, kvBlockSize: Int, worldSize: Int, kvGroupWindows: [Int] = [0]) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.maxContextLength = maxContextLength
        self.fingerprint = fingerprint
        self.kvBlockCount = kvBlockCount
        self.kvBlockSize = kvBlockSize
        self.worldSize = worldSize
        self.kvGroupWindows = kvGroupWindows
    }
}

/// The seam between the scheduler and the workers: one batch step out, one result back.
/// `run` never hangs: a dead or silent worker makes it throw within seconds.
public protocol StepRunner: Sendable {
    var model: ClusterModelInfo { get }
    func run(_ step: Tessel_Wire_Step) async throws -> Tessel_Wire_StepResult
}
