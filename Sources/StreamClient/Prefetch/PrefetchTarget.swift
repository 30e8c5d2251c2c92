/// What the prefetch driver needs from a lazily read artifact. `LazyImage` is one; the guest-memory
/// page source of lazy memory (issue #5) reads its snapshot through a `LazyImage` too, so it plugs in
/// as one more target keyed by `ArtifactRole.memory`.
public protocol PrefetchTarget: AnyObject, Sendable {
    func isLocal(chunk index: Int) -> Bool
    func prefetch(chunk index: Int, rank: Double)
    func cancelPrefetch(chunk index: Int)
}

extension LazyImage: PrefetchTarget {}
