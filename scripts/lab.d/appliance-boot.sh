#!/bin/sh
# Runs inside the lab (busybox sh): boots an appliance directory several times, with our VMM
# (`streamvm run`) or with QEMU -enable-kvm (-M microvm, virtio-mmio disk), and measures on the
# lab's clock the time from starting the VMM to the appliance's readiness marker and to the end of
# the run. Prints one "APPLIANCE-BOOT run=... ready_s=... done_s=..." line per run and writes a
# JSON summary with, per run, the marker line itself (benchmark appliances put their results there)
# and the VMM process's resident memory when the marker appeared. A run passes when the marker appeared, the VMM exited with status 0 (the guest
# powered off through ACPI, or QEMU exited normally) and, unless streamvm.session=0 was given, the
# session ended with STREAMVM-DONE status=0.
#
# Usage: appliance-boot.sh <appliance dir> <runs> <streamvm|acpi|cmdline> <json output> [timeout s] [extra kernel args]
#   streamvm our VMM: devices on the command line (virtio_mmio.device=, handed to the initrd's
#            virtio_mmio_cmdline.ko) and in its ACPI DSDT; ACPI power-off ends the run
#   acpi     QEMU's microvm describes the virtio-mmio disk in ACPI (DSDT, HID LNRO0005)
#   cmdline  QEMU with acpi=off: it appends virtio_mmio.device=<size>@<base>:<irq> to the kernel
#            command line, as our VMM does, so it is the like-for-like peer
set -u
appliance=$1 runs=$2 mode=$3 json=$4 timeout=${5:-600} extra_args=${6:-}

# appliance.json is read with jq (the host scripts copy it into the lab with `scripts/lab --bin`).
command -v jq >/dev/null || { echo "appliance-boot: no jq in the lab (scripts/lab --bin \$(command -v jq))"; exit 2; }
field() { jq -r --arg name "$1" '.[$name] // empty' "$appliance/appliance.json"; }
marker=$(field readyMarker)
cmdline=$(field kernelCommandLine)
memory=$(field memoryMiB)
vcpus=$(field vcpus)
case $mode in
    streamvm) peer="streamvm run (our VMM) inside the TCG lab"; command -v streamvm >/dev/null || { echo "appliance-boot: no streamvm binary (scripts/lab --bin)"; exit 2; } ;;
    acpi) peer="qemu-system-x86_64 -enable-kvm -M microvm inside the TCG lab"; machine=microvm,x-option-roms=off,isa-serial=on,rtc=on ;;
    cmdline) peer="qemu-system-x86_64 -enable-kvm -M microvm inside the TCG lab"; machine=microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off ;;
    *) echo "appliance-boot: mode must be streamvm, acpi or cmdline"; exit 2 ;;
esac
[ -c /dev/kvm ] || { echo "appliance-boot: no /dev/kvm"; exit 1; }
# A triple fault's guest RIP (issue #6) goes to <json>-kvm-trace.txt and the console.
. "$(dirname "$0")/kvm-shutdown-trace.sh"
kvm_trace_start

# Our VMM takes the command line from appliance.json: for extra arguments, boot a copy of the
# appliance (symbolic links to its files) whose appliance.json has them appended.
target=$appliance
if [ "$mode" = streamvm ] && [ -n "$extra_args" ]; then
    target=/tmp/appliance-boot-$$
    mkdir -p "$target"
    for file in "$appliance"/*; do ln -sf "$(cd "$(dirname "$file")" && pwd)/$(basename "$file")" "$target/"; done
    rm -f "$target/appliance.json"
    jq --arg extra "$extra_args" '.kernelCommandLine = ((.kernelCommandLine // "") + " " + $extra)' "$appliance/appliance.json" >"$target/appliance.json"
fi

# The first child process of <pid> (busybox here has no pgrep): field 4 of /proc/<n>/stat is the parent.
child_of() { awk -v parent="$1" '$4 == parent { print $1; exit }' /proc/[0-9]*/stat 2>/dev/null; }
uptime_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }   # centiseconds
seconds() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

