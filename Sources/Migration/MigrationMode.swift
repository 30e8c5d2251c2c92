/// How a running machine's memory reaches the destination (docs/MIGRATION.md compares them).
public enum MigrationMode: String, Sendable, Codable, CaseIterable {
    /// The guest stays paused until every page it had is at the destination, then resumes there:
    /// the baseline whose downtime grows with the guest's memory.
    case stopAndCopy = "stop-and-copy"
    /// The guest resumes at the destination at once; a page it touches before the background
    /// transfer brought it is fetched from the source on demand (userfaultfd), ahead of the rest.
    case postCopy = "post-copy"
}
