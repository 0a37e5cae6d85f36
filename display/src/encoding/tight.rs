//! Tight encoding (rfbproto "Tight Encoding"; not in RFC 6143).
//!
//! Each rectangle is split as TigerVNC splits it (at most 2048 pixels wide and 65536 pixels
//! in area), and each piece goes as the first that applies of:
//! - fill: one colour;
//! - mono: 2 colours, palette filter with a 1-bit bitmap, zlib stream 1;
//! - indexed: up to 256 colours, palette filter with byte indices, zlib stream 2;
//! - JPEG: more colours, when the client set a JPEG quality level and the format has 16 or
//!   32 bits per pixel (rfbproto allows JPEG only then);
//! - full colour: copy filter, zlib stream 0.
//!
//! Pixels are TPIXELs (3 bytes R, G, B for 32 bpp depth 24 with 8-bit channels). Filtered
//! data under 12 bytes goes uncompressed, as the spec requires. Each zlib stream lives for
//! the connection and is sync-flushed per rectangle; when the client changes its compression
//! level the affected stream is restarted at the new level and the rectangle carries that
//! stream's reset bit. The gradient filter (optional in the spec, emitted by neither
//! TigerVNC nor TurboVNC) is not used.

use flate2::{Compress, Compression};

use super::pack::{Packer, Palette, clip, for_runs};
use super::zrle::deflate_sync;
use super::{Encoder, EncoderSettings, PixelView, Rect, number};
use crate::pixel::PixelFormat;

/// The client compression level assumed when the client named none (TigerVNC's default too).
pub const DEFAULT_LEVEL: u8 = 2;

/// zlib levels for (palette streams, full-colour stream) at a client compression level.
/// Palette data (1 bit or 1 byte a pixel) is small and compresses well, so it gets the
/// stronger level; full-colour data is 3-4 bytes a pixel and compresses poorly, so a
/// weaker one keeps the time down. Measured on the benchmark pictures; level 2 keeps the
/// 1080p desktop under 16 ms.
fn zlib_levels(client: u8) -> (u8, u8) {
    const PALETTE: [u8; 10] = [0, 1, 3, 4, 6, 7, 9, 9, 9, 9];
    const FULL: [u8; 10] = [0, 1, 1, 2, 3, 4, 5, 6, 7, 9];
    let c = usize::from(client.min(9));
    (PALETTE[c], FULL[c])
}
/// rfbproto: a Tight rectangle is at most 2048 pixels wide.
pub const MAX_WIDTH: usize = 2048;
/// TigerVNC's (and TurboVNC's) largest Tight sub-rectangle, in pixels.
pub const MAX_AREA: usize = 65536;
/// Filtered data shorter than this is sent as is (rfbproto; fixed by compatibility).
pub const MIN_TO_COMPRESS: usize = 12;

const STREAM_FULL: usize = 0;
const STREAM_MONO: usize = 1;
const STREAM_INDEXED: usize = 2;

const FILL: u8 = 0x80;
const JPEG: u8 = 0x90;
const EXPLICIT_FILTER: u8 = 0x40;
const FILTER_PALETTE: u8 = 1;

/// JPEG quality for the client's quality levels 0..=9 (the scale TurboVNC uses).
const JPEG_QUALITY: [u8; 10] = [15, 29, 41, 42, 62, 77, 79, 86, 92, 100];

pub struct TightEncoder {
    packer: Option<Packer>,
    streams: [Option<(Compress, u8)>; 4],
    tile: Vec<u32>,
    pal: Palette,
    data: Vec<u8>,
    rgb: Vec<u8>,
}

impl Default for TightEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TightEncoder {
    pub fn new() -> Self {
        TightEncoder {
            packer: None,
            streams: [None, None, None, None],
            tile: Vec::new(),
            pal: Palette::new(),
            data: Vec::new(),
            rgb: Vec::new(),
        }
    }
}

