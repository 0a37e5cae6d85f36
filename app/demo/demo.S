# The vmdesk demo: a raw disk image that shows the whole path (app, VMM, SeaBIOS, VGA,
# VNC, console) working without an installer ISO. GNU as, 16-bit real mode; app/build.rs
# assembles and links it at 0x7c00 as a flat binary, and `vmdesk demo` writes it to the
# demo VM's disk.
#
# Sector 0 is an MBR boot sector: it loads the sectors after it to 0x7e00 with the BIOS's
# extended read (int 13h AH=42h; SeaBIOS's own virtio-blk driver does the I/O) and jumps
# there. The program then, through BIOS services only:
#   - sets VGA mode 13h (320x200, 256 colours) and draws a rainbow of colour bands with a
#     black panel above (title and hint) and below (the keys typed);
#   - echoes every key read with int 16h on screen and, one line per key, to COM1 and the
#     debug console (port 0x402), where tests read it: "vmdesk demo: key h"; bytes COM1
#     receives (the serial console, `vmdesk serial demo`) are echoed as keys alike;
#   - follows the PS/2 mouse through SeaBIOS's pointing-device services (int 15h C205 init,
#     C207 far handler, C200 enable) with an arrow cursor, yellow while a button is held,
#     and reports each position: "vmdesk demo: pointer 210,130 buttons 0" (mode 13h pixels);
#   - polls the ACPI power button (PM1a_STS bit 8 at the PIIX4 PM base, read from 00:01.3
#     config register 0x40) and then powers off through ACPI (SLP_TYP 0 = \_S5, SLP_EN),
#     so the app's Shut down (`vmdesk shutdown demo`) ends the VM as it would an OS.
#
# Drawing is cheap on purpose: real-mode code is emulated by KVM here and every byte
# written to the VGA window is an MMIO exit, so the screen is filled with rep stosl.
#
# The mouse: a PS/2 mouse reports relative motion, so the cursor starts in the middle and
# moves by what the mouse reports; it is kept in the 640x400 dots the VGA shows mode 13h
# in (what a VNC client's pointer moves over), so it moves as fast as the host's pointer.
	.code16
	.text
	.globl	_start

	.set	COM1, 0x3f8
	.set	DEBUGCON, 0x402
	.set	VIDEO_SEG, 0xa000
	.set	WIDTH, 320
	.set	HEIGHT, 200
	.set	TOP_ROWS, 48		# the black panel with the title and hint
	.set	BAND_ROWS, 4		# each of the 24 rainbow bands
	.set	BANDS, 24
	.set	FIRST_BAND_COLOUR, 32	# the default 256-colour palette's hue circle: 32..55
	.set	BOTTOM_Y, TOP_ROWS + BANDS * BAND_ROWS	# 144: the black panel for keys
	.set	KEY_LABEL_ROW, 18	# text rows are 8 pixels high: row 18 is y 144
	.set	KEY_FIRST_ROW, 19
	.set	KEY_LAST_ROW, 24
	.set	COLS, 40
	.set	KEY_FIRST_COL, 1	# a margin, as the label has
	.set	CURSOR_W, 8
	.set	CURSOR_H, 8
	.set	STACK_TOP, 0x7c00

# ---------------------------------------------------------------------------------------
# Sector 0: the boot sector.
_start:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$STACK_TOP, %sp
	ljmp	$0, $1f			# CS:IP may be 07C0:0000; make it 0000:7C..
1:	sti
	cld
	mov	%dl, boot_drive
	mov	$loading, %si
	call	print_ports
	mov	$dap, %si
	mov	boot_drive, %dl
	mov	$0x42, %ah
	int	$0x13
	jc	1f
	jmp	main
1:	mov	$load_failed, %si
	call	print_ports
2:	cli
	hlt
	jmp	2b

# Writes the NUL-terminated string at DS:SI to COM1 and the debug console.
print_ports:
	push	%ax
	push	%si
1:	lodsb
	test	%al, %al
	jz	2f
	call	putc_ports
	jmp	1b
2:	pop	%si
	pop	%ax
	ret

# Writes AL to COM1 and the debug console. Keeps every register.
putc_ports:
	push	%dx
	mov	$COM1, %dx
	outb	%al, %dx
	mov	$DEBUGCON, %dx
	outb	%al, %dx
	pop	%dx
	ret

	.balign	4
