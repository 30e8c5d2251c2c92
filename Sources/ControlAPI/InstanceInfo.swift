/// What `GET /` says about the machine besides its state: Firecracker's `InstanceInfo` fields
/// (`id`, `app_name`, `vmm_version`) plus the appliance it runs.
public struct InstanceInfo: Sendable, Equatable {
    /// The VMM's version, reported as `vmm_version`.
    public static let vmmVersion = "0.7.0"

    /// Firecracker's `id`: the appliance name unless the operator gives another.
    public var id: String
    public var appliance: String
    public var applianceVersion: String
    public var memoryMiB: Int

    public init(id: String, appliance: String, applianceVersion: String, memoryMiB: Int) {
        self.id = id
        self.appliance = appliance
        self.applianceVersion = applianceVersion
        self.memoryMiB = memoryMiB
    }
}
