// The model layer's executor is what the worker serves in production.
extension ModelExecutor: StepExecuting {
    public var progress: ProgressCounter { pool.progress }
    public var groupFailure: String? { model.collectiveFailure?.description }
    public func checkGroup() { model.checkGroup() }
}
