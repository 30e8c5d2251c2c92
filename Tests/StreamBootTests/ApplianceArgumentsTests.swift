import Testing
@testable import StreamBoot

@Suite struct ApplianceArgumentsTests {
    @Test func argumentsGoOnACommandLineAndAfterTheResumeMarker() throws {
        let arguments = try ApplianceArguments(["streamvm.think=3", "streamvm.dilation=14.3"])
        #expect(arguments.commandLine("console=ttyS0 quiet") == "console=ttyS0 quiet streamvm.think=3 streamvm.dilation=14.3")
        #expect(arguments.commandLine("") == "streamvm.think=3 streamvm.dilation=14.3")
        #expect(arguments.resumeLine(marker: "STREAMVM-RESUMED") == Array("STREAMVM-RESUMED streamvm.think=3 streamvm.dilation=14.3\n".utf8))
        #expect(ApplianceArguments.none.resumeLine(marker: "STREAMVM-RESUMED") == Array("STREAMVM-RESUMED\n".utf8))
        #expect(ApplianceArguments.none.commandLine("quiet") == "quiet")
    }

    @Test(arguments: ["", "think", "=3", "a b=1", "k=v w", "k=$(reboot)", "k=\"x\"", "k=a;b", "k=line\nSTREAMVM-READY", "ké=1",
                      "k=" + String(repeating: "9", count: 200)])
    func anArgumentAGuestShellCouldMisreadIsRefused(argument: String) {
        #expect(throws: StreamBootError.self) { try ApplianceArguments([argument]) }
    }

    @Test func tooManyArgumentsAreRefused() {
        #expect(throws: StreamBootError.self) { try ApplianceArguments((0...ApplianceArguments.maximumCount).map { "k\($0)=1" }) }
        #expect(throws: Never.self) { try ApplianceArguments(["k=", "path=/a/b:c,d+e", "x.y_z-w=1.5"]) }
    }
}
