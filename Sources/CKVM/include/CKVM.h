// KVM ioctl numbers and struct accessors for Swift. The _IO* macros cannot be imported and the
// anonymous unions inside `struct kvm_run` import awkwardly, so each request number is re-exported as
// a constant and each exit field has a one-line accessor. No logic lives here.
#ifndef CKVM_H
#define CKVM_H
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>

// System (/dev/kvm) requests.
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

// VM requests.
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
// VM state for snapshots: in-kernel PIC/IOAPIC, PIT, kvmclock.
static const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2;
static const unsigned long CKVM_SET_PIT2 = KVM_SET_PIT2;
static const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK;
static const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
// The frequency a vCPU's TSC runs at (time dilation tells the guest another one).
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
static const unsigned int CKVM_IRQCHIP_PIC_MASTER = KVM_IRQCHIP_PIC_MASTER;
static const unsigned int CKVM_IRQCHIP_PIC_SLAVE = KVM_IRQCHIP_PIC_SLAVE;
static const unsigned int CKVM_IRQCHIP_IOAPIC = KVM_IRQCHIP_IOAPIC;

// vCPU requests.
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
// vCPU state for snapshots.
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;

// Capabilities the VMM checks.
static const int CKVM_CAP_IRQCHIP = KVM_CAP_IRQCHIP;
static const int CKVM_CAP_USER_MEMORY = KVM_CAP_USER_MEMORY;
static const int CKVM_CAP_PIT2 = KVM_CAP_PIT2;
static const int CKVM_CAP_IOEVENTFD = KVM_CAP_IOEVENTFD;
static const int CKVM_CAP_IRQFD = KVM_CAP_IRQFD;
static const int CKVM_CAP_NR_VCPUS = KVM_CAP_NR_VCPUS;
static const int CKVM_CAP_MAX_VCPUS = KVM_CAP_MAX_VCPUS;
static const int CKVM_CAP_XSAVE = KVM_CAP_XSAVE;
static const int CKVM_CAP_XCRS = KVM_CAP_XCRS;
static const int CKVM_CAP_DEBUGREGS = KVM_CAP_DEBUGREGS;

static const unsigned int CKVM_PIT_SPEAKER_DUMMY = KVM_PIT_SPEAKER_DUMMY;

// Typed wrappers for the variadic ioctl(2); they only forward the call.
/* The calling thread's kernel ID (glibc 2.36 of Debian 12 has gettid(), but Swift's Glibc module
 * does not export it): what cgroup `tasks`/`cgroup.threads` files take. */
static inline int ckvm_thread_id(void) { return (int)syscall(SYS_gettid); }

static inline int ckvm_ioctl_pointer(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}
static inline int ckvm_ioctl_value(int fd, unsigned long request, unsigned long argument) {
    return ioctl(fd, request, argument);
}

// KVM_IOEVENTFD flag: signal only when the written value equals datamatch (an enum-based macro).
static const unsigned int CKVM_IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH;
// eventfd(2) for irqfd/ioeventfd; Swift's Glibc module does not include <sys/eventfd.h>.
#include <sys/eventfd.h>
static const int CKVM_EFD_CLOEXEC = EFD_CLOEXEC;
static inline int ckvm_eventfd(unsigned int initial, int flags) { return eventfd(initial, flags); }

// memfd_create(2) is hidden behind _GNU_SOURCE in glibc's headers; call it by syscall number.
static const unsigned int CKVM_MFD_CLOEXEC = MFD_CLOEXEC;
static inline int ckvm_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

// malloc_trim(3) (returns freed heap to the kernel after start-up); Swift's Glibc module does not
// include <malloc.h>.
#include <malloc.h>
static inline int ckvm_malloc_trim(size_t pad) { return malloc_trim(pad); }

// Dirty-page logging (api.rst, KVM_GET_DIRTY_LOG): the request, the memslot flag, and the bitmap
// pointer inside the anonymous union of struct kvm_dirty_log.
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const unsigned int CKVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;
static inline void ckvm_dirty_log_set_bitmap(struct kvm_dirty_log *log, void *bitmap) { log->dirty_bitmap = bitmap; }

// Dropping guest pages so the next touch faults again: fallocate(2) PUNCH_HOLE | KEEP_SIZE on the
// memfd (linux/falloc.h; glibc hides fallocate behind _GNU_SOURCE, so it is called by number),
// madvise(2) MADV_DONTNEED on anonymous memory, MADV_MERGEABLE to offer it to KSM.
#include <linux/falloc.h>
static const int CKVM_FALLOC_PUNCH_HOLE_KEEP_SIZE = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
static inline int ckvm_fallocate(int fd, int mode, long offset, long length) {
    return (int)syscall(SYS_fallocate, fd, mode, offset, length);
}
static const int CKVM_MADV_DONTNEED = MADV_DONTNEED;
static const int CKVM_MADV_MERGEABLE = MADV_MERGEABLE;

