#!/bin/sh
# A fixed CPU-bound job run the same way on the host and inside the lab, to measure how many times
# slower the lab's emulated CPU is (the time dilation factor N for scripts/lab-stream-bench). The
# job uses only busybox applets (the lab runs the host's static /bin/busybox, so it is the same
# machine code on both sides): generate 2.6 MB of text with seq, compress it with gzip -9, hash the
# result and the text with sha256sum. Integer work with no I/O (the files live in tmpfs-backed
# /tmp in the lab, in the page cache on the host) and no system calls to speak of.
# Prints one line: CPU-PROBE reps=<n> best_s=... median_s=... all=... cpu_best_s=... cpu_median_s=...
# cpu_all=...: wall seconds per repetition, and the CPU seconds (user + system, from the shell's
# cutime + cstime in /proc/$$/stat) the job's processes were charged. On a loaded host wall time
# includes waiting for a core and CPU time does not, so the host's reference is its CPU time; in
# the lab both include the time the lab's vCPU thread waited for a host core (the lab cannot see
# it), which is what a guest in the lab experiences.
#
# Usage: cpu-probe.sh [repetitions (default 5)] [busybox binary (default /bin/busybox)]
set -eu
reps=${1:-5} bb=${2:-/bin/busybox}
dir=$(mktemp -d "${TMPDIR:-/tmp}/cpu-probe.XXXXXX")
trap 'rm -rf "$dir"' EXIT
uptime_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }   # centiseconds
# CPU time of waited-for children in clock ticks (fields 16 and 17; the command name in field 2
# has no spaces here). USER_HZ is 100 on Linux x86, so a tick is a centisecond.
children_cs() { "$bb" awk '{ print $16 + $17 }' "/proc/$$/stat"; }
all= cpu=
i=1
while [ "$i" -le "$reps" ]; do
    start=$(uptime_cs) start_cpu=$(children_cs)
    "$bb" seq 1 400000 >"$dir/text"
    "$bb" gzip -9 -c "$dir/text" >"$dir/text.gz"
    "$bb" sha256sum "$dir/text" "$dir/text.gz" >/dev/null
    "$bb" gunzip -c "$dir/text.gz" | "$bb" sha256sum >/dev/null
    all="$all${all:+ }$(( $(uptime_cs) - start ))"
    cpu="$cpu${cpu:+ }$(( $(children_cs) - start_cpu ))"
    i=$((i + 1))
done
secs() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }
# Centiseconds -> "best median list" in seconds.
summary() {
    sorted=$(printf '%s\n' "$@" | "$bb" sort -n)
    best=$(printf '%s\n' "$sorted" | "$bb" head -n 1)
    median=$(printf '%s\n' "$sorted" | "$bb" sed -n "$(( ($# + 1) / 2 ))p")
    list=
    for cs in "$@"; do list="$list${list:+,}$(secs "$cs")"; done
    echo "$(secs "$best") $(secs "$median") $list"
}
set -- $(summary $all) $(summary $cpu)
echo "CPU-PROBE reps=$reps best_s=$1 median_s=$2 all=$3 cpu_best_s=$4 cpu_median_s=$5 cpu_all=$6"
