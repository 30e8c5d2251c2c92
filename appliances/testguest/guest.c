/* StreamVM flat test guest: runs in ring 0, 64-bit, identity-mapped, interrupts off.
 * The command line selects what to exercise:
 *   mode=hello    print STREAMVM-READY and power off (exit code 0)
 *   mode=memory   write and verify patterns across RAM above 4 MiB
 *   mode=blk      virtio-blk: read sectors, check the host's pattern, write sectors, read back
 *   mode=net      virtio-net: `count=N` frames (60..1514 bytes, every 4th with a checksum left to the
 *                 receiver) through the host's echo peer; every echoed byte checked
 *   mode=cpurate  `rounds=R` rounds of `work=N` multiply-add steps timed by the TSC (perceived CPU speed)
 *   mode=rtc      read the CMOS RTC's wall-clock time, again `gap_ms=G` perceived ms later (when told a TSC frequency)
 *   mode=diskrate virtio-blk: `mib=M` MiB of 64 KiB sequential reads timed by the TSC (perceived disk speed)
 *   mode=netrate  virtio-net: role=send sends `count=N` frames of `size=S`; role=recv times their arrival
 *                 by its TSC (perceived throughput, for time-dilation benchmarks)
 *   mode=netecho  virtio-net: echo `count=N` frames back to their sender (MACs swapped); the far end
 *                 of a guest-to-guest test through the host switch
 *   mode=nethostile virtio-net: malicious tx/rx chains; expects DEVICE_NEEDS_RESET or refusal, then a working device
 *   mode=hostile  virtio-blk: submit malformed descriptor chains and check the device's answers (`rounds=N` times)
 *   mode=reset    ask for a reboot through the i8042 controller
 *   mode=triple   fault with an empty IDT (triple fault)
 *   mode=int3     execute int3 with a breakpoint handler installed
 *   mode=blkbench virtio-blk: `count=N` random 4 KiB reads, then `seqmib=M` MiB of 64 KiB sequential reads,
 *                 each phase between BENCH-... lines the VMM timestamps
 *   mode=acpi     find the ACPI tables and power off through the FADT sleep control register
 *   mode=spin     print STREAMVM-READY, then spin forever (for host-side stop and timeout tests)
 *   mode=smp      start every AP listed in the MADT (INIT-SIPI-SIPI, real-mode trampoline into long
 *                 mode), then every CPU fills and verifies its own `kib=K` KiB region for `rounds=R`
 *                 rounds, counting each round with lock xadd and meeting the others at a barrier;
 *                 prints `smp result: cpus … rounds … counter … errors …`
 *   mode=ticker   run until stopped: rewrite `mib=N` MiB (default 4) from 8 MiB round after round,
 *                 verifying the previous round's words before overwriting them, print `ticker round …
 *                 checksum …` every `every=K` rounds (READY after the first); on a STREAMVM-RESUMED
 *                 console line verify the whole region and print `memory intact` or the first bad address
 *   mode=dedupfill fill `mib=N` MiB (default 8) from 8 MiB with identical, similar, compressible and
 *                 unique pages (`seed=S` varies the last two between machines), print STREAMVM-READY,
 *                 then rewrite `rewrite=R` pages per round until stopped; a `STREAMVM-VERIFY` console
 *                 line checks every byte and prints `dedupfill verified pages … bad …`
 *   mode=snapshot fill `mib=N` MiB (default 16) from 8 MiB with page patterns (`words=W` words per page,
 *                 default 8; every 4th page zero), print
 *                 their checksum and STREAMVM-READY (where `streamvm snapshot --at-ready` pauses); then
 *                 (after a resume) re-read every page, print the checksum and bad-page count, print
 *                 STREAMVM-READY again and power off
 *   mode=memreplay  a snapshot appliance that replays memory accesses (stream-boot benchmarks): fill
 *                 `mib=N` MiB (default 32) from 8 MiB with the disk's bytes (64 KiB reads from 4 KiB
 *                 into the disk, so memory chunks are not disk chunks), print STREAMVM-READY (where
 *                 the snapshot is taken); after a resume touch `count=K` pseudo-random pages (default
 *                 200: the first response's working set), print STREAMVM-READY, then walk `seqmib=M`
 *                 MiB (default 16) page by page (the session afterwards), print a checksum, power off
 * Every test prints STREAMVM-READY when it passed, then powers off with code 0 (1 on failure). */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THR_EMPTY 0x20
#define I8042_COMMAND 0x64
#define I8042_PULSE_RESET 0xfe

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(u64 address) { return *(volatile u32 *)address; }
static inline void mmio_write32(u64 address, u32 value) { *(volatile u32 *)address = value; }
static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

static void putc_serial(char c) {
    while (!(inb(COM1_LSR) & LSR_THR_EMPTY)) {}
    outb(COM1, (u8)c);
}
static void puts_serial(const char *s) { while (*s) { if (*s == '\n') putc_serial('\r'); putc_serial(*s++); } }
static void put_hex(u64 value) {
    puts_serial("0x");
    for (int shift = 60; shift >= 0; shift -= 4) putc_serial("0123456789abcdef"[(value >> shift) & 0xf]);
}
static void *memset_guest(void *d, int c, u64 n) { u8 *p = d; while (n--) *p++ = (u8)c; return d; }

static int starts_with(const char *s, const char *prefix) {
    while (*prefix) if (*s++ != *prefix++) return 0;
    return 1;
}
/* Finds "key=" in the command line and returns what follows, or 0. */
static const char *argument(const char *cmdline, const char *key) {
    for (const char *p = cmdline; *p; p++) {
        if ((p == cmdline || p[-1] == ' ') && starts_with(p, key)) {
            const char *k = key; const char *q = p;
            while (*k) { k++; q++; }
            if (*q == '=') return q + 1;
        }
    }
    return 0;
}
static int word_is(const char *value, const char *word) {
    if (!value) return 0;
    while (*word) if (*value++ != *word++) return 0;
    return *value == 0 || *value == ' ';
}

static u64 parse_number(const char *value, u64 fallback);
static int failures;
static void check(int ok, const char *what) {
    puts_serial(ok ? "ok   " : "FAIL ");
    puts_serial(what);
    puts_serial("\n");
    if (!ok) failures++;
}

/* ---- memory ---- */
static int memory_test(u64 ram_size) {
    u64 start = 4ul << 20;
    u64 end = ram_size < 0xc0000000ul ? ram_size : 0xc0000000ul; /* low RAM only: identity map covers it */
    for (u64 a = start; a + 8 <= end; a += 4096) *(volatile u64 *)a = a ^ 0x5a5a5a5a5a5a5a5aul;
    u64 bad = 0;
    for (u64 a = start; a + 8 <= end; a += 4096) if (*(volatile u64 *)a != (a ^ 0x5a5a5a5a5a5a5a5aul)) bad++;
    puts_serial("pages checked up to "); put_hex(end); puts_serial("\n");
    check(bad == 0, "memory pattern");
    return failures;
}

/* ---- snapshot / lazy restore ---- */
#define SNAPSHOT_BASE (8ul << 20)
/* Word `w` of page `page`: an LCG step of both, so every page and every offset differs. */
static u64 page_word(u64 page, u64 w) { return (page * 6364136223846793005ul + w * 1442695040888963407ul) ^ 0x5eed5eed5eed5eedul; }
static int page_is_zero(u64 page) { return page % 4 == 3; }

/* Words per page the test writes and reads. Each guest memory access is costly on a host with
 * software-nested KVM (about 30 µs measured here), so the default samples 8 words spread over each
 * page (`words=512` checks whole pages). */
static u64 words_per_page = 8;
static u64 word_step(void) { return 512 / words_per_page; }

/* Checksum of the region as the guest now reads it (position-dependent). */
static u64 region_checksum(u64 pages) {
    u64 sum = 0;
    for (u64 p = 0; p < pages; p++) {
        const volatile u64 *words = (const volatile u64 *)(SNAPSHOT_BASE + p * 4096);
        for (u64 w = 0; w < 512; w += word_step()) sum = (sum ^ words[w]) * 0x100000001b3ul + p;
    }
    return sum;
}

static int snapshot_test(const char *cmdline, u64 ram_size) {
    u64 mib = parse_number(argument(cmdline, "mib"), 16);
    u64 pages = mib * 256;
    u64 words = parse_number(argument(cmdline, "words"), 8);
    words_per_page = (words == 0 || words > 512 || 512 % words) ? 8 : words;
    if (SNAPSHOT_BASE + pages * 4096 > ram_size || SNAPSHOT_BASE + pages * 4096 > 0xc0000000ul) {
        check(0, "snapshot region fits in low RAM");
        return failures;
    }
    for (u64 p = 0; p < pages; p++) {
        volatile u64 *words = (volatile u64 *)(SNAPSHOT_BASE + p * 4096);
        for (u64 w = 0; w < 512; w += word_step()) words[w] = page_is_zero(p) ? 0 : page_word(p, w);
    }
    u64 before = region_checksum(pages);
    puts_serial("snapshot checksum "); put_hex(before); puts_serial("\n");
    puts_serial("STREAMVM-READY\n");
    /* A snapshot taken at the marker resumes here, with every page above still to be loaded. */
    u64 bad = 0;
    for (u64 p = 0; p < pages; p++) {
        const volatile u64 *words = (const volatile u64 *)(SNAPSHOT_BASE + p * 4096);
        for (u64 w = 0; w < 512; w += word_step()) {
            if (words[w] != (page_is_zero(p) ? 0 : page_word(p, w))) { bad++; break; }
        }
    }
    u64 after = region_checksum(pages);
    puts_serial("resumed checksum "); put_hex(after); puts_serial(" bad pages "); put_hex(bad); puts_serial("\n");
    check(bad == 0 && after == before, "memory identical after resume");
    return failures;
}

