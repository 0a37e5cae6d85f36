# Prints a prompt to COM1 (and port 0x402), then echoes every byte COM1 receives back to
# both, from the UART's receive interrupt (IRQ 4), halting in between; a carriage return
# also gets a line feed. It never ends; the test stops the VMM. The guest for the serial
# console tests: what a client of `--serial-socket` types comes back as the guest's own
# output, to every client.
	.code16
	.text
	.globl	_start
_start:
	push	%cs
	pop	%ds
	cli
	# IRQ 4 is int 0Ch in real mode (the master PIC's vectors start at 8).
	push	%ds
	xor	%ax, %ax
	mov	%ax, %ds
	movw	$irq4, 0x0c * 4
	mov	%cs, 0x0c * 4 + 2
	pop	%ds
	mov	$(COM1 + 1), %dx	# IER: interrupt when a byte has arrived
	mov	$0x01, %al
	out	%al, %dx
	mov	$(COM1 + 4), %dx	# MCR: DTR, RTS and OUT2, which gates the line on a PC
	mov	$0x0b, %al
	out	%al, %dx
	in	$0x21, %al		# unmask IRQ 4 at the master PIC
	and	$0xef, %al
	out	%al, $0x21
	mov	$prompt, %si
	call	print
	sti
1:	hlt
	jmp	1b

# Everything waiting in the receive FIFO, echoed; then the end of the interrupt.
irq4:
	push	%ax
	push	%dx
	push	%ds
	push	%cs
	pop	%ds
2:	mov	$(COM1 + 5), %dx	# LSR bit 0: a byte is waiting
	in	%dx, %al
	test	$1, %al
	jz	3f
	mov	$COM1, %dx
	in	%dx, %al
	call	putc_ports
	cmp	$0x0d, %al
	jne	2b
	mov	$0x0a, %al
	call	putc_ports
	jmp	2b
3:	mov	$0x20, %al		# end of interrupt, to the master PIC
	out	%al, $0x20
	pop	%ds
	pop	%dx
	pop	%ax
	iret

prompt:	.asciz	"vmdesk-guest serialecho: type> "

	.include "common.inc"