// Field accessors for the exit union of struct kvm_run.
static inline uint32_t ckvm_run_exit_reason(const struct kvm_run *run) { return run->exit_reason; }
static inline void ckvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value) { run->immediate_exit = value; }

static inline uint8_t ckvm_run_io_direction(const struct kvm_run *run) { return run->io.direction; }
static inline uint8_t ckvm_run_io_size(const struct kvm_run *run) { return run->io.size; }
static inline uint16_t ckvm_run_io_port(const struct kvm_run *run) { return run->io.port; }
static inline uint32_t ckvm_run_io_count(const struct kvm_run *run) { return run->io.count; }
static inline uint64_t ckvm_run_io_data_offset(const struct kvm_run *run) { return run->io.data_offset; }

static inline uint64_t ckvm_run_mmio_phys_addr(const struct kvm_run *run) { return run->mmio.phys_addr; }
static inline uint8_t *ckvm_run_mmio_data(struct kvm_run *run) { return run->mmio.data; }
static inline uint32_t ckvm_run_mmio_len(const struct kvm_run *run) { return run->mmio.len; }
static inline uint8_t ckvm_run_mmio_is_write(const struct kvm_run *run) { return run->mmio.is_write; }

static inline uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *run) { return run->fail_entry.hardware_entry_failure_reason; }
static inline uint64_t ckvm_run_hw_exit_reason(const struct kvm_run *run) { return run->hw.hardware_exit_reason; }
static inline uint32_t ckvm_run_exception_number(const struct kvm_run *run) { return run->ex.exception; }
static inline uint32_t ckvm_run_exception_error_code(const struct kvm_run *run) { return run->ex.error_code; }

static inline uint32_t ckvm_run_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
static inline uint32_t ckvm_run_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
static inline uint64_t ckvm_run_emulation_flags(const struct kvm_run *run) { return run->emulation_failure.flags; }
static inline uint8_t ckvm_run_emulation_insn_size(const struct kvm_run *run) { return run->emulation_failure.insn_size; }
static inline const uint8_t *ckvm_run_emulation_insn_bytes(const struct kvm_run *run) { return run->emulation_failure.insn_bytes; }

static inline uint32_t ckvm_run_system_event_type(const struct kvm_run *run) { return run->system_event.type; }

// Flexible-array headers: where the entries of kvm_cpuid2 / kvm_msrs begin.
static inline struct kvm_cpuid_entry2 *ckvm_cpuid2_entries(struct kvm_cpuid2 *cpuid) { return cpuid->entries; }
static inline struct kvm_msr_entry *ckvm_msrs_entries(struct kvm_msrs *msrs) { return msrs->entries; }

// Exception injection fields of struct kvm_vcpu_events (nested anonymous struct).
static inline void ckvm_events_inject_exception(struct kvm_vcpu_events *events, uint8_t vector) {
    events->exception.injected = 1;
    events->exception.nr = vector;
    events->exception.has_error_code = 0;
    events->exception.error_code = 0;
}

// userfaultfd(2): request numbers and flags (linux/userfaultfd.h macros Swift cannot import).
static const unsigned long CUFFDIO_API = UFFDIO_API;
static const unsigned long CUFFDIO_REGISTER = UFFDIO_REGISTER;
static const unsigned long CUFFDIO_UNREGISTER = UFFDIO_UNREGISTER;
static const unsigned long CUFFDIO_COPY = UFFDIO_COPY;
static const unsigned long CUFFDIO_ZEROPAGE = UFFDIO_ZEROPAGE;
static const unsigned long CUFFDIO_WAKE = UFFDIO_WAKE;
static const uint64_t CUFFD_API = UFFD_API;
static const uint64_t CUFFDIO_REGISTER_MODE_MISSING = UFFDIO_REGISTER_MODE_MISSING;
static const uint64_t CUFFD_FEATURE_MISSING_SHMEM = UFFD_FEATURE_MISSING_SHMEM;
static const uint64_t CUFFD_FEATURE_THREAD_ID = UFFD_FEATURE_THREAD_ID;
static const uint8_t CUFFD_EVENT_PAGEFAULT = UFFD_EVENT_PAGEFAULT;
static const unsigned long CUSERFAULTFD_IOC_NEW = USERFAULTFD_IOC_NEW;
static inline int ckvm_userfaultfd(int flags) { return (int)syscall(SYS_userfaultfd, flags); }
static inline uint64_t ckvm_uffd_msg_fault_address(const struct uffd_msg *message) { return message->arg.pagefault.address; }

#endif
