import Catalog
import Testing
@testable import StreamServer

@Suite struct RequestTargetTests {
    static let hex = String(repeating: "ab", count: 32)

    @Test func exactObjectNamesParse() throws {
        #expect(RequestTarget.parse("/catalog.json") == .success(.object(.catalog)))
        let digest = try Digest(hex: Self.hex)
        #expect(RequestTarget.parse("/chunks/ab/\(Self.hex).zst") == .success(.object(.chunk(digest))))
        #expect(RequestTarget.parse("/manifests/ab/\(Self.hex).json") == .success(.object(.manifest(digest))))
        #expect(RequestTarget.parse("/healthz") == .success(.health))
        #expect(RequestTarget.parse("/metrics") == .success(.metrics))
        #expect(RequestTarget.parse("/v1/traces/demo-1.0") == .success(.trace(appliance: "demo-1.0")))
    }

    /// Hostile spellings are refused as malformed (400) before any file name is built.
    @Test(arguments: [
        "/../etc/passwd", "/chunks/../catalog.json", "/./catalog.json", "/%2e%2e/etc/passwd",
        "/chunks%2fab%2fx.zst", "/chunks/ab/..%2f..%2fetc%2fpasswd", "//etc/passwd", "/chunks//ab",
        "/catalog.json?x=1", "/catalog.json#frag", "/chunks\\..\\etc", "etc/passwd", "http://evil/etc/passwd",
        "*", "/catalog.json\u{0}", "/cat alog.json", "/catalog.json/", "/v1/traces/../x", "/v1/traces/.hidden",
        "/v1/traces/a%2fb", "/" + String(repeating: "a", count: 200), "/caf\u{e9}",
    ])
    func hostileTargetsAreMalformed(_ target: String) {
        guard case .failure(.malformed) = RequestTarget.parse(target) else {
            Issue.record("\(target) was not refused as malformed: \(RequestTarget.parse(target))")
            return
        }
    }

    /// Well-formed paths that are not object names are simply not found (404).
    @Test(arguments: [
        "/", "/etc/passwd", "/CATALOG.JSON", "/chunks/AB/\(String(repeating: "AB", count: 32)).zst",
        "/chunks/cd/\(String(repeating: "ab", count: 32)).zst", "/chunks/ab/\(String(repeating: "ab", count: 32)).json",
        "/chunks/ab/\(String(repeating: "ab", count: 31)).zst", "/chunks/ab/\(String(repeating: "zz", count: 32)).zst",
        "/objects/ab/\(String(repeating: "ab", count: 32)).zst", "/traces/demo",
    ])
    func unknownTargetsAreNotFound(_ target: String) {
        #expect(RequestTarget.parse(target) == .failure(.notFound))
    }
}

@Suite struct ByteRangeTests {
    @Test func parsesSingleRanges() {
        #expect(ByteRange.parse("bytes=0-99", size: 1000) == .partial(ByteRange(offset: 0, length: 100)))
        #expect(ByteRange.parse("bytes=900-", size: 1000) == .partial(ByteRange(offset: 900, length: 100)))
        #expect(ByteRange.parse("bytes=-10", size: 1000) == .partial(ByteRange(offset: 990, length: 10)))
        #expect(ByteRange.parse("bytes=-5000", size: 1000) == .partial(ByteRange(offset: 0, length: 1000)))
        #expect(ByteRange.parse("bytes=990-5000", size: 1000) == .partial(ByteRange(offset: 990, length: 10)))
    }

    @Test func unsatisfiableAndIgnoredRanges() {
        #expect(ByteRange.parse("bytes=1000-", size: 1000) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=-0", size: 1000) == .unsatisfiable)
        #expect(ByteRange.parse(nil, size: 1000) == .whole)
        #expect(ByteRange.parse("items=0-1", size: 1000) == .whole)
        #expect(ByteRange.parse("bytes=0-1,5-6", size: 1000) == .whole)
        #expect(ByteRange.parse("bytes=5-1", size: 1000) == .whole)
        #expect(ByteRange.parse("bytes=99999999999999999999-", size: 1000) == .whole)
        #expect(ByteRange.parse("bytes=a-b", size: 1000) == .whole)
    }
}
