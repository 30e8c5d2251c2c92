# Sourced by the in-lab scripts (busybox sh). Guest triple faults (issue #6) leave no trace on the
# console, and KVM resets the vCPU on the shutdown exit, so the lab kernel's ftrace records just the
# shutdown exits (SVM exit 0x7f, with the guest RIP before the reset) and injected exceptions other
# than #PF: too rare to change a run's timing (tracing every exit slows each one).
#   kvm_trace_start            enable the events (prints a line when tracefs is unavailable)
#   kvm_trace_save <file>      write the trace so far to <file>; print it when it holds a shutdown exit
kvm_trace_dir=/sys/kernel/tracing

kvm_trace_start() {
    if mount -t tracefs nodev "$kvm_trace_dir" 2>/dev/null || [ -d "$kvm_trace_dir/events/kvm" ]; then
        echo 'exit_reason == 127' >"$kvm_trace_dir/events/kvm/kvm_exit/filter" &&
            echo 1 >"$kvm_trace_dir/events/kvm/kvm_exit/enable" &&
            echo 'exception != 14' >"$kvm_trace_dir/events/kvm/kvm_inj_exception/filter" &&
            echo 1 >"$kvm_trace_dir/events/kvm/kvm_inj_exception/enable" &&
            echo 1 >"$kvm_trace_dir/tracing_on" && return 0
    fi
    echo "lab: KVM shutdown tracing unavailable"
}

kvm_trace_save() { # <file>
    [ -r "$kvm_trace_dir/trace" ] || return 0
    grep -v '^#' "$kvm_trace_dir/trace" >"$1" 2>/dev/null
    if grep -q 'kvm_exit' "$1"; then
        echo "LAB-KVM-TRACE shutdown exits (triple faults) and injected exceptions, from $1:"
        tail -n 40 "$1" | sed 's/^/LAB-KVM-TRACE /'
    fi
}