dap:	.byte	0x10, 0			# size, reserved
	.word	(program_end - program) / 512	# sectors
	.word	program, 0		# buffer 0000:7E00
	.quad	1			# from the sector after this one

loading:	.asciz	"vmdesk demo: loading\r\n"
load_failed:	.asciz	"vmdesk demo: int 13h read failed\r\n"

	.org	510
	.byte	0x55, 0xaa

# ---------------------------------------------------------------------------------------
# Sectors 1..: the program.
program:
main:
	mov	$VIDEO_SEG, %ax
	mov	%ax, %es
	call	find_pm_base

	mov	$0x0013, %ax		# mode 13h
	int	$0x10
	call	draw_screen

	call	mouse_init
	mov	$msg_ready, %si
	call	print_ports
	mov	$msg_mouse_ok, %si
	cmpb	$0, mouse_ok
	jne	1f
	mov	$msg_mouse_none, %si
1:	call	print_ports
	call	show_cursor

main_loop:
	call	poll_power_button
	mov	$(COM1 + 5), %dx	# a byte from the serial console? (LSR bit 0)
	in	%dx, %al
	test	$1, %al
	jz	1f
	mov	$COM1, %dx
	in	%dx, %al
	cmp	$0x7f, %al		# a terminal's Backspace (DEL) is the keyboard's 08h
	jne	2f
	mov	$0x08, %al
2:	xor	%ah, %ah
	call	echo_key
	jmp	main_loop
1:	mov	$0x01, %ah		# a key waiting? (ZF clear if so)
	int	$0x16
	jz	no_key
	xor	%ah, %ah
	int	$0x16			# AL = ASCII, AH = scan code
	call	echo_key
	jmp	main_loop
no_key:
	cli				# the mouse handler writes these with interrupts on
	cmpb	$0, moved
	je	idle
	movb	$0, moved
	mov	pos_x, %ax
	mov	pos_y, %bx
	mov	buttons, %cl
	sti
	call	move_cursor
	jmp	main_loop
idle:
	sti				# hlt runs in sti's shadow: an interrupt now wakes it
	hlt				# the timer (18.2 Hz), the keyboard or the mouse
	jmp	main_loop

# ---------------------------------------------------------------------------------------
# The screen.

# Black everywhere, rainbow bands between the panels, then the texts.
draw_screen:
	xor	%di, %di
	xor	%eax, %eax		# the top panel
	mov	$(WIDTH * TOP_ROWS / 4), %cx
	rep stosl
	mov	$FIRST_BAND_COLOUR, %al
1:	mov	%al, %ah		# four pixels of colour AL
	mov	%ax, %dx
	shl	$16, %eax
	mov	%dx, %ax
	mov	$(WIDTH * BAND_ROWS / 4), %cx
	rep stosl
	inc	%al
	cmp	$(FIRST_BAND_COLOUR + BANDS), %al
	jb	1b
	xor	%eax, %eax		# the bottom panel
	mov	$(WIDTH * (HEIGHT - BOTTOM_Y) / 4), %cx
	rep stosl

	mov	$0x010e, %dx		# row 1, column 14
	mov	$14, %bl		# yellow
	mov	$title, %si
	call	puts_at
	mov	$0x0301, %dx
	mov	$7, %bl			# light grey
	mov	$hint1, %si
	call	puts_at
	mov	$0x0401, %dx
	mov	$hint2, %si
	call	puts_at
	mov	$(KEY_LABEL_ROW << 8 | 1), %dx
	mov	$11, %bl		# light cyan
	mov	$keys_label, %si
	call	puts_at
	ret

# Writes the NUL-terminated string at DS:SI from text row DH, column DL, in colour BL,
# through int 10h AH=09h (which neither moves the BIOS cursor nor scrolls).
puts_at:
	push	%ax
	push	%cx
	push	%dx
	push	%si
1:	lodsb
	test	%al, %al
	jz	2f
	call	putc_at
	inc	%dl
	jmp	1b
2:	pop	%si
	pop	%dx
	pop	%cx
	pop	%ax
	ret

# Character AL at text row DH, column DL, colour BL.
putc_at:
	push	%ax
	push	%bx
	push	%cx
	push	%ax
	mov	$0x02, %ah		# set the cursor
	xor	%bh, %bh
	int	$0x10
	pop	%ax
	mov	$0x09, %ah		# character and attribute at the cursor
	xor	%bh, %bh
	mov	$1, %cx
	int	$0x10
	pop	%cx
	pop	%bx
	pop	%ax
	ret