/* ---- virtio-mmio / virtio-blk (virtio 1.x §4.2.2, §5.2) ---- */
#define VIRTIO_BASE 0xd0000000ul
#define VIRTIO_MAGIC 0x000
#define VIRTIO_VERSION 0x004
#define VIRTIO_DEVICE_ID 0x008
#define VIRTIO_DEVICE_FEATURES 0x010
#define VIRTIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_DRIVER_FEATURES 0x020
#define VIRTIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_QUEUE_SEL 0x030
#define VIRTIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_QUEUE_NUM 0x038
#define VIRTIO_QUEUE_READY 0x044
#define VIRTIO_QUEUE_NOTIFY 0x050
#define VIRTIO_INTERRUPT_STATUS 0x060
#define VIRTIO_INTERRUPT_ACK 0x064
#define VIRTIO_STATUS 0x070
#define VIRTIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_CONFIG 0x100
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64
#define DESC_NEXT 1
#define DESC_WRITE 2
#define QUEUE_SIZE 8
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2

struct descriptor { u64 address; u32 length; u16 flags; u16 next; };
struct available { u16 flags; u16 index; u16 ring[QUEUE_SIZE]; u16 used_event; };
struct used_element { u32 id; u32 length; };
struct used { u16 flags; u16 index; struct used_element ring[QUEUE_SIZE]; u16 avail_event; };
struct request_header { u32 type; u32 reserved; u64 sector; };

static struct descriptor descriptors[QUEUE_SIZE] __attribute__((aligned(16)));
static struct available avail __attribute__((aligned(4096)));
static struct used used_ring __attribute__((aligned(4096)));
static struct request_header header __attribute__((aligned(16)));
static u8 data[128 * 512] __attribute__((aligned(4096))); /* up to 64 KiB per request */
static volatile u8 status_byte;
static u16 used_seen;

static u32 reg_read(u32 offset) { return mmio_read32(VIRTIO_BASE + offset); }
static void reg_write(u32 offset, u32 value) { mmio_write32(VIRTIO_BASE + offset, value); }

/* Brings the device up per virtio 1.x §3.1.1 with a QUEUE_SIZE queue; returns 0 on success. */
static int virtio_setup(void) {
    if (reg_read(VIRTIO_MAGIC) != 0x74726976 || reg_read(VIRTIO_VERSION) != 2 || reg_read(VIRTIO_DEVICE_ID) != 2) return -1;
    reg_write(VIRTIO_STATUS, 0);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    reg_write(VIRTIO_DEVICE_FEATURES_SEL, 1);
    if (!(reg_read(VIRTIO_DEVICE_FEATURES) & 1)) return -2; /* VIRTIO_F_VERSION_1 */
    reg_write(VIRTIO_DRIVER_FEATURES_SEL, 1);
    reg_write(VIRTIO_DRIVER_FEATURES, 1);
    reg_write(VIRTIO_DRIVER_FEATURES_SEL, 0);
    reg_write(VIRTIO_DRIVER_FEATURES, 0);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(reg_read(VIRTIO_STATUS) & STATUS_FEATURES_OK)) return -3;
    reg_write(VIRTIO_QUEUE_SEL, 0);
    if (reg_read(VIRTIO_QUEUE_NUM_MAX) < QUEUE_SIZE) return -4;
    memset_guest(descriptors, 0, sizeof descriptors);
    memset_guest(&avail, 0, sizeof avail);
    memset_guest(&used_ring, 0, sizeof used_ring);
    used_seen = 0;
    reg_write(VIRTIO_QUEUE_NUM, QUEUE_SIZE);
    reg_write(VIRTIO_QUEUE_DESC_LOW, (u32)(u64)descriptors);
    reg_write(VIRTIO_QUEUE_DESC_HIGH, 0);
    reg_write(VIRTIO_QUEUE_DRIVER_LOW, (u32)(u64)&avail);
    reg_write(VIRTIO_QUEUE_DRIVER_HIGH, 0);
    reg_write(VIRTIO_QUEUE_DEVICE_LOW, (u32)(u64)&used_ring);
    reg_write(VIRTIO_QUEUE_DEVICE_HIGH, 0);
    reg_write(VIRTIO_QUEUE_READY, 1);
    if (reg_read(VIRTIO_QUEUE_READY) != 1) return -5;
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    return 0;
}

/* Publishes chain `head` and notifies; returns 1 if the device returned a used element. */
static int submit(u16 head, u16 avail_step) {
    avail.ring[avail.index % QUEUE_SIZE] = head;
    barrier();
    avail.index += avail_step;
    barrier();
    reg_write(VIRTIO_QUEUE_NOTIFY, 0);
    /* The VMM may serve the notification on an I/O thread (ioeventfd), so wait, as a driver would,
     * until the device returned a used element or flagged DEVICE_NEEDS_RESET. Polling memory costs
     * nothing; a status read is a VM exit, so only every 1024 spins. Bounded, so a device that does
     * neither fails the check that follows instead of hanging the guest. */
    for (u64 spin = 0; *(volatile u16 *)&used_ring.index == used_seen && spin < (1ul << 32); spin++) {
        if ((spin & 1023) == 1023 && (reg_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET)) break;
        __asm__ volatile("pause");
    }
    barrier();
    reg_write(VIRTIO_INTERRUPT_ACK, reg_read(VIRTIO_INTERRUPT_STATUS));
    if (used_ring.index == used_seen) return 0;
    used_seen = used_ring.index;
    return 1;
}

/* A well-formed request: header, optional data, status byte. Returns the status byte, or 0xee when
 * the device did not complete it. */
static u8 request(u32 type, u64 sector, u32 data_length) {
    header.type = type; header.reserved = 0; header.sector = sector;
    status_byte = 0xee;
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 1 };
    u16 last = 1;
    if (data_length) {
        descriptors[1] = (struct descriptor){ (u64)data, data_length, (u16)(DESC_NEXT | (type == BLK_T_OUT ? 0 : DESC_WRITE)), 2 };
        last = 2;
    }
    descriptors[last] = (struct descriptor){ (u64)&status_byte, 1, DESC_WRITE, 0 };
    if (!submit(0, 1)) return 0xee;
    return status_byte;
}

static u8 disk_pattern(u64 sector, u32 i) { return (u8)(sector * 7 + i); }
static u8 written_pattern(u64 sector, u32 i) { return (u8)(0xa5 ^ (sector + i)); }

static int blk_test(void) {
    int setup = virtio_setup();
    check(setup == 0, "virtio-blk device setup");
    if (setup) { put_hex((u64)(long)setup); puts_serial("\n"); return failures; }
    u64 capacity = (u64)reg_read(VIRTIO_CONFIG) | ((u64)reg_read(VIRTIO_CONFIG + 4) << 32);
    puts_serial("capacity sectors "); put_hex(capacity); puts_serial("\n");
    check(capacity >= 64, "capacity at least 64 sectors");

    check(request(BLK_T_IN, 0, 8 * 512) == BLK_S_OK, "read sectors 0-7");
    int good = 1;
    for (u32 s = 0; s < 8; s++) for (u32 i = 0; i < 512; i++) if (data[s * 512 + i] != disk_pattern(s, i)) good = 0;
    check(good, "sectors 0-7 hold the host's pattern");
    check(request(BLK_T_IN, capacity - 1, 512) == BLK_S_OK, "read last sector");
    good = 1;
    for (u32 i = 0; i < 512; i++) if (data[i] != disk_pattern(capacity - 1, i)) good = 0;
    check(good, "last sector holds the host's pattern");

    for (u32 s = 0; s < 2; s++) for (u32 i = 0; i < 512; i++) data[s * 512 + i] = written_pattern(10 + s, i);
    check(request(BLK_T_OUT, 10, 2 * 512) == BLK_S_OK, "write sectors 10-11");
    memset_guest(data, 0, sizeof data);
    check(request(BLK_T_IN, 10, 2 * 512) == BLK_S_OK, "read back sectors 10-11");
    good = 1;
    for (u32 s = 0; s < 2; s++) for (u32 i = 0; i < 512; i++) if (data[s * 512 + i] != written_pattern(10 + s, i)) good = 0;
    check(good, "sectors 10-11 hold what was written");
    check(request(BLK_T_FLUSH, 0, 0) == BLK_S_OK, "flush");
    check(request(BLK_T_GET_ID, 0, 20) == BLK_S_OK && data[0] == 's', "get id");
    check(request(BLK_T_IN, capacity, 512) == BLK_S_IOERR, "read past the end fails with IOERR");
    check(request(BLK_T_IN, 0xffffffffffffffful, 512) == BLK_S_IOERR, "read at a huge sector fails with IOERR");
    check(request(99, 0, 0) == BLK_S_UNSUPP, "unknown request type is unsupported");
    return failures;
}

static u64 parse_number(const char *value, u64 fallback) {
    if (!value || *value < '0' || *value > '9') return fallback;
    u64 n = 0;
    while (*value >= '0' && *value <= '9') n = n * 10 + (u64)(*value++ - '0');
    return n;
}

static int blk_bench(const char *cmdline) {
    if (virtio_setup() != 0) { check(0, "virtio-blk device setup"); return failures; }
    u64 capacity = (u64)reg_read(VIRTIO_CONFIG) | ((u64)reg_read(VIRTIO_CONFIG + 4) << 32);
    u64 count = parse_number(argument(cmdline, "count"), 1000);
    u64 sequential_mib = parse_number(argument(cmdline, "seqmib"), 16);
    u64 blocks = capacity / 8;
    if (blocks == 0) { check(0, "disk holds at least one 4 KiB block"); return failures; }
    u64 state = 0x2545f4914f6cdd1dul;
    int errors = 0;
    puts_serial("BENCH-RANDOM-START\n");
    for (u64 i = 0; i < count; i++) {
        state = state * 6364136223846793005ul + 1442695040888963407ul; /* Knuth's MMIX LCG */
        if (request(BLK_T_IN, ((state >> 33) % blocks) * 8, 4096) != BLK_S_OK) errors++;
    }
    puts_serial("BENCH-RANDOM-END\n");
    /* Sequential phase: 64 KiB requests, wrapping at the end of the disk. */
    u64 sequential_requests = sequential_mib * 16;
    u64 chunks = capacity / 128;
    puts_serial("BENCH-SEQUENTIAL-START\n");
    for (u64 i = 0; chunks && i < sequential_requests; i++) {
        if (request(BLK_T_IN, (i % chunks) * 128, 65536) != BLK_S_OK) errors++;
    }
    puts_serial("BENCH-SEQUENTIAL-END\n");
    check(errors == 0, "all benchmark reads succeeded");
    return failures;
}

