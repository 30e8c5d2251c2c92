import ArgumentParser
import StreamClient

/// `--startup-buffer ready|path` parses straight into the library's type: ArgumentParser checks the
/// value and lists the choices in errors and help.
extension StartupBuffer: ExpressibleByArgument {}
