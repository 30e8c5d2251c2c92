/// How long-running library work (publish, mirror, fetch) reports progress without knowing whether
/// a terminal is attached: the CLI turns these calls into a progress bar.
public typealias ProgressHandler = @Sendable (_ done: Int64, _ total: Int64) -> Void
