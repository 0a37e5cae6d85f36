//! The VGA driven as its firmware and drivers drive it, with no vCPU: SeaBIOS's vgasrc
//! mode sets and font loading, plain VGA programming of modes 12h and 13h, and Linux's
//! bochs DRM mode set followed by framebuffer writes through the memory mapper.

use std::sync::{Arc, Mutex};

use display::encoding::Rect;
use display::surface::Surface;

use super::*;
use crate::memory_slots::FakeRamMapper;
use crate::pci::root::PciRoot;
use crate::pci::{PciFunction, devfn};

const SLOT: u8 = 2;

struct Guest {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    root: PciRoot,
    vga: Vga,
    surface: Arc<Surface>,
}

impl Guest {
    fn new(rom: Option<Vec<u8>>) -> Guest {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let surface = Surface::new(640, 480);
        let vga = Vga::new(surface.clone(), rom).unwrap();
        vga.attach(&pio, &mmio).unwrap();
        let mut root = PciRoot::new(pio.clone(), mmio.clone());
        root.add(devfn(SLOT, 0), vga.pci_function());
        let g = Guest {
            pio,
            mmio,
            root,
            vga,
            surface,
        };
        // SeaBIOS's stdvga_setup: colour mode, then more than 64 KiB.
        g.outb(0x3c2, 0xc3);
        g.sequ_write(0x04, 0x02);
        g
    }

    fn outb(&self, port: u16, v: u8) {
        assert!(self.pio.write(u64::from(port), &[v]), "port {port:#x}");
    }
    fn outw(&self, port: u16, v: u16) {
        assert!(self.pio.write(u64::from(port), &v.to_le_bytes()));
    }
    fn inb(&self, port: u16) -> u8 {
        let mut b = [0];
        self.pio.read(u64::from(port), &mut b);
        b[0]
    }
    fn inw(&self, port: u16) -> u16 {
        let mut b = [0; 2];
        self.pio.read(u64::from(port), &mut b);
        u16::from_le_bytes(b)
    }
    fn writeb(&self, addr: u64, v: u8) {
        assert!(self.mmio.write(addr, &[v]), "mmio {addr:#x}");
    }
    fn writew(&self, addr: u64, v: u16) {
        assert!(self.mmio.write(addr, &v.to_le_bytes()));
    }
    fn readb(&self, addr: u64) -> u8 {
        let mut b = [0];
        self.mmio.read(addr, &mut b);
        b[0]
    }

    fn cfg_write32(&mut self, off: u16, v: u32) {
        self.root
            .config_write(0, devfn(SLOT, 0), off, &v.to_le_bytes());
    }
    fn cfg_read32(&self, off: u16) -> u32 {
        let mut b = [0; 4];
        self.root.config_read(0, devfn(SLOT, 0), off, &mut b);
        u32::from_le_bytes(b)
    }

    // SeaBIOS stdvgaio.c equivalents.
    fn sequ_write(&self, i: u8, v: u8) {
        self.outw(0x3c4, u16::from(v) << 8 | u16::from(i));
    }
    fn grdc_write(&self, i: u8, v: u8) {
        self.outw(0x3ce, u16::from(v) << 8 | u16::from(i));
    }
    fn crtc_write(&self, i: u8, v: u8) {
        self.outw(0x3d4, u16::from(v) << 8 | u16::from(i));
    }
    fn attr_write(&self, i: u8, v: u8) {
        self.inb(0x3da);
        self.outb(0x3c0, i);
        self.outb(0x3c0, v);
    }

    /// SeaBIOS's stdvga_set_mode with one of its register tables.
    fn set_mode(&self, t: &ModeTable) {
        self.outb(0x3c6, 0xff);
        self.outb(0x3c8, 0);
        for i in 0..256 {
            for c in (t.dac)(i) {
                self.outb(0x3c9, c);
            }
        }
        for (i, &v) in t.actl.iter().enumerate() {
            self.attr_write(i as u8, v);
        }
        self.attr_write(0x14, 0);
        self.sequ_write(0, 3);
        for (i, &v) in t.sequ.iter().enumerate() {
            self.sequ_write(i as u8 + 1, v);
        }
        for (i, &v) in t.grdc.iter().enumerate() {
            self.grdc_write(i as u8, v);
        }
        self.crtc_write(0x11, 0);
        for (i, &v) in t.crtc.iter().enumerate() {
            self.crtc_write(i as u8, v);
        }
        self.outb(0x3c2, t.misc);
        self.inb(0x3da);
        self.outb(0x3c0, 0x20);
    }

    /// SeaBIOS's stdvga_load_font (get/release_font_access around the copy).
    fn load_font(&self, font: &[u8], height: usize) {
        self.sequ_write(0, 1);
        self.sequ_write(2, 4);
        self.sequ_write(4, 7);
        self.sequ_write(0, 3);
        self.grdc_write(4, 2);
        self.grdc_write(5, 0);
        self.grdc_write(6, 4);
        for c in 0..256 {
            for l in 0..height {
                self.writeb(0xa_0000 + c as u64 * 32 + l as u64, font[c * height + l]);
            }
        }
        self.sequ_write(0, 1);
        self.sequ_write(2, 3);
        self.sequ_write(4, 3);
        self.sequ_write(0, 3);
        let v = if self.inb(0x3cc) & 1 != 0 { 0x0e } else { 0x0a };
        self.grdc_write(6, v);
        self.grdc_write(4, 0);
        self.grdc_write(5, 0x10);
    }

