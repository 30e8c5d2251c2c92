import Foundation
import Logging

/// Logs go to stderr so that stdout carries only results; the level comes from STREAMVM_LOG_LEVEL
/// (trace, debug, info, notice, warning, error, critical), default notice.
enum LoggingSetup {
    static func bootstrap() {
        let level = ProcessInfo.processInfo.environment["STREAMVM_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