failures=0
entries=
i=1
while [ "$i" -le "$runs" ]; do
    # A fresh log per run: a marker left from an earlier invocation would count at once.
    log=/tmp/appliance-boot-$$-$i.log
    stderr=/tmp/appliance-boot-$$-$i.stderr
    rm -f "$log"
    : >"$log"
    start=$(uptime_cs)
    if [ "$mode" = streamvm ]; then
        # --timeout: the VMM stops the guest itself (status 124); timeout -s KILL is the backstop.
        timeout -s KILL $((timeout + 30)) streamvm run "$target" --timeout "$timeout" </dev/null >"$log" 2>"$stderr" &
    else
        timeout -s KILL "$timeout" qemu-system-x86_64 -M "$machine" -enable-kvm -cpu host \
            -m "$memory" -smp "$vcpus" -nodefaults -no-user-config -display none -no-reboot \
            -serial "file:$log" \
            -kernel "$appliance/kernel" -initrd "$appliance/initrd" -append "$cmdline${extra_args:+ $extra_args}" \
            -drive "id=root,file=$appliance/disk.img,format=raw,if=none,readonly=on" \
            -device virtio-blk-device,drive=root </dev/null >"$stderr" 2>&1 &
    fi
    pid=$!
    # Show the appliance's console live (indented) on the lab console, for progress and debugging.
    ( tail -f "$log" 2>/dev/null & echo $! >/tmp/appliance-boot-tail.pid; wait ) | sed 's/^/    | /' &
    # The console is polled every 100 ms (the error bound of the figures): each poll forks a grep,
    # and in the lab that is emulated work competing with the guest, so not more often.
    ready=
    rss_kib=null
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$ready" ] && grep -q "^$marker" "$log" 2>/dev/null; then
            ready=$(( $(uptime_cs) - start ))
            # The VMM's VmRSS while the guest is up and ready. Busybox's timeout execs the command in
            # its own process (a child does the timing); another timeout may fork it as a child.
            vmm=$pid
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = timeout ] && vmm=$(child_of "$pid")
            [ -n "$vmm" ] && rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$vmm/status" 2>/dev/null)
            [ -n "$rss_kib" ] || rss_kib=null
            echo "APPLIANCE-BOOT run=$i reached $marker after $(seconds "$ready")s (VMM resident ${rss_kib} KiB)"
        fi
        usleep 100000
    done
    wait "$pid"
    status=$?
    done_cs=$(( $(uptime_cs) - start ))
    if [ -z "$ready" ] && grep -q "^$marker" "$log" 2>/dev/null; then ready=$done_cs; fi
    sleep 1   # busybox tail -f polls once a second
    kill "$(cat /tmp/appliance-boot-tail.pid)" 2>/dev/null
    ready_json=null
    [ -n "$ready" ] && ready_json=$(seconds "$ready")
    # The marker line, made safe for a JSON string (no quotes, backslashes or control characters).
    marker_line=$(grep -m 1 "^$marker" "$log" 2>/dev/null | tr -d '\000-\037"\\')
    session_ok=1
    case " $extra_args " in
        *" streamvm.session=0 "*) ;;   # boot-only run: no session, so no STREAMVM-DONE
        *) grep -q '^STREAMVM-DONE status=0' "$log" || session_ok=0 ;;
    esac
    if [ -z "$ready" ] || [ "$session_ok" = 0 ] || [ "$status" != 0 ]; then
        failures=$((failures + 1))
        reason=
        [ -z "$ready" ] && reason="no $marker on the console;"
        [ "$session_ok" = 0 ] && reason="$reason no 'STREAMVM-DONE status=0';"
        [ "$status" != 0 ] && reason="$reason $mode exited with status $status;"
        echo "APPLIANCE-BOOT run=$i FAILED:$reason"
        sed 's/^/    stderr| /' "$stderr"
    fi
    echo "APPLIANCE-BOOT run=$i mode=$mode ready_s=$ready_json done_s=$(seconds "$done_cs") exit_status=$status"
    entries="$entries${entries:+,}{\"run\":$i,\"ready_s\":$ready_json,\"done_s\":$(seconds "$done_cs"),\"exit_status\":$status,\"vmm_rss_kib\":$rss_kib,\"marker_line\":\"$marker_line\"}"
    i=$((i + 1))
done
[ "$target" != "$appliance" ] && rm -rf "$target"

kvm_trace_save "${json%.json}-kvm-trace.txt"
cat >"$json" <<JSON
{"peer":"$peer","appliance":"$(field name)","mode":"$mode","extra_kernel_args":"$extra_args","memoryMiB":$memory,"vcpus":$vcpus,"runs":[$entries]}
JSON
echo "APPLIANCE-BOOT summary: $mode, $runs runs, $failures failed; $json"
[ "$failures" -eq 0 ]
