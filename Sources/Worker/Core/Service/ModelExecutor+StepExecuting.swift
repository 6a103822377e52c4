// The model layer's executor is what the worker serves in production.
extension ModelExecutor: StepExecuting {
    public var progress: ProgressCounter { pool.progress }
    public var groupFailure: String? { model.collectiveFailure?.description }
    public var groupID: UInt64 { model.groupID }
    public func checkGroup() { model.checkGroup() }
}
