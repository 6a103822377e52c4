// The model layer's executor is what the worker serves in production.
extension ModelExecutor: StepExecuting {
    public var progress: ProgressCounter { pool.progress }
}
