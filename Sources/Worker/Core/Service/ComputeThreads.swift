import COpenBLAS

/// The number of threads this worker's BLAS calls use. The router also exports
/// OPENBLAS_NUM_THREADS before it starts a worker (OpenBLAS reads it when it loads); this lets
/// `worker --threads` override it after the fact.
public enum ComputeThreads {
    public static func set(_ count: Int) {
        precondition(count > 0, "thread count must be positive")
        openblas_set_num_threads(Int32(clamping: count))
    }

    public static var current: Int {
        Int(openblas_get_num_threads())
    }
}