# ---------------------------------------------------------------------------------------
# Keys.

# Echoes the key in AL (scan code in AH) in the bottom panel and to the ports. Enter starts
# a new line, Backspace takes a character back; keys with no ASCII code are ignored.
echo_key:
	test	%al, %al
	jz	9f
	cmp	$0xe0, %al		# extended keys (arrows, Insert ...)
	je	9f
	push	%ax
	mov	$msg_key, %si
	call	print_ports
	pop	%ax
	call	report_key
	push	%ax
	call	hide_cursor
	pop	%ax
	cmp	$0x0d, %al
	je	3f
	cmp	$0x08, %al
	je	4f
	cmp	$0x20, %al
	jb	8f			# other control characters: reported, not drawn
	cmp	$0x7e, %al
	ja	8f
	cmpb	$(COLS - 1), key_col
	jb	1f
	call	new_key_line
1:	mov	key_row, %dh
	mov	key_col, %dl
	mov	$10, %bl		# light green
	call	putc_at
	incb	key_col
	jmp	8f
3:	call	new_key_line		# Enter
	jmp	8f
4:	cmpb	$KEY_FIRST_COL, key_col	# Backspace
	jbe	8f
	decb	key_col
	mov	key_row, %dh
	mov	key_col, %dl
	mov	$' ', %al
	call	putc_at
8:	call	show_cursor
9:	ret

# Moves the key echo to the start of the next line; past the last, clears the lines.
new_key_line:
	movb	$KEY_FIRST_COL, key_col
	incb	key_row
	cmpb	$KEY_LAST_ROW, key_row
	jbe	1f
	movb	$KEY_FIRST_ROW, key_row
	push	%di
	push	%cx
	push	%eax
	mov	$(KEY_FIRST_ROW * 8 * WIDTH), %di
	xor	%eax, %eax
	mov	$(WIDTH * 8 * (KEY_LAST_ROW - KEY_FIRST_ROW + 1) / 4), %cx
	rep stosl
	pop	%eax
	pop	%cx
	pop	%di
1:	ret

# The rest of the "key" line: the character (Enter as "enter", other control characters
# as their code in decimal), then the line end.
report_key:
	push	%ax
	push	%si
	cmp	$0x0d, %al
	jne	1f
	mov	$msg_enter, %si
	call	print_ports
	jmp	3f
1:	cmp	$0x20, %al
	jb	2f
	cmp	$0x7e, %al
	ja	2f
	call	putc_ports
	jmp	3f
2:	xor	%ah, %ah
	call	print_dec
3:	mov	$crlf, %si
	call	print_ports
	pop	%si
	pop	%ax
	ret

# Writes AX in decimal to the ports. Keeps every register.
print_dec:
	push	%ax
	push	%bx
	push	%cx
	push	%dx
	mov	$10, %bx
	xor	%cx, %cx
1:	xor	%dx, %dx
	div	%bx
	push	%dx
	inc	%cx
	test	%ax, %ax
	jnz	1b
2:	pop	%ax
	add	$'0', %al
	call	putc_ports
	loop	2b
	pop	%dx
	pop	%cx
	pop	%bx
	pop	%ax
	ret

# ---------------------------------------------------------------------------------------
# The mouse.

# SeaBIOS's pointing-device services: initialise for 3-byte packets (which resets the
# mouse), install the far handler, enable. Sets mouse_ok on success.
mouse_init:
	push	%es
	mov	$0xc205, %ax
	mov	$3, %bh
	int	$0x15
	jc	1f
	push	%cs
	pop	%es
	mov	$mouse_handler, %bx
	mov	$0xc207, %ax
	int	$0x15
	jc	1f
	mov	$0xc200, %ax
	mov	$1, %bh
	int	$0x15
	jc	1f
	movb	$1, mouse_ok
1:	pop	%es
	ret

# Called far by the BIOS for each packet, interrupts on, with (from the top of the stack
# after the return address) Z, Y, X and the status byte as words. Moves the position by
# the packet's motion (y up in PS/2), clamped to the screen, and flags it for the main
# loop. Motion with an overflow bit is dropped: its value means nothing.
mouse_handler:
	push	%bp
	mov	%sp, %bp
	push	%ax
	push	%bx
	push	%ds
	xor	%ax, %ax
	mov	%ax, %ds
	mov	12(%bp), %bx		# status: bit 4/5 X/Y sign, 6/7 X/Y overflow, 0-2 buttons
	test	$0xc0, %bl
	jnz	3f
	mov	10(%bp), %al		# X
	xor	%ah, %ah
	test	$0x10, %bl
	jz	1f
	mov	$0xff, %ah