    fn pixel(&self, x: usize, y: usize) -> u32 {
        self.surface.read(|v| v.pixels[y * v.stride + x])
    }

    fn marked(&self) -> Vec<Rect> {
        lock(&self.vga.renderer).last_marked.clone()
    }
}

struct ModeTable {
    sequ: [u8; 4],
    misc: u8,
    crtc: [u8; 25],
    actl: [u8; 20],
    grdc: [u8; 9],
    dac: fn(usize) -> [u8; 3],
}

/// SeaBIOS's pal_ega: 64 entries, the rest black.
fn pal_ega(i: usize) -> [u8; 3] {
    if i >= 64 {
        return [0; 3];
    }
    let c = |hi: usize, lo: usize| ((i >> hi) & 1) as u8 * 0x2a + ((i >> lo) & 1) as u8 * 0x15;
    [c(2, 5), c(1, 4), c(0, 3)]
}

/// A 256-colour ramp standing in for pal_vga.
fn pal_ramp(i: usize) -> [u8; 3] {
    [
        (i & 0x3f) as u8,
        ((i >> 2) & 0x3f) as u8,
        0x3f - (i & 0x3f) as u8,
    ]
}

const MODE_03: ModeTable = ModeTable {
    sequ: [0x00, 0x03, 0x00, 0x02],
    misc: 0x67,
    crtc: [
        0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00, 0x00,
        0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff,
    ],
    actl: [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e,
        0x3f, 0x0c, 0x00, 0x0f, 0x08,
    ],
    grdc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0e, 0x0f, 0xff],
    dac: pal_ega,
};

const MODE_12: ModeTable = ModeTable {
    sequ: [0x01, 0x0f, 0x00, 0x06],
    misc: 0xe3,
    crtc: [
        0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0x0b, 0x3e, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xea, 0x8c, 0xdf, 0x28, 0x00, 0xe7, 0x04, 0xe3, 0xff,
    ],
    actl: [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e,
        0x3f, 0x01, 0x00, 0x0f, 0x00,
    ],
    grdc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0f, 0xff],
    dac: pal_ega,
};

const MODE_13: ModeTable = ModeTable {
    sequ: [0x01, 0x0f, 0x00, 0x0e],
    misc: 0x63,
    crtc: [
        0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0xbf, 0x1f, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x40, 0x96, 0xb9, 0xa3, 0xff,
    ],
    actl: [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x41, 0x00, 0x0f, 0x00,
    ],
    grdc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0f, 0xff],
    dac: pal_ramp,
};

/// A made-up 8x16 font whose glyphs all differ, so a wrong character or line shows.
fn test_font() -> Vec<u8> {
    (0..256 * 16)
        .map(|i| {
            let (c, l) = ((i / 16) as u8, (i % 16) as u8);
            if c == b' ' {
                return 0;
            }
            c.wrapping_mul(31) ^ l.wrapping_mul(0x45) ^ (l << 4)
        })
        .collect()
}

fn rgb6(c: [u8; 3]) -> u32 {
    let e = |v: u8| u32::from((v << 2) | ((v & 1) * 3));
    e(c[0]) << 16 | e(c[1]) << 8 | e(c[2])
}

/// Checks the 9x16 cell at (col, row) against the font and colours.
fn assert_cell(g: &Guest, font: &[u8], col: usize, row: usize, ch: u8, fg: u32, bg: u32) {
    for line in 0..16 {
        let bits = font[usize::from(ch) * 16 + line];
        for dot in 0..9 {
            let on = dot < 8 && bits & (0x80 >> dot) != 0;
            let want = if on { fg } else { bg };
            let got = g.pixel(col * 9 + dot, row * 16 + line);
            assert_eq!(
                got, want,
                "char {ch:#x} at ({col},{row}) line {line} dot {dot}"
            );
        }
    }
}

