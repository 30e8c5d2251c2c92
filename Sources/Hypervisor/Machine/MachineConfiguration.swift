/// Everything needed to start a VM.
public struct MachineConfiguration: Sendable {
    public var memorySize: Int
    public var vcpuCount: Int
    /// The kernel (and initrd) to boot; not needed to restore a snapshot. A `Machine` copies it into
    /// guest RAM and does not keep it: its own `configuration.image` is nil once it exists.
    public var image: BootImage?
    public var commandLine: String
    /// One virtio-blk device per backend, in order (Linux names them vda, vdb, ...).
    public var disks: [any BlockBackend]
    public var readyMarker: String
    /// Also name virtio-mmio devices on the Linux command line (`virtio_mmio.device=`), for kernels
    /// built without ACPI; they are always described in the ACPI DSDT.
    public var announceVirtioOnCommandLine: Bool
    /// Receives every byte the guest writes to its serial console.
    public var consoleOutput: @Sendable (UInt8) -> Void
    /// Resume this saved machine instead of booting (`image` and `commandLine` are then not used).
    public var restore: RestorePlan?
    /// Stop the run (as `.stopRequested`) on the vCPU that printed the ready marker, before the guest
    /// runs on: how `streamvm snapshot --at-ready` pauses at exactly that point.
    public var pauseAtReady: Bool
    /// Serve virtio queue notifications on I/O threads through ioeventfds and raise virtio
    /// interrupts through irqfds, when the host's KVM offers both (see `QueueDoorbell`).
    public var useEventFDs = true
    /// Further devices (virtio-net, a timer, a balloon, ...), attached after the platform devices and
    /// disks through the machine's `DeviceManager`, in order.
    public var devices: [any MachineDevice] = []
    /// How guest RAM is backed: a shared memfd (default) or anonymous private memory, which KSM can
    /// merge (docs/hypervisor.md, "Guest memory for other modules").
    public var memoryBacking: MemoryBacking = .sharedMemfd
    /// Registers userfaultfd on a booted machine too: every page not yet in RAM (all of them at
    /// first, and any page dropped with `Machine.discardPages`) comes from this source on first
    /// touch (`ZeroPageSource` gives a fresh boot's zeros). A restore uses its plan's source instead.
    public var pageSource: (any PageSource)?
    /// Edits each booted vCPU's CPUID table after the machine's own policy (time dilation hides
    /// kvmclock and states another TSC frequency there). A restored vCPU keeps its snapshot's table.
    public var cpuidAdjustment: (@Sendable ([CPUIDEntry]) -> [CPUIDEntry])?
    /// Called on each vCPU thread with its index and kernel thread ID before it first enters the
    /// guest, so a caller can place it (a cgroup CPU limit for time dilation, CPU affinity). An error
    /// stops the machine before the vCPU runs.
    public var vcpuThreadStarted: (@Sendable (_ index: Int, _ threadID: Int32) throws -> Void)?
    /// Rate and latency each virtio-blk device is held to (each disk gets its own `DiskThrottle`);
    /// nil: as fast as its backend.
    public var diskLimit: DiskLimit?

    public init(memorySize: Int, vcpuCount: Int = 1, image: BootImage?, commandLine: String = "",
                disks: [any BlockBackend] = [], readyMarker: String = "STREAMVM-READY",
                announceVirtioOnCommandLine: Bool = true, consoleOutput: @escaping @Sendable (UInt8) -> Void = { _ in },
                restore: RestorePlan? = nil, pauseAtReady: Bool = false) {
        self.restore = restore
        self.pauseAtReady = pauseAtReady
        self.memorySize = memorySize
        self.vcpuCount = vcpuCount
        self.image = image
        self.commandLine = commandLine
        self.disks = disks
        self.readyMarker = readyMarker
        self.announceVirtioOnCommandLine = announceVirtioOnCommandLine
        self.consoleOutput = consoleOutput
    }
}
