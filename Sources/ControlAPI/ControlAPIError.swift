import Foundation
import Hummingbird

/// A refused control-API request: an HTTP status and a message that names the field or state at
/// fault. Sent as Firecracker's error body, `{"fault_message": "…"}`, so its users' tools read it.
public struct ControlAPIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String

    public init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status.code) \(message)" }

    static func badRequest(_ message: String) -> ControlAPIError { ControlAPIError(.badRequest, message) }

    /// The response a client receives.
    func response() -> Response {
        JSONBody.response(status, ["fault_message": message])
    }
}

/// JSON responses with the content type set, built from plain dictionaries (the API's bodies are small).
enum JSONBody {
    static func response(_ status: HTTPResponse.Status, _ object: [String: any Sendable]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        var buffer = ByteBuffer()
        buffer.writeBytes(data)
        buffer.writeString("\n")
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: buffer))
    }
}
