//! Round trips: every encoding through our decoders, for many pictures, rectangles and
//! client pixel formats. Lossless encodings must reproduce the source exactly (after the
//! client format's own quantisation); pixels outside the rectangle must stay untouched.

mod common;

use common::pictures::{self, Picture};
use display::decode::{DecodedFrame, Decoder, client_to_native};
use display::encoding::{EncoderSettings, PixelView, Rect, new_encoder, number};
use display::pixel::PixelFormat;

pub const LOSSLESS: &[(i32, &str)] = &[(number::RAW, "raw"), (number::HEXTILE, "hextile")];

pub fn formats() -> Vec<(&'static str, PixelFormat)> {
    let n = PixelFormat::NATIVE;
    let rgb565 = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    };
    vec![
        ("native", n),
        (
            "32 be",
            PixelFormat {
                big_endian: true,
                ..n
            },
        ),
        (
            "32 bgr",
            PixelFormat {
                red_shift: 0,
                blue_shift: 16,
                ..n
            },
        ),
        (
            "32 be high",
            PixelFormat {
                big_endian: true,
                red_shift: 24,
                green_shift: 16,
                blue_shift: 8,
                ..n
            },
        ),
        (
            "32 le high",
            PixelFormat {
                red_shift: 8,
                green_shift: 16,
                blue_shift: 24,
                ..n
            },
        ),
        (
            "32 10-bit",
            PixelFormat {
                depth: 30,
                red_max: 1023,
                green_max: 1023,
                blue_max: 1023,
                red_shift: 20,
                green_shift: 10,
                blue_shift: 0,
                ..n
            },
        ),
        (
            "32 depth16",
            PixelFormat {
                depth: 16,
                ..rgb565
            }
            .with_bpp(32),
        ),
        ("565 le", rgb565),
        (
            "565 be",
            PixelFormat {
                big_endian: true,
                ..rgb565
            },
        ),
        (
            "555 le",
            PixelFormat {
                depth: 15,
                green_max: 31,
                red_shift: 10,
                ..rgb565
            },
        ),
        (
            "bgr233",
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
        (
            "rgb332",
            PixelFormat {
                bits_per_pixel: 8,
                depth: 8,
                big_endian: false,
                red_max: 7,
                green_max: 7,
                blue_max: 3,
                red_shift: 5,
                green_shift: 2,
                blue_shift: 0,
            },
        ),
    ]
}

trait WithBpp {
    fn with_bpp(self, bpp: u8) -> Self;
}
impl WithBpp for PixelFormat {
    fn with_bpp(mut self, bpp: u8) -> Self {
        self.bits_per_pixel = bpp;
        self
    }
}

fn small_pictures() -> Vec<Picture> {
    let mut v = vec![
        pictures::solid(1, 1, 0x0012_3456),
        pictures::solid(37, 21, 0x00ff_8000),
        pictures::noise(1, 1, 1),
        pictures::noise(17, 33, 2),
        pictures::noise(70, 65, 3),
        pictures::gradient(67, 45),
        pictures::gradient(130, 129),
        pictures::text_like(150, 77, 4),
        pictures::text_like(33, 200, 5),
    ];
    // Few colours scattered: palettes of 2..=20 colours in random spots.
    for (i, ncol) in [2u32, 3, 5, 16, 17, 20, 130].into_iter().enumerate() {
        let mut rng = pictures::Rng::new(100 + i as u64);
        let cols: Vec<u32> = (0..ncol).map(|_| rng.next_u32() & 0xffffff).collect();
        let mut p = Picture::new(&format!("{ncol} colours"), 80, 70, cols[0]);
        for k in 0..p.pixels.len() {
            if rng.below(4) == 0 {
                p.pixels[k] = cols[rng.below(ncol) as usize];
            }
        }
        v.push(p);
    }
    // Big enough for Tight's solid-area search: plain areas around text and a noisy patch.
    let mut p = pictures::text_like(260, 190, 6);
    p.fill(0, 60, 260, 90, 0x0030_6090);
    let n = pictures::noise(40, 30, 7);
    for y in 0..30 {
        for x in 0..40 {
            p.set(150 + x, 100 + y, n.pixels[y * 40 + x]);
        }
    }
    p.name = "panels 260x190".into();
    v.push(p);
    // Runs of one colour across rows (RLE runs spanning lines).
    let mut p = Picture::new("runs", 99, 50, 0);
    let mut rng = pictures::Rng::new(9);
    let mut k = 0;
    while k < p.pixels.len() {
        let n = (rng.below(600) as usize + 1).min(p.pixels.len() - k);
        let c = rng.next_u32() & 0xffffff;
        p.pixels[k..k + n].fill(c);
        k += n;
    }
    v.push(p);
    v
}

