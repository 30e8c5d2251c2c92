/// Parameters a run passes to the appliance (`key=value`, e.g. `streamvm.think=3`): appended to the
/// kernel command line of a cold boot, and to the console line a resumed snapshot receives
/// (`STREAMVM-RESUMED key=value …`), since a resumed guest's command line was fixed when it was
/// snapshotted. They reach the guest's init unquoted, so only a safe character set is accepted.
public struct ApplianceArguments: Sendable, Equatable {
    public static let maximumCount = 16
    public static let maximumLength = 128

    public let arguments: [String]

    /// Nothing passed.
    public static let none = ApplianceArguments(checked: [])

    private init(checked arguments: [String]) { self.arguments = arguments }

    public init(_ arguments: [String]) throws {
        guard arguments.count <= Self.maximumCount else {
            throw StreamBootError.invalidResources("at most \(Self.maximumCount) appliance arguments")
        }
        for argument in arguments { try Self.check(argument) }
        self.arguments = arguments
    }

    /// `base` with the arguments appended, for a cold boot.
    public func commandLine(_ base: String) -> String {
        ([base].filter { !$0.isEmpty } + arguments).joined(separator: " ")
    }

    /// The resume line with the arguments after its marker, newline-terminated.
    public func resumeLine(marker: String) -> [UInt8] {
        Array(([marker] + arguments).joined(separator: " ").utf8) + [0x0A]
    }

    /// `key=value`: key of letters, digits, `.`, `_`, `-`; value of those and `,:/+`; no spaces,
    /// quotes or control characters (a kernel command line and a shell `read` split on spaces).
    static func check(_ argument: String) throws {
        let bytes = Array(argument.utf8)
        func keyByte(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        func valueByte(_ byte: UInt8) -> Bool { keyByte(byte) || byte == 0x2C || byte == 0x3A || byte == 0x2F || byte == 0x2B }
        guard bytes.count <= maximumLength, let equals = bytes.firstIndex(of: 0x3D), equals > 0,
              bytes[..<equals].allSatisfy(keyByte), bytes[(equals + 1)...].allSatisfy(valueByte) else {
            throw StreamBootError.invalidResources(
                "appliance argument '\(String(argument.prefix(40)))' is not key=value of letters, digits and . _ - (values also , : / +), at most \(maximumLength) bytes")
        }
    }
}