1:	add	pos_x, %ax
	call	clamp_x
	mov	%ax, pos_x
	mov	8(%bp), %al		# Y
	xor	%ah, %ah
	test	$0x20, %bl
	jz	2f
	mov	$0xff, %ah
2:	neg	%ax
	add	pos_y, %ax
	call	clamp_y
	mov	%ax, pos_y
3:	and	$0x07, %bl
	mov	%bl, buttons
	movb	$1, moved
	pop	%ds
	pop	%bx
	pop	%ax
	pop	%bp
	lret

# Clamp AX (signed) to 0..2*WIDTH-1 and 0..2*HEIGHT-1.
clamp_x:
	test	%ax, %ax
	jns	1f
	xor	%ax, %ax
1:	cmp	$(2 * WIDTH - 1), %ax
	jbe	2f
	mov	$(2 * WIDTH - 1), %ax
2:	ret
clamp_y:
	test	%ax, %ax
	jns	1f
	xor	%ax, %ax
1:	cmp	$(2 * HEIGHT - 1), %ax
	jbe	2f
	mov	$(2 * HEIGHT - 1), %ax
2:	ret

# The main loop saw a new position AX, BX (dots) and buttons CL: move the cursor there
# and report it.
move_cursor:
	push	%ax
	push	%bx
	push	%cx
	call	hide_cursor
	pop	%cx
	pop	%bx
	pop	%ax
	shr	%ax
	shr	%bx
	mov	%ax, cur_x
	mov	%bx, cur_y
	mov	%cl, cur_buttons
	call	show_cursor
	mov	$msg_pointer, %si
	call	print_ports
	mov	cur_x, %ax
	call	print_dec
	mov	$',', %al
	call	putc_ports
	mov	cur_y, %ax
	call	print_dec
	mov	$msg_buttons, %si
	call	print_ports
	mov	cur_buttons, %al
	xor	%ah, %ah
	call	print_dec
	mov	$crlf, %si
	call	print_ports
	ret

# Puts back what the cursor covers.
hide_cursor:
	cmpb	$0, cursor_shown
	je	9f
	movb	$0, cursor_shown
	mov	$under, %si
	xor	%dx, %dx		# DH row, DL column in the cursor
1:	call	cursor_pixel
	jc	2f
	mov	(%si), %al
	mov	%al, %es:(%di)
2:	inc	%si
	call	next_cursor_pixel
	jnz	1b
9:	ret

# Saves what the cursor will cover at (cur_x, cur_y) and draws the arrow over it.
show_cursor:
	cmpb	$0, mouse_ok
	je	9f
	movb	$1, cursor_shown
	mov	$under, %si
	xor	%dx, %dx
1:	call	cursor_pixel
	jc	3f
	mov	%es:(%di), %al
	mov	%al, (%si)
	movzbw	%dh, %bx
	mov	arrow(%bx), %al
	mov	$0x80, %ah
	mov	%dl, %cl
	shr	%cl, %ah
	test	%ah, %al
	jz	3f
	mov	$15, %al		# white
	cmpb	$0, cur_buttons
	je	2f
	mov	$14, %al		# yellow while a button is held
2:	mov	%al, %es:(%di)
3:	inc	%si
	call	next_cursor_pixel
	jnz	1b
9:	ret

# DI = the video offset of cursor pixel (row DH, column DL); CF set if off screen.
cursor_pixel:
	push	%ax
	push	%bx
	movzbw	%dl, %ax
	add	cur_x, %ax
	cmp	$WIDTH, %ax
	jae	1f
	movzbw	%dh, %bx
	add	cur_y, %bx
	cmp	$HEIGHT, %bx
	jae	1f
	imul	$WIDTH, %bx, %bx
	add	%ax, %bx
	mov	%bx, %di
	clc
	jmp	2f
1:	stc
2:	pop	%bx
	pop	%ax
	ret

# Steps DL, DH over the cursor's cells; ZF set after the last.
next_cursor_pixel:
	inc	%dl
	cmp	$CURSOR_W, %dl
	jb	1f
	xor	%dl, %dl
	inc	%dh
	cmp	$CURSOR_H, %dh
	ret
