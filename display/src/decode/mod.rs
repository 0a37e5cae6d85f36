//! Client-side decoders for the rectangle encodings the server writes (Raw, Hextile, ZRLE,
//! Tight including its JPEG rectangles), into native pixels. Used by tests, by the test
//! client and by the encoding benchmark; they also let a tool find where an update ends.
//!
//! The decoders read from any [`std::io::Read`], so the same code serves a byte slice and a
//! socket. Input is untrusted: every length is checked against the rectangle and the
//! framebuffer, allocations are bounded by the rectangle's size, and malformed data is an
//! error, never a panic. ZRLE's one zlib stream and Tight's four live in the [`Decoder`],
//! which is therefore one per connection.

mod hextile;
mod tight;
mod zrle;

use std::io::Read;

use thiserror::Error;

use crate::encoding::{Rect, number};
use crate::pixel::{Native, PixelFormat};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("input ended inside a rectangle")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("rectangle {rect:?} lies outside the {width}x{height} framebuffer")]
    OutOfBounds {
        rect: Rect,
        width: usize,
        height: usize,
    },
    #[error("encoding {0} is not supported by this decoder")]
    Unsupported(i32),
    #[error("malformed {encoding} data: {what}")]
    Malformed {
        encoding: &'static str,
        what: &'static str,
    },
    #[error("zlib stream error: {0}")]
    Zlib(String),
    #[error("JPEG error: {0}")]
    Jpeg(String),
}

