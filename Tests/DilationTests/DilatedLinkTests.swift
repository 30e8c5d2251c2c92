import Dilation
import Testing

/// The host shapes a dilated guest's link to rate ÷ TDF and delay × TDF.
@Suite struct DilatedLinkTests {
    @Test func rateIsDividedAndDelayMultipliedByTheFactor() throws {
        let link = DilatedLink(perceivedBitsPerSecond: 1_000_000_000, perceivedDelayMilliseconds: 2.5, factor: try DilationFactor(10))
        #expect(link.realBitsPerSecond == 100_000_000)
        #expect(link.realDelayMilliseconds == 25)
        let fractional = DilatedLink(perceivedBitsPerSecond: 10_000_000, factor: try DilationFactor(1.5))
        #expect(fractional.realBitsPerSecond == 6_666_667)
    }

    @Test func anUnlimitedLinkStaysUnlimitedAndNoDilationChangesNothing() throws {
        #expect(DilatedLink(perceivedBitsPerSecond: nil, factor: try DilationFactor(4)).realBitsPerSecond == nil)
        let same = DilatedLink(perceivedBitsPerSecond: 12_345, perceivedDelayMilliseconds: 7, factor: .none)
        #expect(same.realBitsPerSecond == 12_345 && same.realDelayMilliseconds == 7)
    }
}