#[test]
fn mode3_text_hello_renders_glyphs_from_plane2_with_cursor() {
    let g = Guest::new(None);
    g.set_mode(&MODE_03);
    // clear_screen: space with attribute 7 everywhere, through odd/even at 0xB8000.
    for i in 0..80 * 25 {
        g.writew(0xb_8000 + i * 2, 0x0720);
    }
    let font = test_font();
    g.load_font(&font, 16);
    for (i, ch) in b"Hello".iter().enumerate() {
        g.writeb(0xb_8000 + i as u64 * 2, *ch);
        g.writeb(0xb_8001 + i as u64 * 2, if i == 0 { 0x4e } else { 0x1f });
    }
    // Cursor at row 1, column 0 (SeaBIOS writes CRTC 0x0E/0x0F).
    g.crtc_write(0x0e, 0);
    g.crtc_write(0x0f, 80);
    // The text is readable back through the window too.
    assert_eq!(g.readb(0xb_8002), b'e');
    assert_eq!(g.readb(0xb_8003), 0x1f);

    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (720, 400));
    let colour = |attr_colour: usize| rgb6(pal_ega(MODE_03.actl[attr_colour] as usize));
    // 'H': yellow (0xe) on red (4); the rest bright white on blue.
    assert_cell(&g, &font, 0, 0, b'H', colour(0xe), colour(4));
    assert_eq!(colour(0xe), 0xffff57);
    for (i, ch) in b"ello".iter().enumerate() {
        assert_cell(&g, &font, i + 1, 0, *ch, 0xffffff, 0x0000a8);
    }
    assert_cell(&g, &font, 6, 0, b' ', colour(7), 0);
    assert_eq!(g.vga.screen_text().unwrap()[0], "Hello");
    // The cursor: lines 13 and 14 of cell (0, 1), light grey, while its phase is on.
    let grey = colour(7);
    assert_eq!(grey, 0xa8a8a8);
    for x in 0..9 {
        assert_eq!(g.pixel(x, 16 + 13), grey);
        assert_eq!(g.pixel(x, 16 + 14), grey);
    }
    assert_eq!(g.pixel(0, 16 + 12), 0);
    // Blink off: only the tile holding the cursor changes.
    g.vga.refresh_at(render::CURSOR_BLINK_MS);
    assert_eq!(g.pixel(0, 16 + 13), 0);
    assert_eq!(g.marked(), vec![Rect::new(0, 0, 64, 64)]);
    // A static screen marks nothing.
    g.vga.refresh_at(render::CURSOR_BLINK_MS + 1);
    assert!(g.marked().is_empty());
    // One character at the bottom right marks one tile.
    g.writeb(0xb_8000 + (24 * 80 + 79) * 2, b'Z');
    g.vga.refresh_at(render::CURSOR_BLINK_MS + 2);
    assert_eq!(g.marked(), vec![Rect::new(704, 384, 16, 16)]);
    assert_cell(&g, &font, 79, 24, b'Z', grey, 0);
}

#[test]
fn character_blink_and_line_graphics_ninth_dot() {
    let g = Guest::new(None);
    g.set_mode(&MODE_03);
    let font = test_font();
    g.load_font(&font, 16);
    g.writeb(0xb_8000, b'B');
    g.writeb(0xb_8001, 0x87); // blinking grey on black
    g.writeb(0xb_8002, 0xc4); // box-drawing horizontal line
    g.writeb(0xb_8003, 0x07);
    g.crtc_write(0x0a, 0x20); // cursor off
    g.vga.refresh_at(0);
    assert_cell(&g, &font, 0, 0, b'B', 0xa8a8a8, 0);
    g.vga.refresh_at(render::CHAR_BLINK_MS);
    for y in 0..16 {
        for x in 0..9 {
            assert_eq!(g.pixel(x, y), 0, "blinked-off glyph at {x},{y}");
        }
    }
    for line in 0..16 {
        let bits = font[0xc4 * 16 + line];
        let want = if bits & 1 != 0 { 0xa8a8a8 } else { 0 };
        assert_eq!(g.pixel(9 + 8, line), want, "ninth dot, line {line}");
    }
}

#[test]
fn mode13h_chain4_pixels() {
    let g = Guest::new(None);
    g.set_mode(&MODE_13);
    // A pixel at (x, y) is the byte at 0xA0000 + y * 320 + x.
    for (x, y, c) in [
        (0u64, 0u64, 1u8),
        (319, 0, 2),
        (10, 100, 0x80),
        (319, 199, 0xff),
    ] {
        g.writeb(0xa_0000 + y * 320 + x, c);
    }
    assert_eq!(g.readb(0xa_0000 + 100 * 320 + 10), 0x80);
    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (640, 400));
    let px = |x: usize, y: usize| {
        let p = g.pixel(2 * x, 2 * y);
        // Each pixel is two dots wide and two lines tall.
        assert_eq!(p, g.pixel(2 * x + 1, 2 * y + 1));
        p
    };
    assert_eq!(px(0, 0), rgb6(pal_ramp(1)));
    assert_eq!(px(319, 0), rgb6(pal_ramp(2)));
    assert_eq!(px(10, 100), rgb6(pal_ramp(0x80)));
    assert_eq!(px(319, 199), rgb6(pal_ramp(0xff)));
    assert_eq!(px(11, 100), rgb6(pal_ramp(0)));
    // A palette change redraws.
    g.outb(0x3c8, 0x80);
    for v in [0x3f, 0, 0] {
        g.outb(0x3c9, v);
    }
    g.vga.refresh_at(1);
    assert_eq!(px(10, 100), 0xff0000);
}

