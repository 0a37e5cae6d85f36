//! Measures our VNC server the way a client sees it: time to the first full frame for a
//! new client, bytes on the wire and server time per update for each encoding the server
//! has, for full frames and small changes, and CPU use while the screen is static.
//!
//!     cargo run --release -p display --example vnc_bench
//!
//! Pictures are generated (a text-mode-like screen at 720x400, and gradient-plus-detail
//! screens at 1024x768 and 1920x1080), so the run needs no files. Reference servers
//! (TigerVNC's Xvnc, QEMU) are not driven from here.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions};
use display::encoding::{Rect, new_encoder, number};
use display::rfb::{NullInput, VncConfig, VncServer};
use display::surface::Surface;

/// A text screen like SeaBIOS's: 80x25 cells of 9x16, light grey on black.
fn text_screen(s: &Surface) {
    let (w, h) = s.size();
    let (w, h) = (usize::from(w), usize::from(h));
    let mut px = vec![0u32; w * h];
    let mut seed = 12345u32;
    for row in 0..25 {
        let len = if row < 8 { 30 + row * 5 } else { 0 };
        for col in 0..len.min(80) {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // A pseudo-glyph: a few strokes inside the 9x16 cell.
            for y in 3..13 {
                for x in 1..8 {
                    if (seed >> ((x + y) % 24)) & 3 == 0 {
                        px[(row * 16 + y) * w + col * 9 + x] = 0x00aa_aaaa;
                    }
                }
            }
        }
    }
    s.write_rect(Rect::new(0, 0, w as u16, h as u16), &px, w);
}

/// A desktop-like picture: smooth gradient background, flat panels, some noisy "photo".
fn graphic_screen(s: &Surface) {
    let (w, h) = s.size();
    let (w, h) = (usize::from(w), usize::from(h));
    let mut px = vec![0u32; w * h];
    let mut seed = 99u32;
    for y in 0..h {
        for x in 0..w {
            let mut p = ((x * 80 / w) as u32 + 40) << 16 | ((y * 100 / h) as u32 + 60) << 8 | 0xa0;
            if y < 32 {
                p = 0x0030_3030;
            } else if x > w / 8 && x < w / 2 && y > h / 6 && y < h / 2 {
                p = 0x00f0_f0f0;
            } else if x > w / 2 + 40 && x < w - 40 && y > h / 3 && y < h - 60 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                p = (p & 0x00fe_fefe) / 2 + ((seed >> 8) & 0x003f_3f3f);
            }
            px[y * w + x] = p;
        }
    }
    s.write_rect(Rect::new(0, 0, w as u16, h as u16), &px, w);
}

/// CPU time (user + system) this process used so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut s = String::new();
    if std::fs::File::open("/proc/self/stat")
        .and_then(|mut f| f.read_to_string(&mut s))
        .is_err()
    {
        return 0.0;
    }
    let fields: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn encoder_bytes(surface: &Surface, enc: i32, rect: Rect) -> (usize, Duration) {
    let mut e = new_encoder(enc).expect("encoder");
    let mut out = Vec::new();
    let pf = display::pixel::PixelFormat::NATIVE;
    let settings = display::encoding::EncoderSettings::default();
    // Warm up once (zlib state), then time a fresh encoder.
    surface.read(|v| e.encode(v, rect, &pf, &settings, &mut out));
    let mut e = new_encoder(enc).expect("encoder");
    out.clear();
    let t = Instant::now();
    surface.read(|v| e.encode(v, rect, &pf, &settings, &mut out));
    (out.len(), t.elapsed())
}

fn main() {
    let encodings: Vec<(&str, i32)> = [
        ("Raw", number::RAW),
        ("Hextile", number::HEXTILE),
        ("ZRLE", number::ZRLE),
        ("Tight", number::TIGHT),
    ]
    .into_iter()
    .filter(|(_, e)| new_encoder(*e).is_some())
    .collect();
    println!(
        "encodings available: {:?}",
        encodings.iter().map(|e| e.0).collect::<Vec<_>>()
    );

    for (name, w, h, paint) in [
        ("text 720x400", 720u16, 400u16, text_screen as fn(&Surface)),
        ("graphic 1024x768", 1024, 768, graphic_screen),
        ("graphic 1920x1080", 1920, 1080, graphic_screen),
    ] {
        let surface = Surface::new(w, h);
        paint(&surface);
        println!("\n== {name}");
        for &(ename, enc) in &encodings {
            let (bytes, t) = encoder_bytes(&surface, enc, Rect::new(0, 0, w, h));
            let (blink, tb) = encoder_bytes(&surface, enc, Rect::new(0, 0, 9, 16));
            let (region, tr) = encoder_bytes(&surface, enc, Rect::new(64, 64, 64, 64));
            println!(
                "{ename:8} full frame {bytes:>9} B in {:>7.2} ms | cursor cell {blink:>6} B in {:>6.1} us | 64x64 {region:>6} B in {:>6.1} us",
                t.as_secs_f64() * 1e3,
                tb.as_secs_f64() * 1e6,
                tr.as_secs_f64() * 1e6
            );
        }

        let server = VncServer::start(
            VncConfig::new("127.0.0.1:0".parse().unwrap()),
            Arc::clone(&surface),
            Arc::new(NullInput),
        )
        .expect("server");
        // A new client's first full frame, several times (a fresh client each time): the
        // median is the figure, the machine being shared.
        let mut firsts = Vec::new();
        let mut handshakes = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let mut c = Client::connect(server.local_addr(), &ClientOptions::default()).unwrap();
            handshakes.push(t.elapsed());
            c.set_encodings(&[number::RAW]).unwrap();
            c.update(false).unwrap();
            firsts.push(t.elapsed());
        }
        let t = Instant::now();
        let mut c = Client::connect(server.local_addr(), &ClientOptions::default()).unwrap();
        c.set_encodings(&[number::RAW]).unwrap();
        c.update(false).unwrap();
        let first = t.elapsed();
        // A second full frame to the same client: no first-touch costs.
        let t2 = Instant::now();
        c.update(false).unwrap();
        let another = t2.elapsed();
        firsts.push(first);
        firsts.sort();
        handshakes.sort();
        println!(
            "first full frame (Raw, connect to last pixel) {:.1} ms median of {} (fastest {:.1} ms, \
             handshake {:.1} ms); another full frame {:.1} ms",
            firsts[firsts.len() / 2].as_secs_f64() * 1e3,
            firsts.len(),
            firsts[0].as_secs_f64() * 1e3,
            handshakes[handshakes.len() / 2].as_secs_f64() * 1e3,
            another.as_secs_f64() * 1e3
        );
        // Static screen: the server should sleep.
        c.request(true).unwrap();
        let cpu0 = cpu_seconds();
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "static screen, 1 client waiting: {:.1}% of a core",
            (cpu_seconds() - cpu0) / 2.0 * 100.0
        );
    }
}