/// Encodes `rect` of `pic`, decodes it over a frame filled with a marker colour, and checks
/// the rectangle is exact and the rest untouched.
#[allow(clippy::too_many_arguments)]
pub fn round_trip(
    enc: &mut dyn display::encoding::Encoder,
    dec: &mut Decoder,
    fb: &mut DecodedFrame,
    pic: &Picture,
    rect: Rect,
    pf: &PixelFormat,
    settings: &EncoderSettings,
    tolerance: u32,
    what: &str,
) -> usize {
    let frame = PixelView {
        pixels: &pic.pixels,
        width: pic.width,
        height: pic.height,
        stride: pic.width,
    };
    let marker = 0x00de_ad42;
    fb.pixels.fill(marker);
    let mut out = Vec::new();
    let n = enc.encode(&frame, rect, pf, settings, &mut out);
    let mut cur = &out[..];
    let rects = dec
        .decode_rects(&mut cur, n, fb)
        .unwrap_or_else(|e| panic!("{what}: decode failed: {e}"));
    assert!(cur.is_empty(), "{what}: {} bytes left over", cur.len());
    assert_eq!(rects.len(), usize::from(n), "{what}");
    for y in 0..pic.height {
        for x in 0..pic.width {
            let got = fb.pixels[y * fb.width + x];
            let inside = x >= usize::from(rect.x)
                && x < usize::from(rect.x + rect.w)
                && y >= usize::from(rect.y)
                && y < usize::from(rect.y + rect.h);
            if !inside {
                assert_eq!(
                    got, marker,
                    "{what}: pixel ({x},{y}) outside the rect changed"
                );
                continue;
            }
            let want = client_to_native(pf, pf.convert(pic.pixels[y * pic.width + x]));
            if tolerance == 0 {
                assert_eq!(got, want, "{what}: pixel ({x},{y})");
            } else {
                let d = (0..3)
                    .map(|c| ((got >> (c * 8)) & 0xff).abs_diff((want >> (c * 8)) & 0xff))
                    .max()
                    .unwrap();
                assert!(
                    d <= tolerance,
                    "{what}: pixel ({x},{y}) {got:06x} vs {want:06x}"
                );
            }
        }
    }
    out.len()
}

fn rects_for(p: &Picture) -> Vec<Rect> {
    let (w, h) = (p.width as u16, p.height as u16);
    let mut v = vec![Rect::new(0, 0, w, h)];
    if w > 3 && h > 3 {
        v.push(Rect::new(1, 2, w - 3, h - 2));
        v.push(Rect::new(w / 2, h / 3, w - w / 2, 1));
        v.push(Rect::new(w - 1, 0, 1, h));
    }
    v
}

fn lossless_all_formats(encoding: i32, name: &str) {
    for (fname, pf) in formats() {
        // One encoder and decoder per format, reused across pictures: stream state persists.
        let mut enc = new_encoder(encoding).expect("registered");
        let mut dec = Decoder::new(&pf);
        for level in [None, Some(1), Some(9)] {
            let settings = EncoderSettings {
                compress_level: level,
                jpeg_quality: None,
            };
            for pic in small_pictures() {
                let mut fb = DecodedFrame::new(pic.width, pic.height);
                for rect in rects_for(&pic) {
                    let what = format!("{name} {fname} {} {rect:?} level {level:?}", pic.name);
                    round_trip(
                        enc.as_mut(),
                        &mut dec,
                        &mut fb,
                        &pic,
                        rect,
                        &pf,
                        &settings,
                        0,
                        &what,
                    );
                }
            }
        }
    }
}

#[test]
fn raw_round_trips() {
    lossless_all_formats(number::RAW, "raw");
}

#[test]
fn hextile_round_trips() {
    lossless_all_formats(number::HEXTILE, "hextile");
}

#[test]
fn big_pictures_round_trip_every_lossless_encoding() {
    for pic in [
        pictures::seabios_qemu(),
        pictures::seabios_text(),
        pictures::installer(),
        pictures::desktop(),
    ] {
        for &(encoding, name) in LOSSLESS {
            let pf = PixelFormat::NATIVE;
            let mut enc = new_encoder(encoding).unwrap();
            let mut dec = Decoder::new(&pf);
            let mut fb = DecodedFrame::new(pic.width, pic.height);
            let rect = Rect::new(0, 0, pic.width as u16, pic.height as u16);
            let what = format!("{name} {}", pic.name);
            let settings = EncoderSettings::default();
            round_trip(
                enc.as_mut(),
                &mut dec,
                &mut fb,
                &pic,
                rect,
                &pf,
                &settings,
                0,
                &what,
            );
            // A second, smaller update through the same streams.
            let rect = Rect::new(5, 7, 100, 50);
            round_trip(
                enc.as_mut(),
                &mut dec,
                &mut fb,
                &pic,
                rect,
                &pf,
                &settings,
                0,
                &what,
            );
        }
    }
}

