//! Test and benchmark pictures, generated rather than stored: a SeaBIOS-like 720x400 text
//! screen, an installer-like 1024x768 splash and a desktop-like 1920x1080 screen, plus small
//! synthetic ones (solid, noise, gradients, text). Deterministic: same bytes every run.
#![allow(dead_code)]

/// xorshift64*: a small seeded generator so tests and benchmarks repeat exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }
}

pub struct Picture {
    pub name: String,
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u32>,
}

impl Picture {
    pub fn new(name: &str, width: usize, height: usize, colour: u32) -> Self {
        Picture {
            name: name.to_string(),
            width,
            height,
            pixels: vec![colour; width * height],
        }
    }

    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: u32) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.pixels[yy * self.width + xx] = c;
            }
        }
    }

    pub fn set(&mut self, x: usize, y: usize, c: u32) {
        if x < self.width && y < self.height {
            self.pixels[y * self.width + x] = c;
        }
    }

    /// Draws text in an 8x16 stroke font into 9x16 cells (VGA text mode's cell), scaled.
    pub fn text(&mut self, x: usize, y: usize, s: &str, fg: u32, scale: usize) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (gy, bits) in g.iter().enumerate() {
                for gx in 0..8 {
                    if bits & (0x80 >> gx) != 0 {
                        self.fill(x + (i * 9 + gx) * scale, y + gy * scale, scale, scale, fg);
                    }
                }
            }
        }
    }
}

/// An 8x16 glyph built from 14-segment-display strokes chosen by the character, so text has
/// the stroke structure (runs, repeated shapes) of a real bitmap font. Space is empty.
pub fn glyph(ch: char) -> [u8; 16] {
    let mut g = [0u8; 16];
    if ch == ' ' {
        return g;
    }
    if ch == '.' {
        g[12] = 0x18;
        g[13] = 0x18;
        return g;
    }
    if ch == ':' {
        g[5] = 0x18;
        g[6] = 0x18;
        g[11] = 0x18;
        g[12] = 0x18;
        return g;
    }
    let mut h = (ch as u32).wrapping_mul(0x9e37_79b9) ^ 0x5bd1_e995;
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    let lower = ch.is_ascii_lowercase();
    let top = if lower { 5 } else { 2 };
    let seg = |n: u32| h & (1 << n) != 0;
    // Horizontal strokes: top, middle, bottom.
    if seg(0) || !lower {
        g[top] |= 0x7c;
    }
    if seg(1) {
        g[7] |= 0x7c;
    }
    if seg(2) || seg(7) {
        g[12] |= 0x7c;
    }
    // Vertical strokes: left and right, upper and lower halves, and a centre one.
    for (row, b) in g.iter_mut().enumerate().take(13).skip(top) {
        let upper = row <= 7;
        if (upper && seg(3)) || (!upper && seg(4)) || (seg(8) && !lower) {
            *b |= 0xc0 >> 1;
        }
        if (upper && seg(5)) || (!upper && seg(6)) {
            *b |= 0x06;
        }
        if seg(9) && seg(10) {
            *b |= 0x10;
        }
    }
    g
}

pub fn solid(w: usize, h: usize, c: u32) -> Picture {
    Picture::new(&format!("solid {w}x{h}"), w, h, c)
}

pub fn noise(w: usize, h: usize, seed: u64) -> Picture {
    let mut rng = Rng::new(seed);
    let mut p = Picture::new(&format!("noise {w}x{h}"), w, h, 0);
    for px in &mut p.pixels {
        *px = rng.next_u32() & 0x00ff_ffff;
    }
    p
}

pub fn gradient(w: usize, h: usize) -> Picture {
    let mut p = Picture::new(&format!("gradient {w}x{h}"), w, h, 0);
    for y in 0..h {
        for x in 0..w {
            let r = (x * 255 / w.max(1)) as u32;
            let g = (y * 255 / h.max(1)) as u32;
            let b = ((x + y) * 127 / (w + h).max(1)) as u32;
            p.pixels[y * w + x] = (r << 16) | (g << 8) | b;
        }
    }
    p
}

