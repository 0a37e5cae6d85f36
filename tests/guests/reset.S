# Prints a banner and resets the machine. Which way is chosen when it is built, with
# `--defsym METHOD=n`: 1 the keyboard controller's pulse-reset command (0x64 <- 0xFE),
# 2 the PIIX reset control register (0xCF9 <- 0x06: full reset, then RST_CPU),
# 3 a triple fault (an empty IDT, then int3: no handler, no double-fault handler). A
#   real CPU checks the vector against the IDT limit in real mode too; KVM's instruction
#   emulator does not (it reads the IVT at the base), so on an emulator-only KVM such
#   as kvm_pvm the int3 just runs the BIOS's handler and the "still running" line shows.
#   Going to protected mode first does not help there: the emulator cannot deliver the
#   exception at all and the VM stops with an emulation failure.
# The machine boots the ROM again after the reset, so the banner shows once per boot;
# the test counts it. If the reset does not happen, it says so and halts.
	.code16
	.text
	.globl	_start
_start:
	push	%cs
	pop	%ds
	mov	$banner, %si
	call	print

.if METHOD == 1
	mov	$0xfe, %al
	outb	%al, $0x64
.elseif METHOD == 2
	mov	$0x06, %al
	mov	$0xcf9, %dx
	outb	%al, %dx
.elseif METHOD == 3
	cli
	lidtl	%cs:empty_idt
	int3
.else
	.error "METHOD must be 1, 2 or 3"
.endif

	# A reset takes effect a little after the write that asks for it (on QEMU and on
	# vmdesk alike the vCPU is stopped from outside): give it time before saying it failed.
	call	wait_a_second
	mov	$failed, %si
	call	print
	jmp	halt_forever

.if METHOD == 1
banner:	.asciz	"vmdesk-guest reset: booted, resetting through the keyboard controller\r\n"
.elseif METHOD == 2
banner:	.asciz	"vmdesk-guest reset: booted, resetting through port 0xcf9\r\n"
.else
banner:	.asciz	"vmdesk-guest reset: booted, resetting by triple fault\r\n"
.endif
failed:	.asciz	"vmdesk-guest reset: still running after the reset\r\n"

	.balign	8
empty_idt:
	.word	0			# limit 0: every vector is out of bounds
	.long	0

	.include "common.inc"
