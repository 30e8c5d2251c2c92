#!/bin/sh
# Runs inside the lab (busybox sh): snapshots an appliance at its ready marker with our VMM and
# checks that the snapshot resumes. Steps, each printing an "APPLIANCE-SNAPSHOT ..." line:
#   1. streamvm snapshot --at-ready <dir>       (boots it; writes memory.img + vmstate.json)
#   2. streamvm run <dir>                       (resumes lazily: must print the ready marker again,
#                                                finish its session with STREAMVM-DONE status=0 and exit 0)
#   3. streamvm run --eager <dir>               (the same with all memory read first; unless <resumes> is 1)
#   4. streamvm bench uffd --appliance <dir>    (restore figures: lazy, lazy with the working set first, eager; unless <bench restores> is 0;
#                                                with BENCH_WAIT_MODES="blocking busyPolling" once per fault-handler mode)
# and writes the results to <out dir>, with memory.img and vmstate.json when <copy> is 1 (a lab
# disk copy of a 256 MiB image is slow under TCG; CI only checks the resume). Times are on the lab's clock.
#
# Usage: appliance-snapshot.sh <appliance dir> <out dir> <resumes 1|2> <bench restores> <copy 0|1> [timeout s]
# Exit status: 0 all steps passed, 1 a step failed (its FAILED line says why), 2 usage.
set -u
[ $# -ge 5 ] || { echo "appliance-snapshot: usage: <appliance dir> <out dir> <resumes> <bench restores> <copy> [timeout]"; exit 2; }
appliance=$1 out=$2 resumes=$3 bench_restores=$4 copy=$5 timeout=${6:-900}
[ -d "$appliance" ] || { echo "appliance-snapshot: no appliance directory $appliance"; exit 2; }
command -v streamvm >/dev/null || { echo "appliance-snapshot: no streamvm binary (scripts/lab --bin)"; exit 2; }
[ -c /dev/kvm ] || { echo "appliance-snapshot: no /dev/kvm"; exit 1; }
mkdir -p "$out"
# A triple fault's guest RIP (issue #6) goes to <out dir>/kvm-shutdown-trace.txt and the console.
. "$(dirname "$0")/kvm-shutdown-trace.sh"
kvm_trace_start

uptime_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }   # centiseconds
seconds() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }
command -v jq >/dev/null || { echo "appliance-snapshot: no jq in the lab (scripts/lab --bin \$(command -v jq))"; exit 2; }
marker=$(jq -r '.readyMarker // empty' "$appliance/appliance.json")
failed() { echo "APPLIANCE-SNAPSHOT FAILED: $*"; kvm_trace_save "$out/kvm-shutdown-trace.txt"; exit 1; }
# Shows a log on the lab console, indented.
show() { sed 's/^/    | /' "$1"; }

rm -f "$appliance/memory.img" "$appliance/vmstate.json"
disk_before=$(md5sum <"$appliance/disk.img")

start=$(uptime_cs)
timeout -s KILL $((timeout + 30)) streamvm snapshot --at-ready "$appliance" --timeout "$timeout" >"$out/snapshot.log" 2>&1
status=$?
snapshot_cs=$(( $(uptime_cs) - start ))
show "$out/snapshot.log"
[ "$status" = 0 ] || failed "streamvm snapshot --at-ready exited with status $status"
[ -s "$appliance/vmstate.json" ] && [ -f "$appliance/memory.img" ] || failed "no memory.img / vmstate.json after streamvm snapshot"
echo "APPLIANCE-SNAPSHOT snapshot_s=$(seconds "$snapshot_cs") memory_img_bytes=$(stat -c %s "$appliance/memory.img") memory_img_disk_kib=$(du -k "$appliance/memory.img" | cut -f1) vmstate_bytes=$(stat -c %s "$appliance/vmstate.json")"
# The guest mounts its root read-only, so the boot must not have changed disk.img; if it did, that
# disk.img belongs with the snapshot and must be published with it.
disk_changed=0
[ "$(md5sum <"$appliance/disk.img")" = "$disk_before" ] || disk_changed=1
echo "APPLIANCE-SNAPSHOT disk_changed=$disk_changed"

# One resume with `streamvm run`: ready marker again, session done, exit status 0.
resume() { # <name> [run options]
    name=$1; shift
    log=$out/resume-$name.log
    : >"$log"
    start=$(uptime_cs)
    timeout -s KILL $((timeout + 30)) streamvm run "$@" "$appliance" --timeout "$timeout" </dev/null >"$log" 2>&1 &
    pid=$!
    ready=
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$ready" ] && grep -q "^$marker" "$log"; then ready=$(( $(uptime_cs) - start )); fi
        usleep 100000
    done
    wait "$pid"
    status=$?
    done_cs=$(( $(uptime_cs) - start ))
    show "$log"
    [ -n "$ready" ] || { grep -q "^$marker" "$log" && ready=$done_cs; }
    echo "APPLIANCE-SNAPSHOT resume=$name ready_s=$([ -n "$ready" ] && seconds "$ready" || echo null) done_s=$(seconds "$done_cs") exit_status=$status"
    [ -n "$ready" ] || failed "resume $name: no $marker after resuming"
    grep -q '^STREAMVM-DONE status=0' "$log" || failed "resume $name: no 'STREAMVM-DONE status=0'"
    [ "$status" = 0 ] || failed "resume $name: streamvm run exited with status $status"
    echo "{\"resume\":\"$name\",\"ready_s\":$(seconds "$ready"),\"done_s\":$(seconds "$done_cs"),\"exit_status\":$status}" >"$out/resume-$name.json"
}
resume lazy
[ "$resumes" -ge 2 ] && resume eager --eager

if [ "$bench_restores" -gt 0 ]; then
    for wait_mode in ${BENCH_WAIT_MODES:-blocking}; do
        streamvm bench uffd --appliance "$appliance" --restores "$bench_restores" --wait-mode "$wait_mode" \
            --json "$out/bench-uffd-appliance-$wait_mode.json" >"$out/bench-$wait_mode.log" 2>&1
        status=$?
        show "$out/bench-$wait_mode.log"
        [ "$status" = 0 ] || failed "streamvm bench uffd --appliance --wait-mode $wait_mode exited with status $status"
    done
fi

if [ "$copy" = 1 ]; then
    cp "$appliance/memory.img" "$appliance/vmstate.json" "$out/" || failed "copying the snapshot to $out"
    [ "$disk_changed" = 1 ] && cp "$appliance/disk.img" "$out/disk.img"
fi
kvm_trace_save "$out/kvm-shutdown-trace.txt"
echo "APPLIANCE-SNAPSHOT passed"
