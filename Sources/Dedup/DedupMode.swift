/// What the engine may do to a running machine's memory (`--dedup off|share|full`).
public enum DedupMode: String, Sendable, Codable, CaseIterable {
    /// Nothing: guest RAM is left alone (no userfaultfd, no dirty log).
    case off
    /// Zero and identical cold pages only: dropped, served from one shared copy on the next touch.
    case share
    /// Also patches similar cold pages against references and compresses pages cold for longer.
    case full
}
