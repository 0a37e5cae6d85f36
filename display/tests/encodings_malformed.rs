//! Decoders against hostile input: truncated, corrupted and random data must give an error
//! (or, for corruption that happens to stay well-formed, some picture), never a panic, a hang
//! or an unbounded allocation. Seeded, so a failure repeats.

mod common;

use common::pictures::{self, Rng};
use display::decode::{DecodeError, DecodedFrame, Decoder};
use display::encoding::{EncoderSettings, PixelView, Rect, new_encoder, number};
use display::pixel::PixelFormat;

const ENCODINGS: [i32; 4] = [number::RAW, number::HEXTILE, number::ZRLE, number::TIGHT];

fn rgb565() -> PixelFormat {
    PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: true,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    }
}

/// A valid update (count, bytes) of a mixed picture.
fn valid(encoding: i32, pf: &PixelFormat, jpeg: Option<u8>) -> (u16, Vec<u8>) {
    let mut pic = pictures::text_like(150, 90, 11);
    let g = pictures::gradient(60, 40);
    for y in 0..40 {
        for x in 0..60 {
            pic.set(80 + x, 45 + y, g.pixels[y * 60 + x]);
        }
    }
    let frame = PixelView {
        pixels: &pic.pixels,
        width: pic.width,
        height: pic.height,
        stride: pic.width,
    };
    let mut out = Vec::new();
    let settings = EncoderSettings {
        compress_level: None,
        jpeg_quality: jpeg,
    };
    let mut enc = new_encoder(encoding).unwrap();
    let n = enc.encode(&frame, Rect::new(3, 2, 140, 85), pf, &settings, &mut out);
    (n, out)
}

fn decode(pf: &PixelFormat, n: u16, bytes: &[u8]) -> Result<(), DecodeError> {
    let mut dec = Decoder::new(pf);
    let mut fb = DecodedFrame::new(150, 90);
    let mut cur = bytes;
    dec.decode_rects(&mut cur, n, &mut fb).map(|_| ())
}

fn cases() -> Vec<(i32, PixelFormat, Option<u8>)> {
    let mut v = Vec::new();
    for e in ENCODINGS {
        v.push((e, PixelFormat::NATIVE, None));
        v.push((e, rgb565(), None));
    }
    v.push((number::TIGHT, PixelFormat::NATIVE, Some(6)));
    v
}

#[test]
fn every_truncation_is_an_error() {
    for (e, pf, jpeg) in cases() {
        let (n, bytes) = valid(e, &pf, jpeg);
        decode(&pf, n, &bytes).expect("the untouched update decodes");
        let step = (bytes.len() / 400).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            assert!(
                decode(&pf, n, &bytes[..cut]).is_err(),
                "encoding {e}: {cut} of {} bytes decoded without error",
                bytes.len()
            );
        }
    }
}

#[test]
fn corrupted_updates_never_panic() {
    let mut rng = Rng::new(0x5eed);
    for (e, pf, jpeg) in cases() {
        let (n, bytes) = valid(e, &pf, jpeg);
        for _ in 0..400 {
            let mut b = bytes.clone();
            match rng.below(3) {
                0 => {
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(b.len() as u32) as usize;
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    let i = rng.below(b.len() as u32) as usize;
                    b[i] = rng.next_u32() as u8;
                }
                _ => {
                    // Keep the first header's encoding, scramble a stretch of the data.
                    let i = 12 + rng.below((b.len() - 12) as u32) as usize;
                    let end = (i + 1 + rng.below(16) as usize).min(b.len());
                    for x in &mut b[i..end] {
                        *x = rng.next_u32() as u8;
                    }
                }
            }
            let _ = decode(&pf, n, &b);
        }
    }
}

#[test]
fn random_bytes_after_a_plausible_header_never_panic() {
    let mut rng = Rng::new(42);
    for i in 0..4000 {
        let e = ENCODINGS[i % 4];
        let pf = if i % 3 == 0 {
            rgb565()
        } else {
            PixelFormat::NATIVE
        };
        let (w, h) = (1 + rng.below(150) as u16, 1 + rng.below(90) as u16);
        let mut b = Vec::new();
        Rect::new(0, 0, w, h).write_header(e, &mut b);
        let len = rng.below(300) as usize;
        // Bias the first bytes towards the valid ranges so the decoders get further in.
        for k in 0..len {
            let v = rng.next_u32() as u8;
            b.push(if k < 4 && rng.below(2) == 0 {
                v % 20
            } else {
                v
            });
        }
        let _ = decode(&pf, 1, &b);
    }
}

#[test]
fn hostile_lengths_and_sizes_are_refused() {
    let pf = PixelFormat::NATIVE;
    // ZRLE claiming 4 GiB of compressed data.
    let mut b = Vec::new();
    Rect::new(0, 0, 10, 10).write_header(number::ZRLE, &mut b);
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode(&pf, 1, &b),
        Err(DecodeError::Malformed { .. })
    ));
    // Tight basic data claiming 4 MiB for a 2x2 rectangle.
    let mut b = Vec::new();
    Rect::new(0, 0, 4, 4).write_header(number::TIGHT, &mut b);
    b.extend_from_slice(&[0x00, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode(&pf, 1, &b),
        Err(DecodeError::Malformed { .. })
    ));
    // A rectangle outside the framebuffer.
    let mut b = Vec::new();
    Rect::new(140, 0, 20, 1).write_header(number::RAW, &mut b);
    b.extend_from_slice(&[0; 80]);
    assert!(matches!(
        decode(&pf, 1, &b),
        Err(DecodeError::OutOfBounds { .. })
    ));
    // A DesktopSize of 65535 x 65535.
    let mut b = Vec::new();
    Rect::new(0, 0, 65535, 65535).write_header(number::DESKTOP_SIZE, &mut b);
    assert!(decode(&pf, 1, &b).is_err());
    // A Hextile subrect leaving its tile.
    let mut b = Vec::new();
    Rect::new(0, 0, 16, 16).write_header(number::HEXTILE, &mut b);
    b.extend_from_slice(&[2 | 4 | 8, 0, 0, 0, 0, 255, 255, 255, 0, 1, 0xf0, 0x10]);
    assert!(matches!(
        decode(&pf, 1, &b),
        Err(DecodeError::Malformed { .. })
    ));
    // Tight: an unknown compression type and a palette index past the palette.
    let mut b = Vec::new();
    Rect::new(0, 0, 4, 4).write_header(number::TIGHT, &mut b);
    b.push(0xb0);
    assert!(decode(&pf, 1, &b).is_err());
    let mut b = Vec::new();
    Rect::new(0, 0, 2, 1).write_header(number::TIGHT, &mut b);
    // Explicit filter, palette of 3 colours, then 2 index bytes (< 12: raw), one out of range.
    b.extend_from_slice(&[0x60, 1, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 7]);
    assert!(matches!(
        decode(&pf, 1, &b),
        Err(DecodeError::Malformed { .. })
    ));
}
