import Foundation

/// The bodies the control API accepts, parsed strictly: the body must be one JSON object, every
/// field must be known and of the right type, and each error names the field (Firecracker also
/// refuses unknown fields, so a typo never passes silently). Public only for the fuzz package (Fuzz/),
/// which drives these parsers from outside the main package.
public enum ControlRequests {
    /// Control bodies are a few hundred bytes; anything larger is refused before parsing.
    public static let maximumBodyBytes = 64 << 10

    /// `PATCH /vm`: `{"state": "Paused" | "Resumed"}`.
    public enum VMStateChange: String, Sendable {
        case paused = "Paused"
        case resumed = "Resumed"
    }

    /// `PUT /snapshot/create`: where the state (vmstate.json) and guest RAM (memory.img) go.
    public struct SnapshotCreate: Sendable, Equatable {
        public var snapshotPath: String
        public var memoryFilePath: String
    }

    /// `PUT /actions`: `{"action_type": "InstanceStop"}` ends the run as SIGTERM does (the VMM stops
    /// the guest and exits with "stop requested"). Firecracker's endpoint and field; this action
    /// type is StreamVM's own (Firecracker ends a VM by killing its process).
    public enum InstanceAction: String, Sendable {
        case instanceStop = "InstanceStop"
    }

    public static func instanceAction(_ body: Data) throws(ControlAPIError) -> InstanceAction {
        let object = try jsonObject(body, allowed: ["action_type"])
        let text = try string(object, "action_type")
        guard let action = InstanceAction(rawValue: text) else {
            throw .badRequest("field action_type: \"\(text.prefix(40))\" is not supported (only \"InstanceStop\")")
        }
        return action
    }

    public static func vmStateChange(_ body: Data) throws(ControlAPIError) -> VMStateChange {
        let object = try jsonObject(body, allowed: ["state"])
        let text = try string(object, "state")
        guard let change = VMStateChange(rawValue: text) else {
            throw .badRequest("field state: \"\(text.prefix(40))\" is not \"Paused\" or \"Resumed\"")
        }
        return change
    }

    public static func snapshotCreate(_ body: Data) throws(ControlAPIError) -> SnapshotCreate {
        let object = try jsonObject(body, allowed: ["snapshot_path", "mem_file_path", "snapshot_type", "version"])
        if object["snapshot_type"] != nil {
            let type = try string(object, "snapshot_type")
            guard type == "Full" else {
                throw .badRequest("field snapshot_type: \"\(type.prefix(40))\" is not supported; only \"Full\" snapshots are taken")
            }
        }
        let state = try path(object, "snapshot_path")
        let memory = try path(object, "mem_file_path")
        guard state != memory else { throw .badRequest("fields snapshot_path and mem_file_path name the same file") }
        return SnapshotCreate(snapshotPath: state, memoryFilePath: memory)
    }

    // MARK: - Field checks

    private static func jsonObject(_ body: Data, allowed: Set<String>) throws(ControlAPIError) -> [String: Any] {
        guard !body.isEmpty else { throw .badRequest("the request needs a JSON object body") }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: body)
        } catch {
            throw .badRequest("the body is not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw .badRequest("the body must be a JSON object") }
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw .badRequest("field \(unknown.prefix(60)): unknown (expected \(allowed.sorted().joined(separator: ", ")))")
        }
        return object
    }

    private static func string(_ object: [String: Any], _ field: String) throws(ControlAPIError) -> String {
        guard let value = object[field] else { throw .badRequest("missing field \(field)") }
        guard let text = value as? String else { throw .badRequest("field \(field): expected a string") }
        return text
    }

    /// An absolute path to a file in an existing directory, without NUL bytes.
    private static func path(_ object: [String: Any], _ field: String) throws(ControlAPIError) -> String {
        let text = try string(object, field)
        guard text.hasPrefix("/"), text.utf8.count <= Int(PATH_MAX), !text.utf8.contains(0), !text.hasSuffix("/") else {
            throw .badRequest("field \(field): must be an absolute file path")
        }
        let parent = (text as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .badRequest("field \(field): directory \(parent) does not exist")
        }
        return text
    }
}
