import Foundation

/// The `date` header value (IMF-fixdate, RFC 9110 §5.6.7) for the current second, formatted at most
/// once a second. One per connection handler, so it needs no lock; formatted by hand so that no
/// locale can change the day and month names.
struct HTTPDateCache {
    private var second: time_t = -1
    private var text = ""

    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    mutating func current() -> String {
        var now = time(nil)
        if now == second { return text }
        second = now
        var parts = tm()
        gmtime_r(&now, &parts)
        text = Self.format(parts)
        return text
    }

    static func format(_ parts: tm) -> String {
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let day = days[Int(parts.tm_wday) % 7], month = months[Int(parts.tm_mon) % 12]
        return "\(day), \(two(parts.tm_mday)) \(month) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