/* Reads `length` bytes from `sector` straight into guest memory at `address` (the device writes it). */
static u8 read_into(u64 sector, u64 address, u32 length) {
    header.type = BLK_T_IN; header.reserved = 0; header.sector = sector;
    status_byte = 0xee;
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 1 };
    descriptors[1] = (struct descriptor){ address, length, DESC_NEXT | DESC_WRITE, 2 };
    descriptors[2] = (struct descriptor){ (u64)&status_byte, 1, DESC_WRITE, 0 };
    if (!submit(0, 1)) return 0xee;
    return status_byte;
}

static int memory_replay(const char *cmdline, u64 ram_size) {
    u64 mib = parse_number(argument(cmdline, "mib"), 32);
    u64 count = parse_number(argument(cmdline, "count"), 200);
    u64 walk_mib = parse_number(argument(cmdline, "seqmib"), 16);
    u64 pages = mib * 256;
    if (pages == 0 || SNAPSHOT_BASE + pages * 4096 > ram_size || SNAPSHOT_BASE + pages * 4096 > 0xc0000000ul) {
        check(0, "replay region fits in low RAM");
        return failures;
    }
    if (virtio_setup() != 0) { check(0, "virtio-blk device setup"); return failures; }
    u64 capacity = (u64)reg_read(VIRTIO_CONFIG) | ((u64)reg_read(VIRTIO_CONFIG + 4) << 32);
    if (capacity < 8 + mib * 2048) { check(0, "disk holds the replay region plus 4 KiB"); return failures; }
    int errors = 0;
    for (u64 i = 0; i < mib * 16; i++) {
        if (read_into(8 + i * 128, SNAPSHOT_BASE + i * 65536, 65536) != BLK_S_OK) errors++;
    }
    check(errors == 0, "replay region filled from the disk");
    puts_serial("STREAMVM-READY\n");
    /* A snapshot taken at the marker resumes here, with the region still to be loaded. */
    u64 sum = 0, state = 0x2545f4914f6cdd1dul;
    for (u64 i = 0; i < count; i++) {
        state = state * 6364136223846793005ul + 1442695040888963407ul; /* Knuth's MMIX LCG */
        u64 page = (state >> 33) % pages;
        sum = (sum ^ *(const volatile u64 *)(SNAPSHOT_BASE + page * 4096 + (i % 512) * 8)) * 0x100000001b3ul;
    }
    puts_serial("replay response "); put_hex(sum); puts_serial("\n");
    puts_serial("STREAMVM-READY\n");
    u64 walk = walk_mib * 256 < pages ? walk_mib * 256 : pages;
    for (u64 page = 0; page < walk; page++) {
        sum = (sum ^ *(const volatile u64 *)(SNAPSHOT_BASE + page * 4096 + (page % 512) * 8)) * 0x100000001b3ul;
    }
    puts_serial("replay session "); put_hex(sum); puts_serial("\n");
    return failures;
}

/* After a malformed chain the device must say DEVICE_NEEDS_RESET and complete nothing; then a reset
 * and fresh setup must give a working device again. */
static void expect_needs_reset(const char *what) {
    int flagged = (reg_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET) != 0;
    puts_serial(what); puts_serial(": ");
    check(flagged, "device reports DEVICE_NEEDS_RESET");
    int setup = virtio_setup();
    check(setup == 0 && request(BLK_T_IN, 0, 512) == BLK_S_OK && data[0] == disk_pattern(0, 0), "device works again after reset");
}

static int hostile_test(void) {
    check(virtio_setup() == 0, "virtio-blk device setup");

    /* A loop: 0 -> 1 -> 0 (both device-readable, so only loop detection can stop it). */
    header = (struct request_header){ BLK_T_OUT, 0, 0 };
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 1 };
    descriptors[1] = (struct descriptor){ (u64)data, 512, DESC_NEXT, 0 };
    submit(0, 1);
    expect_needs_reset("descriptor loop");

    /* next index beyond the queue. */
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 200 };
    submit(0, 1);
    expect_needs_reset("next index out of range");

    /* head index beyond the queue. */
    submit(QUEUE_SIZE + 3, 1);
    expect_needs_reset("head index out of range");

    /* buffer outside guest RAM. */
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 1 };
    descriptors[1] = (struct descriptor){ 0x7ffffffff000ul, 4096, DESC_NEXT | DESC_WRITE, 2 };
    descriptors[2] = (struct descriptor){ (u64)&status_byte, 1, DESC_WRITE, 0 };
    submit(0, 1);
    expect_needs_reset("buffer outside RAM");

    /* buffer wrapping around the address space. */
    descriptors[1] = (struct descriptor){ 0xfffffffffffff000ul, 0x2000, DESC_NEXT | DESC_WRITE, 2 };
    submit(0, 1);
    expect_needs_reset("buffer wrapping the address space");

    /* zero-length buffer. */
    descriptors[1] = (struct descriptor){ (u64)data, 0, DESC_NEXT | DESC_WRITE, 2 };
    submit(0, 1);
    expect_needs_reset("zero-length buffer");

    /* indirect descriptor without VIRTIO_F_INDIRECT_DESC. */
    descriptors[0] = (struct descriptor){ (u64)descriptors, 16 * 2, 4, 0 };
    submit(0, 1);
    expect_needs_reset("indirect descriptor not negotiated");

    /* Misordered buffers: device-readable after device-writable (virtio 1.x §2.7.4.2). */
    descriptors[0] = (struct descriptor){ (u64)&status_byte, 1, DESC_NEXT | DESC_WRITE, 1 };
    descriptors[1] = (struct descriptor){ (u64)&header, sizeof header, 0, 0 };
    submit(0, 1);
    expect_needs_reset("readable after writable");

    /* avail.idx far ahead of what was made available. */
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 1 };
    submit(0, 1000);
    expect_needs_reset("available index jumps ahead");

    /* A huge request: data length bigger than the device accepts gets IOERR, not a crash. */
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, DESC_NEXT, 1 };
    descriptors[1] = (struct descriptor){ 0x100000, 64u << 20, DESC_NEXT | DESC_WRITE, 2 };
    descriptors[2] = (struct descriptor){ (u64)&status_byte, 1, DESC_WRITE, 0 };
    header = (struct request_header){ BLK_T_IN, 0, 0 };
    status_byte = 0xee;
    int completed = submit(0, 1);
    puts_serial("oversized request: ");
    check(completed && status_byte == BLK_S_IOERR, "oversized request fails with IOERR");

    /* A request with no writable status byte: completed with length 0, device still healthy. */
    descriptors[0] = (struct descriptor){ (u64)&header, sizeof header, 0, 0 };
    completed = submit(0, 1);
    check(completed && used_ring.ring[(used_ring.index - 1) % QUEUE_SIZE].length == 0, "request without status byte completes with length 0");
    check(request(BLK_T_IN, 0, 512) == BLK_S_OK, "device still serves requests");

    /* A header shorter than 16 bytes. */
    descriptors[0] = (struct descriptor){ (u64)&header, 8, DESC_NEXT, 1 };
    descriptors[1] = (struct descriptor){ (u64)&status_byte, 1, DESC_WRITE, 0 };
    status_byte = 0xee;
    completed = submit(0, 1);
    check(completed && status_byte == BLK_S_IOERR, "short header fails with IOERR");

    /* Queue set up with a size that is not a power of two must be refused. */
    reg_write(VIRTIO_STATUS, 0);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    reg_write(VIRTIO_DRIVER_FEATURES_SEL, 1);
    reg_write(VIRTIO_DRIVER_FEATURES, 1);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    reg_write(VIRTIO_QUEUE_SEL, 0);
    reg_write(VIRTIO_QUEUE_NUM, 6);
    reg_write(VIRTIO_QUEUE_DESC_LOW, (u32)(u64)descriptors);
    reg_write(VIRTIO_QUEUE_DRIVER_LOW, (u32)(u64)&avail);
    reg_write(VIRTIO_QUEUE_DEVICE_LOW, (u32)(u64)&used_ring);
    reg_write(VIRTIO_QUEUE_READY, 1);
    check(reg_read(VIRTIO_QUEUE_READY) == 0, "queue size 6 refused");
    /* Rings outside RAM must be refused too. */
    reg_write(VIRTIO_QUEUE_NUM, QUEUE_SIZE);
    reg_write(VIRTIO_QUEUE_DESC_HIGH, 0x100);
    reg_write(VIRTIO_QUEUE_READY, 1);
    check(reg_read(VIRTIO_QUEUE_READY) == 0, "descriptor table outside RAM refused");
    /* Features the device never offered must not be accepted. */
    reg_write(VIRTIO_STATUS, 0);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    reg_write(VIRTIO_DRIVER_FEATURES_SEL, 1);
    reg_write(VIRTIO_DRIVER_FEATURES, 1 | 0x80000000u);
    reg_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    check(!(reg_read(VIRTIO_STATUS) & STATUS_FEATURES_OK), "unoffered feature refused");
    /* Config space reads far beyond the fields read as zero. */
    check(reg_read(VIRTIO_CONFIG + 0xe00) == 0, "config read beyond the fields is zero");
    return failures;
}


