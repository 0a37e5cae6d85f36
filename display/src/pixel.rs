//! Pixel formats: the surface's native one and the RFB `PIXEL_FORMAT` a client asks for.

use thiserror::Error;

/// A native surface pixel: `0x00RRGGBB`, 8 bits per channel.
pub type Native = u32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PixelFormatError {
    #[error("bits-per-pixel {0} is not 8, 16 or 32")]
    BitsPerPixel(u8),
    #[error("colour-map (non true-colour) pixel formats are not supported")]
    ColourMap,
    #[error("colour channel max {0} is not of the form 2^n - 1")]
    ChannelMax(u16),
    #[error("colour channel shift {0} does not fit the pixel size")]
    Shift(u8),
}

/// RFB `PIXEL_FORMAT` (RFC 6143 §7.4), restricted to true colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The surface's own layout: 32 bpp, depth 24, little-endian `0x00RRGGBB`.
    pub const NATIVE: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// Parses the 16-byte wire form, rejecting what the server cannot produce.
    pub fn from_bytes(b: &[u8; 16]) -> Result<Self, PixelFormatError> {
        let pf = PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        if !matches!(pf.bits_per_pixel, 8 | 16 | 32) {
            return Err(PixelFormatError::BitsPerPixel(pf.bits_per_pixel));
        }
        if b[3] == 0 {
            return Err(PixelFormatError::ColourMap);
        }
        for max in [pf.red_max, pf.green_max, pf.blue_max] {
            if max == 0 || (max & (max + 1)) != 0 {
                return Err(PixelFormatError::ChannelMax(max));
            }
        }
        for (shift, max) in [
            (pf.red_shift, pf.red_max),
            (pf.green_shift, pf.green_max),
            (pf.blue_shift, pf.blue_max),
        ] {
            let bits = 16 - max.leading_zeros() as u8;
            if u32::from(shift) + u32::from(bits) > u32::from(pf.bits_per_pixel) {
                return Err(PixelFormatError::Shift(shift));
            }
        }
        Ok(pf)
    }

    /// The 16-byte wire form (as sent in ServerInit).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = 1;
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// The client's pixel value for a native pixel (not yet laid out in bytes).
    #[inline]
    pub fn convert(&self, p: Native) -> u32 {
        if *self == Self::NATIVE {
            return p & 0x00ff_ffff;
        }
        let scale = |v: u32, max: u16| (v * u32::from(max) + 127) / 255;
        let r = scale((p >> 16) & 0xff, self.red_max);
        let g = scale((p >> 8) & 0xff, self.green_max);
        let b = scale(p & 0xff, self.blue_max);
        (r << self.red_shift) | (g << self.green_shift) | (b << self.blue_shift)
    }

    /// Appends one pixel in this format: `bytes_per_pixel` bytes in the client's byte order.
    #[inline]
    pub fn write_pixel(&self, p: Native, out: &mut Vec<u8>) {
        let v = self.convert(p);
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(v as u8),
            (16, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    /// True when ZRLE's and Tight's compact 3-byte `CPIXEL` applies (RFC 6143 §7.7.6).
    pub fn uses_cpixel(&self) -> bool {
        self.bits_per_pixel == 32
            && self.depth <= 24
            && self.red_max <= 255
            && self.green_max <= 255
            && self.blue_max <= 255
    }

    /// Appends one `CPIXEL`: the 3 significant bytes when [`uses_cpixel`](Self::uses_cpixel), else a full pixel.
    #[inline]
    pub fn write_cpixel(&self, p: Native, out: &mut Vec<u8>) {
        if !self.uses_cpixel() {
            return self.write_pixel(p, out);
        }
        let v = self.convert(p).to_le_bytes();
        // All colour bits sit in one 24-bit half of the 32-bit value; send that half.
        let fits_low = (self.red_shift.max(self.green_shift).max(self.blue_shift)) < 24
            && u32::from(self.red_max) << self.red_shift < 1 << 24
            && u32::from(self.green_max) << self.green_shift < 1 << 24
            && u32::from(self.blue_max) << self.blue_shift < 1 << 24;
        let bytes = if fits_low {
            [v[0], v[1], v[2]]
        } else {
            [v[1], v[2], v[3]]
        };
        if self.big_endian {
            out.extend_from_slice(&[bytes[2], bytes[1], bytes[0]]);
        } else {
            out.extend_from_slice(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_round_trips_through_wire_form() {
        let pf = PixelFormat::from_bytes(&PixelFormat::NATIVE.to_bytes()).unwrap();
        assert_eq!(pf, PixelFormat::NATIVE);
    }

    #[test]
    fn rgb565_big_endian() {
        let pf = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        };
        let mut out = Vec::new();
        pf.write_pixel(0x00ff_0000, &mut out);
        assert_eq!(out, [0xf8, 0x00]);
        out.clear();
        pf.write_pixel(0x0000_00ff, &mut out);
        assert_eq!(out, [0x00, 0x1f]);
    }

    #[test]
    fn bgr233() {
        let pf = PixelFormat {
            bits_per_pixel: 8,
            depth: 8,
            big_endian: false,
            red_max: 7,
            green_max: 7,
            blue_max: 3,
            red_shift: 0,
            green_shift: 3,
            blue_shift: 6,
        };
        assert_eq!(pf.convert(0x00ff_ffff), 0xff);
        assert_eq!(pf.convert(0x0000_00ff), 0xc0);
    }

    #[test]
    fn cpixel_is_three_bytes_for_native() {
        let mut out = Vec::new();
        PixelFormat::NATIVE.write_cpixel(0x0012_3456, &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12]);
    }

    #[test]
    fn rejects_colour_map_and_bad_bpp() {
        let mut b = PixelFormat::NATIVE.to_bytes();
        b[3] = 0;
        assert_eq!(
            PixelFormat::from_bytes(&b),
            Err(PixelFormatError::ColourMap)
        );
        let mut b = PixelFormat::NATIVE.to_bytes();
        b[0] = 24;
        assert_eq!(
            PixelFormat::from_bytes(&b),
            Err(PixelFormatError::BitsPerPixel(24))
        );
    }
}