1:	test	%dl, %dl		# not 0 here: ZF clear
	ret

# ---------------------------------------------------------------------------------------
# The power button.

# PIIX4 PM I/O base from 00:01.3 register 0x40 (SeaBIOS programs it), into pm_base; and
# the power button's enable bit.
find_pm_base:
	mov	$0x80000b40, %eax	# enable | bus 0, device 1, function 3 | register 0x40
	mov	$0xcf8, %dx
	outl	%eax, %dx
	mov	$0xcfc, %dx
	inl	%dx, %eax
	and	$0xffc0, %ax		# bit 0 says I/O space; the base is 64-byte aligned
	jnz	1f
	mov	$0x600, %ax		# not programmed: where SeaBIOS puts it
1:	mov	%ax, pm_base
	mov	%ax, %dx		# PWRBTN_EN in PM1a_EN: QEMU sets PWRBTN_STS only when
	add	$2, %dx			# it is on (the spec sets it always). Its SCI is IRQ 9,
	inw	%dx, %ax		# which the BIOS keeps masked, and the poll clears the
	or	$0x100, %ax		# status within a timer tick.
	outw	%ax, %dx
	ret

# If PM1a_STS says the power button was pressed: say so, and power off through ACPI as an
# OS does (ACPI on through the SMI command port, then SLP_TYP 0 with SLP_EN to PM1a_CNT).
poll_power_button:
	mov	pm_base, %dx		# PM1a_STS
	inw	%dx, %ax
	test	$0x100, %ax		# PWRBTN_STS
	jz	9f
	mov	$0x100, %ax		# write 1 to clear
	outw	%ax, %dx
	mov	$msg_power, %si
	call	print_ports
	mov	$0xf1, %al		# ACPI_ENABLE
	outb	%al, $0xb2
	mov	pm_base, %dx
	add	$4, %dx			# PM1a_CNT
	mov	$0x2000, %ax		# SLP_EN | SLP_TYP 0
	outw	%ax, %dx
	sti				# the VMM stops the vCPU from outside, a little
	mov	0x46c, %bx		# later: wait about a second (19 ticks of the BIOS
1:	hlt				# timer at 0040:006C) before saying it did not
	mov	0x46c, %ax
	sub	%bx, %ax
	cmp	$19, %ax
	jb	1b
	mov	$msg_still_on, %si
	call	print_ports
9:	ret

# ---------------------------------------------------------------------------------------
# Data (in RAM: the whole image is loaded there).

title:		.asciz	"vmdesk demo"
hint1:		.asciz	"type, move the mouse;"
hint2:		.asciz	"the app's Shut down powers off"
keys_label:	.asciz	"keys:"
msg_ready:	.asciz	"vmdesk demo: ready, "
msg_mouse_ok:	.asciz	"mouse on\r\n"
msg_mouse_none:	.asciz	"no mouse (int 15h C2xx failed)\r\n"
msg_key:	.asciz	"vmdesk demo: key "
msg_enter:	.asciz	"enter"
msg_pointer:	.asciz	"vmdesk demo: pointer "
msg_buttons:	.asciz	" buttons "
msg_power:	.asciz	"vmdesk demo: power button: powering off\r\n"
msg_still_on:	.asciz	"vmdesk demo: still running after SLP_EN\r\n"
crlf:		.asciz	"\r\n"

# The cursor: an arrow, a byte per row, the leftmost pixel in bit 7.
arrow:	.byte	0b10000000, 0b11000000, 0b11100000, 0b11110000
	.byte	0b11111000, 0b11100000, 0b10110000, 0b00011000

	.balign	2
boot_drive:	.byte	0
mouse_ok:	.byte	0
moved:		.byte	0
buttons:	.byte	0
cursor_shown:	.byte	0
cur_buttons:	.byte	0
key_row:	.byte	KEY_FIRST_ROW
key_col:	.byte	KEY_FIRST_COL
	.balign	2
pm_base:	.word	0x600
pos_x:		.word	WIDTH		# dots (640x400): the middle
pos_y:		.word	HEIGHT
cur_x:		.word	WIDTH / 2	# pixels: where the cursor is drawn
cur_y:		.word	HEIGHT / 2
under:		.space	CURSOR_W * CURSOR_H

	.balign	512
program_end:
