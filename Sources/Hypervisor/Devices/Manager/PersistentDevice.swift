import Foundation

/// A device whose state is saved in a snapshot and loaded back on restore (Firecracker's persist.rs
/// idea: each device owns a Codable state value). The `DeviceManager` stores it under the device's
/// id, so the machine never needs to know the device's type.
public protocol PersistentDevice: AnyObject, Sendable {
    /// Names the state's type in vmstate.json: a restore refuses a record of another kind.
    var stateKind: String { get }
    /// The device's state as JSON (taken while the machine is paused).
    func saveState() throws -> Data
    /// Replaces the device's state with a saved one.
    func restoreState(_ data: Data) throws
    /// Makes everything the guest has handed the device durable before a snapshot (a disk flushes
    /// its backend); most devices have nothing to do.
    func prepareForSnapshot() throws
}

extension PersistentDevice {
    public func prepareForSnapshot() throws {}
}

/// The usual way to be a `PersistentDevice`: a Codable `State` value, encoded with sorted keys so
/// the same state gives the same bytes (and the same catalogue chunks).
public protocol CodableStateDevice: PersistentDevice {
    associatedtype State: Codable & Sendable
    func snapshot() -> State
    func restore(_ saved: State) throws
}

extension CodableStateDevice {
    public func saveState() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(snapshot())
    }

    public func restoreState(_ data: Data) throws {
        let saved: State
        do {
            saved = try JSONDecoder().decode(State.self, from: data)
        } catch {
            throw HypervisorError.invalidSnapshot("\(stateKind) device state is damaged: \(error)")
        }
        try restore(saved)
    }
}

extension Serial8250: CodableStateDevice {
    public var stateKind: String { "serial8250" }
}

extension VirtioMMIOTransport: CodableStateDevice {
    public var stateKind: String { "virtio-mmio/\(device.deviceType)" }

    /// A disk's completed writes must be on stable storage before the snapshot that refers to it.
    public func prepareForSnapshot() throws {
        if let block = device as? VirtioBlock { try block.backend.flush() }
    }
}
