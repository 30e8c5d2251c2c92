import ServiceLifecycle

/// Runs the background scrubber as a service of the server's group; it holds no client state, so a
/// graceful shutdown simply cancels it.
struct ScrubberService: Service {
    let scrubber: ObjectScrubber

    func run() async throws {
        try await cancelWhenGracefulShutdown { await scrubber.run() }
    }
}
