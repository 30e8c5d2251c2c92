import Catalog
import Foundation
import TestSupport
import Testing

/// appliance.json is the first thing a user writes by hand: every mistake must come back as one
/// sentence naming the file and the field.
@Suite struct ApplianceConfigTests {
    private func write(_ json: String, in directory: TemporaryDirectory) throws {
        try Data(json.utf8).write(to: URL(fileURLWithPath: directory.sub("appliance.json")))
    }

    private func loadError(_ directory: String) -> String? {
        do {
            _ = try ApplianceConfig.load(directory: directory)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func aValidFileLoadsWithItsKernelFormat() throws {
        let directory = try TemporaryDirectory()
        try write(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":2,"readyMarker":"R","kernelFormat":"flat"}"#, in: directory)
        let config = try ApplianceConfig.load(directory: directory.path)
        #expect(config.kernelFormat == .flat)
        #expect(config.vcpus == 2)
    }

    @Test func aMissingDirectoryIsNamed() {
        let message = loadError("/nonexistent-streamvm-appliance")
        #expect(message?.hasPrefix("/nonexistent-streamvm-appliance: ") == true)
        #expect(message?.contains("No such file") == true)
    }

    @Test func aMissingFieldIsNamed() throws {
        let directory = try TemporaryDirectory()
        try write(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":1}"#, in: directory)
        let message = try #require(loadError(directory.path))
        #expect(message == "\(directory.sub("appliance.json")): malformed: missing field readyMarker")
    }

    @Test func aWrongTypeAndAnUnknownKernelFormatAreNamed() throws {
        let directory = try TemporaryDirectory()
        try write(#"{"name":"a","version":"1","memoryMiB":"lots","vcpus":1,"readyMarker":"R"}"#, in: directory)
        #expect(try #require(loadError(directory.path)).hasSuffix("field memoryMiB: expected a number"))
        try write(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":1,"readyMarker":"R","kernelFormat":"elf"}"#, in: directory)
        #expect(try #require(loadError(directory.path)).hasSuffix("field kernelFormat: 'elf' is not one of linux, flat"))
    }

    @Test func brokenJSONAndOutOfRangeValuesAreRefused() throws {
        let directory = try TemporaryDirectory()
        try write(#"{"name":"a","#, in: directory)
        #expect(try #require(loadError(directory.path)).contains("not valid JSON"))
        try write(#"{"name":"a","version":"1","memoryMiB":64,"vcpus":0,"readyMarker":"R"}"#, in: directory)
        #expect(try #require(loadError(directory.path)).contains("vcpus 0 is outside"))
    }
}
