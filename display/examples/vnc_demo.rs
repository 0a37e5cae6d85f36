//! Serves an animated test pattern over VNC: a moving gradient, text, a frame counter
//! that changes every frame, and whatever input arrives (the last keys as text, the
//! pointer as a cross, and dots where a button is held).
//!
//!     cargo run --release -p display --example vnc_demo -- --listen 127.0.0.1:1 [--password-file F]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use display::encoding::Rect;
use display::rfb::{InputSink, VncConfig, VncServer, parse_listen};
use display::surface::Surface;

#[derive(Parser)]
#[command(about = "VNC demo server with an animated test pattern")]
struct Args {
    /// HOST:DISPLAY to listen on (display N is port 5900+N); HOST:auto takes the first
    /// free display from 0.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// File whose first line is the VNC password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Allow a non-loopback address without a password.
    #[arg(long)]
    allow_insecure: bool,
    #[arg(long, default_value_t = 800)]
    width: u16,
    #[arg(long, default_value_t = 600)]
    height: u16,
    /// Frames per second of the animation.
    #[arg(long, default_value_t = 30)]
    fps: u32,
}

#[derive(Default)]
struct Seen {
    keys: String,
    pointer: (u16, u16, u8),
    dots: Vec<(u16, u16)>,
}

struct DemoInput(Mutex<Seen>);

impl InputSink for DemoInput {
    fn key(&self, keysym: u32, down: bool, scancode: Option<u16>) {
        if !down {
            return;
        }
        let mut s = self.0.lock().unwrap();
        let c = char::from_u32(keysym)
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .map(|c| c.to_ascii_uppercase().to_string())
            .unwrap_or_else(|| format!("<{keysym:X}>"));
        s.keys.push_str(&c);
        if let Some(sc) = scancode {
            s.keys.push_str(&format!("[{sc:X}]"));
        }
        let n = s.keys.chars().count();
        if n > 40 {
            s.keys = s.keys.chars().skip(n - 40).collect();
        }
    }

    fn pointer(&self, x: u16, y: u16, buttons: u8) {
        let mut s = self.0.lock().unwrap();
        s.pointer = (x, y, buttons);
        if buttons & 1 != 0 {
            s.dots.push((x, y));
            if s.dots.len() > 4096 {
                s.dots.remove(0);
            }
        }
    }

    fn clipboard(&self, text: String) {
        let mut s = self.0.lock().unwrap();
        s.keys = format!("CLIP:{}", text.to_ascii_uppercase());
        s.keys.truncate(40);
    }
}

/// A 3x5 font: each glyph is 15 bits, row-major from the top-left.
fn glyph(c: char) -> u16 {
    match c {
        '0' => 0b111_101_101_101_111,
        '1' => 0b010_110_010_010_111,
        '2' => 0b111_001_111_100_111,
        '3' => 0b111_001_111_001_111,
        '4' => 0b101_101_111_001_001,
        '5' => 0b111_100_111_001_111,
        '6' => 0b111_100_111_101_111,
        '7' => 0b111_001_010_010_010,
        '8' => 0b111_101_111_101_111,
        '9' => 0b111_101_111_001_111,
        'A' => 0b010_101_111_101_101,
        'B' => 0b110_101_110_101_110,
        'C' => 0b011_100_100_100_011,
        'D' => 0b110_101_101_101_110,
        'E' => 0b111_100_110_100_111,
        'F' => 0b111_100_110_100_100,
        'G' => 0b011_100_101_101_011,
        'H' => 0b101_101_111_101_101,
        'I' => 0b111_010_010_010_111,
        'J' => 0b001_001_001_101_010,
        'K' => 0b101_101_110_101_101,
        'L' => 0b100_100_100_100_111,
        'M' => 0b101_111_111_101_101,
        'N' => 0b110_101_101_101_101,
        'O' => 0b010_101_101_101_010,
        'P' => 0b110_101_110_100_100,
        'Q' => 0b010_101_101_110_011,
        'R' => 0b110_101_110_101_101,
        'S' => 0b011_100_010_001_110,
        'T' => 0b111_010_010_010_010,
        'U' => 0b101_101_101_101_111,
        'V' => 0b101_101_101_101_010,
        'W' => 0b101_101_111_111_101,
        'X' => 0b101_101_010_101_101,
        'Y' => 0b101_101_010_010_010,
        'Z' => 0b111_001_010_100_111,
        ':' => 0b000_010_000_010_000,
        '.' => 0b000_000_000_000_010,
        '-' => 0b000_000_111_000_000,
        '<' => 0b001_010_100_010_001,
        '>' => 0b100_010_001_010_100,
        '[' => 0b110_100_100_100_110,
        ']' => 0b011_001_001_001_011,
        '/' => 0b001_001_010_100_100,
        _ => 0,
    }
}

