import Catalog
import Foundation
import Testing

/// appliance.json interfaces (issue #17): each mistake comes back naming the interface's field.
struct NetworkInterfaceConfigTests {
    static func decode(_ interfaces: String) throws -> ApplianceConfig {
        try ApplianceConfig.decode(Data(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":1,"readyMarker":"R","interfaces":\#(interfaces)}"#.utf8),
                                   file: "appliance.json")
    }

    static func problem(_ interfaces: String) -> String {
        do {
            _ = try decode(interfaces)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func validInterfacesParseWithTheirBackends() throws {
        let config = try Self.decode(#"[{"mac":"52:54:00:12:34:56","backend":"switch:lab","address":"10.0.0.2/24"},{"mac":"52:54:00:12:34:57","backend":"tap:netns1/tap0"}]"#)
        let interfaces = try #require(config.interfaces)
        #expect(try interfaces[0].parsedBackend(file: "f", field: "x") == .switchPort(switchName: "lab"))
        #expect(try interfaces[1].parsedBackend(file: "f", field: "x") == .tap(namespace: "netns1", interface: "tap0"))
        #expect(try interfaces[0].macBytes(file: "f", field: "x") == [0x52, 0x54, 0, 0x12, 0x34, 0x56])
    }

    @Test func anAbsentListMeansNoNetworkAndKeepsOldFilesValid() throws {
        let config = try ApplianceConfig.decode(Data(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":1,"readyMarker":"R"}"#.utf8), file: "f")
        #expect(config.interfaces == nil)
    }

    @Test func eachHostileFieldIsNamed() {
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34","backend":"switch:a"}]"#).contains("interfaces[0].mac"))
        #expect(Self.problem(#"[{"mac":"01:00:5e:00:00:01","backend":"switch:a"}]"#).contains("multicast"))
        #expect(Self.problem(#"[{"mac":"00:00:00:00:00:00","backend":"switch:a"}]"#).contains("interfaces[0].mac"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"bridge:a"}]"#).contains("interfaces[0].backend"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"switch:../x"}]"#).contains("interfaces[0].backend"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"tap:ns"}]"#).contains("interfaces[0].backend"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"tap:ns/averyveryverylongname"}]"#).contains("longer than 15"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"switch:a","address":"10.0.0.300/24"}]"#).contains("interfaces[0].address"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"switch:a","address":"10.0.0.3"}]"#).contains("interfaces[0].address"))
        #expect(Self.problem(#"[{"mac":"52:54:00:12:34:56","backend":"switch:a"},{"mac":"52:54:00:12:34:56","backend":"switch:a"}]"#).contains("interfaces[1].mac"))
        let many = "[" + (0..<9).map { #"{"mac":"52:54:00:00:00:0\#($0)","backend":"switch:a"}"# }.joined(separator: ",") + "]"
        #expect(Self.problem(many).contains("at most 8"))
    }
}