/* ---- virtio-net: frames through a host echo peer, every byte checked ---- */
#define NET_QUEUE 8
#define NET_BUFFER 2048
#define NET_HEADER 12
#define NET_F_CSUM (1u << 0)
#define NET_F_MAC (1u << 5)
#define NET_F_MRG_RXBUF (1u << 15)
#define NET_F_STATUS (1u << 16)
struct net_ring {
    struct descriptor desc[NET_QUEUE] __attribute__((aligned(16)));
    struct { u16 flags; u16 index; u16 ring[NET_QUEUE]; u16 used_event; } avail __attribute__((aligned(4)));
    struct { u16 flags; u16 index; struct used_element ring[NET_QUEUE]; u16 avail_event; } used __attribute__((aligned(4096)));
    u16 used_seen;
};
static struct net_ring net_rx __attribute__((aligned(4096)));
static struct net_ring net_tx __attribute__((aligned(4096)));
static u8 net_rx_buffers[NET_QUEUE][NET_BUFFER] __attribute__((aligned(4096)));
static u8 net_tx_header[NET_HEADER] __attribute__((aligned(16)));
static u8 net_tx_frame[NET_BUFFER] __attribute__((aligned(4096)));
static u64 net_base;
static u8 net_mac[6];
static const u8 net_peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };

static u32 net_read(u32 offset) { return mmio_read32(net_base + offset); }
static void net_write(u32 offset, u32 value) { mmio_write32(net_base + offset, value); }

static int net_find(void) {
    for (u64 i = 0; i < 16; i++) {
        u64 base = VIRTIO_BASE + i * 0x1000;
        if (mmio_read32(base + VIRTIO_MAGIC) == 0x74726976 && mmio_read32(base + VIRTIO_DEVICE_ID) == 1) { net_base = base; return 0; }
    }
    return -1;
}

static void net_queue(u32 index, struct net_ring *ring) {
    memset_guest(ring, 0, sizeof *ring);
    net_write(VIRTIO_QUEUE_SEL, index);
    net_write(VIRTIO_QUEUE_NUM, NET_QUEUE);
    net_write(VIRTIO_QUEUE_DESC_LOW, (u32)(u64)ring->desc); net_write(VIRTIO_QUEUE_DESC_HIGH, 0);
    net_write(VIRTIO_QUEUE_DRIVER_LOW, (u32)(u64)&ring->avail); net_write(VIRTIO_QUEUE_DRIVER_HIGH, 0);
    net_write(VIRTIO_QUEUE_DEVICE_LOW, (u32)(u64)&ring->used); net_write(VIRTIO_QUEUE_DEVICE_HIGH, 0);
    net_write(VIRTIO_QUEUE_READY, 1);
}

static void net_post_rx(u16 slot) {
    net_rx.desc[slot] = (struct descriptor){ (u64)net_rx_buffers[slot], NET_BUFFER, DESC_WRITE, 0 };
    net_rx.avail.ring[net_rx.avail.index % NET_QUEUE] = slot;
    barrier();
    net_rx.avail.index++;
    barrier();
}

/* virtio 1.x §3.1.1 with VERSION_1, MAC, STATUS, MRG_RXBUF, CSUM; both queues; every rx buffer posted. */
static int net_setup(void) {
    net_write(VIRTIO_STATUS, 0);
    net_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    net_write(VIRTIO_DEVICE_FEATURES_SEL, 0);
    u32 wanted = NET_F_MAC | NET_F_STATUS | NET_F_MRG_RXBUF | NET_F_CSUM;
    if ((net_read(VIRTIO_DEVICE_FEATURES) & wanted) != wanted) return -2;
    net_write(VIRTIO_DRIVER_FEATURES_SEL, 1); net_write(VIRTIO_DRIVER_FEATURES, 1);
    net_write(VIRTIO_DRIVER_FEATURES_SEL, 0); net_write(VIRTIO_DRIVER_FEATURES, wanted);
    net_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(net_read(VIRTIO_STATUS) & STATUS_FEATURES_OK)) return -3;
    net_queue(0, &net_rx);
    net_queue(1, &net_tx);
    for (u32 i = 0; i < 6; i++) net_mac[i] = *(volatile u8 *)(net_base + VIRTIO_CONFIG + i);
    if ((*(volatile u16 *)(net_base + VIRTIO_CONFIG + 6) & 1) == 0) return -4; /* link up */
    net_write(VIRTIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    for (u16 i = 0; i < NET_QUEUE; i++) net_post_rx(i);
    net_write(VIRTIO_QUEUE_NOTIFY, 0);
    return 0;
}

/* Waits (bounded) for ring's used index to pass used_seen or the device to need a reset. */
static int net_wait(struct net_ring *ring) {
    for (u64 spin = 0; *(volatile u16 *)&ring->used.index == ring->used_seen && spin < (1ul << 30); spin++) {
        if ((spin & 1023) == 1023 && (net_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET)) return 0;
        __asm__ volatile("pause");
    }
    barrier();
    net_write(VIRTIO_INTERRUPT_ACK, net_read(VIRTIO_INTERRUPT_STATUS));
    return *(volatile u16 *)&ring->used.index != ring->used_seen;
}

static u8 net_pattern(u32 seq, u32 i) { return (u8)(seq * 31 + i * 7 + (i >> 8)); }
static u32 net_frame_size(u32 seq) { return 60 + (seq * 397) % (1514 - 60 + 1); }

/* Builds frame `seq` (to the peer, payload: seq, a zero checksum field, pattern) and sends it as a
 * two-descriptor chain (header, frame); every 4th asks the receiver to fill in the checksum. */
static int net_send(u32 seq) {
    u32 size = net_frame_size(seq);
    for (u32 i = 0; i < 6; i++) { net_tx_frame[i] = net_peer_mac[i]; net_tx_frame[6 + i] = net_mac[i]; }
    net_tx_frame[12] = 0x88; net_tx_frame[13] = 0xb5;
    for (u32 i = 14; i < size; i++) net_tx_frame[i] = net_pattern(seq, i);
    *(u32 *)(net_tx_frame + 14) = seq;
    net_tx_frame[18] = 0; net_tx_frame[19] = 0;
    memset_guest(net_tx_header, 0, NET_HEADER);
    if (seq % 4 == 0) { net_tx_header[0] = 1; net_tx_header[6] = 14; net_tx_header[8] = 4; }
    net_tx.desc[0] = (struct descriptor){ (u64)net_tx_header, NET_HEADER, DESC_NEXT, 1 };
    net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, size, 0, 0 };
    net_tx.avail.ring[net_tx.avail.index % NET_QUEUE] = 0;
    barrier(); net_tx.avail.index++; barrier();
    net_write(VIRTIO_QUEUE_NOTIFY, 1);
    if (!net_wait(&net_tx)) return 0;
    net_tx.used_seen = net_tx.used.index;
    return 1;
}

/* Receives the echo of frame `seq` and checks every byte; returns 1 when it is intact. */
static int net_is_foreign(struct used_element element) {
    u8 *frame = net_rx_buffers[element.id % NET_QUEUE] + NET_HEADER;
    return element.length >= NET_HEADER + 14 && element.length <= NET_BUFFER && !(frame[12] == 0x88 && frame[13] == 0xb5);
}

static int net_receive(u32 seq) {
    struct used_element element;
    for (;;) {
        if (!net_wait(&net_rx)) return 0;
        element = net_rx.used.ring[net_rx.used_seen % NET_QUEUE];
        net_rx.used_seen++;
        /* Another protocol's frame on a shared segment (a host bridge's own traffic): not ours, skipped. */
        if (!net_is_foreign(element)) break;
        net_post_rx((u16)(element.id % NET_QUEUE));
        net_write(VIRTIO_QUEUE_NOTIFY, 0);
    }
    u8 *buffer = net_rx_buffers[element.id % NET_QUEUE];
    u32 size = net_frame_size(seq);
    int good = element.length == NET_HEADER + size && buffer[10] == 1 && buffer[11] == 0;
    u8 *frame = buffer + NET_HEADER;
    for (u32 i = 0; good && i < 6; i++) good = frame[i] == net_mac[i] && frame[6 + i] == net_peer_mac[i];
    good = good && frame[12] == 0x88 && frame[13] == 0xb5 && *(u32 *)(frame + 14) == seq;
    for (u32 i = 20; good && i < size; i++) good = frame[i] == net_pattern(seq, i);
    if (good && seq % 4 == 0) {
        /* The device filled the checksum in (this driver did not take GUEST_CSUM): the sum over the
         * checksummed range, field included, must come to 0xffff. */
        u64 sum = 0;
        for (u32 i = 14; i + 1 < size; i += 2) sum += (u32)frame[i] << 8 | frame[i + 1];
        if (size & 1) sum += (u32)frame[size - 1] << 8;
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
        good = sum == 0xffff;
    } else if (good) {
        good = frame[18] == 0 && frame[19] == 0;
    }
    net_post_rx((u16)(element.id % NET_QUEUE));
    net_write(VIRTIO_QUEUE_NOTIFY, 0);
    return good;
}

static int net_round_trip(u32 seq) { return net_send(seq) && net_receive(seq); }

static int net_test(const char *cmdline) {
    check(net_find() == 0, "virtio-net device found");
    if (!net_base) return failures;
    int setup = net_setup();
    check(setup == 0, "virtio-net setup (features, queues, link up)");
    if (setup) return failures;
    u64 count = parse_number(argument(cmdline, "count"), 64);
    u64 intact = 0;
    for (u32 seq = 0; seq < count; seq++) {
        if (!net_round_trip(seq)) { puts_serial("net: frame "); put_hex(seq); puts_serial(" lost or damaged\n"); break; }
        intact++;
    }
    puts_serial("net: frames intact "); put_hex(intact); puts_serial("\n");
    check(intact == count, "every frame came back with every byte intact");
    return failures;
}

static void net_expect_reset(const char *what) {
    puts_serial(what); puts_serial(": ");
    check((net_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET) != 0, "device reports DEVICE_NEEDS_RESET");
    check(net_setup() == 0 && net_round_trip(1000), "device works again after reset");
}

/* Submits tx chain `head` (descriptors already written) and waits. */
static int net_submit_tx(u16 head) {
    net_tx.avail.ring[net_tx.avail.index % NET_QUEUE] = head;
    barrier(); net_tx.avail.index++; barrier();
    net_write(VIRTIO_QUEUE_NOTIFY, 1);
    int done = net_wait(&net_tx);
    if (done) net_tx.used_seen = net_tx.used.index;
    return done;
}