/// Appends a Tight compact length (1 to 3 bytes, 7 bits each, the third byte 8).
pub fn write_compact_len(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len < 1 << 22);
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x4000 {
        out.extend_from_slice(&[(len as u8) | 0x80, (len >> 7) as u8]);
    } else {
        out.extend_from_slice(&[
            (len as u8) | 0x80,
            ((len >> 7) as u8) | 0x80,
            (len >> 14) as u8,
        ]);
    }
}

impl Encoder for TightEncoder {
    fn encoding(&self) -> i32 {
        number::TIGHT
    }

    fn encode(
        &mut self,
        frame: &PixelView<'_>,
        rect: Rect,
        pf: &PixelFormat,
        settings: &EncoderSettings,
        out: &mut Vec<u8>,
    ) -> u16 {
        let rect = clip(rect, frame);
        if self.packer.as_ref().is_none_or(|p| p.pf != *pf) {
            self.packer = Some(Packer::new(pf));
        }
        let (rx, ry) = (usize::from(rect.x), usize::from(rect.y));
        let (rw, rh) = (usize::from(rect.w), usize::from(rect.h));
        if rw == 0 || rh == 0 {
            // Nothing to draw; still one (empty) rectangle so the count matches the bytes.
            rect.write_header(number::TIGHT, out);
            out.push(FILL);
            let packer = self.packer.as_ref().expect("set above");
            packer.put_tpixel(0, out);
            return 1;
        }
        let mut count = 0u16;
        self.encode_region(frame, rx, ry, rw, rh, settings, out, &mut count);
        count
    }
}

/// Solid areas are searched in blocks of this size (as TigerVNC does)...
const SOLID_BLOCK: usize = 16;
/// ...and sent as fills of their own when at least this large, in pixels. Much larger than
/// TigerVNC's 2048: every extra rectangle costs a header, a palette and a zlib flush, and on
/// text screens cutting out small solid areas made the update larger (SeaBIOS screen:
/// 1,775 B at 2048, 1,288 B at 32768; the desktop picture also shrank slightly).
const SOLID_MIN_AREA: usize = 32768;
/// Regions smaller than this are not searched.
const SOLID_SEARCH_MIN_AREA: usize = SOLID_MIN_AREA;

/// Whether `w` x `h` pixels at (x, y) all have colour `c`.
fn all_colour(frame: &PixelView<'_>, x: usize, y: usize, w: usize, h: usize, c: u32) -> bool {
    (y..y + h).all(|yy| frame.row(x, yy, w).iter().all(|&p| p & 0x00ff_ffff == c))
}

impl TightEncoder {
    /// Finds a large solid area, sends it as a fill and the parts around it recursively;
    /// what has no large solid area goes in pieces. Fills cost a few bytes and no zlib time,
    /// which matters for text screens and desktops with plain backgrounds.
    #[allow(clippy::too_many_arguments)]
    fn encode_region(
        &mut self,
        frame: &PixelView<'_>,
        rx: usize,
        ry: usize,
        rw: usize,
        rh: usize,
        settings: &EncoderSettings,
        out: &mut Vec<u8>,
        count: &mut u16,
    ) {
        if rw == 0 || rh == 0 {
            return;
        }
        if rw * rh >= SOLID_SEARCH_MIN_AREA
            && let Some((x0, y0, x1, y1, c)) = find_solid(frame, rx, ry, rw, rh)
        {
            // Fills are split at 2048 pixels too: older TigerVNC clients reject wider ones.
            for fx in (x0..x1).step_by(MAX_WIDTH) {
                let fw = (x1 - fx).min(MAX_WIDTH);
                Rect::new(fx as u16, y0 as u16, fw as u16, (y1 - y0) as u16)
                    .write_header(number::TIGHT, out);
                out.push(FILL);
                let packer = self.packer.as_ref().expect("set by encode");
                packer.put_tpixel(packer.convert(c), out);
                *count = count.saturating_add(1);
            }
            self.encode_region(frame, rx, ry, rw, y0 - ry, settings, out, count);
            self.encode_region(frame, rx, y0, x0 - rx, y1 - y0, settings, out, count);
            self.encode_region(frame, x1, y0, rx + rw - x1, y1 - y0, settings, out, count);
            self.encode_region(frame, rx, y1, rw, ry + rh - y1, settings, out, count);
            return;
        }
        let sw = rw.min(MAX_WIDTH);
        let sh = (MAX_AREA / sw).clamp(1, rh);
        for y in (0..rh).step_by(sh) {
            let h = (rh - y).min(sh);
            for x in (0..rw).step_by(sw) {
                let w = (rw - x).min(sw);
                self.encode_piece(frame, rx + x, ry + y, w, h, settings, out);
                *count = count.saturating_add(1);
            }
        }
    }
}

