//! Raw encoding (RFC 6143 §7.7.1): every pixel, in the client's format.

use super::{Encoder, EncoderSettings, PixelView, Rect, number};
use crate::pixel::PixelFormat;

#[derive(Debug, Default)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    fn encoding(&self) -> i32 {
        number::RAW
    }

    fn encode(
        &mut self,
        frame: &PixelView<'_>,
        rect: Rect,
        pf: &PixelFormat,
        _settings: &EncoderSettings,
        out: &mut Vec<u8>,
    ) -> u16 {
        rect.write_header(number::RAW, out);
        out.reserve(rect.area() * pf.bytes_per_pixel());
        for y in usize::from(rect.y)..usize::from(rect.y) + usize::from(rect.h) {
            let row = frame.row(usize::from(rect.x), y, usize::from(rect.w));
            if *pf == PixelFormat::NATIVE {
                for &p in row {
                    out.extend_from_slice(&(p & 0x00ff_ffff).to_le_bytes());
                }
            } else {
                for &p in row {
                    pf.write_pixel(p, out);
                }
            }
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_and_pixels() {
        let pixels = [0x0011_2233u32, 0x0044_5566, 0x0077_8899, 0x00aa_bbcc];
        let frame = PixelView {
            pixels: &pixels,
            width: 2,
            height: 2,
            stride: 2,
        };
        let mut out = Vec::new();
        let n = RawEncoder.encode(
            &frame,
            Rect::new(1, 0, 1, 2),
            &PixelFormat::NATIVE,
            &EncoderSettings::default(),
            &mut out,
        );
        assert_eq!(n, 1);
        assert_eq!(&out[..12], &[0, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
        assert_eq!(&out[12..], &[0x66, 0x55, 0x44, 0, 0xcc, 0xbb, 0xaa, 0]);
    }
}