#[test]
fn mode12h_planar_write_mode2_bit_mask_and_read_mode1() {
    let g = Guest::new(None);
    g.set_mode(&MODE_12);
    // Write mode 2, bit mask 0x81: colour 0xc into the first and last pixel of byte 0.
    g.grdc_write(5, 0x02);
    g.grdc_write(8, 0x81);
    g.readb(0xa_0000); // load the latches, as a driver's read-modify-write does
    g.writeb(0xa_0000, 0x0c);
    // Write mode 0 with set/reset on planes 0 and 1 (colour 3), bit mask 0xf0, at y = 479.
    g.grdc_write(5, 0x00);
    g.grdc_write(0, 0x03);
    g.grdc_write(1, 0x0f);
    g.grdc_write(8, 0xf0);
    let last = 0xa_0000 + 479 * 80 + 79;
    g.readb(last);
    g.writeb(last, 0xff);
    // Write mode 3: colour from set/reset (9), mask = GR8 & rotated data.
    g.grdc_write(5, 0x03);
    g.grdc_write(0, 0x09);
    g.grdc_write(8, 0xff);
    g.readb(0xa_0000 + 80);
    g.writeb(0xa_0000 + 80, 0x3c);
    // Plane reads (read mode 0) of byte 0.
    g.grdc_write(5, 0x00);
    g.grdc_write(8, 0xff);
    g.grdc_write(1, 0);
    let plane = |p: u8, addr: u64| {
        g.grdc_write(4, p);
        g.readb(addr)
    };
    assert_eq!(
        [
            plane(0, 0xa_0000),
            plane(1, 0xa_0000),
            plane(2, 0xa_0000),
            plane(3, 0xa_0000)
        ],
        [0, 0, 0x81, 0x81]
    );
    // Read mode 1: which pixels of byte 0 have colour 0xc.
    g.grdc_write(5, 0x08);
    g.grdc_write(2, 0x0c);
    g.grdc_write(7, 0x0f);
    assert_eq!(g.readb(0xa_0000), 0x81);
    g.grdc_write(5, 0x00);

    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (640, 480));
    let colour = |c: usize| rgb6(pal_ega(MODE_12.actl[c] as usize));
    assert_eq!(g.pixel(0, 0), colour(0xc));
    assert_eq!(g.pixel(7, 0), colour(0xc));
    for x in 1..7 {
        assert_eq!(g.pixel(x, 0), 0, "x {x}");
    }
    for x in 632..636 {
        assert_eq!(g.pixel(x, 479), colour(3), "x {x}");
    }
    assert_eq!(g.pixel(636, 479), 0);
    for x in 0..8 {
        let want = if (0x3c >> (7 - x)) & 1 != 0 {
            colour(9)
        } else {
            0
        };
        assert_eq!(g.pixel(x, 1), want, "x {x}");
    }
}

fn dispi_write(g: &Guest, index: u16, v: u16) {
    g.outw(0x1ce, index);
    g.outw(0x1cf, v);
}

/// Programs the BARs as firmware does and returns (LFB, MMIO) addresses.
fn assign_bars(g: &mut Guest) -> (u64, u64) {
    for off in [0x10, 0x18, 0x30] {
        g.cfg_write32(off, !0);
    }
    assert_eq!(g.cfg_read32(0x10), 0xff00_0008, "16 MiB prefetchable");
    assert_eq!(g.cfg_read32(0x18), 0xffff_f000, "4 KiB MMIO");
    assert_eq!(g.cfg_read32(0x14), 0);
    g.cfg_write32(0x10, 0xfd00_0000);
    g.cfg_write32(0x18, 0xfebf_0000);
    g.cfg_write32(0x04, 0x0003);
    (0xfd00_0000, 0xfebf_0000)
}

#[test]
fn pci_identity_and_bar_sizing() {
    let mut g = Guest::new(None);
    assert_eq!(g.cfg_read32(0x00), 0x1111_1234);
    assert_eq!(g.cfg_read32(0x08), 0x0300_0002);
    assert_eq!(g.cfg_read32(0x2c), 0x1100_1af4);
    // No ROM image: no ROM BAR.
    g.cfg_write32(0x30, !0);
    assert_eq!(g.cfg_read32(0x30), 0);
    let (lfb, mmio) = assign_bars(&mut g);
    // Without a mapper the LFB is MMIO on the bus.
    assert!(g.mmio.write(lfb + 8, &[0xaa]));
    let mut b = [0];
    assert!(g.mmio.read(lfb + 8, &mut b));
    assert_eq!(b, [0xaa]);
    // QEMU's extended registers and DISPI through BAR2.
    let mut w = [0u8; 4];
    g.mmio.read(mmio + 0x600, &mut w);
    assert_eq!(u32::from_le_bytes(w), 8);
    g.mmio.read(mmio + 0x604, &mut w);
    assert_eq!(u32::from_le_bytes(w), 0x1e1e_1e1e);
    let mut w2 = [0u8; 2];
    g.mmio.read(mmio + 0x500 + 2 * 10, &mut w2);
    assert_eq!(u16::from_le_bytes(w2), 256);
    // VGA ports through BAR2: misc output at 0x3C2 → 0x402, read back at 0x3CC → 0x40C.
    g.mmio.write(mmio + 0x402, &[0x67]);
    g.mmio.read(mmio + 0x40c, &mut b);
    assert_eq!(b, [0x67]);
    // Memory decode off: nothing there.
    g.cfg_write32(0x04, 0);
    assert!(!g.mmio.read(lfb, &mut b));
    assert!(!g.mmio.read(mmio, &mut b));
}