static int net_hostile_test(void) {
    check(net_find() == 0, "virtio-net device found");
    if (!net_base) return failures;
    check(net_setup() == 0 && net_round_trip(999), "virtio-net setup and a first round trip");
    net_tx.desc[0] = (struct descriptor){ (u64)net_tx_header, NET_HEADER, DESC_NEXT, 1 };
    net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, 100, DESC_NEXT, 0 };
    net_submit_tx(0);
    net_expect_reset("tx descriptor loop");
    net_tx.desc[0] = (struct descriptor){ (u64)net_tx_header, NET_HEADER, DESC_NEXT, 1 };
    net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, 100, DESC_WRITE, 0 };
    net_submit_tx(0);
    net_expect_reset("tx device-writable descriptor");
    net_tx.desc[1] = (struct descriptor){ 0x7ffffffff000ul, 100, 0, 0 };
    net_submit_tx(0);
    net_expect_reset("tx buffer outside RAM");
    net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, 0, 0, 0 };
    net_submit_tx(0);
    net_expect_reset("tx zero-length buffer");
    /* A chain of 70000 bytes (above the 65550-byte frame limit): returned unused, device healthy. */
    net_tx.desc[1] = (struct descriptor){ 0x100000, 70000, 0, 0 };
    int completed = net_submit_tx(0);
    puts_serial("oversized tx chain: ");
    check(completed && !(net_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET) && net_round_trip(1001), "refused, device still works");
    /* A 10-byte frame (shorter than an Ethernet header): refused, device healthy. */
    net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, 10, 0, 0 };
    completed = net_submit_tx(0);
    check(completed && net_round_trip(1002), "runt frame refused, device still works");
    /* Every rx buffer replaced by a device-readable one: the next delivery needs a reset. */
    for (u16 i = 0; i < NET_QUEUE; i++) net_rx.desc[i].flags = 0;
    net_send(1003);
    for (u64 spin = 0; !(net_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET) && spin < (1ul << 22); spin++) __asm__ volatile("pause");
    /* The peer kept the frame the device could not deliver; after the reset it arrives first. */
    puts_serial("rx device-readable buffer: ");
    check((net_read(VIRTIO_STATUS) & STATUS_NEEDS_RESET) != 0, "device reports DEVICE_NEEDS_RESET");
    check(net_setup() == 0 && net_receive(1003) && net_round_trip(1004), "device works again after reset, held frame delivered");
    return failures;
}

/* Echoes `count=N` frames back to their sender through the device (MACs swapped, payload as
 * received, no offload asked): the far end of a guest-to-guest test through the host switch, where
 * the sender (mode=net) checks every byte and the checksum this guest's device completed. Frames
 * of other protocols (a host bridge's own traffic) are skipped, not echoed. */
static int net_echo_test(const char *cmdline) {
    check(net_find() == 0, "virtio-net device found");
    if (!net_base) return failures;
    int setup = net_setup();
    check(setup == 0, "virtio-net setup (features, queues, link up)");
    if (setup) return failures;
    puts_serial("net echo: ready\n");
    u64 count = parse_number(argument(cmdline, "count"), 64);
    u64 echoed = 0;
    while (echoed < count) {
        if (!net_wait(&net_rx)) { puts_serial("net echo: no frame\n"); break; }
        struct used_element element = net_rx.used.ring[net_rx.used_seen % NET_QUEUE];
        net_rx.used_seen++;
        u16 slot = (u16)(element.id % NET_QUEUE);
        if (net_is_foreign(element)) { net_post_rx(slot); net_write(VIRTIO_QUEUE_NOTIFY, 0); continue; }
        u32 size = element.length >= NET_HEADER ? element.length - NET_HEADER : 0;
        int sane = size >= 14 && size <= NET_BUFFER - NET_HEADER;
        if (sane) {
            u8 *frame = net_rx_buffers[slot] + NET_HEADER;
            for (u32 i = 0; i < 6; i++) { net_tx_frame[i] = frame[6 + i]; net_tx_frame[6 + i] = net_mac[i]; }
            for (u32 i = 12; i < size; i++) net_tx_frame[i] = frame[i];
        }
        net_post_rx(slot);
        net_write(VIRTIO_QUEUE_NOTIFY, 0);
        if (!sane) { puts_serial("net echo: bad frame length "); put_hex(element.length); puts_serial("\n"); break; }
        memset_guest(net_tx_header, 0, NET_HEADER);
        net_tx.desc[0] = (struct descriptor){ (u64)net_tx_header, NET_HEADER, DESC_NEXT, 1 };
        net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, size, 0, 0 };
        if (!net_submit_tx(0)) { puts_serial("net echo: transmit stuck\n"); break; }
        echoed++;
    }
    puts_serial("net: frames echoed "); put_hex(echoed); puts_serial("\n");
    check(echoed == count, "every frame echoed");
    return failures;
}

/* ---- SMP: every AP started with INIT-SIPI-SIPI, work on every CPU in parallel ---- */
#define AP_TRAMPOLINE 0x10000ul     /* SIPI vector 0x10: the AP starts at 0x1000:0000 */
#define SMP_SHARED 0x30000ul        /* shared counters at a fixed address the host may read */
#define SMP_REGION_BASE (16ul << 20)
#define SMP_MAX_CPUS 16
#define LAPIC_BASE 0xfee00000ul
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define ICR_ALL_EXCLUDING_SELF (3u << 18) /* destination shorthand (SDM Vol. 3A §10.6.1) */
#define ICR_ASSERT (1u << 14)
#define ICR_INIT (5u << 8)
#define ICR_STARTUP (6u << 8)
#define ICR_PENDING (1u << 12)

/* Host-visible layout at SMP_SHARED: the test reads `counter` while the machine is paused, and may
 * lower `rounds` (offset 64) while it is paused to end the run after a round every CPU can still reach. */
struct smp_shared {
    volatile u64 counter;      /* lock xadd by every CPU once per round */
    volatile u64 started;      /* APs that reached ap_main */
    volatile u64 go;           /* BSP: start working */
    volatile u64 arrived;      /* barrier */
    volatile u64 generation;   /* barrier */
    volatile u64 errors;
    volatile u64 done;
    volatile u64 cpus, rounds, pages;
};
#define SHARED ((struct smp_shared *)SMP_SHARED)

extern char ap_trampoline_start[], ap_trampoline_end[];

static u64 xadd(volatile u64 *target, u64 value) {
    __asm__ volatile("lock xaddq %0, %1" : "+r"(value), "+m"(*target) : : "memory");
    return value;
}
static void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* Processor Local APIC entries (type 0, enabled) in the MADT (ACPI 6.4 §5.2.12). */
static u64 count_cpus(void) {
    const u8 *rsdp = 0;
    for (u64 a = 0xe0000; a < 0x100000; a += 16) if (starts_with((const char *)a, "RSD PTR ")) { rsdp = (const u8 *)a; break; }
    if (!rsdp) return 0;
    const u8 *xsdt = (const u8 *)*(const u64 *)(rsdp + 24);
    u32 length = *(const u32 *)(xsdt + 4);
    for (u32 offset = 36; offset + 8 <= length; offset += 8) {
        const u8 *table = (const u8 *)*(const u64 *)(xsdt + offset);
        if (!starts_with((const char *)table, "APIC")) continue;
        u32 table_length = *(const u32 *)(table + 4);
        u64 cpus = 0;
        for (u32 at = 44; at + 2 <= table_length && table[at + 1] >= 2; at += table[at + 1]) {
            if (table[at] == 0 && (*(const u32 *)(table + at + 4) & 1)) cpus++;
        }
        return cpus;
    }
    return 0;
}

static u64 smp_word(u64 cpu, u64 round, u64 page, u64 w) { return page_word(page + cpu * 0x10000ul, w) ^ (round * 0x9e3779b97f4a7c15ul); }

static void smp_barrier(void) {
    u64 generation = SHARED->generation;
    if (xadd(&SHARED->arrived, 1) == SHARED->cpus - 1) {
        SHARED->arrived = 0;
        barrier();
        SHARED->generation = generation + 1;
    } else {
        while (SHARED->generation == generation) cpu_relax();
    }
}

/* Each CPU fills its own region with a per-round pattern, verifies it, counts the round with
 * lock xadd, and meets the others at a barrier: no CPU runs ahead of the rest by a round. */
static void smp_work(u64 cpu) {
    u64 pages = SHARED->pages;
    volatile u64 *base = (volatile u64 *)(SMP_REGION_BASE + cpu * pages * 4096);
    for (u64 round = 1; round <= SHARED->rounds; round++) {
        for (u64 p = 0; p < pages; p++)
            for (u64 w = 0; w < 512; w += 64) base[p * 512 + w] = smp_word(cpu, round, p, w);
        u64 bad = 0;
        for (u64 p = 0; p < pages; p++)
            for (u64 w = 0; w < 512; w += 64) if (base[p * 512 + w] != smp_word(cpu, round, p, w)) bad++;
        if (bad) xadd(&SHARED->errors, bad);
        xadd(&SHARED->counter, 1);
        smp_barrier();
    }
    xadd(&SHARED->done, 1);
}

void ap_main(u64 index) {
    xadd(&SHARED->started, 1);
    while (!SHARED->go) cpu_relax();
    if (index < SHARED->cpus) smp_work(index);
}

static void lapic_write(u32 offset, u32 value) { mmio_write32(LAPIC_BASE + offset, value); }
static void lapic_wait_idle(void) { for (int i = 0; i < 100000 && (mmio_read32(LAPIC_BASE + LAPIC_ICR_LOW) & ICR_PENDING); i++) cpu_relax(); }
static void short_delay(void) { for (volatile int i = 0; i < 10000; i++) {} }

