// /sbin/init of the block benchmark disk (scripts/lab-bench): runs inside a guest of the VMM being
// measured (our VMM or QEMU, inside the lab) and reads its own root disk /dev/vda with O_DIRECT, so
// every read is a virtio-blk request (the guest page cache is bypassed), one request in flight:
//   1. one sequential pass over the whole disk (warms the host's page cache: "from a cached file");
//   2. 4 KiB reads at random 4 KiB-aligned offsets for RANDOM_SECONDS -> IOPS;
//   3. one sequential pass in 1 MiB reads -> MB/s.
// Prints "BLKBENCH-RESULT random_4k_iops=<n> sequential_mb_s=<n> ..." and powers the guest off
// (ACPI power-off when the guest has ACPI, else a reboot, which reboot=t turns into a triple fault
// that ends the run in QEMU -no-reboot and in our VMM alike).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define RANDOM_SECONDS 5.0
#define RANDOM_BLOCK 4096
#define SEQUENTIAL_BLOCK (1 << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void finish(int status) {
    fflush(stdout);
    sync();
    // Without ACPI there is no way to power off: reboot (a triple fault with reboot=t).
    reboot(access("/sys/firmware/acpi/tables", F_OK) == 0 ? RB_POWER_OFF : RB_AUTOBOOT);
    _exit(status);
}

// Reads [0, size) in `block`-byte O_DIRECT reads; returns seconds taken, or -1 on a failed read.
static double sequential_pass(int fd, uint64_t size, char *buffer, size_t block) {
    double start = now();
    for (uint64_t offset = 0; offset + block <= size; offset += block) {
        if (pread(fd, buffer, block, (off_t)offset) != (ssize_t)block) return -1;
    }
    return now() - start;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
    if (fd < 0) { perror("BLKBENCH-FAILED open /dev/vda"); finish(1); }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < SEQUENTIAL_BLOCK) { printf("BLKBENCH-FAILED disk size\n"); finish(1); }
    size -= size % SEQUENTIAL_BLOCK;
    char *buffer = NULL;
    if (posix_memalign((void **)&buffer, 4096, SEQUENTIAL_BLOCK) != 0) { printf("BLKBENCH-FAILED memory\n"); finish(1); }

    double warm = sequential_pass(fd, size, buffer, SEQUENTIAL_BLOCK);
    if (warm < 0) { printf("BLKBENCH-FAILED warm-up read\n"); finish(1); }

    uint64_t blocks = size / RANDOM_BLOCK, state = 0x2545f4914f6cdd1dull, reads = 0;
    double start = now(), elapsed = 0;
    while (elapsed < RANDOM_SECONDS) {
        for (int i = 0; i < 16; i++, reads++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull; // Knuth's MMIX LCG
            if (pread(fd, buffer, RANDOM_BLOCK, (off_t)(((state >> 33) % blocks) * RANDOM_BLOCK)) != RANDOM_BLOCK) {
                printf("BLKBENCH-FAILED random read\n");
                finish(1);
            }
        }
        elapsed = now() - start;
    }
    double sequential = sequential_pass(fd, size, buffer, SEQUENTIAL_BLOCK);
    if (sequential <= 0) { printf("BLKBENCH-FAILED sequential read\n"); finish(1); }
    printf("BLKBENCH-RESULT random_4k_iops=%.0f sequential_mb_s=%.1f random_reads=%llu disk_mib=%llu warmup_s=%.2f\n",
           (double)reads / elapsed, (double)size / 1e6 / sequential, (unsigned long long)reads,
           (unsigned long long)(size >> 20), warm);
    finish(0);
    return 0;
}
