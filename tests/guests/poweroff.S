# Prints a line, then powers the machine off through ACPI the way an OS does: find the
# PIIX4 PM I/O base in the PCI config space of 00:01.3 (register 0x40, which SeaBIOS
# programmed), switch ACPI on through the FADT's SMI command port (0xB2 <- 0xF1), and
# write SLP_TYP=0 (the DSDT's \_S5) with SLP_EN to PM1a_CNT at base+4. If that returns,
# the poweroff failed: say so and halt.
	.code16
	.text
	.globl	_start
_start:
	push	%cs
	pop	%ds
	mov	$banner, %si
	call	print

	mov	$0x80000b40, %eax	# enable | bus 0, device 1, function 3 | register 0x40
	mov	$0xcf8, %dx
	outl	%eax, %dx
	mov	$0xcfc, %dx
	inl	%dx, %eax
	and	$0xffc0, %ax		# bit 0 says I/O space; the base is 64-byte aligned
	jnz	1f
	mov	$0x600, %ax		# not programmed: where SeaBIOS puts it
1:	mov	%ax, %bx

	mov	$0xf1, %al		# ACPI_ENABLE
	outb	%al, $0xb2
	lea	4(%bx), %dx		# PM1a_CNT
	mov	$0x2000, %ax		# SLP_EN | SLP_TYP 0
	outw	%ax, %dx

	call	wait_a_second		# the VMM stops the vCPU from outside, a little later
	mov	$failed, %si
	call	print
	jmp	halt_forever

banner:	.asciz	"vmdesk-guest poweroff: powering off through ACPI\r\n"
failed:	.asciz	"vmdesk-guest poweroff: still running after SLP_EN\r\n"

	.include "common.inc"