#[test]
fn lfb_follows_the_bar_through_the_mapper() {
    let mut g = Guest::new(None);
    let mapper = FakeRamMapper::new();
    g.vga.set_ram_mapper(mapper.clone());
    assert!(
        mapper.mappings().is_empty(),
        "unassigned BAR: nothing mapped"
    );
    let (lfb, _) = assign_bars(&mut g);
    let m = mapper.mappings();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].1, m[0].2), (lfb, 16 << 20));
    let mut b = [0];
    assert!(!g.mmio.read(lfb, &mut b), "mapped LFB is not MMIO");
    // Linux sizing the BAR with decode off, then moving it.
    g.cfg_write32(0x04, 0);
    assert!(mapper.mappings().is_empty());
    g.cfg_write32(0x10, 0xe000_0000);
    g.cfg_write32(0x04, 0x0003);
    assert_eq!(mapper.mappings()[0].1, 0xe000_0000);
    // A reset unmaps.
    lock(&g.vga.pci).reset();
    assert!(mapper.mappings().is_empty());
}

#[test]
fn bochs_drm_mode_set_then_lfb_writes_mark_only_dirty_tiles() {
    let mut g = Guest::new(None);
    let mapper = FakeRamMapper::new();
    g.vga.set_ram_mapper(mapper.clone());
    let (lfb, mmio) = assign_bars(&mut g);
    let bar2 = |g: &Guest, index: u64, v: u16| {
        assert!(g.mmio.write(mmio + 0x500 + index * 2, &v.to_le_bytes()));
    };
    // bochs_hw_init: ID probe through the MMIO BAR.
    bar2(&g, 0, 0xb0c5);
    let mut w = [0u8; 2];
    g.mmio.read(mmio + 0x500, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0xb0c5);
    g.mmio.read(mmio + 0x500 + 2 * 10, &mut w);
    assert_eq!(u16::from_le_bytes(w) as usize * 65536, 16 << 20);
    // bochs_hw_setmode(1024x768x32).
    bar2(&g, 4, 0); // ENABLE = 0
    bar2(&g, 3, 32); // BPP
    bar2(&g, 1, 1024); // XRES
    bar2(&g, 2, 768); // YRES
    bar2(&g, 5, 0); // BANK
    bar2(&g, 6, 1024); // VIRT_WIDTH
    bar2(&g, 7, 768); // VIRT_HEIGHT
    bar2(&g, 8, 0);
    bar2(&g, 9, 0);
    bar2(&g, 4, 0x41); // ENABLED | LFB_ENABLED
    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (1024, 768));
    // The first frame of a new mode is drawn whole.
    assert_eq!(g.marked(), vec![Rect::new(0, 0, 1024, 768)]);
    let mut consumer = g.surface.subscribe();
    let _ = consumer.take(false, None);
    // Static: nothing read, nothing marked.
    g.vga.refresh_at(16);
    assert!(g.marked().is_empty());
    assert!(!consumer.has_changes());
    // The guest (through KVM's mapping, here the fake) draws two pixels.
    let put = |x: u64, y: u64, rgb: u32| {
        assert!(mapper.guest_write(lfb + (y * 1024 + x) * 4, &rgb.to_le_bytes()));
    };
    put(5, 3, 0x00ff_8000);
    put(1000, 700, 0x0012_3456);
    g.vga.refresh_at(32);
    assert_eq!(g.pixel(5, 3), 0xff8000);
    assert_eq!(g.pixel(1000, 700), 0x123456);
    // One 4 KiB page is exactly one 1024-pixel line at 32 bpp.
    assert_eq!(
        g.marked(),
        vec![Rect::new(0, 3, 1024, 1), Rect::new(0, 700, 1024, 1)]
    );
    let u = consumer.take(false, None);
    assert_eq!(
        u.rects,
        vec![Rect::new(5, 3, 1, 1), Rect::new(1000, 700, 1, 1)]
    );
    // Back to VGA text: the surface follows.
    bar2(&g, 4, 0);
    g.set_mode(&MODE_03);
    g.vga.refresh_at(48);
    assert_eq!(g.surface.size(), (720, 400));
}