static int smp_test(const char *cmdline, u64 ram_size) {
    u64 cpus = count_cpus();
    u64 rounds = parse_number(argument(cmdline, "rounds"), 20);
    u64 kib = parse_number(argument(cmdline, "kib"), 64);
    u64 pages = kib / 4 ? kib / 4 : 1;
    puts_serial("smp: cpus in MADT "); put_hex(cpus); puts_serial("\n");
    if (cpus == 0 || cpus > SMP_MAX_CPUS) { check(0, "MADT lists 1-16 CPUs"); return failures; }
    if (SMP_REGION_BASE + cpus * pages * 4096 > ram_size) { check(0, "per-CPU regions fit in RAM"); return failures; }
    memset_guest((void *)SMP_SHARED, 0, sizeof(struct smp_shared));
    SHARED->cpus = cpus;
    SHARED->rounds = rounds;
    SHARED->pages = pages;
    u8 *trampoline = (u8 *)AP_TRAMPOLINE;
    for (u64 i = 0; i < (u64)(ap_trampoline_end - ap_trampoline_start); i++) trampoline[i] = (u8)ap_trampoline_start[i];
    barrier();
    if (cpus > 1) {
        lapic_write(LAPIC_SVR, 0x1ff); /* software-enable the local APIC, spurious vector 0xff */
        lapic_write(LAPIC_ICR_HIGH, 0);
        lapic_write(LAPIC_ICR_LOW, ICR_ALL_EXCLUDING_SELF | ICR_ASSERT | ICR_INIT);
        lapic_wait_idle();
        short_delay();
        for (int sipi = 0; sipi < 2; sipi++) {
            lapic_write(LAPIC_ICR_HIGH, 0);
            lapic_write(LAPIC_ICR_LOW, ICR_ALL_EXCLUDING_SELF | ICR_STARTUP | (u32)(AP_TRAMPOLINE >> 12));
            lapic_wait_idle();
            short_delay();
        }
        for (u64 spins = 0; SHARED->started < cpus - 1 && spins < 2000000000ul; spins++) cpu_relax();
    }
    puts_serial("smp: application processors started "); put_hex(SHARED->started); puts_serial("\n");
    if (SHARED->started != cpus - 1) { check(0, "every AP started"); return failures; }
    SHARED->go = 1;
    smp_work(0);
    while (SHARED->done < cpus) cpu_relax();
    rounds = SHARED->rounds; /* the host may have changed it while the machine was paused */
    /* Every region holds its CPU's last round, seen from the BSP. */
    u64 bad = 0;
    for (u64 cpu = 0; cpu < cpus; cpu++) {
        volatile u64 *base = (volatile u64 *)(SMP_REGION_BASE + cpu * pages * 4096);
        for (u64 p = 0; p < pages; p++)
            for (u64 w = 0; w < 512; w += 64) if (base[p * 512 + w] != smp_word(cpu, rounds, p, w)) bad++;
    }
    puts_serial("smp result: cpus "); put_hex(cpus); puts_serial(" rounds "); put_hex(rounds);
    puts_serial(" counter "); put_hex(SHARED->counter); puts_serial(" errors "); put_hex(SHARED->errors + bad); puts_serial("\n");
    check(SHARED->counter == cpus * rounds && SHARED->errors == 0 && bad == 0, "every CPU did every round correctly");
    return failures;
}

/* ---- ticker: runs until stopped, rewriting a region; verifies it when told it was resumed ---- */
#define TICKER_BASE (8ul << 20)
#define TICKER_POLL_PAGES 64
static u64 ticker_pages;
/* Round being written, and the next page to write in it: pages below `ticker_page` hold round
 * `ticker_round`, the rest round `ticker_round - 1` (round 0: zeros, never written). */
static volatile u64 ticker_round, ticker_page;
static char ticker_line[64];
static u64 ticker_line_length;

static u64 ticker_word(u64 round, u64 page, u64 w) { return round == 0 ? 0 : page_word(page ^ (round << 20), w) ^ round; }

/* Address of the first word that differs from what the current position says, or 0. */
static u64 ticker_first_bad(void) {
    for (u64 p = 0; p < ticker_pages; p++) {
        u64 round = p < ticker_page ? ticker_round : ticker_round - 1;
        const volatile u64 *words = (const volatile u64 *)(TICKER_BASE + p * 4096);
        for (u64 w = 0; w < 512; w += word_step()) if (words[w] != ticker_word(round, p, w)) return (u64)&words[w];
    }
    return 0;
}

/* Reads console input; on a STREAMVM-RESUMED line checks the whole region and says so. */
static void ticker_poll_console(void) {
    while (inb(COM1_LSR) & 1) {
        char c = (char)inb(COM1);
        if (c != '\n' && c != '\r') {
            if (ticker_line_length < sizeof ticker_line - 1) ticker_line[ticker_line_length++] = c;
            continue;
        }
        ticker_line[ticker_line_length] = 0;
        ticker_line_length = 0;
        if (!starts_with(ticker_line, "STREAMVM-RESUMED")) continue;
        u64 bad = ticker_first_bad();
        puts_serial("ticker resumed at round "); put_hex(ticker_round); puts_serial(" page "); put_hex(ticker_page);
        if (bad) { puts_serial(": memory DAMAGED at "); put_hex(bad); puts_serial("\n"); }
        else puts_serial(": memory intact\n");
    }
}

static int ticker(const char *cmdline, u64 ram_size) {
    u64 mib = parse_number(argument(cmdline, "mib"), 4);
    u64 every = parse_number(argument(cmdline, "every"), 1);
    u64 words = parse_number(argument(cmdline, "words"), 8);
    words_per_page = (words == 0 || words > 512 || 512 % words) ? 8 : words;
    ticker_pages = mib * 256;
    if (ticker_pages == 0 || TICKER_BASE + ticker_pages * 4096 > ram_size || TICKER_BASE + ticker_pages * 4096 > 0xc0000000ul) {
        check(0, "ticker region fits in low RAM");
        return failures;
    }
    if (every == 0) every = 1;
    u64 damaged = 0;
    for (;;) {
        ticker_page = 0;
        ticker_round++;
        u64 sum = 0;
        for (u64 p = 0; p < ticker_pages; p++) {
            if (p % TICKER_POLL_PAGES == 0) ticker_poll_console();
            volatile u64 *page = (volatile u64 *)(TICKER_BASE + p * 4096);
            for (u64 w = 0; w < 512; w += word_step()) {
                if (page[w] != ticker_word(ticker_round - 1, p, w) && !damaged) {
                    damaged = 1;
                    puts_serial("ticker FAIL: round "); put_hex(ticker_round - 1); puts_serial(" changed at "); put_hex((u64)&page[w]); puts_serial("\n");
                }
                u64 value = ticker_word(ticker_round, p, w);
                page[w] = value;
                sum = (sum ^ value) * 0x100000001b3ul + p;
            }
            ticker_page = p + 1;
        }
        if (ticker_round % every == 0) { puts_serial("ticker round "); put_hex(ticker_round); puts_serial(" checksum "); put_hex(sum); puts_serial("\n"); }
        if (ticker_round == 1) puts_serial("STREAMVM-READY\n");
    }
    return failures;
}

/* ---- dedupfill: identical, similar, compressible and unique pages for a dedup engine ---- */
#define DEDUP_BASE (8ul << 20)
/* One generation byte per page (how often it was rewritten), below the region. */
#define DEDUP_GENERATIONS ((volatile u8 *)(6ul << 20))
static u64 dedup_pages, dedup_seed;
static char dedup_line[64];
static u64 dedup_line_length;

/* Word `w` of page `p` at generation `g`: pages cycle through four kinds (p % 4):
 * 0 identical (one of 4 contents, the same in every machine whatever its seed),
 * 1 similar (one shared base page with two words that name the page),
 * 2 compressible (16 unique words, the rest one repeated byte),
 * 3 unique (depends on the machine's seed). A rewritten page (g > 0) holds a unique pattern. */
static u64 dedup_word(u64 p, u64 g, u64 w) {
    if (g) return page_word(p ^ (g << 40) ^ (dedup_seed << 24), w) ^ 0x9e3779b97f4a7c15ul;
    switch (p % 4) {
    case 0: return page_word(0x70000 + (p / 4) % 4, w);
    case 1: return (w == (p / 4) % 512 || w == 511) ? p * 0x10001ul + w : page_word(0x71000, w);
    case 2: return w < 16 ? page_word(p ^ (dedup_seed << 32), w) : 0x0101010101010101ul * (p & 0xff);
    default: return page_word(p ^ (dedup_seed << 32) ^ 0xabcdeful, w);
    }
}

static void dedup_write(u64 p) {
    volatile u64 *words = (volatile u64 *)(DEDUP_BASE + p * 4096);
    u64 g = DEDUP_GENERATIONS[p];
    for (u64 w = 0; w < 512; w++) words[w] = dedup_word(p, g, w);
}

/* Counts pages with any byte different from what their generation says (every word read). */
static u64 dedup_bad_pages(u64 *first_bad) {
    u64 bad = 0;
    for (u64 p = 0; p < dedup_pages; p++) {
        const volatile u64 *words = (const volatile u64 *)(DEDUP_BASE + p * 4096);
        u64 g = DEDUP_GENERATIONS[p];
        for (u64 w = 0; w < 512; w++)
            if (words[w] != dedup_word(p, g, w)) { if (!bad) *first_bad = (u64)&words[w]; bad++; break; }
    }
    return bad;
}

/* On a `STREAMVM-VERIFY` console line: checks every byte of the region and prints the result. */
static void dedup_poll_console(void) {
    while (inb(COM1_LSR) & 1) {
        char c = (char)inb(COM1);
        if (c != '\n' && c != '\r') {
            if (dedup_line_length < sizeof dedup_line - 1) dedup_line[dedup_line_length++] = c;
            continue;
        }
        dedup_line[dedup_line_length] = 0;
        dedup_line_length = 0;
        if (!starts_with(dedup_line, "STREAMVM-VERIFY")) continue;
        u64 first_bad = 0;
        u64 bad = dedup_bad_pages(&first_bad);
        puts_serial("dedupfill verified pages "); put_hex(dedup_pages); puts_serial(" bad "); put_hex(bad);
        if (bad) { puts_serial(" first at "); put_hex(first_bad); }
        puts_serial("\n");
    }
}