/// The first solid 16x16 block of the region grown pixel by pixel (right, down, left, up)
/// while whole edges keep its colour; `None` unless that reaches [`SOLID_MIN_AREA`].
/// Returns (x0, y0, x1, y1, colour) with x1/y1 exclusive.
fn find_solid(
    frame: &PixelView<'_>,
    rx: usize,
    ry: usize,
    rw: usize,
    rh: usize,
) -> Option<(usize, usize, usize, usize, u32)> {
    let (xe, ye) = (rx + rw, ry + rh);
    // Solid areas found too small: their other blocks would only find them again.
    let mut rejected: Vec<(usize, usize, usize, usize)> = Vec::new();
    for by in (ry..ye).step_by(SOLID_BLOCK) {
        let bh = (ye - by).min(SOLID_BLOCK);
        if bh < SOLID_BLOCK {
            break;
        }
        for bx in (rx..xe).step_by(SOLID_BLOCK) {
            let bw = (xe - bx).min(SOLID_BLOCK);
            if bw < SOLID_BLOCK {
                break;
            }
            if rejected
                .iter()
                .any(|&(x0, y0, x1, y1)| bx >= x0 && bx + bw <= x1 && by >= y0 && by + bh <= y1)
            {
                continue;
            }
            let c = frame.at(bx, by) & 0x00ff_ffff;
            if !all_colour(frame, bx, by, bw, bh, c) {
                continue;
            }
            let (mut x0, mut y0, mut x1, mut y1) = (bx, by, bx + bw, by + bh);
            while x1 < xe && all_colour(frame, x1, y0, 1, y1 - y0, c) {
                x1 += 1;
            }
            while y1 < ye && all_colour(frame, x0, y1, x1 - x0, 1, c) {
                y1 += 1;
            }
            while x0 > rx && all_colour(frame, x0 - 1, y0, 1, y1 - y0, c) {
                x0 -= 1;
            }
            while y0 > ry && all_colour(frame, x0, y0 - 1, x1 - x0, 1, c) {
                y0 -= 1;
            }
            if (x1 - x0) * (y1 - y0) >= SOLID_MIN_AREA {
                return Some((x0, y0, x1, y1, c));
            }
            rejected.push((x0, y0, x1, y1));
        }
    }
    None
}

