/// Runs `body` for every element with at most `limit` running at once, failing on the first error.
/// Bounds memory: a mirror of a million chunks must not start a million tasks.
public func forEachConcurrently<Element: Sendable>(_ elements: [Element], limit: Int,
                                            _ body: @escaping @Sendable (Element) async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        var next = 0
        while next < min(limit, elements.count) {
            let element = elements[next]
            group.addTask { try await body(element) }
            next += 1
        }
        while try await group.next() != nil {
            if next < elements.count {
                let element = elements[next]
                group.addTask { try await body(element) }
                next += 1
            }
        }
    }
}
