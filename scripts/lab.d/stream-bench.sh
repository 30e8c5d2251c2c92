#!/bin/sh
# Runs inside the lab (busybox sh), called by scripts/lab-stream-bench: `streamvm bench stream` on an
# appliance with everything (publish, catalogue server, shaping proxy, client, VMM) inside the lab,
# first on the profile as it is, then time-dilated (DieCast): the profile's rate ÷ N and RTT × N,
# where N is how many times slower the lab runs a fixed CPU-bound job (cpu-probe.sh) than the host
# did, so a guest whose CPU is N times slower sees the link the profile means relative to its CPU.
# Writes to /lab/out: stream-<profile>.{json,svg,log}, stream-<profile>-dilated.{json,svg,log},
# cpu-probe-lab-{1,2}.txt, dilation.txt, kvm-shutdown-trace.txt (KVM shutdown exits, see below).
#
# Usage: stream-bench.sh --appliance DIR --profile P --host-cpu S --dilation auto|off|N
#                        --boot-timeout S --training 1|3 --source LABEL [--dilated-only]
#                        [--install-ahead] [--think S] [--bench-args "ARGS"]
#   --host-cpu S      the host's median CPU seconds for cpu-probe.sh (the reference for N)
#   --training 1|3    training runs before the evaluated ones (1: bench stream --quick)
#   --source LABEL    bench stream --source (where the figures come from)
#   --dilated-only    with a numeric --dilation: skip the undilated run
#   --install-ahead   bench stream --install-ahead (resumes install prefetched memory ahead of the guest)
#   --think S         bench stream --think (the appliance session's think time; default: the appliance's)
#   --bench-args ARGS more bench stream arguments for every run
set -u
appliance='' profile='' host_cpu='' dilation='' boot_timeout='' training='' source='' only='' ahead='' think='' bench_args=''
usage() { echo "STREAM-BENCH FAILED: $1 (see the usage in stream-bench.sh)"; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --appliance|--profile|--host-cpu|--dilation|--boot-timeout|--training|--source|--think|--bench-args)
            [ $# -ge 2 ] || usage "$1 needs a value"
            case $1 in
                --appliance) appliance=$2 ;;
                --profile) profile=$2 ;;
                --host-cpu) host_cpu=$2 ;;
                --dilation) dilation=$2 ;;
                --boot-timeout) boot_timeout=$2 ;;
                --training) training=$2 ;;
                --source) source=$2 ;;
                --think) think=$2 ;;
                --bench-args) bench_args=$2 ;;
            esac
            shift 2 ;;
        --dilated-only) only=dilated-only; shift ;;
        --install-ahead) ahead=install-ahead; shift ;;
        *) usage "unknown argument '$1'" ;;
    esac
done
for required in appliance profile host_cpu dilation boot_timeout training source; do
    eval "[ -n \"\$$required\" ]" || usage "--$(echo "$required" | tr _ -) is required"
done
out=/lab/out
mkdir -p "$out"
# Server, proxy and client talk over 127.0.0.1: the lab's init leaves the loopback interface down.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || { echo "STREAM-BENCH FAILED: cannot bring up lo"; exit 1; }
quick=
[ "$training" = 1 ] && quick=--quick
install_ahead=
[ "$ahead" = install-ahead ] && install_ahead=--install-ahead
think_option=
[ -n "$think" ] && think_option="--think $think"
status=0

# Guest triple faults (issue #6): the guest RIP of any shutdown exit goes to kvm-shutdown-trace.txt.
. "$(dirname "$0")/kvm-shutdown-trace.sh"
kvm_trace_start
save_trace() { kvm_trace_save "$out/kvm-shutdown-trace.txt"; }

# One bench stream run; its table and JSON also go to the console (the results survive a lost copy).
bench() { # <name> <dilation> <label>
    echo "STREAM-BENCH start $1 (dilation $2) at uptime $(cut -d' ' -f1 /proc/uptime)"
    streamvm bench stream --appliance "$appliance" --profile "$profile" $quick $install_ahead $think_option $bench_args --dilation "$2" \
        --timeout "$boot_timeout" --source "$source$3" --json "$out/$1.json" --svg "$out/$1.svg" 2>&1 |
        tee "$out/$1.log"
    # The pipeline's status is tee's: the JSON file says whether the run finished.
    if [ -s "$out/$1.json" ]; then
        echo "STREAM-BENCH done $1 at uptime $(cut -d' ' -f1 /proc/uptime)"
    else
        echo "STREAM-BENCH FAILED $1: no JSON (see $out/$1.log)"
        status=1
    fi
}

probe() { # <n>
    sh /lab/cpu-probe.sh 5 /bin/busybox | tee "$out/cpu-probe-lab-$1.txt"
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$1"; }

# Lazy guest memory is wrong under shmem transparent huge pages (a huge page maps pages the fault
# handler never filled); the VMM advises against them, and the log records what this kernel does.
echo "lab shmem THP: $(cat /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null || echo unknown)"
probe 1
[ "$only" = dilated-only ] || bench "stream-$profile" 1 ""
if [ "$dilation" = off ]; then save_trace; exit "$status"; fi
probe 2
if [ "$dilation" = auto ]; then
    # N = the lab's median wall seconds (mean of the two probes, one each side of the undilated run)
    # ÷ the host's median CPU seconds for the same job.
    dilation=$(awk -v a="$(field "$out/cpu-probe-lab-1.txt" median_s)" -v b="$(field "$out/cpu-probe-lab-2.txt" median_s)" \
        -v h="$host_cpu" 'BEGIN { if (h <= 0 || a <= 0 || b <= 0) exit 1; printf "%.1f", (a + b) / 2 / h }') || {
        echo "STREAM-BENCH FAILED: could not compute the dilation factor (host $host_cpu s)"; exit 1; }
fi
echo "dilation=$dilation host_cpu_median_s=$host_cpu" | tee "$out/dilation.txt"
bench "stream-$profile-dilated" "$dilation" ", time-dilated by N=$dilation (rate / N, RTT x N)"
save_trace
exit "$status"
