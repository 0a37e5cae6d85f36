//! Stable-Rust stand-in for the cargo-fuzz target: thousands of random, mutated and
//! truncated client messages from a seeded PRNG through the parser, and a burst of
//! garbage at a live server. Nothing may panic; the server must keep serving.

mod rfb_support;

use display::encoding::number;
use display::pixel::PixelFormat;
use display::rfb::protocol::{
    ClientMessage, Limits, Screen, read_client_message, write_client_message,
};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn valid_message(rng: &mut Rng) -> ClientMessage {
    match rng.below(11) {
        0 => ClientMessage::SetPixelFormat(PixelFormat::NATIVE),
        1 => ClientMessage::SetEncodings(
            (0..rng.below(40))
                .map(|_| rng.next() as i32 % 400)
                .chain([number::RAW])
                .collect(),
        ),
        2 => ClientMessage::FramebufferUpdateRequest {
            incremental: rng.below(2) == 1,
            x: rng.next() as u16,
            y: rng.next() as u16,
            w: rng.next() as u16,
            h: rng.next() as u16,
        },
        3 => ClientMessage::KeyEvent {
            down: rng.below(2) == 1,
            keysym: rng.next() as u32,
        },
        4 => ClientMessage::PointerEvent {
            buttons: rng.next() as u8,
            x: rng.next() as u16,
            y: rng.next() as u16,
        },
        5 => ClientMessage::CutText(
            (0..rng.below(300))
                .map(|_| char::from(rng.next() as u8))
                .collect(),
        ),
        6 => ClientMessage::ExtendedCutText {
            flags: rng.next() as u32,
            payload: rng.bytes(200),
        },
        7 => ClientMessage::EnableContinuousUpdates {
            enable: rng.below(2) == 1,
            x: rng.next() as u16,
            y: rng.next() as u16,
            w: rng.next() as u16,
            h: rng.next() as u16,
        },
        8 => ClientMessage::Fence {
            flags: rng.next() as u32,
            payload: rng.bytes(65),
        },
        9 => ClientMessage::SetDesktopSize {
            w: rng.next() as u16,
            h: rng.next() as u16,
            screens: (0..1 + rng.below(4))
                .map(|_| Screen {
                    id: rng.next() as u32,
                    x: 0,
                    y: 0,
                    w: rng.next() as u16,
                    h: rng.next() as u16,
                    flags: 0,
                })
                .collect(),
        },
        _ => ClientMessage::QemuKeyEvent {
            down: rng.below(2) == 1,
            keysym: rng.next() as u32,
            keycode: rng.next() as u32,
        },
    }
}

/// A byte stream: valid messages, some with bytes flipped, some cut short, some noise.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(8) {
        let mut m = Vec::new();
        write_client_message(&valid_message(rng), &mut m);
        match rng.below(6) {
            0 => {
                let i = rng.below(m.len() as u64) as usize;
                m[i] = rng.next() as u8;
            }
            1 => m.truncate(rng.below(m.len() as u64) as usize),
            2 => m = rng.bytes(64),
            // Huge length fields.
            3 if m[0] == 6 && m.len() >= 8 => {
                m[4..8].copy_from_slice(&(rng.next() as u32).to_be_bytes());
            }
            _ => {}
        }
        out.extend_from_slice(&m);
    }
    out
}

#[test]
fn parser_survives_random_input() {
    let limits = Limits {
        max_cut_text: 1024,
        max_encodings: 32,
    };
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut parsed = 0usize;
    let mut errors = 0usize;
    for _ in 0..20_000 {
        let data = stream(&mut rng);
        let mut r = &data[..];
        while !r.is_empty() {
            match read_client_message(&mut r, &limits) {
                Ok(m) => {
                    parsed += 1;
                    if let ClientMessage::SetEncodings(e) = &m {
                        assert!(e.len() <= 32);
                    }
                    if let ClientMessage::CutText(t) = &m {
                        assert!(t.chars().count() <= 1024);
                    }
                }
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    // Both paths were exercised.
    assert!(
        parsed > 20_000 && errors > 1_000,
        "{parsed} parsed, {errors} errors"
    );
}

#[test]
fn live_server_survives_garbage_connections() {
    use std::io::Write;
    let h = rfb_support::Harness::new(64, 64);
    let mut watcher = h.connect();
    watcher.update(false).unwrap();
    let mut rng = Rng(42);
    for i in 0..40 {
        let mut c = h.connect();
        c.stream().write_all(&stream(&mut rng)).ok();
        drop(c);
        h.surface
            .fill_rect(display::encoding::Rect::new(0, 0, 4, 4), i);
        watcher.update(true).unwrap();
        h.assert_matches(&watcher);
    }
}
