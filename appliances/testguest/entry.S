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

/* Application-processor start-up (mode=smp). The BSP copies [ap_trampoline_start, ap_trampoline_end)
 * to AP_TRAMPOLINE (0x10000) and sends INIT-SIPI-SIPI with vector 0x10: each AP starts there in real
 * mode with CS = 0x1000, IP = 0, as Linux's APs do (trampoline_64.S). It loads its own GDT, enters
 * protected mode, turns on PAE, loads the VMM's identity-mapping page tables (0x9000), sets EFER.LME,
 * turns on paging and far-jumps into 64-bit code, which then jumps to ap_entry64 at its linked
 * address. Addresses inside the trampoline are 0x10000 + (label - ap_trampoline_start). */
#define AP_TRAMPOLINE 0x10000
#define AP_STACK_SIZE 16384
#define AP_MAX 16
    .section .text
    .globl ap_trampoline_start, ap_trampoline_end
    .balign 16
    .code16
ap_trampoline_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    lgdtl tramp_gdtr - ap_trampoline_start
    movl %cr0, %eax
    orl $1, %eax                      /* CR0.PE */
    movl %eax, %cr0
    ljmpl $0x08, $(AP_TRAMPOLINE + tramp32 - ap_trampoline_start)
    .code32
tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax                   /* CR4.PAE */
    movl %eax, %cr4
    movl $0x9000, %eax                /* GuestLayout.pml4Address */
    movl %eax, %cr3
    movl $0xc0000080, %ecx            /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                  /* EFER.LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax             /* CR0.PG: long mode becomes active */
    movl %eax, %cr0
    ljmpl $0x18, $(AP_TRAMPOLINE + tramp64 - ap_trampoline_start)
    .code64
tramp64:
    movabsq $ap_entry64, %rax
    jmp *%rax
    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff          /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff          /* 0x10: flat data */
    .quad 0x00af9a000000ffff          /* 0x18: 64-bit code */
tramp_gdtr:
    .word tramp_gdtr - tramp_gdt - 1
    .long AP_TRAMPOLINE + tramp_gdt - ap_trampoline_start
ap_trampoline_end:

/* 64-bit AP entry: take the next CPU index (lock xadd), its own stack, and run ap_main(index). */
ap_entry64:
    movl $1, %eax
    lock xaddl %eax, ap_next_index(%rip)
    movl %eax, %edi
    cmpl $AP_MAX, %eax
    jae 2f
    leaq 1(%rdi), %rax
    shlq $14, %rax                    /* (index + 1) * AP_STACK_SIZE */
    leaq ap_stacks(%rip), %rsp
    addq %rax, %rsp
    call ap_main
2:  cli
    hlt
    jmp 2b

    .section .data
    .balign 4
ap_next_index:
    .long 1

    .section .bss
    .balign 16
ap_stacks:
    .skip AP_STACK_SIZE * AP_MAX
