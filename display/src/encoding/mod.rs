//! RFB rectangle encodings. Each encoder owns its per-connection state (zlib streams),
//! so a session keeps one encoder per encoding it uses.

mod hextile;
pub(crate) mod pack;
mod raw;
mod tight;
mod zrle;

pub use hextile::HextileEncoder;
pub use raw::RawEncoder;
pub use tight::TightEncoder;
pub use zrle::ZrleEncoder;

use crate::pixel::{Native, PixelFormat};

/// Encoding numbers from the RFB registry (RFC 6143 §7.7, rfbproto).
pub mod number {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const HEXTILE: i32 = 5;
    pub const TIGHT: i32 = 7;
    pub const ZRLE: i32 = 16;
    pub const CURSOR: i32 = -239;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const LAST_RECT: i32 = -224;
    pub const POINTER_TYPE_CHANGE: i32 = -257;
    pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    pub const FENCE: i32 = -312;
    pub const CONTINUOUS_UPDATES: i32 = -313;
    pub const EXTENDED_CLIPBOARD: i32 = 0xc0a1_e5ce_u32 as i32;
    /// Tight JPEG quality levels 0..=9 are -32..=-23.
    pub const JPEG_QUALITY_0: i32 = -32;
    pub const JPEG_QUALITY_9: i32 = -23;
    /// Tight/zlib compression levels 0..=9 are -256..=-247.
    pub const COMPRESS_LEVEL_0: i32 = -256;
    pub const COMPRESS_LEVEL_9: i32 = -247;
}

/// A rectangle in framebuffer coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

impl Rect {
    pub fn new(x: u16, y: u16, w: u16, h: u16) -> Self {
        Rect { x, y, w, h }
    }

    pub fn area(&self) -> usize {
        usize::from(self.w) * usize::from(self.h)
    }

    /// Appends the 12-byte rectangle header of a FramebufferUpdate.
    pub fn write_header(&self, encoding: i32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.x.to_be_bytes());
        out.extend_from_slice(&self.y.to_be_bytes());
        out.extend_from_slice(&self.w.to_be_bytes());
        out.extend_from_slice(&self.h.to_be_bytes());
        out.extend_from_slice(&encoding.to_be_bytes());
    }
}

/// Read-only view of a whole frame of native pixels, row-major.
#[derive(Clone, Copy)]
pub struct PixelView<'a> {
    pub pixels: &'a [Native],
    pub width: usize,
    pub height: usize,
    /// Distance between rows, in pixels (>= width).
    pub stride: usize,
}

impl<'a> PixelView<'a> {
    /// The `w` pixels of row `y` starting at column `x`.
    #[inline]
    pub fn row(&self, x: usize, y: usize, w: usize) -> &'a [Native] {
        let start = y * self.stride + x;
        &self.pixels[start..start + w]
    }

    #[inline]
    pub fn at(&self, x: usize, y: usize) -> Native {
        self.pixels[y * self.stride + x]
    }
}

/// Client-chosen tuning that encoders read (from the pseudo-encodings a client sets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderSettings {
    /// zlib level 0..=9, when the client set one.
    pub compress_level: Option<u8>,
    /// JPEG quality 0..=9, when the client set one (Tight may then send JPEG).
    pub jpeg_quality: Option<u8>,
}

/// The encoder for a (non-pseudo) encoding number, or `None` when the server lacks it.
/// CopyRect is not here: it describes a move, not pixels, and the session emits it itself.
pub fn new_encoder(encoding: i32) -> Option<Box<dyn Encoder>> {
    match encoding {
        number::RAW => Some(Box::new(RawEncoder)),
        number::HEXTILE => Some(Box::new(HextileEncoder::new())),
        number::ZRLE => Some(Box::new(ZrleEncoder::new())),
        number::TIGHT => Some(Box::new(TightEncoder::new())),
        _ => None,
    }
}

/// One rectangle encoding, with whatever state it keeps across updates of one connection.
pub trait Encoder: Send {
    /// The encoding number this encoder writes.
    fn encoding(&self) -> i32;

    /// Appends complete rectangles (12-byte headers included) that together cover `rect`
    /// of `frame`, in pixel format `pf`. Returns how many rectangles it wrote.
    fn encode(
        &mut self,
        frame: &PixelView<'_>,
        rect: Rect,
        pf: &PixelFormat,
        settings: &EncoderSettings,
        out: &mut Vec<u8>,
    ) -> u16;
}