impl TightEncoder {
    #[allow(clippy::too_many_arguments)]
    fn encode_piece(
        &mut self,
        frame: &PixelView<'_>,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        settings: &EncoderSettings,
        out: &mut Vec<u8>,
    ) {
        let packer = self.packer.as_ref().expect("set by encode");
        Rect::new(x as u16, y as u16, w as u16, h as u16).write_header(number::TIGHT, out);
        packer.convert_rect(frame, x, y, w, h, &mut self.tile);
        let pal = &mut self.pal;
        pal.clear();
        let mut overflow = false;
        for_runs(&self.tile, |c, n| {
            if !overflow && pal.add_run(c, n, 256).is_none() {
                overflow = true;
            }
        });
        let (level, full_level) = zlib_levels(settings.compress_level.unwrap_or(DEFAULT_LEVEL));
        let tb = if packer.tpixel24 { 3 } else { packer.bpp };

        if !overflow && pal.colours.len() == 1 {
            out.push(FILL);
            packer.put_tpixel(pal.colours[0], out);
            return;
        }

        let n = pal.colours.len();
        self.data.clear();
        if !overflow && n == 2 {
            // The commoner colour as index 0: mostly-zero bitmaps compress best. (The
            // palette's index table is stale after this; the bitmap does not use it.)
            if pal.counts[1] > pal.counts[0] {
                pal.colours.swap(0, 1);
            }
            for row in self.tile.chunks_exact(w) {
                let mut acc = 0u8;
                for (i, &p) in row.iter().enumerate() {
                    if p == pal.colours[1] {
                        acc |= 0x80 >> (i % 8);
                    }
                    if i % 8 == 7 {
                        self.data.push(acc);
                        acc = 0;
                    }
                }
                if !w.is_multiple_of(8) {
                    self.data.push(acc);
                }
            }
            self.write_palette_rect(STREAM_MONO, level, out);
            return;
        }
        if !overflow && n * tb + w * h < w * h * tb {
            self.data.reserve(w * h);
            for &p in &self.tile {
                self.data.push(pal.index(p) as u8);
            }
            self.write_palette_rect(STREAM_INDEXED, level, out);
            return;
        }
        if let Some(q) = settings.jpeg_quality
            && packer.bpp >= 2
            && self.write_jpeg(frame, x, y, w, h, q, out)
        {
            return;
        }
        let packer = self.packer.as_ref().expect("set by encode");
        // Full colour, copy filter (implicit: no filter byte).
        self.data.reserve(w * h * tb);
        for &p in &self.tile {
            packer.put_tpixel(p, &mut self.data);
        }
        let reset = self.stream(STREAM_FULL, full_level);
        out.push(reset | ((STREAM_FULL as u8) << 4));
        self.write_data(STREAM_FULL, out);
    }

    /// Writes a palette-filter rectangle whose indices are in `self.data`.
    fn write_palette_rect(&mut self, id: usize, level: u8, out: &mut Vec<u8>) {
        let reset = self.stream(id, level);
        out.push(reset | ((id as u8) << 4) | EXPLICIT_FILTER);
        out.push(FILTER_PALETTE);
        out.push((self.pal.colours.len() - 1) as u8);
        let packer = self.packer.as_ref().expect("set by encode");
        for &c in &self.pal.colours {
            packer.put_tpixel(c, out);
        }
        self.write_data(id, out);
    }

    /// Makes sure stream `id` exists at `level`; returns the reset bit to send.
    fn stream(&mut self, id: usize, level: u8) -> u8 {
        match &self.streams[id] {
            Some((_, l)) if *l == level => 0,
            existing => {
                let reset = if existing.is_some() { 1 << id } else { 0 };
                self.streams[id] =
                    Some((Compress::new(Compression::new(level.into()), true), level));
                reset
            }
        }
    }

    /// Writes `self.data`: as is when short, else compact length and zlib data of stream `id`.
    fn write_data(&mut self, id: usize, out: &mut Vec<u8>) {
        if self.data.len() < MIN_TO_COMPRESS {
            out.extend_from_slice(&self.data);
            return;
        }
        let (z, _) = self.streams[id].as_mut().expect("created by stream()");
        // Compress into a side buffer: the length goes before the data.
        let mut comp = Vec::with_capacity(self.data.len() / 4 + 64);
        deflate_sync(z, &self.data, &mut comp);
        write_compact_len(comp.len(), out);
        out.extend_from_slice(&comp);
    }

