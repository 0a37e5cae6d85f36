# Real-mode boot sector: writes LBA 5 (512 x 'W') and reads LBA 6 through the BIOS
# (int 13h extended write/read), then prints "sum=XXXX" (the 16-bit byte sum of LBA 6)
# and "rw ok" to the debug console (port 0x402), and halts.
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    mov %dl, drive
    mov $0x8000, %di
    mov $512, %cx
    mov $0x57, %al
    cld
    rep stosb
    mov $dap_w, %si
    mov $0x4300, %ax
    mov drive, %dl
    int $0x13
    jc fail
    mov $dap_r, %si
    mov $0x4200, %ax
    mov drive, %dl
    int $0x13
    jc fail
    mov $0x9000, %si
    mov $512, %cx
    xor %bx, %bx
    xor %ah, %ah
1:  lodsb
    add %ax, %bx
    loop 1b
    mov $msg_sum, %si
    call puts
    mov %bx, %ax
    call puthex
    mov $msg_ok, %si
    call puts
    jmp halt
fail:
    mov $msg_fail, %si
    call puts
halt:
    hlt
    jmp halt

puts:
    mov $0x402, %dx
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  ret

# Prints AX as four hex digits.
puthex:
    mov $0x402, %dx
    mov $4, %cx
4:  rol $4, %ax
    push %ax
    and $0xf, %al
    add $0x30, %al
    cmp $0x39, %al
    jbe 5f
    add $7, %al
5:  out %al, %dx
    pop %ax
    loop 4b
    ret

drive: .byte 0
msg_sum: .asciz "sum="
msg_ok: .asciz "\nrw ok\n"
msg_fail: .asciz "rw failed\n"
.balign 4
dap_w: .byte 16, 0
    .word 1, 0x8000, 0
    .quad 5
dap_r: .byte 16, 0
    .word 1, 0x9000, 0
    .quad 6
.org 510
.byte 0x55, 0xaa
