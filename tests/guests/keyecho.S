# Prints a prompt, then echoes every key it reads through the BIOS (int 16h AH=00h):
# on screen through the teletype (int 10h AH=0Eh) and to COM1 and port 0x402 as each
# arrives. Enter also gets a line feed. Keys with no ASCII code (arrows, F-keys) are
# skipped. It never ends; the test stops the VMM. With HALTED defined it only prints
# the prompt and halts.
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
