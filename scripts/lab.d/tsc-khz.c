// Prints this host's TSC frequency in kHz, measured against CLOCK_MONOTONIC over 200 ms.
// Why: under QEMU TCG the guest TSC is the host's raw TSC, and QEMU's microvm has no PIT speaker
// gate (port 0x61), HPET or ACPI PM timer, so a Linux guest cannot calibrate its TSC and hangs at
// boot ("tsc: Unable to calibrate against PIT"). The lab passes tsc_early_khz=<this value>.
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

int main(void) {
    struct timespec start, end, pause = {0, 200 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    unsigned long long t0 = __rdtsc();
    nanosleep(&pause, NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    unsigned long long t1 = __rdtsc();
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    printf("%.0f\n", (double)(t1 - t0) / ns * 1e6);
    return 0;
}