static int dedupfill(const char *cmdline, u64 ram_size) {
    u64 mib = parse_number(argument(cmdline, "mib"), 8);
    dedup_seed = parse_number(argument(cmdline, "seed"), 1);
    /* Pages rewritten per round (a new generation each), and a pause between rounds in spins. */
    u64 rewrite = parse_number(argument(cmdline, "rewrite"), 4);
    u64 spins = parse_number(argument(cmdline, "spins"), 200000);
    dedup_pages = mib * 256;
    if (dedup_pages == 0 || dedup_pages > (2ul << 20) || DEDUP_BASE + dedup_pages * 4096 > ram_size || DEDUP_BASE + dedup_pages * 4096 > 0xc0000000ul) {
        check(0, "dedupfill region fits in low RAM");
        return failures;
    }
    for (u64 p = 0; p < dedup_pages; p++) { DEDUP_GENERATIONS[p] = 0; dedup_write(p); }
    puts_serial("dedupfill filled pages "); put_hex(dedup_pages); puts_serial("\n");
    puts_serial("STREAMVM-READY\n");
    /* Rewrites a few pages per round (walking the region with a stride, so every kind is hit),
     * and answers verify requests; runs until stopped. */
    u64 next = 0, round = 0;
    for (;;) {
        for (u64 i = 0; i < rewrite; i++) {
            next = (next + 37) % dedup_pages;
            u8 g = DEDUP_GENERATIONS[next];
            DEDUP_GENERATIONS[next] = g == 255 ? 1 : g + 1;
            dedup_write(next);
        }
        round++;
        if (round % 64 == 0) { puts_serial("dedupfill round "); put_hex(round); puts_serial("\n"); }
        for (u64 s = 0; s < spins; s++) { if (s % 4096 == 0) dedup_poll_console(); cpu_relax(); }
    }
    return failures;
}

/* ---- CPU events ---- */
struct idt_entry { u16 offset_low; u16 selector; u8 ist; u8 type; u16 offset_mid; u32 offset_high; u32 zero; };
static struct idt_entry idt[32] __attribute__((aligned(16)));
static volatile int breakpoints;
extern void breakpoint_stub(void);
__asm__(".globl breakpoint_stub\nbreakpoint_stub:\n lock incl breakpoints(%rip)\n iretq\n");

static void load_idt(void *base, u16 limit) {
    struct __attribute__((packed)) { u16 limit; u64 base; } descriptor = { limit, (u64)base };
    __asm__ volatile("lidt %0" : : "m"(descriptor));
}

static int int3_test(void) {
    u64 handler = (u64)breakpoint_stub;
    idt[3] = (struct idt_entry){ (u16)handler, 0x08, 0, 0x8e, (u16)(handler >> 16), (u32)(handler >> 32), 0 };
    load_idt(idt, sizeof idt - 1);
    __asm__ volatile("int3");
    __asm__ volatile("int3");
    check(breakpoints == 2, "two breakpoints delivered and returned from");
    return failures;
}

/* ---- ACPI (ACPI 6.4 §5.2.5 RSDP, §5.2.8 XSDT, §5.2.9 FADT) ---- */
static int acpi_poweroff(void) {
    const u8 *rsdp = 0;
    for (u64 a = 0xe0000; a < 0x100000; a += 16) {
        if (starts_with((const char *)a, "RSD PTR ")) { rsdp = (const u8 *)a; break; }
    }
    check(rsdp != 0, "RSDP found in the BIOS area");
    if (!rsdp) return failures;
    const u8 *xsdt = (const u8 *)*(const u64 *)(rsdp + 24);
    check(starts_with((const char *)xsdt, "XSDT"), "XSDT signature");
    u32 length = *(const u32 *)(xsdt + 4);
    const u8 *fadt = 0;
    for (u32 offset = 36; offset + 8 <= length; offset += 8) {
        const u8 *table = (const u8 *)*(const u64 *)(xsdt + offset);
        if (starts_with((const char *)table, "FACP")) fadt = table;
    }
    check(fadt != 0, "FADT listed in the XSDT");
    if (!fadt || failures) return failures;
    u8 sum = 0;
    for (u32 i = 0; i < *(const u32 *)(fadt + 4); i++) sum += fadt[i];
    check(sum == 0, "FADT checksum");
    u16 port = (u16)*(const u64 *)(fadt + 244 + 4);
    puts_serial("acpi: writing SLP_EN to sleep control port "); put_hex(port); puts_serial("\n");
    outb(port, (5 << 2) | (1 << 5));
    check(0, "still running after ACPI power off");
    return failures;
}

/* mode=clock ticks=N tick_ms=M: time as this guest perceives it. The TSC frequency is taken from
 * tsc_early_khz= on the command line (what a Linux guest is given), else from the hypervisor timing
 * leaf 0x40000010; the guest prints "clock tick i" each time M more milliseconds pass by its TSC,
 * and the host compares that with its own clock (time dilation: M ms take TDF x M ms). It also says
 * whether kvmclock (which reports host time) is offered: CPUID 0x40000001 EAX bits 0 and 3. */
static inline u64 read_tsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static void cpuid_leaf(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}
static void put_dec(u64 value) {
    char digits[21];
    int n = 0;
    do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value);
    while (n) putc_serial(digits[--n]);
}
/* The TSC frequency this guest was told: tsc_early_khz= on the command line, else CPUID 0x40000010
 * (the hypervisor timing leaf), else 0. */
static u64 told_tsc_khz(const char *cmdline) {
    u32 a, b, c, d;
    cpuid_leaf(0x40000000, &a, &b, &c, &d);
    u32 highest = (a >= 0x40000000 && a < 0x40000100) ? a : 0;
    u64 khz = parse_number(argument(cmdline, "tsc_early_khz"), 0);
    if (!khz && highest >= 0x40000010) { cpuid_leaf(0x40000010, &a, &b, &c, &d); khz = a; }
    return khz;
}

static int clock_test(const char *cmdline) {
    u32 a, b, c, d;
    cpuid_leaf(0x40000000, &a, &b, &c, &d);
    u32 highest = (a >= 0x40000000 && a < 0x40000100) ? a : 0;
    u64 khz = told_tsc_khz(cmdline);
    u32 kvmclock = 0;
    if (highest >= 0x40000001) { cpuid_leaf(0x40000001, &a, &b, &c, &d); kvmclock = a & ((1u << 0) | (1u << 3)); }
    puts_serial("clock tsc_khz "); put_dec(khz);
    puts_serial(kvmclock ? " kvmclock offered\n" : " kvmclock hidden\n");
    if (!khz) { check(0, "a TSC frequency (tsc_early_khz= or CPUID 0x40000010)"); return failures; }
    u64 ticks = parse_number(argument(cmdline, "ticks"), 5);
    u64 tick_ms = parse_number(argument(cmdline, "tick_ms"), 200);
    u64 cycles_per_tick = khz * tick_ms;
    u64 start = read_tsc();
    for (u64 tick = 1; tick <= ticks; tick++) {
        while (read_tsc() - start < tick * cycles_per_tick) __asm__ volatile("pause");
        puts_serial("clock tick "); put_dec(tick); puts_serial("\n");
    }
    return 0;
}

/* Throughput as this guest perceives it, for time-dilation benchmarks. role=send sends `count=N`
 * frames of `size=S` bytes (60..1514) to the peer MAC as fast as its device takes them; role=recv
 * (the peer, MAC 02:00:00:00:00:01) counts them and times first to last arrival by its TSC at the
 * frequency it was told, then prints `netrate frames N bytes B cycles C tsc_khz K`. Both print
 * `netrate: ready` once their device is set up; the sender prints `netrate: sent N` and then
 * halts until the host stops it. */
static int netrate_test(const char *cmdline) {
    check(net_find() == 0, "virtio-net device found");
    if (!net_base) return failures;
    int setup = net_setup();
    check(setup == 0, "virtio-net setup (features, queues, link up)");
    if (setup) return failures;
    u64 count = parse_number(argument(cmdline, "count"), 64);
    const char *role = argument(cmdline, "role");
    puts_serial("netrate: ready\n");
    if (role && word_is(role, "send")) {
        u64 size = parse_number(argument(cmdline, "size"), 1514);
        if (size < 60 || size > 1514) { check(0, "size= between 60 and 1514"); return failures; }
        for (u32 i = 0; i < 6; i++) { net_tx_frame[i] = net_peer_mac[i]; net_tx_frame[6 + i] = net_mac[i]; }
        net_tx_frame[12] = 0x88; net_tx_frame[13] = 0xb5;
        for (u32 i = 14; i < size; i++) net_tx_frame[i] = (u8)i;
        memset_guest(net_tx_header, 0, NET_HEADER);
        for (u32 seq = 0; seq < count; seq++) {
            *(u32 *)(net_tx_frame + 14) = seq;
            net_tx.desc[0] = (struct descriptor){ (u64)net_tx_header, NET_HEADER, DESC_NEXT, 1 };
            net_tx.desc[1] = (struct descriptor){ (u64)net_tx_frame, (u32)size, 0, 0 };
            if (!net_submit_tx(0)) { check(0, "every frame was taken by the device"); return failures; }
        }
        /* The frames may still wait in the host's shaped link: a powered-off guest's port is closed and
         * its queue dropped, so the sender stays until the host stops it. */
        puts_serial("netrate: sent "); put_dec(count); puts_serial("\n");
        for (;;) __asm__ volatile("hlt");
    }
    u64 khz = told_tsc_khz(cmdline);
    if (!khz) { check(0, "a TSC frequency (tsc_early_khz= or CPUID 0x40000010)"); return failures; }
    u64 received = 0, bytes = 0, first = 0, last = 0;
    u32 expected = 0;
    while (received < count) {
        if (!net_wait(&net_rx)) { puts_serial("netrate: no frame\n"); break; }
        u64 now = read_tsc();
        struct used_element element = net_rx.used.ring[net_rx.used_seen % NET_QUEUE];
        net_rx.used_seen++;
        u16 slot = (u16)(element.id % NET_QUEUE);
        int ours = !net_is_foreign(element) && element.length >= NET_HEADER + 18;
        u32 seq = ours ? *(u32 *)(net_rx_buffers[slot] + NET_HEADER + 14) : 0;
        net_post_rx(slot);
        net_write(VIRTIO_QUEUE_NOTIFY, 0);
        if (!ours) continue;
        if (seq != expected) { puts_serial("netrate: frame "); put_dec(seq); puts_serial(" out of order\n"); break; }
        expected++;
        if (received == 0) first = now;
        last = now;
        received++;
        bytes += element.length - NET_HEADER;
    }
    puts_serial("netrate frames "); put_dec(received); puts_serial(" bytes "); put_dec(bytes);
    puts_serial(" cycles "); put_dec(last - first); puts_serial(" tsc_khz "); put_dec(khz); puts_serial("\n");
    check(received == count, "every frame arrived, in order");
    return failures;
}

