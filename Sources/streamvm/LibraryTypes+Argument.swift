import ArgumentParser
import Dedup
import Hypervisor
import StreamClient

// Options parse straight into the libraries' types: ArgumentParser checks each value and lists the
// choices in errors and help, so no command compares strings by spelling.

/// `--startup-buffer ready|path`.
extension StartupBuffer: ExpressibleByArgument {}

/// `--prefetch none|workingset|vtube|full`.
extension PrefetchMode: ExpressibleByArgument {}

/// `--wait-mode blocking|busyPolling`.
extension PageFaultHandler.WaitMode: ExpressibleByArgument {}

/// `--dedup off|share|full`.
extension DedupMode: ExpressibleByArgument {}