#[test]
fn dispi_8bpp_banked_window_and_16bpp() {
    let g = Guest::new(None);
    assert_eq!(g.inw(0x1cf), 0xb0c0);
    dispi_write(&g, 0, 0xb0c4);
    assert_eq!(g.inw(0x1cf), 0xb0c4);
    dispi_write(&g, 3, 8);
    dispi_write(&g, 1, 640);
    dispi_write(&g, 2, 480);
    dispi_write(&g, 4, 0x01); // enabled, banked (no LFB)
    // Pixel (100, 200) is at byte 128100: bank 1, offset 62564.
    dispi_write(&g, 5, 1);
    g.writeb(0xa_0000 + 62564, 0x21);
    g.outb(0x3c8, 0x21);
    for v in [0x3f, 0x3f, 0] {
        g.outb(0x3c9, v);
    }
    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (640, 480));
    assert_eq!(g.pixel(100, 200), 0xffff00);
    assert_eq!(g.readb(0xa_0000 + 62564), 0x21);
    // 16 bpp RGB565 at 800x600, memory kept.
    dispi_write(&g, 4, 0);
    dispi_write(&g, 3, 16);
    dispi_write(&g, 1, 800);
    dispi_write(&g, 2, 600);
    dispi_write(&g, 4, 0x01 | 0x80);
    dispi_write(&g, 5, 0);
    g.writew(0xa_0000 + 2 * 801, 0xf800);
    g.vga.refresh_at(16);
    assert_eq!(g.surface.size(), (800, 600));
    assert_eq!(g.pixel(1, 1), 0xff0000);
    assert_eq!(g.pixel(0, 1), 0);
}

#[test]
fn guest_writes_bump_the_generation_and_notify_once_per_refresh() {
    let g = Guest::new(None);
    let hits = Arc::new(Mutex::new(0));
    let h = hits.clone();
    g.vga
        .set_notifier(Arc::new(move || *h.lock().unwrap() += 1));
    let g0 = g.vga.generation();
    g.set_mode(&MODE_03);
    g.writeb(0xb_8000, b'x');
    assert!(g.vga.generation() > g0);
    assert_eq!(*hits.lock().unwrap(), 1);
    g.vga.refresh_at(0);
    g.writeb(0xb_8000, b'y');
    assert_eq!(*hits.lock().unwrap(), 2);
}

#[test]
fn rom_bar_reads_back_the_vgabios() {
    let rom = match load_vgabios(None) {
        Ok(r) => r,
        Err(e) => {
            if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{e}");
            }
            eprintln!("SKIP: {e}");
            return;
        }
    };
    let mut g = Guest::new(Some(rom.clone()));
    g.cfg_write32(0x30, !0);
    let size = rom.len().next_power_of_two() as u32;
    assert_eq!(g.cfg_read32(0x30), !(size - 1) & 0xffff_f800 | 1);
    g.cfg_write32(0x30, 0xfeb0_0001);
    g.cfg_write32(0x04, 0x0002);
    let mut back = vec![0u8; rom.len()];
    for (i, b) in back.iter_mut().enumerate() {
        *b = g.readb(0xfeb0_0000 + i as u64);
    }
    assert_eq!(back, rom);
    assert_eq!(&back[..2], &[0x55, 0xaa]);
    // ROM enable bit off: gone.
    g.cfg_write32(0x30, 0xfeb0_0000);
    let mut b = [0];
    assert!(!g.mmio.read(0xfeb0_0000, &mut b));
}

#[test]
fn missing_vgabios_names_the_package() {
    let e = load_vgabios(Some(Path::new("/nonexistent/vgabios.bin"))).unwrap_err();
    assert!(e.to_string().contains("seabios"), "{e}");
}

#[test]
fn screen_off_at_power_on_keeps_the_surface_size() {
    let g = Guest::new(None);
    g.vga.refresh_at(0);
    assert_eq!(
        g.surface.size(),
        (640, 480),
        "no resize to reset-time CRTC values"
    );
    g.set_mode(&MODE_03);
    g.vga.refresh_at(1);
    assert_eq!(g.surface.size(), (720, 400));
    // A mode set in progress (attribute index without PAS) blanks without resizing.
    g.inb(0x3da);
    g.outb(0x3c0, 0x00);
    g.vga.refresh_at(2);
    assert_eq!(g.surface.size(), (720, 400));
    assert_eq!(g.pixel(0, 0), 0);
}

#[test]
fn hostile_register_values_do_not_panic() {
    let g = Guest::new(None);
    for port in 0x3b0..0x3e0u16 {
        for v in [0u8, 0x7f, 0xff] {
            g.outb(port, v);
            let _ = g.inb(port);
        }
    }
    for i in 0..=0x18u8 {
        g.crtc_write(i, 0xff);
    }
    g.crtc_write(0x11, 0); // unprotect, then everything maximal
    for i in 0..=0xffu8 {
        g.crtc_write(i, 0xff);
    }
    g.grdc_write(6, 0x01);
    g.vga.refresh_at(0);
    g.grdc_write(6, 0x00);
    g.vga.refresh_at(1);
    for i in 0..16u16 {
        dispi_write(&g, i, 0xffff);
        let _ = g.inw(0x1cf);
    }
    dispi_write(&g, 4, 1);
    g.vga.refresh_at(2);
    for a in (0..0x2_0000u64).step_by(0x1111) {
        g.writeb(0xa_0000 + a, 0xff);
        let _ = g.readb(0xa_0000 + a);
    }
}

const MODE_04: ModeTable = ModeTable {
    sequ: [0x09, 0x03, 0x00, 0x02],
    misc: 0x63,
    crtc: [
        0x2d, 0x27, 0x28, 0x90, 0x2b, 0x80, 0xbf, 0x1f, 0x00, 0xc1, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x9c, 0x8e, 0x8f, 0x14, 0x00, 0x96, 0xb9, 0xa2, 0xff,
    ],
    actl: [
        0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
        0x17, 0x01, 0x00, 0x03, 0x00,
    ],
    grdc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x0f, 0x0f, 0xff],
    dac: pal_ega,
};