/// Few colours in runs: like a UI with text (2..20 colours per tile).
pub fn text_like(w: usize, h: usize, seed: u64) -> Picture {
    let mut rng = Rng::new(seed);
    let mut p = Picture::new(&format!("text-like {w}x{h}"), w, h, 0x00f0_f0f0);
    let palette = [
        0x0000_0000,
        0x0020_40a0,
        0x00c0_2020,
        0x0040_8040,
        0x0080_8080,
    ];
    for line in 0..h / 18 + 1 {
        let n = rng.below(60) as usize + 5;
        let s: String = (0..n)
            .map(|_| {
                let c = rng.below(40);
                if c < 8 {
                    ' '
                } else {
                    (b'A' + (c as u8 % 58)) as char
                }
            })
            .collect();
        let fg = palette[rng.below(palette.len() as u32) as usize];
        p.text(2, line * 18 + 1, &s, fg, 1);
    }
    p
}

/// SeaBIOS in QEMU with no network and no bootable disk (the reference screen): 720x400 VGA
/// text, light grey on black, the boot attempts and "No bootable device.".
pub fn seabios_text() -> Picture {
    let mut p = Picture::new("text 720x400 (generated)", 720, 400, 0);
    let lines = [
        "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
        "",
        "",
        "Booting from Hard Disk...",
        "Boot failed: could not read the boot disk",
        "",
        "Booting from Floppy...",
        "Boot failed: could not read the boot disk",
        "",
        "Booting from DVD/CD...",
        "Boot failed: Could not read from CDROM (code 0003)",
        "No bootable device.",
    ];
    for (i, l) in lines.iter().enumerate() {
        p.text(0, i * 16, l, 0x00aa_aaaa, 1);
    }
    p
}

/// An installer splash: smooth radial gradient background, a shaded logo, a title, a
/// progress bar and some status text.
pub fn installer() -> Picture {
    let (w, h) = (1024, 768);
    let mut p = Picture::new("installer 1024x768", w, h, 0);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.6);
    for y in 0..h {
        for x in 0..w {
            let dx = (x as f32 - cx) / w as f32;
            let dy = (y as f32 - cy) / h as f32;
            let d = (dx * dx + dy * dy).sqrt();
            let r = (20.0 + 40.0 * (1.0 - d)).clamp(0.0, 255.0) as u32;
            let g = (30.0 + 60.0 * (1.0 - d)).clamp(0.0, 255.0) as u32;
            let b = (60.0 + 140.0 * (1.0 - d * 1.3)).clamp(0.0, 255.0) as u32;
            p.pixels[y * w + x] = (r << 16) | (g << 8) | b;
        }
    }
    // Logo: a shaded disc.
    let rad = 110.0f32;
    for y in 0..h {
        for x in 0..w {
            let dx = x as f32 - cx;
            let dy = y as f32 - cy;
            let d = (dx * dx + dy * dy).sqrt();
            if d < rad {
                let shade = 1.0 - (dx + dy) / (3.0 * rad);
                let r = (200.0 * shade).clamp(0.0, 255.0) as u32;
                let g = (80.0 * shade).clamp(0.0, 255.0) as u32;
                let b = (90.0 * shade).clamp(0.0, 255.0) as u32;
                p.pixels[y * w + x] = (r << 16) | (g << 8) | b;
            }
        }
    }
    p.text(270, 470, "Welcome to the installer", 0x00ff_ffff, 2);
    p.fill(212, 560, 600, 18, 0x0030_3040);
    p.fill(214, 562, 380, 14, 0x0040_a0e0);
    p.text(
        212,
        590,
        "Detecting hardware... loading installer components (42%)",
        0x00d0_d0d0,
        1,
    );
    p.text(
        8,
        748,
        "Press F1 for help, Tab to move, Enter to select",
        0x00a0_a0a0,
        1,
    );
    p
}

