# Sets VBE mode 0x144 (1024x768, 32 bits per pixel, linear framebuffer) through the VGA
# BIOS and draws a pattern the test knows: eight vertical bars, 128 pixels wide, in the
# colours of `bars` from left to right on the top half of the screen and from right to
# left on the bottom half. Then it reports on port 0x402 and halts.
#
# Real mode cannot reach the framebuffer (it lies above 1 MiB), so 16 rows are drawn into
# a 64 KiB buffer in low memory and copied up with the BIOS's block move (int 15h
# AH=87h), 48 times. Scratch data lives in low RAM, not in the ROM, because firmware may
# make the option ROM area read-only after POST.
#
# Lines on 0x402: "vmdesk-guest vbe: drawn 1024x768" when done, or one saying why not
# ("no VBE": no VGA BIOS with VBE, as on a machine without a VGA device).
	.code16
	.text
	.globl	_start

	.set	MODE, 0x144
	.set	WIDTH, 1024
	.set	HEIGHT, 768
	.set	WORK_SEG, 0x2000	# VBE mode info at 0, int 15h GDT at GDT, LFB pointer at DEST
	.set	GDT, 0x200
	.set	DEST, 0x300
	.set	BUF_SEG, 0x3000		# 16 rows of pixels
	.set	BUF_BASE, 0x30000
	.set	BLOCK_ROWS, 16		# 16 rows x 4096 bytes = one 64 KiB block move

_start:
	push	%cs
	pop	%ds
	cld
	sti
	mov	$banner, %si
	call	print

	mov	$WORK_SEG, %ax
	mov	%ax, %es
	xor	%di, %di
	mov	$0x4f01, %ax		# return mode information
	mov	$MODE, %cx
	int	$0x10
	cmp	$0x004f, %ax
	jne	no_vbe
	mov	$WORK_SEG, %ax
	mov	%ax, %es
	cmpw	$WIDTH*4, %es:0x10	# bytes per scan line: the copy assumes no padding
	jne	bad_pitch
	mov	%es:0x28, %eax		# PhysBasePtr
	mov	%eax, %es:DEST

	mov	$0x4f02, %ax		# set mode, linear framebuffer
	mov	$(MODE | 0x4000), %bx
	int	$0x10
	cmp	$0x004f, %ax
	jne	no_mode

	xor	%bx, %bx		# top half: bars left to right
	call	fill
	call	copy_half
	mov	$7, %bx			# bottom half: right to left
	call	fill
	call	copy_half

	mov	$done, %si
	call	print
	jmp	halt_forever

no_vbe:
	mov	$msg_no_vbe, %si
	jmp	fail
bad_pitch:
	mov	$msg_pitch, %si
	jmp	fail
no_mode:
	mov	$msg_no_mode, %si
	jmp	fail
copy_failed:
	mov	$msg_copy, %si
fail:
	call	print
	jmp	halt_forever

# Fills the buffer with BLOCK_ROWS rows: pixel x is bars[(x / 128) ^ BX].
fill:
	push	%es
	mov	$BUF_SEG, %ax
	mov	%ax, %es
	xor	%di, %di
	mov	$BLOCK_ROWS, %dx
1:	xor	%cx, %cx
2:	mov	%cx, %si
	shr	$7, %si
	xor	%bx, %si
	shl	$2, %si
	mov	bars(%si), %eax
	stosl
	inc	%cx
	cmp	$WIDTH, %cx
	jb	2b
	dec	%dx
	jnz	1b
	pop	%es
	ret

# Copies the buffer to the framebuffer at WORK_SEG:DEST, HEIGHT / 2 / BLOCK_ROWS times,
# advancing DEST.
copy_half:
	mov	$(HEIGHT / 2 / BLOCK_ROWS), %cx
1:	push	%cx
	mov	$WORK_SEG, %ax
	mov	%ax, %es
	mov	$GDT, %di		# six descriptors, all zero but source and destination
	xor	%ax, %ax
	mov	$24, %cx
	rep stosw
	movw	$0xffff, %es:GDT+0x10	# source: 64 KiB, data, base BUF_BASE
	movl	$(0x93000000 | BUF_BASE), %es:GDT+0x12
	movw	$0xffff, %es:GDT+0x18	# destination: 64 KiB, data, base DEST
	mov	%es:DEST, %eax
	and	$0x00ffffff, %eax
	or	$0x93000000, %eax
	mov	%eax, %es:GDT+0x1a
	mov	%es:DEST+3, %al
	mov	%al, %es:GDT+0x1f
	mov	$GDT, %si
	mov	$0x8000, %cx		# words
	mov	$0x87, %ah
	int	$0x15
	jc	copy_failed
	mov	$WORK_SEG, %ax
	mov	%ax, %es
	addl	$0x10000, %es:DEST
	pop	%cx
	loop	1b
	ret

	.balign	4
bars:	.long	0xff0000, 0x00ff00, 0x0000ff, 0xffffff
	.long	0xffff00, 0x00ffff, 0xff00ff, 0x808080

banner:	.asciz	"vmdesk-guest vbe: setting mode 0x144\r\n"
done:	.asciz	"vmdesk-guest vbe: drawn 1024x768\r\n"
msg_no_vbe:	.asciz	"vmdesk-guest vbe: no VBE\r\n"
msg_pitch:	.asciz	"vmdesk-guest vbe: mode 0x144 has padded scan lines\r\n"
msg_no_mode:	.asciz	"vmdesk-guest vbe: setting mode 0x144 failed\r\n"
msg_copy:	.asciz	"vmdesk-guest vbe: int 15h block move failed\r\n"

	.include "common.inc"
