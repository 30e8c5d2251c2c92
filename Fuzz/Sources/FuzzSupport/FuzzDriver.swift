/// libFuzzer's entry for a program that owns `main` (FuzzerInterface.h).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links a debug executable with `main` renamed to `<module>_main` (so tests can link the
/// executable), which leaves libFuzzer's own `main` out of the link. Each target therefore exports
/// `<module>_main` and calls this, which runs libFuzzer's driver exactly as its `main` would.
public enum FuzzDriver {
    public static func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                            _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
        var count = argc
        var arguments = argv
        return withUnsafeMutablePointer(to: &count) { countPointer in
            withUnsafeMutablePointer(to: &arguments) { argumentsPointer in
                LLVMFuzzerRunDriver(countPointer, argumentsPointer, test)
            }
        }
    }
}
