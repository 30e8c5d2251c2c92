#!/bin/sh
# Runs inside the lab (busybox sh): boots an appliance directory with QEMU -enable-kvm (-M microvm,
# virtio-mmio disk) several times and measures, on the lab's clock, the time from starting QEMU to
# the appliance's readiness marker and to the end of its session. Prints one
# "QEMU-BOOT run=... ready_s=... done_s=..." line per run and writes a JSON summary.
#
# Usage: qemu-appliance-boot.sh <appliance dir> <runs> <acpi|cmdline> <json output> [timeout s] [extra kernel args]
#   acpi     QEMU's microvm describes the virtio-mmio disk in ACPI (DSDT, HID LNRO0005)
#   cmdline  acpi=off: QEMU appends virtio_mmio.device=<size>@<base>:<irq> to the kernel command
#            line, which the appliance's initrd hands to virtio_mmio_cmdline.ko. This is how our VMM
#            announces devices, so it is the like-for-like peer.
set -u
appliance=$1 runs=$2 mode=$3 json=$4 timeout=${5:-600} extra_args=${6:-}

marker=$(sed -n 's/.*"readyMarker": *"\([^"]*\)".*/\1/p' "$appliance/appliance.json")
cmdline=$(sed -n 's/.*"kernelCommandLine": *"\([^"]*\)".*/\1/p' "$appliance/appliance.json")
memory=$(sed -n 's/.*"memoryMiB": *\([0-9]*\).*/\1/p' "$appliance/appliance.json")
vcpus=$(sed -n 's/.*"vcpus": *\([0-9]*\).*/\1/p' "$appliance/appliance.json")
case $mode in
    acpi) machine=microvm,x-option-roms=off,isa-serial=on,rtc=on ;;
    cmdline) machine=microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off ;;
    *) echo "qemu-appliance-boot: mode must be acpi or cmdline"; exit 2 ;;
esac
[ -c /dev/kvm ] || { echo "qemu-appliance-boot: no /dev/kvm"; exit 1; }

uptime_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }   # centiseconds
seconds() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

failures=0
entries=
i=1
while [ "$i" -le "$runs" ]; do
    # A fresh log per run: a marker left from an earlier invocation would count at once.
    log=/tmp/qemu-boot-$$-$i.log
    rm -f "$log"
    : >"$log"
    start=$(uptime_cs)
    # The console goes to a file that is polled every 100 ms (the error bound of the figures): each
    # poll forks a grep, and in the lab that is emulated work competing with the guest, so not more often.
    timeout -s KILL "$timeout" qemu-system-x86_64 -M "$machine" -enable-kvm -cpu host \
        -m "$memory" -smp "$vcpus" -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$log" \
        -kernel "$appliance/kernel" -initrd "$appliance/initrd" -append "$cmdline${extra_args:+ $extra_args}" \
        -drive "id=root,file=$appliance/disk.img,format=raw,if=none,readonly=on" \
        -device virtio-blk-device,drive=root </dev/null >/tmp/qemu-boot-$$-$i.stderr 2>&1 &
    pid=$!
    # Show the appliance's console live (indented) on the lab console, for progress and debugging.
    ( tail -f "$log" 2>/dev/null & echo $! >/tmp/qemu-boot-tail.pid; wait ) | sed 's/^/    | /' &
    ready=
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$ready" ] && grep -q "^$marker" "$log" 2>/dev/null; then
            ready=$(( $(uptime_cs) - start ))
            echo "QEMU-BOOT run=$i reached $marker after $(seconds "$ready")s"
        fi
        usleep 100000
    done
    wait "$pid"
    status=$?
    done_cs=$(( $(uptime_cs) - start ))
    if [ -z "$ready" ] && grep -q "^$marker" "$log" 2>/dev/null; then ready=$done_cs; fi
    sleep 1   # busybox tail -f polls once a second
    kill "$(cat /tmp/qemu-boot-tail.pid)" 2>/dev/null
    ready_json=null
    [ -n "$ready" ] && ready_json=$(seconds "$ready")
    session_ok=1
    case " $extra_args " in
        *" streamvm.session=0 "*) ;;   # boot-only run: no session, so no STREAMVM-DONE
        *) grep -q '^STREAMVM-DONE status=0' "$log" || session_ok=0 ;;
    esac
    if [ -z "$ready" ] || [ "$session_ok" = 0 ]; then
        failures=$((failures + 1))
        echo "QEMU-BOOT run=$i FAILED (qemu status $status)"
        sed 's/^/    stderr| /' /tmp/qemu-boot-$$-$i.stderr
    fi
    echo "QEMU-BOOT run=$i mode=$mode ready_s=$ready_json done_s=$(seconds "$done_cs") qemu_status=$status"
    entries="$entries${entries:+,}{\"run\":$i,\"ready_s\":$ready_json,\"done_s\":$(seconds "$done_cs"),\"qemu_status\":$status}"
    i=$((i + 1))
done

cat >"$json" <<JSON
{"peer":"qemu-system-x86_64 -enable-kvm -M microvm inside the TCG lab","appliance":"$(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$appliance/appliance.json")","mode":"$mode","extra_kernel_args":"$extra_args","memoryMiB":$memory,"vcpus":$vcpus,"runs":[$entries]}
JSON
echo "QEMU-BOOT summary: $runs runs, $failures failed; $json"
[ "$failures" -eq 0 ]