/// A desktop: wallpaper, a panel with icons, two windows (a text editor and a terminal).
pub fn desktop() -> Picture {
    let (w, h) = (1920, 1080);
    let mut p = Picture::new("desktop 1920x1080", w, h, 0);
    for y in 0..h {
        for x in 0..w {
            // Soft diagonal bands, like a stock wallpaper.
            let t = ((x as f32 * 0.004 + y as f32 * 0.007).sin() * 0.5 + 0.5) * 60.0;
            let r = (30.0 + t * 0.5) as u32;
            let g = (60.0 + t) as u32;
            let b = (110.0 + t * 1.5) as u32;
            p.pixels[y * w + x] = (r << 16) | (g << 8) | b;
        }
    }
    // Panel.
    p.fill(0, h - 40, w, 40, 0x0020_2428);
    for i in 0..8 {
        p.fill(
            12 + i * 48,
            h - 34,
            28,
            28,
            0x0050_7090 + (i as u32 * 0x0010_0800),
        );
    }
    p.text(w - 120, h - 28, "12:34 PM", 0x00e0_e0e0, 1);
    // Editor window.
    let mut rng = Rng::new(7);
    let (ex, ey, ew, eh) = (160, 100, 1000, 700);
    p.fill(ex - 1, ey - 1, ew + 2, eh + 2, 0x0010_1010);
    p.fill(ex, ey, ew, 30, 0x00e8_e8e8);
    p.text(ex + 10, ey + 7, "notes.txt - Text Editor", 0x0020_2020, 1);
    p.fill(ex, ey + 30, ew, eh - 30, 0x00ff_ffff);
    for line in 0..40 {
        let n = rng.below(100) as usize;
        let s: String = (0..n)
            .map(|_| {
                let c = rng.below(32);
                if c < 6 {
                    ' '
                } else {
                    (b'a' + (c as u8 - 6)) as char
                }
            })
            .collect();
        p.text(ex + 8, ey + 36 + line * 16, &s, 0x0010_1010, 1);
    }
    // Terminal window.
    let (tx, ty, tw, th) = (1000, 400, 820, 520);
    p.fill(tx - 1, ty - 1, tw + 2, th + 2, 0x0000_0000);
    p.fill(tx, ty, tw, 30, 0x0030_3030);
    p.text(tx + 10, ty + 7, "user@host: ~", 0x00f0_f0f0, 1);
    p.fill(tx, ty + 30, tw, th - 30, 0x0018_1818);
    for line in 0..30 {
        let n = rng.below(80) as usize;
        let s: String = (0..n)
            .map(|_| (b'!' + rng.below(90) as u8) as char)
            .collect();
        let colour = if line % 5 == 0 {
            0x0060_e060
        } else {
            0x00d0_d0d0
        };
        p.text(tx + 6, ty + 34 + line * 16, &s, colour, 1);
    }
    p
}

/// Loads a PNG (grey, palette, RGB, with or without alpha) from `display/tests/data/`.
pub fn load_png(name: &str) -> Picture {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut buf = vec![0u8; reader.output_buffer_size().expect("png size")];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let (w, h) = (info.width as usize, info.height as usize);
    let comps = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => panic!("{path}: palette not expanded"),
    };
    let mut p = Picture::new(name, w, h, 0);
    for (i, px) in buf[..w * h * comps].chunks_exact(comps).enumerate() {
        let (r, g, b) = if comps < 3 {
            (px[0], px[0], px[0])
        } else {
            (px[0], px[1], px[2])
        };
        p.pixels[i] = (u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b);
    }
    p
}

/// QEMU 7.2's screen with SeaBIOS 1.16.2 after "No bootable device." (`-net none`, no
/// disks), captured through rfb_measure: the picture behind the QEMU figures.
pub fn seabios_qemu() -> Picture {
    let mut p = load_png("seabios-qemu-720x400.png");
    p.name = "seabios qemu 720x400".into();
    p
}
