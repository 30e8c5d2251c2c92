/// How `streamvm boot` gets an appliance's bytes ahead of the guest.
public enum PrefetchMode: String, CaseIterable, Sendable, Codable {
    /// On demand only, plus sequential readahead after a miss.
    case none
    /// REAP (ASPLOS 2021): fetch the whole recorded working set in one ordered stream, then start.
    case workingset
    /// vTube (SoCC 2013): buffer just enough, start, stream the predicted next clusters ahead.
    case vtube
    /// Download everything, then start (the baseline a user would otherwise have).
    case full
}
