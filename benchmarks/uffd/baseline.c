/* Minimal C userfaultfd handler: the baseline `streamvm bench uffd` compares the Swift handler
 * against, in the same run and on the same kind of memory (a memfd mapped shared, as guest RAM is).
 * A handler thread answers each missing-page fault with UFFDIO_COPY from a prefilled buffer; the main
 * thread touches every page once and times each touch (fault + service + return).
 *   usage: baseline PAGES blocking|busy    prints {"p50Nanoseconds":..,"p99Nanoseconds":..,"samples":..}
 * Built by the benchmark with: gcc -O2 -pthread baseline.c */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int uffd;
static long page_size;
static char *source;
static char *region;
static int busy;
static volatile int done;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *handler(void *unused) {
    (void)unused;
    struct uffd_msg messages[64];
    struct pollfd descriptor = { .fd = uffd, .events = POLLIN };
    while (!done) {
        ssize_t count = read(uffd, messages, sizeof messages);
        if (count < 0) {
            if (errno != EAGAIN && errno != EINTR) return NULL;
            if (!busy) poll(&descriptor, 1, 100);
            continue;
        }
        for (ssize_t i = 0; i < count / (ssize_t)sizeof messages[0]; i++) {
            if (messages[i].event != UFFD_EVENT_PAGEFAULT) continue;
            uint64_t address = messages[i].arg.pagefault.address & ~(uint64_t)(page_size - 1);
            struct uffdio_copy copy = { .dst = address, .src = (uint64_t)(source + (address - (uint64_t)region)),
                                        .len = (uint64_t)page_size, .mode = 0 };
            if (ioctl(uffd, UFFDIO_COPY, &copy) < 0 && errno == EEXIST) {
                struct uffdio_range range = { .start = address, .len = (uint64_t)page_size };
                ioctl(uffd, UFFDIO_WAKE, &range);
            }
        }
    }
    return NULL;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PAGES blocking|busy\n", argv[0]); return 2; }
    long pages = atol(argv[1]);
    busy = strcmp(argv[2], "busy") == 0;
    page_size = sysconf(_SC_PAGESIZE);
    size_t size = (size_t)pages * (size_t)page_size;
    source = aligned_alloc((size_t)page_size, size);
    for (size_t i = 0; i < size; i++) source[i] = (char)(i * 31 + 7);
    int memfd = (int)syscall(SYS_memfd_create, "baseline", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, (off_t)size) != 0) { perror("memfd"); return 1; }
    region = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, memfd, 0);
    if (region == MAP_FAILED) { perror("mmap"); return 1; }
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) { perror("userfaultfd"); return 1; }
    struct uffdio_api api = { .api = UFFD_API };
    if (ioctl(uffd, UFFDIO_API, &api) < 0) { perror("UFFDIO_API"); return 1; }
    struct uffdio_register registration = { .range = { .start = (uint64_t)region, .len = size }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (ioctl(uffd, UFFDIO_REGISTER, &registration) < 0) { perror("UFFDIO_REGISTER"); return 1; }
    pthread_t thread;
    pthread_create(&thread, NULL, handler, NULL);
    uint64_t *samples = calloc((size_t)pages, sizeof *samples);
    uint64_t sum = 0;
    for (long p = 0; p < pages; p++) {
        uint64_t start = now_ns();
        sum += (uint8_t)((volatile char *)region)[p * page_size];
        samples[p] = now_ns() - start;
    }
    done = 1;
    pthread_join(thread, NULL);
    qsort(samples, (size_t)pages, sizeof *samples, compare);
    printf("{\"p50Nanoseconds\":%lu,\"p99Nanoseconds\":%lu,\"samples\":%ld,\"checksum\":%lu}\n",
           (unsigned long)samples[pages / 2], (unsigned long)samples[(pages * 99) / 100], pages, (unsigned long)sum);
    return 0;
}