    /// JPEG for a many-colour piece. Returns false (writing nothing) if the encoder fails.
    #[allow(clippy::too_many_arguments)]
    fn write_jpeg(
        &mut self,
        frame: &PixelView<'_>,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        level: u8,
        out: &mut Vec<u8>,
    ) -> bool {
        self.rgb.clear();
        self.rgb.reserve(w * h * 3);
        for row in y..y + h {
            for &p in frame.row(x, row, w) {
                self.rgb
                    .extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
            }
        }
        let quality = JPEG_QUALITY[usize::from(level.min(9))];
        let mut jpeg = Vec::with_capacity(w * h / 4 + 1024);
        let enc = jpeg_encoder::Encoder::new(&mut jpeg, quality);
        if let Err(e) = enc.encode(&self.rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb) {
            tracing::warn!("JPEG encoding failed ({e}); sending the rectangle lossless");
            return false;
        }
        if jpeg.len() >= 1 << 22 {
            return false;
        }
        out.push(JPEG);
        write_compact_len(jpeg.len(), out);
        out.extend_from_slice(&jpeg);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lengths() {
        let enc = |n| {
            let mut v = Vec::new();
            write_compact_len(n, &mut v);
            v
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(128), [0x80, 1]);
        assert_eq!(enc(10000), [0x90, 0x4e]);
        assert_eq!(enc(16384), [0x80, 0x80, 1]);
        assert_eq!(enc((1 << 22) - 1), [0xff, 0xff, 0xff]);
    }

    fn encode(px: &[u32], w: usize, h: usize, settings: EncoderSettings) -> (u16, Vec<u8>) {
        let frame = PixelView {
            pixels: px,
            width: w,
            height: h,
            stride: w,
        };
        let mut out = Vec::new();
        let n = TightEncoder::new().encode(
            &frame,
            Rect::new(0, 0, w as u16, h as u16),
            &PixelFormat::NATIVE,
            &settings,
            &mut out,
        );
        (n, out)
    }

    #[test]
    fn solid_is_a_fill_with_an_rgb_tpixel() {
        let (n, out) = encode(&[0x0012_3456; 64], 8, 8, EncoderSettings::default());
        assert_eq!(n, 1);
        assert_eq!(&out[12..], &[FILL, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn two_colours_are_a_mono_bitmap_uncompressed_when_short() {
        let mut px = [0u32; 8 * 2];
        px[0] = 0x00ff_ffff;
        px[9] = 0x00ff_ffff;
        let (_, out) = encode(&px, 8, 2, EncoderSettings::default());
        // Stream 1, explicit filter; palette of 2, the commoner colour first; 2 bitmap bytes
        // (< 12: no zlib, no length).
        let want = [
            0x50,
            FILTER_PALETTE,
            1,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0x80,
            0x40,
        ];
        assert_eq!(&out[12..], &want);
    }

    #[test]
    fn wide_and_large_rects_are_split_like_tigervnc() {
        let noise = |n: usize| -> Vec<u32> {
            (0..n as u32)
                .map(|i| i.wrapping_mul(2_654_435_761) >> 8)
                .collect()
        };
        let (n, _) = encode(&noise(4100 * 20), 4100, 20, EncoderSettings::default());
        assert_eq!(n, 3);
        // 65 rows of 1000 pixels per piece.
        let (n, _) = encode(&noise(1000 * 200), 1000, 200, EncoderSettings::default());
        assert_eq!(n, 4);
    }

    #[test]
    fn large_solid_areas_are_fills_at_most_2048_wide() {
        let (n, out) = encode(&vec![5u32; 3000 * 40], 3000, 40, EncoderSettings::default());
        assert_eq!(n, 2);
        assert_eq!(out.len(), 2 * (12 + 4));
        assert_eq!(&out[4..8], &[0x08, 0x00, 0, 40]);
        assert_eq!(out[12], FILL);
    }

    #[test]
    fn jpeg_only_with_a_quality_level() {
        let px: Vec<u32> = (0..64 * 64u32)
            .map(|i| i.wrapping_mul(2_654_435_761) >> 8)
            .collect();
        let (_, out) = encode(&px, 64, 64, EncoderSettings::default());
        assert_eq!(out[12] & 0xf0, 0x00);
        let (_, out) = encode(
            &px,
            64,
            64,
            EncoderSettings {
                compress_level: None,
                jpeg_quality: Some(5),
            },
        );
        assert_eq!(out[12], JPEG);
    }
}