/* CPU speed as this guest perceives it, for time dilation's CPU scaling: `rounds=R` rounds of
 * `work=N` steps of a multiply-add chain (no memory traffic), timed by its TSC at the frequency it
 * was told; prints `cpurate round i` after each round and `cpurate steps S cycles C tsc_khz K` at
 * the end. */
static int cpurate_test(const char *cmdline) {
    u64 khz = told_tsc_khz(cmdline);
    if (!khz) { check(0, "a TSC frequency (tsc_early_khz= or CPUID 0x40000010)"); return failures; }
    u64 rounds = parse_number(argument(cmdline, "rounds"), 10);
    u64 work = parse_number(argument(cmdline, "work"), 1000000);
    volatile u64 sink = 0;
    u64 value = 1;
    u64 start = read_tsc();
    for (u64 round = 1; round <= rounds; round++) {
        for (u64 step = 0; step < work; step++) value = value * 6364136223846793005ul + 1442695040888963407ul;
        sink = value;
        puts_serial("cpurate round "); put_dec(round); puts_serial("\n");
    }
    u64 cycles = read_tsc() - start;
    (void)sink;
    puts_serial("cpurate steps "); put_dec(rounds * work); puts_serial(" cycles "); put_dec(cycles);
    puts_serial(" tsc_khz "); put_dec(khz); puts_serial("\n");
    return 0;
}

/* Disk speed as this guest perceives it, for time dilation's disk scaling: `mib=M` MiB (default 2)
 * of 64 KiB sequential reads (wrapping at the end of the disk), timed by its TSC at the frequency it
 * was told; the first and last byte of every sector are checked against the host's pattern. Prints
 * `diskrate bytes B requests N cycles C tsc_khz K`. */
static int diskrate_test(const char *cmdline) {
    u64 khz = told_tsc_khz(cmdline);
    if (!khz) { check(0, "a TSC frequency (tsc_early_khz= or CPUID 0x40000010)"); return failures; }
    if (virtio_setup() != 0) { check(0, "virtio-blk device setup"); return failures; }
    u64 capacity = (u64)reg_read(VIRTIO_CONFIG) | ((u64)reg_read(VIRTIO_CONFIG + 4) << 32);
    u64 chunks = capacity / 128;
    if (!chunks) { check(0, "disk holds at least one 64 KiB block"); return failures; }
    u64 requests = parse_number(argument(cmdline, "mib"), 2) * 16;
    u64 errors = 0, wrong = 0;
    puts_serial("diskrate: ready\n");
    u64 start = read_tsc();
    for (u64 i = 0; i < requests; i++) {
        u64 sector = (i % chunks) * 128;
        if (request(BLK_T_IN, sector, 65536) != BLK_S_OK) { errors++; continue; }
        for (u32 s = 0; s < 128; s++) {
            if (data[s * 512] != disk_pattern(sector + s, 0) || data[s * 512 + 511] != disk_pattern(sector + s, 511)) wrong++;
        }
    }
    u64 cycles = read_tsc() - start;
    check(errors == 0, "every read succeeded");
    check(wrong == 0, "every sector holds the host's pattern");
    puts_serial("diskrate bytes "); put_dec(requests * 65536); puts_serial(" requests "); put_dec(requests);
    puts_serial(" cycles "); put_dec(cycles); puts_serial(" tsc_khz "); put_dec(khz); puts_serial("\n");
    return failures;
}

/* ---- CMOS RTC (MC146818A at ports 0x70/0x71) ---- */
static u8 cmos_read(u8 reg) { outb(0x70, reg); return inb(0x71); }
static void cmos_write(u8 reg, u8 value) { outb(0x70, reg); outb(0x71, value); }
static u64 from_bcd(u8 value) { return (u64)(value >> 4) * 10 + (value & 15); }

static void rtc_print(const char *label) {
    /* Fields are read one at a time: read again if the seconds moved meanwhile (a minute rolling
     * over between two reads would give a time a minute off), as Linux does. */
    u8 second, minute, hour, day, month, year, century;
    do {
        second = cmos_read(0); minute = cmos_read(2); hour = cmos_read(4);
        day = cmos_read(7); month = cmos_read(8); year = cmos_read(9); century = cmos_read(0x32);
    } while (second != cmos_read(0));
    puts_serial("rtc "); puts_serial(label); puts_serial(" ");
    put_dec(from_bcd(century) * 100 + from_bcd(year)); puts_serial(" "); put_dec(from_bcd(month)); puts_serial(" ");
    put_dec(from_bcd(day)); puts_serial(" "); put_dec(from_bcd(hour)); puts_serial(" "); put_dec(from_bcd(minute));
    puts_serial(" "); put_dec(from_bcd(second)); puts_serial("\n");
}

/* mode=rtc gap_ms=G: reads the wall-clock time from the CMOS RTC (24-hour BCD, as firmware leaves
 * it), waits G ms (default 2000) of perceived time by its TSC when it was told a frequency, reads it
 * again; prints `rtc first Y M D h m s` and `rtc second ...`. Checks that register D says the time is
 * valid and that CMOS RAM keeps a byte. */
static int rtc_test(const char *cmdline) {
    check((cmos_read(0x0d) & 0x80) != 0, "RTC register D: valid RAM and time");
    check((cmos_read(0x0b) & 0x06) == 0x02, "RTC in 24-hour BCD mode");
    cmos_write(0x40, 0x5a);
    check(cmos_read(0x40) == 0x5a, "CMOS RAM keeps a byte");
    rtc_print("first");
    u64 khz = told_tsc_khz(cmdline);
    if (khz) {
        u64 cycles = khz * parse_number(argument(cmdline, "gap_ms"), 2000);
        u64 start = read_tsc();
        while (read_tsc() - start < cycles) __asm__ volatile("pause");
        rtc_print("second");
    }
    return failures;
}

u64 guest_main(const char *cmdline, u64 ram_size) {
    puts_serial("streamvm test guest: ");
    puts_serial(cmdline);
    puts_serial("\n");
    const char *mode = argument(cmdline, "mode");
    int result;
    if (!mode || word_is(mode, "hello")) {
        result = 0;
    } else if (word_is(mode, "memory")) {
        result = memory_test(ram_size);
    } else if (word_is(mode, "blk")) {
        result = blk_test();
    } else if (word_is(mode, "hostile")) {
        /* rounds=N repeats the whole sequence: a guest that keeps misbehaving (the host counts it, its log stays bounded). */
        u64 rounds = parse_number(argument(cmdline, "rounds"), 1);
        result = 0;
        for (u64 round = 0; round < rounds && result == 0; round++) result = hostile_test();
    } else if (word_is(mode, "net")) {
        result = net_test(cmdline);
    } else if (word_is(mode, "netecho")) {
        result = net_echo_test(cmdline);
    } else if (word_is(mode, "nethostile")) {
        result = net_hostile_test();
    } else if (word_is(mode, "int3")) {
        result = int3_test();
    } else if (word_is(mode, "blkbench")) {
        result = blk_bench(cmdline);
    } else if (word_is(mode, "acpi")) {
        result = acpi_poweroff();
    } else if (word_is(mode, "snapshot")) {
        result = snapshot_test(cmdline, ram_size);
    } else if (word_is(mode, "memreplay")) {
        result = memory_replay(cmdline, ram_size);
    } else if (word_is(mode, "smp")) {
        result = smp_test(cmdline, ram_size);
    } else if (word_is(mode, "ticker")) {
        result = ticker(cmdline, ram_size);
    } else if (word_is(mode, "clock")) {
        result = clock_test(cmdline);
    } else if (word_is(mode, "cpurate")) {
        result = cpurate_test(cmdline);
    } else if (word_is(mode, "rtc")) {
        result = rtc_test(cmdline);
    } else if (word_is(mode, "diskrate")) {
        result = diskrate_test(cmdline);
    } else if (word_is(mode, "netrate")) {
        result = netrate_test(cmdline);
    } else if (word_is(mode, "dedupfill")) {
        result = dedupfill(cmdline, ram_size);
    } else if (word_is(mode, "spin")) {
        puts_serial("STREAMVM-READY\n");
        for (;;) __asm__ volatile("pause");
    } else if (word_is(mode, "reset")) {
        puts_serial("requesting reset\n");
        outb(I8042_COMMAND, I8042_PULSE_RESET);
        for (;;) __asm__ volatile("hlt");
    } else if (word_is(mode, "triple")) {
        puts_serial("faulting with an empty IDT\n");
        load_idt(0, 0);
        __asm__ volatile("ud2");
        for (;;) __asm__ volatile("hlt");
    } else {
        puts_serial("unknown mode\n");
        return 2;
    }
    if (result == 0) puts_serial("STREAMVM-READY\n");
    else puts_serial("TESTGUEST-FAILED\n");
    return result == 0 ? 0 : 1;
}
