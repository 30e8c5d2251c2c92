// kvm-probe: checks that /dev/kvm runs a guest. Static, so it runs in the lab with no libraries.
// Opens /dev/kvm, checks KVM_GET_API_VERSION, creates a VM with 64 KiB of RAM and one vCPU in real
// mode, runs a few instructions that write "KVM-OK\n" to I/O port 0x3f8 and halt, and checks every
// exit. Prints "KVM-PROBE-OK" and exits 0 on success; names the failing step and exits 1 otherwise.
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static void fail(const char *step) {
    printf("KVM-PROBE-FAILED %s: %s\n", step, strerror(errno));
    exit(1);
}

int main(void) {
    // Guest code at 0x1000 (real mode, CS base 0):
    //   mov dx, 0x3f8; mov si, msg; next: lodsb; test al, al; jz done; out dx, al; jmp next; done: hlt
    static const uint8_t code[] = {
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xbe, 0x10, 0x10,       // mov si, 0x1010
        0xac,                   // lodsb
        0x84, 0xc0,             // test al, al
        0x74, 0x03,             // jz +3
        0xee,                   // out dx, al
        0xeb, 0xf8,             // jmp -8 (to lodsb)
        0xf4,                   // hlt
    };
    static const char message[] = "KVM-OK\n";
    const size_t memory_size = 0x10000;

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) fail("open /dev/kvm");
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) { printf("KVM-PROBE-FAILED api version %d, want %d\n", api, KVM_API_VERSION); return 1; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) fail("KVM_CREATE_VM");
    uint8_t *memory = mmap(NULL, memory_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) fail("mmap guest memory");
    memcpy(memory + 0x1000, code, sizeof code);
    memcpy(memory + 0x1010, message, sizeof message);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = memory_size, .userspace_addr = (uint64_t)memory,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) fail("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) fail("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run)) fail("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) fail("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) fail("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) fail("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 0x2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) fail("KVM_SET_REGS");

    char output[64];
    size_t output_length = 0;
    for (int exits = 0; exits < 100; exits++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            fail("KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != 0x3f8 || run->io.size != 1) {
                printf("KVM-PROBE-FAILED unexpected I/O exit port 0x%x size %d\n", run->io.port, run->io.size);
                return 1;
            }
            if (output_length < sizeof output - 1) output[output_length++] = *((char *)run + run->io.data_offset);
            break;
        case KVM_EXIT_HLT:
            output[output_length] = 0;
            if (strcmp(output, message) != 0) { printf("KVM-PROBE-FAILED guest wrote '%s'\n", output); return 1; }
            printf("KVM-PROBE-OK api=%d guest wrote %zu bytes to port 0x3f8 and halted after %d exits\n",
                   api, output_length, exits + 1);
            return 0;
        default:
            printf("KVM-PROBE-FAILED unexpected exit reason %u\n", run->exit_reason);
            return 1;
        }
    }
    printf("KVM-PROBE-FAILED guest did not halt within 100 exits\n");
    return 1;
}
