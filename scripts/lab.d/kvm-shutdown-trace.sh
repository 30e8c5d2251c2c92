# Sourced by the in-lab scripts (busybox sh). Guest triple faults (issue #6) leave no trace on the
# console, and KVM resets the vCPU on the shutdown exit, so the lab kernel's ftrace records, cheaply
# enough not to change a run's timing (tracing every exit slows each one):
#   - shutdown exits (SVM exit 0x7f, with the guest RIP before the reset);
#   - exits taken while an event was being delivered (EXITINTINFO valid, e.g. a nested page fault
#     while pushing an interrupt frame), which KVM must re-inject;
#   - injected exceptions other than #PF;
#   - KVM's asynchronous page faults (one set per fault KVM could not resolve at once, such as a
#     userfaultfd miss), as KVM may halt the vCPU or deliver interrupts before the faulting
#     instruction completes.
#   kvm_trace_start            enable the events (prints a line when tracefs is unavailable)
#   kvm_trace_save <file>      write the trace so far to <file>; print its tail when it holds a shutdown exit
kvm_trace_dir=/sys/kernel/tracing

kvm_trace_start() {
    if mount -t tracefs nodev "$kvm_trace_dir" 2>/dev/null || [ -d "$kvm_trace_dir/events/kvm" ]; then
        echo 8192 >"$kvm_trace_dir/buffer_size_kb"
        for event in kvm_try_async_get_page kvm_async_pf_not_present kvm_async_pf_ready kvm_async_pf_completed \
            kvm_async_pf_repeated_fault; do
            [ -d "$kvm_trace_dir/events/kvm/$event" ] && echo 1 >"$kvm_trace_dir/events/kvm/$event/enable"
        done
        { echo 'exit_reason == 127 || intr_info & 0x80000000' >"$kvm_trace_dir/events/kvm/kvm_exit/filter" ||
            echo 'exit_reason == 127' >"$kvm_trace_dir/events/kvm/kvm_exit/filter"; } &&
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
    if grep -q 'kvm_exit:.* reason shutdown' "$1"; then
        echo "LAB-KVM-TRACE a shutdown exit (triple fault); the trace before it, from $1:"
        awk '/kvm_exit:.* reason shutdown/ { for (i = NR - 40; i < NR; i++) if (i > 0) print before[i % 40]; print; exit }
             { before[NR % 40] = $0 }' "$1" | sed 's/^/LAB-KVM-TRACE /'
    fi
}