#[test]
fn zrle_round_trips() {
    lossless_all_formats(number::ZRLE, "zrle");
}

#[test]
fn tight_round_trips() {
    lossless_all_formats(number::TIGHT, "tight");
}

#[test]
fn tight_jpeg_is_close_and_only_where_allowed() {
    let pic = pictures::gradient(200, 150);
    let rect = Rect::new(0, 0, 200, 150);
    for (fname, pf) in formats() {
        for q in [0u8, 5, 9] {
            let settings = EncoderSettings {
                compress_level: None,
                jpeg_quality: Some(q),
            };
            let mut enc = new_encoder(number::TIGHT).unwrap();
            let mut dec = Decoder::new(&pf);
            let mut fb = DecodedFrame::new(pic.width, pic.height);
            let what = format!("tight jpeg q{q} {fname}");
            // rfbproto allows JPEG only at 16 and 32 bpp: at 8 bpp the result must be exact.
            let tolerance = if pf.bits_per_pixel == 8 {
                0
            } else if q == 0 {
                64
            } else {
                40
            };
            let frame = PixelView {
                pixels: &pic.pixels,
                width: pic.width,
                height: pic.height,
                stride: pic.width,
            };
            // A separate encoder: the probe must not advance the zlib streams under test.
            let mut probe = Vec::new();
            new_encoder(number::TIGHT)
                .unwrap()
                .encode(&frame, rect, &pf, &settings, &mut probe);
            assert_eq!(
                probe[12] == 0x90,
                pf.bits_per_pixel != 8,
                "{what}: JPEG used where it should not be, or not used"
            );
            round_trip(
                enc.as_mut(),
                &mut dec,
                &mut fb,
                &pic,
                rect,
                &pf,
                &settings,
                tolerance,
                &what,
            );
        }
    }
}

#[test]
fn tight_jpeg_beats_lossless_on_a_photo_like_picture() {
    // Smooth noise: many colours, no runs; what JPEG is for.
    let mut pic = pictures::gradient(256, 256);
    let n = pictures::noise(256, 256, 77);
    for (p, r) in pic.pixels.iter_mut().zip(&n.pixels) {
        *p = (*p & 0x00f8_f8f8) | (r & 0x0007_0707);
    }
    let sizes: Vec<usize> = [None, Some(5)]
        .into_iter()
        .map(|q| {
            let settings = EncoderSettings {
                compress_level: None,
                jpeg_quality: q,
            };
            let pf = PixelFormat::NATIVE;
            let mut enc = new_encoder(number::TIGHT).unwrap();
            let mut dec = Decoder::new(&pf);
            let mut fb = DecodedFrame::new(pic.width, pic.height);
            let rect = Rect::new(0, 0, 256, 256);
            let tol = if q.is_some() { 40 } else { 0 };
            round_trip(
                enc.as_mut(),
                &mut dec,
                &mut fb,
                &pic,
                rect,
                &pf,
                &settings,
                tol,
                "photo",
            )
        })
        .collect();
    assert!(
        sizes[1] * 2 < sizes[0],
        "JPEG {} B vs lossless {} B",
        sizes[1],
        sizes[0]
    );
}

#[test]
fn rects_past_the_frame_are_clipped_not_a_panic() {
    let pic = pictures::text_like(40, 30, 3);
    let frame = PixelView {
        pixels: &pic.pixels,
        width: pic.width,
        height: pic.height,
        stride: pic.width,
    };
    for &(encoding, name) in &LOSSLESS[1..] {
        for rect in [
            Rect::new(30, 20, 100, 100),
            Rect::new(500, 500, 10, 10),
            Rect::new(0, 0, u16::MAX, u16::MAX),
        ] {
            let pf = PixelFormat::NATIVE;
            let mut out = Vec::new();
            let n = new_encoder(encoding).unwrap().encode(
                &frame,
                rect,
                &pf,
                &EncoderSettings::default(),
                &mut out,
            );
            let mut fb = DecodedFrame::new(40, 30);
            let mut cur = &out[..];
            Decoder::new(&pf)
                .decode_rects(&mut cur, n, &mut fb)
                .unwrap_or_else(|e| panic!("{name} {rect:?}: {e}"));
            assert!(cur.is_empty(), "{name} {rect:?}");
        }
    }
}