#[test]
fn mode4_cga_interleaved_lines() {
    let g = Guest::new(None);
    g.set_mode(&MODE_04);
    // SeaBIOS's CGA pixel write: even lines at 0xB8000, odd ones 8 KiB on, 4 pixels a byte.
    let put = |x: u64, y: u64, c: u8| {
        let a = 0xb_8000 + (y & 1) * 0x2000 + (y >> 1) * 80 + x / 4;
        let shift = 6 - 2 * (x % 4);
        let old = g.readb(a);
        g.writeb(a, (old & !(3 << shift)) | (c << shift));
    };
    put(0, 0, 1);
    put(3, 1, 2);
    put(319, 199, 3);
    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (640, 400));
    let colour = |c: usize| rgb6(pal_ega(MODE_04.actl[c] as usize));
    // Each pixel is 2x2 dots.
    assert_eq!(g.pixel(0, 0), colour(1));
    assert_eq!(g.pixel(1, 1), colour(1));
    assert_eq!(g.pixel(2, 0), 0);
    assert_eq!(g.pixel(6, 2), colour(2));
    assert_eq!(g.pixel(7, 3), colour(2));
    assert_eq!(g.pixel(6, 0), 0);
    assert_eq!(g.pixel(639, 399), colour(3));
}

#[test]
fn pci_reset_turns_dispi_off_and_unmaps() {
    let mut g = Guest::new(None);
    let mapper = FakeRamMapper::new();
    g.vga.set_ram_mapper(mapper.clone());
    assign_bars(&mut g);
    assert!(g.vga.set_linear_mode(800, 600, 32));
    assert!(g.vga.linear_framebuffer().is_some());
    lock(&g.vga.pci).reset();
    assert!(mapper.mappings().is_empty());
    assert_eq!(g.vga.linear_framebuffer(), None);
    assert_eq!(g.inw(0x1cf), 0xb0c0);
}

#[test]
fn dispi_4bpp_is_drawn_from_planar_memory_like_bochsvga_sets_it() {
    // bochsvga_set_mode for a planar VBE mode: VGA mode 6Ah first, then DISPI at 4 bpp.
    const MODE_6A: ModeTable = ModeTable {
        crtc: [
            0x7f, 0x63, 0x63, 0x83, 0x6b, 0x1b, 0x72, 0xf0, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x59, 0x8d, 0x57, 0x32, 0x00, 0x57, 0x73, 0xe3, 0xff,
        ],
        ..MODE_12
    };
    let g = Guest::new(None);
    g.set_mode(&MODE_6A);
    dispi_write(&g, 3, 4);
    dispi_write(&g, 1, 800);
    dispi_write(&g, 2, 600);
    dispi_write(&g, 5, 0);
    dispi_write(&g, 4, 0x01);
    // Pixel (799, 599) in colour 0xa with write mode 2.
    g.grdc_write(5, 0x02);
    g.grdc_write(8, 0x01);
    let a = 0xa_0000 + 599 * 100 + 99;
    g.readb(a);
    g.writeb(a, 0x0a);
    g.vga.refresh_at(0);
    assert_eq!(g.surface.size(), (800, 600));
    assert_eq!(g.pixel(799, 599), rgb6(pal_ega(MODE_12.actl[0xa] as usize)));
    assert_eq!(g.pixel(798, 599), 0);
}

#[test]
fn wide_dispi_lines_mark_only_the_dirty_pages_columns() {
    let mut g = Guest::new(None);
    let mapper = FakeRamMapper::new();
    g.vga.set_ram_mapper(mapper.clone());
    let (lfb, _) = assign_bars(&mut g);
    // 1920x1080x32: a line is 7680 bytes, so pages cover parts of lines.
    assert!(g.vga.set_linear_mode(1920, 1080, 32));
    g.vga.refresh_at(0);
    assert_eq!(g.marked(), vec![Rect::new(0, 0, 1920, 1080)]);
    // Pixel (1900, 10) is byte 10 * 7680 + 7600 = 84400, on page 20.
    assert!(mapper.guest_write(lfb + 10 * 7680 + 1900 * 4, &0x0000_00ffu32.to_le_bytes()));
    g.vga.refresh_at(16);
    assert_eq!(g.pixel(1900, 10), 0x0000ff);
    // Page 20 spans bytes 81920..86016: line 10 from byte 81920 - 76800 = 5120 (pixel
    // 1280) to its end, and line 11 up to byte 86016 - 84480 = 1536 (pixel 384).
    assert_eq!(
        g.marked(),
        vec![Rect::new(1280, 10, 640, 1), Rect::new(0, 11, 384, 1)]
    );
}