impl From<std::io::Error> for DecodeError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DecodeError::Truncated
        } else {
            DecodeError::Io(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, DecodeError>;

pub(crate) fn malformed(encoding: &'static str, what: &'static str) -> DecodeError {
    DecodeError::Malformed { encoding, what }
}

/// The client's copy of the framebuffer, in native `0x00RRGGBB` pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedFrame {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Native>,
}

impl DecodedFrame {
    pub fn new(width: usize, height: usize) -> Self {
        DecodedFrame {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    fn check(&self, rect: Rect) -> Result<()> {
        if usize::from(rect.x) + usize::from(rect.w) > self.width
            || usize::from(rect.y) + usize::from(rect.h) > self.height
        {
            return Err(DecodeError::OutOfBounds {
                rect,
                width: self.width,
                height: self.height,
            });
        }
        Ok(())
    }

    /// Fills a rectangle already checked to be inside the frame.
    pub(crate) fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, p: Native) {
        for row in y..y + h {
            let start = row * self.width + x;
            self.pixels[start..start + w].fill(p);
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, x: usize, y: usize, p: Native) {
        self.pixels[y * self.width + x] = p;
    }
}

/// The native pixel a client pixel value stands for: each channel scaled back to 8 bits.
/// For lossless encodings the decoded frame equals this applied to `pf.convert(source)`.
pub fn client_to_native(pf: &PixelFormat, v: u32) -> Native {
    if *pf == PixelFormat::NATIVE {
        return v & 0x00ff_ffff;
    }
    let chan = |shift: u8, max: u16| {
        let max = u32::from(max);
        let c = v.checked_shr(u32::from(shift)).unwrap_or(0) & max;
        (c * 255 + max / 2) / max
    };
    (chan(pf.red_shift, pf.red_max) << 16)
        | (chan(pf.green_shift, pf.green_max) << 8)
        | chan(pf.blue_shift, pf.blue_max)
}

/// How to read pixels of one client pixel format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PixelReader {
    pub pf: PixelFormat,
    pub bpp: usize,
    pub cpixel: usize,
    cpixel_high: bool,
    pub tpixel24: bool,
}

impl PixelReader {
    fn new(pf: &PixelFormat) -> Self {
        let uses_cpixel = pf.uses_cpixel();
        PixelReader {
            pf: *pf,
            bpp: pf.bytes_per_pixel(),
            cpixel: if uses_cpixel { 3 } else { pf.bytes_per_pixel() },
            cpixel_high: uses_cpixel && !crate::encoding::pack::cpixel_fits_low(pf),
            tpixel24: crate::encoding::pack::tight_uses_tpixel24(pf),
        }
    }

    /// A full pixel from exactly `bpp` bytes.
    #[inline]
    pub fn pixel(&self, b: &[u8]) -> Native {
        let v = match (self.bpp, self.pf.big_endian) {
            (1, _) => u32::from(b[0]),
            (2, false) => u32::from(u16::from_le_bytes([b[0], b[1]])),
            (2, true) => u32::from(u16::from_be_bytes([b[0], b[1]])),
            (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (_, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        };
        client_to_native(&self.pf, v)
    }

    /// A ZRLE CPIXEL from exactly `cpixel` bytes.
    #[inline]
    pub fn cpixel(&self, b: &[u8]) -> Native {
        if self.cpixel != 3 {
            return self.pixel(b);
        }
        let lo = if self.pf.big_endian {
            u32::from_be_bytes([0, b[0], b[1], b[2]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], 0])
        };
        let v = if self.cpixel_high { lo << 8 } else { lo };
        client_to_native(&self.pf, v)
    }

    /// Bytes of a Tight TPIXEL.
    pub fn tpixel_len(&self) -> usize {
        if self.tpixel24 { 3 } else { self.bpp }
    }

    /// A Tight TPIXEL from exactly `tpixel_len` bytes.
    #[inline]
    pub fn tpixel(&self, b: &[u8]) -> Native {
        if !self.tpixel24 {
            return self.pixel(b);
        }
        // R, G, B bytes; with 8-bit channels the native value is the same three bytes.
        (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
    }

    pub fn read_pixel<R: Read>(&self, r: &mut R) -> Result<Native> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b[..self.bpp])?;
        Ok(self.pixel(&b))
    }
}

pub(crate) fn read_u8<R: Read>(r: &mut R) -> Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

/// The largest framebuffer a DesktopSize may ask for (8192 x 4096): bounds our memory
/// whatever a server sends.
pub const MAX_FRAME_PIXELS: usize = 8192 * 4096;

/// What one rectangle of a FramebufferUpdate was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedRect {
    pub rect: Rect,
    pub encoding: i32,
}

/// Decodes rectangles of one connection, keeping the zlib streams ZRLE and Tight need.
pub struct Decoder {
    px: PixelReader,
    zrle: zrle::ZrleState,
    tight: tight::TightState,
}

impl Decoder {
    pub fn new(pf: &PixelFormat) -> Self {
        Decoder {
            px: PixelReader::new(pf),
            zrle: zrle::ZrleState::new(),
            tight: tight::TightState::new(),
        }
    }

    /// A SetPixelFormat changes how pixels read; the zlib streams go on.
    pub fn set_pixel_format(&mut self, pf: &PixelFormat) {
        self.px = PixelReader::new(pf);
    }

    /// Reads one rectangle, header included, and draws it into `fb`. DesktopSize resizes
    /// `fb`; LastRect is returned for the caller to stop on.
    pub fn decode_rect<R: Read>(
        &mut self,
        r: &mut R,
        fb: &mut DecodedFrame,
    ) -> Result<DecodedRect> {
        let mut h = [0u8; 12];
        r.read_exact(&mut h)?;
        let rect = Rect::new(
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
            u16::from_be_bytes([h[4], h[5]]),
            u16::from_be_bytes([h[6], h[7]]),
        );
        let encoding = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match encoding {
            number::LAST_RECT => {}
            number::DESKTOP_SIZE => {
                if rect.area() > MAX_FRAME_PIXELS {
                    return Err(DecodeError::Malformed {
                        encoding: "DesktopSize",
                        what: "framebuffer larger than this decoder accepts",
                    });
                }
                *fb = DecodedFrame::new(rect.w.into(), rect.h.into());
            }
            _ => self.decode_body(encoding, rect, r, fb)?,
        }
        Ok(DecodedRect { rect, encoding })
    }

    /// Reads `count` rectangles (a FramebufferUpdate's body), stopping early at LastRect.
    pub fn decode_rects<R: Read>(
        &mut self,
        r: &mut R,
        count: u16,
        fb: &mut DecodedFrame,
    ) -> Result<Vec<DecodedRect>> {
        let mut rects = Vec::new();
        for _ in 0..count {
            let d = self.decode_rect(r, fb)?;
            rects.push(d);
            if d.encoding == number::LAST_RECT {
                break;
            }
        }
        Ok(rects)
    }

    /// Reads the data of one rectangle whose header was already read.
    pub fn decode_body<R: Read>(
        &mut self,
        encoding: i32,
        rect: Rect,
        r: &mut R,
        fb: &mut DecodedFrame,
    ) -> Result<()> {
        fb.check(rect)?;
        match encoding {
            number::RAW => decode_raw(&self.px, rect, r, fb),
            number::HEXTILE => hextile::decode(&self.px, rect, r, fb),
            number::ZRLE => self.zrle.decode(&self.px, rect, r, fb),
            number::TIGHT => self.tight.decode(&self.px, rect, r, fb),
            other => Err(DecodeError::Unsupported(other)),
        }
    }
}

fn decode_raw<R: Read>(
    px: &PixelReader,
    rect: Rect,
    r: &mut R,
    fb: &mut DecodedFrame,
) -> Result<()> {
    let (x, y, w) = (
        usize::from(rect.x),
        usize::from(rect.y),
        usize::from(rect.w),
    );
    let mut row = vec![0u8; w * px.bpp];
    for yy in y..y + usize::from(rect.h) {
        r.read_exact(&mut row)?;
        for (i, b) in row.chunks_exact(px.bpp).enumerate() {
            fb.set(x + i, yy, px.pixel(b));
        }
    }
    Ok(())
}

/// Inflates exactly `out.len()` bytes from `input` through a persistent stream.
pub(crate) fn inflate_exact(
    z: &mut flate2::Decompress,
    input: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let mut inp = 0;
    let mut outp = 0;
    while outp < out.len() {
        let before_in = z.total_in();
        let before_out = z.total_out();
        z.decompress(
            &input[inp..],
            &mut out[outp..],
            flate2::FlushDecompress::Sync,
        )
        .map_err(|e| DecodeError::Zlib(e.to_string()))?;
        let used = (z.total_in() - before_in) as usize;
        let made = (z.total_out() - before_out) as usize;
        inp += used;
        outp += made;
        if used == 0 && made == 0 {
            return Err(DecodeError::Zlib(
                "compressed data ends before the rectangle".into(),
            ));
        }
    }
    // The rest of the input (the sync-flush marker) must go through the stream too, or the
    // next rectangle's data would start in the middle of a block.
    let mut scratch = [0u8; 64];
    while inp < input.len() {
        let before_in = z.total_in();
        let before_out = z.total_out();
        z.decompress(&input[inp..], &mut scratch, flate2::FlushDecompress::Sync)
            .map_err(|e| DecodeError::Zlib(e.to_string()))?;
        if z.total_out() != before_out {
            return Err(DecodeError::Zlib(
                "more data than the rectangle holds".into(),
            ));
        }
        let used = (z.total_in() - before_in) as usize;
        if used == 0 {
            break;
        }
        inp += used;
    }
    Ok(())
}

/// Bounds-checked reading from decompressed data.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }

    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    #[inline]
    pub fn u8(&mut self, e: &'static str) -> Result<u8> {
        Ok(self.take(1, e)?[0])
    }

    #[inline]
    pub fn take(&mut self, n: usize, e: &'static str) -> Result<&'a [u8]> {
        if n > self.b.len() {
            return Err(malformed(e, "tile data ends early"));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
}
