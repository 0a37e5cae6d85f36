//! Helpers shared by the integration tests: a server on a free loopback port over a
//! patterned surface, and an input sink that records what arrives.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions, expected_pixel};
use display::encoding::Rect;
use display::pixel::PixelFormat;
use display::rfb::{InputSink, Password, VncConfig, VncServer};
use display::surface::Surface;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Key(u32, bool, Option<u16>),
    Pointer(u16, u16, u8),
    Clipboard(String),
}

#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Input>>);

impl InputSink for Recorder {
    fn key(&self, keysym: u32, down: bool, scancode: Option<u16>) {
        self.0
            .lock()
            .unwrap()
            .push(Input::Key(keysym, down, scancode));
    }
    fn pointer(&self, x: u16, y: u16, buttons: u8) {
        self.0.lock().unwrap().push(Input::Pointer(x, y, buttons));
    }
    fn clipboard(&self, text: String) {
        self.0.lock().unwrap().push(Input::Clipboard(text));
    }
}

impl Recorder {
    /// Waits until `n` events arrived (input is asynchronous to the client's writes).
    pub fn wait_for(&self, n: usize) -> Vec<Input> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.0.lock().unwrap().clone();
            if v.len() >= n || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A deterministic picture with gradients, edges and noise.
pub fn paint(surface: &Surface, seed: u32) {
    let (w, h) = surface.size();
    let (w, h) = (usize::from(w), usize::from(h));
    let mut px = vec![0u32; w * h];
    let mut s = seed.wrapping_mul(2654435761).max(1);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            px[y * w + x] = if (x / 37 + y / 23) % 3 == 0 {
                s & 0x00ff_ffff
            } else {
                ((x * 255 / w.max(1)) as u32) << 16
                    | ((y * 255 / h.max(1)) as u32) << 8
                    | seed & 0xff
            };
        }
    }
    surface.write_rect(Rect::new(0, 0, w as u16, h as u16), &px, w);
}

pub struct Harness {
    pub surface: Arc<Surface>,
    pub input: Arc<Recorder>,
    pub server: VncServer,
}

impl Harness {
    pub fn new(w: u16, h: u16) -> Self {
        Self::with(w, h, |_| {})
    }

    pub fn with(w: u16, h: u16, f: impl FnOnce(&mut VncConfig)) -> Self {
        let surface = Surface::new(w, h);
        paint(&surface, 1);
        let input = Arc::new(Recorder::default());
        let mut cfg = VncConfig::new("127.0.0.1:0".parse().unwrap());
        f(&mut cfg);
        let server = VncServer::start(cfg, Arc::clone(&surface), input.clone()).unwrap();
        Harness {
            surface,
            input,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr(), &ClientOptions::default()).unwrap()
    }

    pub fn connect_with(&self, password: Option<&str>, shared: bool, minor: u8) -> Client {
        Client::connect(
            self.addr(),
            &ClientOptions {
                minor,
                password: password.map(Password::new),
                shared,
                ..ClientOptions::default()
            },
        )
        .unwrap()
    }

    /// Asserts the client's framebuffer equals the surface as seen through `pf`.
    pub fn assert_matches(&self, c: &Client) {
        let (w, h, px) = self.surface.snapshot();
        assert_eq!((c.fb.width, c.fb.height), (usize::from(w), usize::from(h)));
        for (i, (&got, &src)) in c.fb.pixels.iter().zip(px.iter()).enumerate() {
            let want = expected_pixel(&c.pf, src);
            assert_eq!(
                got,
                want,
                "pixel ({}, {}) differs: got {got:06x}, want {want:06x} (source {src:06x}, {:?})",
                i % usize::from(w),
                i / usize::from(w),
                c.pf
            );
        }
    }
}

pub fn formats() -> Vec<(&'static str, PixelFormat)> {
    let base = PixelFormat::NATIVE;
    vec![
        ("32bpp native", base),
        (
            "32bpp BGR big-endian",
            PixelFormat {
                big_endian: true,
                red_shift: 0,
                blue_shift: 16,
                ..base
            },
        ),
        (
            "32bpp RGB in the high bytes, big-endian",
            PixelFormat {
                big_endian: true,
                red_shift: 24,
                green_shift: 16,
                blue_shift: 8,
                ..base
            },
        ),
        (
            "16bpp RGB565 little-endian",
            PixelFormat {
                bits_per_pixel: 16,
                depth: 16,
                big_endian: false,
                red_max: 31,
                green_max: 63,
                blue_max: 31,
                red_shift: 11,
                green_shift: 5,
                blue_shift: 0,
            },
        ),
        (
            "16bpp RGB555 big-endian",
            PixelFormat {
                bits_per_pixel: 16,
                depth: 15,
                big_endian: true,
                red_max: 31,
                green_max: 31,
                blue_max: 31,
                red_shift: 10,
                green_shift: 5,
                blue_shift: 0,
            },
        ),
        (
            "8bpp BGR233",
            PixelFormat {
                bits_per_pixel: 8,
                depth: 8,
                big_endian: false,
                red_max: 7,
                green_max: 7,
                blue_max: 3,
                red_shift: 0,
                green_shift: 3,
                blue_shift: 6,
            },
        ),
    ]
}

/// Prints the standard skip line, or fails when tools are required.
pub fn skip(name: &str, reason: &str) {
    if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{name}: required tool missing: {reason}");
    }
    println!("SKIP {name}: {reason}");
}