#[test]
fn blink_tick_redraws_only_the_cursor_cell_and_blinking_cells() {
    let g = Guest::new(None);
    g.set_mode(&MODE_03);
    for i in 0..80 * 25 {
        g.writew(0xb_8000 + i * 2, 0x0720);
    }
    let font = test_font();
    g.load_font(&font, 16);
    // A blinking 'B' at the bottom right, the cursor at the top left.
    g.writew(0xb_8000 + (24 * 80 + 79) * 2, 0x8700 | u16::from(b'B'));
    g.crtc_write(0x0e, 0);
    g.crtc_write(0x0f, 0);
    g.vga.refresh_at(0);
    let grey = 0xa8a8a8;
    assert_cell(&g, &font, 79, 24, b'B', grey, 0);
    // The refresh loop may sleep until the next flip: the cursor's comes first.
    let until = |now| render::until_blink_ms(&lock(&g.vga.renderer), now);
    assert_eq!(until(100), Some(render::CURSOR_BLINK_MS - 100));
    assert_eq!(
        until(render::CURSOR_BLINK_MS + 10),
        Some(render::CURSOR_BLINK_MS - 10)
    );
    // Just before a character flip that comes before the cursor's.
    assert_eq!(until(render::CHAR_BLINK_MS - 1), Some(1));
    // Change a plain cell behind the device's back (no write through the window): a
    // blink tick must not redraw it, which shows it redraws only the blinking cells.
    {
        let c = lock(&g.vga.core);
        let off = (40 * 4) as usize; // cell 40 of row 0: plane 0 holds the character
        c.vram.as_volatile_slice().write_obj(b'X', off).unwrap();
    }
    // Cursor phase flips: only the cursor's tile.
    g.vga.refresh_at(render::CURSOR_BLINK_MS);
    assert_eq!(g.marked(), vec![Rect::new(0, 0, 64, 64)]);
    assert_eq!(g.pixel(0, 13), 0, "cursor off");
    // Both phases flip (cursor back on, characters off): the two cells' tiles, apart.
    g.vga.refresh_at(render::CHAR_BLINK_MS + 1);
    let mut marked = g.marked();
    marked.sort_by_key(|r| (r.y, r.x));
    assert_eq!(
        marked,
        vec![Rect::new(0, 0, 64, 64), Rect::new(704, 384, 16, 16)]
    );
    assert_eq!(g.pixel(0, 13), grey, "cursor on");
    for y in 0..16 {
        for x in 0..9 {
            assert_eq!(g.pixel(79 * 9 + x, 24 * 16 + y), 0, "blinked-off 'B'");
        }
    }
    assert_cell(&g, &font, 40, 0, b' ', grey, 0);
    // A static screen between flips marks nothing.
    g.vga.refresh_at(render::CHAR_BLINK_MS + 2);
    assert!(g.marked().is_empty());
}

#[test]
fn a_glyph_across_two_tiles_is_marked_in_one_rectangle() {
    let g = Guest::new(None);
    g.set_mode(&MODE_03);
    let font = test_font();
    g.load_font(&font, 16);
    g.crtc_write(0x0a, 0x20); // cursor off
    g.vga.refresh_at(0);
    // Nothing blinks: only a guest write can change the picture.
    assert_eq!(render::until_blink_ms(&lock(&g.vga.renderer), 5), None);
    // Column 7 spans x 63..72: the last column of tile 0 and the first of tile 1. A VNC
    // session woken by a mark of one tile alone would send half the glyph.
    g.writew(0xb_8000 + 7 * 2, 0x0700 | u16::from(b'W'));
    g.vga.refresh_at(1);
    assert_eq!(g.marked(), vec![Rect::new(0, 0, 128, 64)]);
    // Changes far apart are still marked apart, not as one huge rectangle.
    g.writew(0xb_8000, 0x0700 | u16::from(b'a'));
    g.writew(0xb_8000 + (24 * 80 + 79) * 2, 0x0700 | u16::from(b'z'));
    g.vga.refresh_at(2);
    assert_eq!(g.marked().len(), 2);
}

#[test]
fn a_refresh_draws_without_holding_the_device_lock() {
    let g = Guest::new(None);
    g.set_mode(&MODE_03);
    let font = test_font();
    g.load_font(&font, 16);
    g.writew(0xb_8000, 0x0700 | u16::from(b'A'));
    g.crtc_write(0x0a, 0x20); // cursor off
    // Hold the surface so the refresh stops in the middle of drawing; the device must be
    // free meanwhile (a vCPU writing VGA state does not wait for a render).
    let vga = g.vga.clone();
    let drawer = g.surface.read(|_| {
        let t = std::thread::spawn(move || vga.refresh_at(0));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !t.is_finished(),
            "the refresh should be waiting for the surface"
        );
        assert!(
            g.vga.core.try_lock().is_ok(),
            "the device is locked during a render"
        );
        g.writew(0xb_8002, 0x0700 | u16::from(b'B'));
        t
    });
    drawer.join().unwrap();
    assert_cell(&g, &font, 0, 0, b'A', 0xa8a8a8, 0);
    // The write made during the render is drawn by the next refresh.
    g.vga.refresh_at(1);
    assert_cell(&g, &font, 1, 0, b'B', 0xa8a8a8, 0);
}
