# Reads the CD-ROM through the BIOS over and over, so a test can change the medium under
# it: about four times a second, int 13h AH=42h reads one 2048-byte sector at LBA 16 (an
# ISO's primary volume descriptor) from drive 0xE0 into 0000:8000 and prints
#     vmdesk-guest cdread: sum XXXXXXXX      (the 32-bit sum of the sector's bytes), or
#     vmdesk-guest cdread: error XX          (the BIOS's status in AH)
# Drive 0xE0: SeaBIOS numbers CD drives from 0xE0 (EXTSTART_CD) in boot-list order
# (bcv_prepboot -> map_cd_drive), whether or not the machine booted from them, so the
# machine's only CD is 0xE0. Every read is a fresh ATAPI READ(10) (SeaBIOS caches no
# sectors), so a changed or missing medium shows at the next read.
#
# The DAP and the buffer live in low RAM: the ROM's own area may be read-only by now.
	.code16
	.text
	.globl	_start
_start:
	push	%cs
	pop	%ds
	mov	$banner, %si
	call	print

next_read:
	xor	%ax, %ax
	mov	%ax, %es
	movw	$0x0010, %es:0x7000	# DAP size 16, reserved 0
	movw	$1, %es:0x7002		# one sector
	movw	$0x8000, %es:0x7004	# buffer offset
	movw	$0, %es:0x7006		# buffer segment
	movl	$16, %es:0x7008		# LBA, low dword
	movl	$0, %es:0x700c		# LBA, high dword
	push	%ds
	mov	%ax, %ds
	mov	$0x7000, %si
	mov	$0xe0, %dl
	mov	$0x42, %ah
	int	$0x13
	pop	%ds
	jc	read_failed

	push	%ds
	xor	%ax, %ax
	mov	%ax, %ds
	mov	$0x8000, %si
	mov	$2048, %cx
	xor	%eax, %eax		# lodsb changes AL only: EAX stays a byte
	xor	%ebx, %ebx
	cld
1:	lodsb
	add	%eax, %ebx
	loop	1b
	pop	%ds
	mov	$m_sum, %si
	call	print
	mov	$8, %cx
	call	print_hex
	jmp	line_done

read_failed:
	movzbl	%ah, %ebx
	shl	$24, %ebx		# the two digits at the top, where print_hex starts
	mov	$m_err, %si
	call	print
	mov	$2, %cx
	call	print_hex

line_done:
	mov	$m_nl, %si
	call	print
	call	wait_quarter_second
	jmp	next_read

# Prints the top CX hex digits of EBX, most significant first.
print_hex:
	rol	$4, %ebx
	mov	%bl, %al
	and	$0x0f, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	2f
	add	$7, %al
2:	call	putc_ports
	loop	print_hex
	ret

# Waits 5 ticks of the BIOS timer (about 0.27 s), with interrupts on.
wait_quarter_second:
	sti
	push	%ds
	xor	%ax, %ax
	mov	%ax, %ds
	mov	0x46c, %bx
3:	hlt
	mov	0x46c, %ax
	sub	%bx, %ax
	cmp	$5, %ax
	jb	3b
	pop	%ds
	ret

banner:	.asciz	"vmdesk-guest cdread: reading drive E0 LBA 16\r\n"
m_sum:	.asciz	"vmdesk-guest cdread: sum "
m_err:	.asciz	"vmdesk-guest cdread: error "
m_nl:	.asciz	"\r\n"

	.include "common.inc"