fn draw_text(
    px: &mut [u32],
    stride: usize,
    x: usize,
    y: usize,
    scale: usize,
    text: &str,
    colour: u32,
) {
    let height = px.len() / stride;
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for gy in 0..5 {
            for gx in 0..3 {
                if g >> (14 - (gy * 3 + gx)) & 1 == 0 {
                    continue;
                }
                for sy in 0..scale {
                    for sx in 0..scale {
                        let xx = x + (i * 4 + gx) * scale + sx;
                        let yy = y + gy * scale + sy;
                        if xx < stride && yy < height {
                            px[yy * stride + xx] = colour;
                        }
                    }
                }
            }
        }
    }
}

fn main() {
    if let Err(e) = run() {
        // Display, not Debug: "port 5901 in use (...)" reads better than a struct dump.
        eprintln!("vnc_demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let auto = args.listen.strip_suffix(":auto");
    let listen = parse_listen(&format!("{}:0", auto.unwrap_or(""))).and_then(|a| {
        if auto.is_some() {
            Ok(a)
        } else {
            parse_listen(&args.listen)
        }
    })?;
    let mut cfg = VncConfig::new(listen);
    cfg.allow_insecure = args.allow_insecure;
    cfg.name = "vmdesk vnc demo".into();
    if let Some(f) = &args.password_file {
        cfg = cfg.with_password_file(f)?;
    }
    let surface = Surface::new(args.width, args.height);
    let input = Arc::new(DemoInput(Mutex::new(Seen::default())));
    let server = if auto.is_some() {
        VncServer::start_auto(cfg, Arc::clone(&surface), input.clone())?.0
    } else {
        VncServer::start(cfg, Arc::clone(&surface), input.clone())?
    };
    eprintln!("vnc: listening on {}", server.local_addr());

    let (w, h) = (usize::from(args.width), usize::from(args.height));
    let mut px = vec![0u32; w * h];
    let period = Duration::from_secs(1) / args.fps.max(1);
    let start = Instant::now();
    let mut next = Instant::now();
    for frame in 0u64.. {
        let t = start.elapsed().as_secs_f32();
        // Moving gradient in the top half.
        let shift = (t * 60.0) as usize;
        for y in 0..h / 2 {
            for x in 0..w {
                let r = ((x + shift) * 255 / w.max(1)) as u32 & 0xff;
                let g = (y * 255 / (h / 2).max(1)) as u32 & 0xff;
                px[y * w + x] = r << 16 | g << 8 | 0x60;
            }
        }
        // Static lower half with text.
        for p in &mut px[w * (h / 2)..] {
            *p = 0x0020_2030;
        }
        draw_text(
            &mut px,
            w,
            16,
            h / 2 + 16,
            4,
            "VMDESK VNC DEMO",
            0x00ff_ffff,
        );
        // A region that changes every frame: the frame counter on a colour swatch.
        let sw = (frame as u32).wrapping_mul(0x0003_0507) & 0x00ff_ffff;
        for y in h / 2 + 48..(h / 2 + 88).min(h) {
            for x in 16..(16 + 160).min(w) {
                px[y * w + x] = sw;
            }
        }
        draw_text(
            &mut px,
            w,
            24,
            h / 2 + 56,
            4,
            &format!("{frame}"),
            0x00ff_ffff ^ sw,
        );
        let seen = input.0.lock().unwrap();
        draw_text(
            &mut px,
            w,
            16,
            h / 2 + 100,
            3,
            &format!("KEYS: {}", seen.keys),
            0x00ff_ff80,
        );
        let (cx, cy, b) = seen.pointer;
        draw_text(
            &mut px,
            w,
            16,
            h / 2 + 124,
            3,
            &format!("POINTER {cx} {cy} BUTTONS {b}"),
            0x0080_ffff,
        );
        for &(dx, dy) in &seen.dots {
            let (dx, dy) = (usize::from(dx), usize::from(dy));
            for yy in dy.saturating_sub(2)..(dy + 3).min(h) {
                for xx in dx.saturating_sub(2)..(dx + 3).min(w) {
                    px[yy * w + xx] = 0x00ff_4040;
                }
            }
        }
        let (cx, cy) = (usize::from(cx).min(w - 1), usize::from(cy).min(h - 1));
        for x in cx.saturating_sub(8)..(cx + 9).min(w) {
            px[cy * w + x] = 0x00ff_ffff;
        }
        for y in cy.saturating_sub(8)..(cy + 9).min(h) {
            px[y * w + cx] = 0x00ff_ffff;
        }
        drop(seen);
        surface.write_rect(Rect::new(0, 0, w as u16, h as u16), &px, w);
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    drop(server);
    Ok(())
}
