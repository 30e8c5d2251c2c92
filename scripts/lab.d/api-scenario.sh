#!/bin/sh
# Runs inside the lab (busybox sh): the control-API scenario of issue 13 on one appliance.
#   1. streamvm run --api-socket S <appliance> &            (the guest runs; progress lines appear)
#   2. PATCH /vm {"state":"Paused"} -> 204, then GET / says "Paused" and no progress line appears
#   3. PUT /snapshot/create into a copy of the appliance directory -> 204
#   4. PATCH /vm {"state":"Resumed"} -> 204, and the guest goes on (two more progress lines)
#   5. the original is stopped (SIGTERM: exit status 130); streamvm run <copy> resumes the snapshot
#      and the guest says its memory is intact
# Every step prints an "API-SCENARIO <name> ..." line; the HTTP status of each request is shown.
#
# Usage: api-scenario.sh <name> <appliance dir> <extra kernel args|-> <progress pattern> <intact pattern> [timeout s]
#   progress pattern  a console line the guest prints now and then while it runs (grep -c pattern)
#   intact pattern    the line the resumed copy prints when it found its memory intact
# Needs streamvm and curl (scripts/lab --bin ... --bin /usr/bin/curl).
# Results go to $API_SCENARIO_ROOT/out/<name>, work files (copies, snapshot) to $API_SCENARIO_ROOT/work/<name>
# (default /lab: the lab disk), so the same script runs on a host with /dev/kvm too.
# Exit status: 0 passed, 1 a step failed (its FAILED line says which), 2 usage.
set -u
[ $# -ge 5 ] || { echo "api-scenario: usage: <name> <appliance dir> <extra args|-> <progress pattern> <intact pattern> [timeout]"; exit 2; }
name=$1 appliance=$2 extra=$3 progress=$4 intact=$5 timeout=${6:-600}
[ -d "$appliance" ] || { echo "api-scenario: no appliance directory $appliance"; exit 2; }
command -v streamvm >/dev/null || { echo "api-scenario: no streamvm binary (scripts/lab --bin)"; exit 2; }
command -v curl >/dev/null || { echo "api-scenario: no curl (scripts/lab --bin /usr/bin/curl)"; exit 2; }
[ -c /dev/kvm ] || { echo "api-scenario: no /dev/kvm"; exit 1; }
root=${API_SCENARIO_ROOT:-/lab}
out=$root/out/$name
work=$root/work/$name
rm -rf "$work" "$out"
mkdir -p "$work/original" "$work/copy" "$out"
socket=$work/api.sock
pid=

uptime_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }
started=$(uptime_cs)
at() { now=$(( $(uptime_cs) - started )); printf '%d.%02ds' $((now / 100)) $((now % 100)); }
say() { echo "API-SCENARIO $name [$(at)] $*"; }
failed() {
    say "FAILED: $*"
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    for log in "$out"/*.log; do [ -f "$log" ] && { echo "    --- $log (last 15 lines)"; tail -n 15 "$log" | sed 's/^/    | /'; }; done
    exit 1
}
# Hard links where the lab disk allows (the Linux appliance is ~130 MB), copies otherwise.
link_files() { # <from dir> <to dir>
    for file in "$1"/*; do ln "$file" "$2/" 2>/dev/null || cp "$file" "$2/" || return 1; done
}
# Waits until <file> has at least <count> lines matching <pattern>, or <seconds> pass; 0 when it did.
wait_for() { # <file> <pattern> <count> <seconds>
    deadline=$(( $(uptime_cs) + $4 * 100 ))
    while [ "$(grep -c "$2" "$1" 2>/dev/null)" -lt "$3" ]; do
        [ "$(uptime_cs)" -lt "$deadline" ] || return 1
        [ -n "${5:-}" ] && ! kill -0 "$5" 2>/dev/null && return 1
        usleep 200000
    done
}
# One request: prints the HTTP status; the body goes to $out/<label>.json.
request() { # <label> <method> <path> [body]
    if [ $# -ge 4 ]; then
        curl -sS --max-time 300 --unix-socket "$socket" -o "$out/$1.json" -w '%{http_code}' -X "$2" -H 'Content-Type: application/json' -d "$4" "http://localhost$3"
    else
        curl -sS --max-time 300 --unix-socket "$socket" -o "$out/$1.json" -w '%{http_code}' -X "$2" "http://localhost$3"
    fi
}
count() { grep -c "$1" "$2" 2>/dev/null; }

# The original: the appliance's files, with the extra kernel arguments appended to its command line.
link_files "$appliance" "$work/original" || failed "cannot copy $appliance"
rm -f "$work/original/memory.img" "$work/original/vmstate.json"
if [ "$extra" != - ]; then
    rm -f "$work/original/appliance.json"
    jq --arg extra "$extra" '.kernelCommandLine = ((.kernelCommandLine // "") + " " + $extra)' "$appliance/appliance.json" >"$work/original/appliance.json"
fi
run_log=$out/original.log
streamvm run --api-socket "$socket" "$work/original" --timeout "$timeout" </dev/null >"$run_log" 2>&1 &
pid=$!
say "step 1: streamvm run --api-socket $socket $work/original (pid $pid)"
wait_for "$run_log" "$progress" 1 "$timeout" "$pid" || failed "no '$progress' line from the running guest"
say "step 1: the guest runs: $(grep "$progress" "$run_log" | tail -n 1)"
status=$(request state-running GET /)
say "step 1: GET / -> $status $(cat "$out/state-running.json")"
[ "$status" = 200 ] || failed "GET / answered $status"

status=$(request pause PATCH /vm '{"state":"Paused"}')
say "step 2: PATCH /vm {\"state\":\"Paused\"} -> $status"
[ "$status" = 204 ] || failed "pause answered $status: $(cat "$out/pause.json")"
status=$(request state-paused GET /)
say "step 2: GET / -> $status $(cat "$out/state-paused.json")"
[ "$(jq -r '.state // empty' "$out/state-paused.json")" = Paused ] || failed "GET / does not say Paused"
paused_lines=$(count "$progress" "$run_log")
sleep 3
[ "$(count "$progress" "$run_log")" = "$paused_lines" ] || failed "progress lines appeared while paused"
say "step 2: no progress line in 3 s while paused ($paused_lines so far)"

link_files "$work/original" "$work/copy" || failed "cannot copy the appliance directory"
status=$(request snapshot PUT /snapshot/create "{\"snapshot_path\":\"$work/copy/vmstate.json\",\"mem_file_path\":\"$work/copy/memory.img\"}")
say "step 3: PUT /snapshot/create {snapshot_path: $work/copy/vmstate.json, mem_file_path: $work/copy/memory.img} -> $status"
[ "$status" = 204 ] || failed "snapshot answered $status: $(cat "$out/snapshot.json")"
[ -s "$work/copy/vmstate.json" ] && [ -s "$work/copy/memory.img" ] || failed "no vmstate.json / memory.img in the copy"
say "step 3: copy holds vmstate.json ($(stat -c %s "$work/copy/vmstate.json") bytes) and memory.img ($(stat -c %s "$work/copy/memory.img") bytes, $(du -k "$work/copy/memory.img" | cut -f1) KiB on disk)"

status=$(request resume PATCH /vm '{"state":"Resumed"}')
say "step 4: PATCH /vm {\"state\":\"Resumed\"} -> $status"
[ "$status" = 204 ] || failed "resume answered $status: $(cat "$out/resume.json")"
wait_for "$run_log" "$progress" $((paused_lines + 2)) 120 "$pid" || failed "the original did not go on after the resume"
say "step 4: the guest goes on: $(grep "$progress" "$run_log" | tail -n 1)"
status=$(request metrics GET /metrics)
say "step 4: GET /metrics -> $status, $(grep -c '^streamvm_' "$out/metrics.json") samples, $(grep '^streamvm_vm_exits_total' "$out/metrics.json" | head -n 3 | tr '\n' ' ')"
kill -TERM "$pid"
wait "$pid"
status=$?
pid=
say "step 5: original stopped with SIGTERM, streamvm run exit status $status"
[ "$status" = 130 ] || failed "streamvm run of the original exited with $status, not 130"

# streamvm run <copy>: resumes the snapshot (lazily unless options say otherwise); 0 when the guest
# reported its memory intact and the run ended cleanly, 5 when the guest triple-faulted, else 1.
run_copy() { # <label> [streamvm run options]
    label=$1; shift
    copy_log=$out/copy-$label.log
    streamvm run "$@" "$work/copy" --timeout "$timeout" </dev/null >"$copy_log" 2>&1 &
    pid=$!
    say "step 5: streamvm run $* $work/copy (resumes the snapshot, $label, pid $pid)"
    wait_for "$copy_log" "$intact" 1 "$timeout" "$pid" || true
    if grep -q "$intact" "$copy_log"; then
        say "step 5: $(grep "$intact" "$copy_log" | head -n 1)"
        # The copy goes on (ticker) or ends its run (the Linux appliance powers off after the check).
        wait_for "$copy_log" "$progress" 1 30 "$pid" || true
    fi
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    status=$?
    pid=
    say "step 5: the copy's streamvm run ($label) exit status $status"
    grep -q 'DAMAGED\|FAIL' "$copy_log" && failed "the resumed copy reported damage"
    grep -q "$intact" "$copy_log" || { [ "$status" = 5 ] && return 5; failed "the resumed copy did not report its memory intact"; }
    [ "$status" = 0 ] || [ "$status" = 130 ] || failed "streamvm run of the copy exited with $status"
    return 0
}
if ! run_copy lazy; then
    # Issue #6 (open): in this lab a lazily resumed Linux guest now and then triple-faults. Say
    # so, and resume the same snapshot once more with all memory read first.
    say "step 5: WARNING the lazy resume triple-faulted (issue #6); resuming the same snapshot with --eager"
    run_copy eager --eager || failed "the eager resume triple-faulted too"
fi
say "passed"
