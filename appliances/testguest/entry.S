/* Entry of the flat ring-0 test guest. The VMM enters here in 64-bit mode with paging on (identity
 * map of the first 4 GiB), RDI = command line address, RSI = RAM size. */
    .section .text.entry, "ax"
    .globl _start
_start:
    /* First guest instruction: tell the VMM we are running (port 0x80 is the POST diagnostic port,
     * which the VMM treats as unpopulated; the exit itself is the signal). */
    outb %al, $0x80
    leaq stack_top(%rip), %rsp
    call guest_main
    /* guest_main returns the exit code: write it to the power-off port (0x501). */
    movw $0x501, %dx
    outb %al, %dx
1:  cli
    hlt
    jmp 1b

    .section .bss
    .balign 16
stack_bottom:
    .skip 65536
stack_top:
