# Prints a prompt, then echoes every key it reads through the BIOS (int 16h AH=00h):
# on screen through the teletype (int 10h AH=0Eh) and to COM1 and port 0x402 as each
# arrives. Enter also gets a line feed. Keys with no ASCII code (arrows, F-keys) are
# skipped. It never ends; the test stops the VMM. With HALTED defined it only prints
# the prompt and halts. With SCANCODES defined it reports the keyboard's bytes instead.
	.code16
	.text
	.globl	_start
_start:
	push	%cs
	pop	%ds
	sti				# int 16h waits for the keyboard interrupt
	mov	$prompt, %si
	call	print_all
.ifdef HALTED
	# `--defsym HALTED=1`: nothing more after the prompt. Every interrupt is masked
	# at the PIC, so nothing wakes the halted vCPU, not even the BIOS timer (the
	# static-screen benchmark's idle guest: what is left is the VMM's own cost).
	mov	$0xff, %al
	out	%al, $0x21
	out	%al, $0xa1
halted:	hlt
	jmp	halted
.endif
.ifdef SCANCODES
	# `--defsym SCANCODES=1`: every byte the keyboard controller gives (port 0x60) as two
	# hex digits and a space, to the ports, from an IRQ 1 handler of our own: the test
	# sees each press and release in order, and the BIOS sees no key at all (so
	# Ctrl+Alt+Del reaches the program instead of rebooting the machine).
	cli
	push	%ds
	xor	%ax, %ax
	mov	%ax, %ds
	movw	$irq1, 9 * 4		# the keyboard's vector (IRQ 1 is int 9 in real mode)
	mov	%cs, 9 * 4 + 2
	pop	%ds
	sti
1:	hlt
	jmp	1b

irq1:
	push	%ax
	push	%ds
	push	%cs
	pop	%ds
	# Only with a byte waiting, as SeaBIOS's and Linux's handlers check: SeaBIOS's
	# controller self-test answers, which it polls for with the keyboard interrupt
	# enabled, leave an edge latched in the PIC that arrives here once we take IRQ 1,
	# with nothing to read (port 0x60 would repeat the last byte, the 0xFA of its last
	# keyboard command).
	in	$0x64, %al
	test	$1, %al
	jz	2f
	in	$0x60, %al
	call	put_hex
2:	mov	$0x20, %al		# end of interrupt, to the master PIC
	out	%al, $0x20
	pop	%ds
	pop	%ax
	iret

# Writes AL as two lower-case hex digits and a space to the ports. Keeps AX.
put_hex:
	push	%ax
	push	%ax
	shr	$4, %al
	call	hex_digit
	pop	%ax
	and	$0x0f, %al
	call	hex_digit
	mov	$' ', %al
	call	putc_ports
	pop	%ax
	ret

hex_digit:
	add	$'0', %al
	cmp	$'9', %al
	jbe	1f
	add	$('a' - '0' - 10), %al
1:	jmp	putc_ports
.endif
next:
	xor	%ah, %ah
	int	$0x16			# AL = ASCII, AH = scan code
	test	%al, %al
	jz	next
	call	putc_all
	cmp	$0x0d, %al
	jne	next
	mov	$0x0a, %al
	call	putc_all
	jmp	next

prompt:	.asciz	"vmdesk-guest keyecho: type> "

	.include "common.inc"
