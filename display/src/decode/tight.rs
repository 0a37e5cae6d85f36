//! Tight decoding (rfbproto "Tight Encoding"): fill, JPEG (RGB or greyscale JFIF), and basic
//! compression with the copy, palette and gradient filters over four zlib streams that live
//! for the connection; also "basic compression without zlib" (0xA0/0xE0).

use std::io::Read;

use flate2::Decompress;

use super::{
    DecodeError, DecodedFrame, PixelReader, Result, client_to_native, inflate_exact, malformed,
    read_u8,
};
use crate::encoding::Rect;

const E: &str = "Tight";
/// Filtered data shorter than this was sent as is (rfbproto).
const MIN_TO_COMPRESS: usize = 12;

pub(super) struct TightState {
    z: [Decompress; 4],
    comp: Vec<u8>,
    data: Vec<u8>,
}

/// Reads a Tight compact length (1 to 3 bytes).
pub fn read_compact_len<R: Read>(r: &mut R) -> Result<usize> {
    let b0 = read_u8(r)?;
    let mut len = usize::from(b0 & 0x7f);
    if b0 & 0x80 != 0 {
        let b1 = read_u8(r)?;
        len |= usize::from(b1 & 0x7f) << 7;
        if b1 & 0x80 != 0 {
            len |= usize::from(read_u8(r)?) << 14;
        }
    }
    Ok(len)
}

fn read_vec<R: Read>(r: &mut R, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    r.take(len as u64).read_to_end(buf)?;
    if buf.len() != len {
        return Err(DecodeError::Truncated);
    }
    Ok(())
}

impl TightState {
    pub fn new() -> Self {
        TightState {
            z: std::array::from_fn(|_| Decompress::new(true)),
            comp: Vec::new(),
            data: Vec::new(),
        }
    }

    pub fn decode<R: Read>(
        &mut self,
        px: &PixelReader,
        rect: Rect,
        r: &mut R,
        fb: &mut DecodedFrame,
    ) -> Result<()> {
        let ctl = read_u8(r)?;
        // Resets apply whatever the rectangle's type.
        for (i, z) in self.z.iter_mut().enumerate() {
            if ctl & (1 << i) != 0 {
                *z = Decompress::new(true);
            }
        }
        let (x, y) = (usize::from(rect.x), usize::from(rect.y));
        let (w, h) = (usize::from(rect.w), usize::from(rect.h));
        let tb = px.tpixel_len();
        let kind = ctl >> 4;
        if kind == 0x8 {
            let mut b = [0u8; 4];
            r.read_exact(&mut b[..tb])?;
            fb.fill(x, y, w, h, px.tpixel(&b));
            return Ok(());
        }
        if w > 2048 {
            return Err(malformed(E, "rectangle wider than 2048 pixels"));
        }
        if kind == 0x9 {
            return self.decode_jpeg(px, x, y, w, h, r, fb);
        }
        let (no_zlib, explicit_filter, stream) = match kind {
            0x0..=0x7 => (false, kind & 4 != 0, usize::from(kind & 3)),
            0xA => (true, false, 0),
            0xE => (true, true, 0),
            _ => return Err(malformed(E, "unknown compression type")),
        };
        let filter = if explicit_filter { read_u8(r)? } else { 0 };
        let mut palette = [0u32; 256];
        let mut npal = 0;
        let row_size = match filter {
            0 => w * tb,
            1 => {
                npal = usize::from(read_u8(r)?) + 1;
                let mut b = [0u8; 4];
                for p in palette.iter_mut().take(npal) {
                    r.read_exact(&mut b[..tb])?;
                    *p = px.tpixel(&b);
                }
                if npal == 2 { w.div_ceil(8) } else { w }
            }
            2 => {
                if px.bpp < 2 {
                    return Err(malformed(
                        E,
                        "gradient filter needs 16 or 32 bits per pixel",
                    ));
                }
                w * tb
            }
            _ => return Err(malformed(E, "unknown filter")),
        };
        let size = row_size * h;
        if size < MIN_TO_COMPRESS {
            read_vec(r, size, &mut self.data)?;
        } else {
            let len = read_compact_len(r)?;
            if no_zlib {
                if len != size {
                    return Err(malformed(
                        E,
                        "uncompressed length does not match the rectangle",
                    ));
                }
                read_vec(r, len, &mut self.data)?;
            } else {
                // zlib never grows data by more than a small fraction; anything longer is bogus.
                if len > size + size / 8 + 1024 {
                    return Err(malformed(
                        E,
                        "compressed length larger than the rectangle can need",
                    ));
                }
                read_vec(r, len, &mut self.comp)?;
                self.data.clear();
                self.data.resize(size, 0);
                inflate_exact(&mut self.z[stream], &self.comp, &mut self.data)?;
            }
        }
        let data = &self.data;
        match filter {
            0 => {
                for (i, b) in data.chunks_exact(tb).enumerate() {
                    fb.set(x + i % w, y + i / w, px.tpixel(b));
                }
            }
            1 if npal == 2 => {
                for (row, bits) in data.chunks_exact(row_size).enumerate() {
                    for col in 0..w {
                        let bit = (bits[col / 8] >> (7 - col % 8)) & 1;
                        fb.set(x + col, y + row, palette[usize::from(bit)]);
                    }
                }
            }
            1 => {
                for (i, &idx) in data.iter().enumerate() {
                    let idx = usize::from(idx);
                    if idx >= npal {
                        return Err(malformed(E, "palette index out of range"));
                    }
                    fb.set(x + i % w, y + i / w, palette[idx]);
                }
            }
            _ => gradient(px, data, x, y, w, h, fb),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_jpeg<R: Read>(
        &mut self,
        px: &PixelReader,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        r: &mut R,
        fb: &mut DecodedFrame,
    ) -> Result<()> {
        if px.bpp < 2 {
            return Err(malformed(E, "JPEG needs 16 or 32 bits per pixel"));
        }
        let len = read_compact_len(r)?;
        read_vec(r, len, &mut self.comp)?;
        let mut dec = jpeg_decoder::Decoder::new(&self.comp[..]);
        // The picture must be the rectangle; cap the decoder's buffers to that.
        dec.set_max_decoding_buffer_size(w * h * 4 + 4096);
        let pixels = dec.decode().map_err(|e| DecodeError::Jpeg(e.to_string()))?;
        let info = dec.info().ok_or(DecodeError::Jpeg("no frame".into()))?;
        if usize::from(info.width) != w || usize::from(info.height) != h {
            return Err(DecodeError::Jpeg(
                "picture size differs from the rectangle".into(),
            ));
        }
        let comps = match info.pixel_format {
            jpeg_decoder::PixelFormat::RGB24 => 3,
            jpeg_decoder::PixelFormat::L8 => 1,
            _ => return Err(DecodeError::Jpeg("unsupported JPEG pixel format".into())),
        };
        if pixels.len() < w * h * comps {
            return Err(DecodeError::Jpeg("short picture".into()));
        }
        for (i, c) in pixels.chunks_exact(comps).take(w * h).enumerate() {
            let rgb = if comps == 3 {
                (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2])
            } else {
                u32::from(c[0]) * 0x0001_0101
            };
            // The client shows the JPEG's colours in its own pixel format.
            let native = client_to_native(&px.pf, px.pf.convert(rgb));
            fb.set(x + i % w, y + i / w, native);
        }
        Ok(())
    }
}

/// Undoes the gradient filter: each component was sent as its difference from the
/// prediction left + above - above-left (clamped to the component's range), wrapping.
/// Components are the R, G, B bytes of 3-byte TPIXELs, else the pixel format's channels.
fn gradient(
    px: &PixelReader,
    data: &[u8],
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    fb: &mut DecodedFrame,
) {
    let pf = &px.pf;
    let (shifts, maxes): ([u32; 3], [u32; 3]) = if px.tpixel24 {
        ([16, 8, 0], [255; 3])
    } else {
        (
            [
                pf.red_shift.into(),
                pf.green_shift.into(),
                pf.blue_shift.into(),
            ],
            [pf.red_max.into(), pf.green_max.into(), pf.blue_max.into()],
        )
    };
    let tb = px.tpixel_len();
    let mut above = vec![[0u32; 3]; w];
    let mut row = vec![[0u32; 3]; w];
    for yy in 0..h {
        for xx in 0..w {
            let b = &data[(yy * w + xx) * tb..][..tb];
            let raw = if px.tpixel24 {
                (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
            } else {
                let mut v = [0u8; 4];
                v[..tb].copy_from_slice(b);
                match (tb, pf.big_endian) {
                    (2, false) => u32::from(u16::from_le_bytes([v[0], v[1]])),
                    (2, true) => u32::from(u16::from_be_bytes([v[0], v[1]])),
                    (_, false) => u32::from_le_bytes(v),
                    (_, true) => u32::from_be_bytes(v),
                }
            };
            let mut value = 0u32;
            for c in 0..3 {
                let left = if xx > 0 { row[xx - 1][c] } else { 0 };
                let up = above[xx][c];
                let upleft = if xx > 0 { above[xx - 1][c] } else { 0 };
                let max = maxes[c];
                let pred = (i64::from(left) + i64::from(up) - i64::from(upleft))
                    .clamp(0, i64::from(max)) as u32;
                let diff = raw.checked_shr(shifts[c]).unwrap_or(0) & max;
                let v = (pred + diff) & max;
                row[xx][c] = v;
                value |= v << shifts[c];
            }
            let native = if px.tpixel24 {
                value
            } else {
                client_to_native(pf, value)
            };
            fb.set(x + xx, y + yy, native);
        }
        std::mem::swap(&mut above, &mut row);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DecodedFrame, Decoder};
    use crate::encoding::{Rect, number};
    use crate::pixel::PixelFormat;

    fn decode(w: u16, h: u16, body: &[u8]) -> DecodedFrame {
        let mut bytes = Vec::new();
        Rect::new(0, 0, w, h).write_header(number::TIGHT, &mut bytes);
        bytes.extend_from_slice(body);
        let mut fb = DecodedFrame::new(w.into(), h.into());
        let mut cur = &bytes[..];
        Decoder::new(&PixelFormat::NATIVE)
            .decode_rect(&mut cur, &mut fb)
            .unwrap();
        assert!(cur.is_empty());
        fb
    }

    #[test]
    fn gradient_filter_one_row_short_data() {
        // Differences from the left neighbour, wrapping; 9 bytes (< 12): no zlib, no length.
        let fb = decode(3, 1, &[0x40, 2, 10, 20, 30, 5, 0, 251, 240, 236, 232]);
        assert_eq!(fb.pixels, [0x000a_141e, 0x000f_1419, 0x00ff_0001]);
    }

    #[test]
    fn gradient_filter_clamps_the_prediction() {
        // 2x2 through "basic compression without zlib" (0xE0: explicit filter), 12 bytes.
        // D's prediction C + B - A = (100, -50, -100) clamps to (100, 0, 0).
        let body = [
            0xe0, 2, 12, 100, 100, 100, 100, 206, 156, 156, 156, 156, 10, 5, 250,
        ];
        let fb = decode(2, 2, &body);
        assert_eq!(fb.pixels, [0x0064_6464, 0x00c8_3200, 0, 0x006e_05fa]);
    }

    #[test]
    fn reset_bits_restart_streams() {
        use crate::encoding::{EncoderSettings, PixelView, new_encoder};
        // Two updates through one stream, then a rectangle that resets stream 1 and starts a
        // new zlib stream there: decodes only if the reset is honoured.
        let px: Vec<u32> = (0..64u32 * 8)
            .map(|i| if i % 3 == 0 { 0xffffff } else { 0 })
            .collect();
        let frame = PixelView {
            pixels: &px,
            width: 64,
            height: 8,
            stride: 64,
        };
        let s = EncoderSettings::default();
        let mut enc = new_encoder(number::TIGHT).unwrap();
        let mut a = Vec::new();
        enc.encode(
            &frame,
            Rect::new(0, 0, 64, 8),
            &PixelFormat::NATIVE,
            &s,
            &mut a,
        );
        let mut fresh = Vec::new();
        new_encoder(number::TIGHT).unwrap().encode(
            &frame,
            Rect::new(0, 0, 64, 8),
            &PixelFormat::NATIVE,
            &s,
            &mut fresh,
        );
        assert_eq!(fresh[12] & 0xf0, 0x50, "mono rect on stream 1");
        fresh[12] |= 0x02;
        let mut dec = Decoder::new(&PixelFormat::NATIVE);
        let mut fb = DecodedFrame::new(64, 8);
        dec.decode_rect(&mut &a[..], &mut fb).unwrap();
        dec.decode_rect(&mut &fresh[..], &mut fb).unwrap();
        let want: Vec<u32> = px.iter().map(|p| p & 0xffffff).collect();
        assert_eq!(fb.pixels, want);
        // Without the reset bit the second stream's header breaks the first.
        fresh[12] &= !0x02;
        let mut dec = Decoder::new(&PixelFormat::NATIVE);
        dec.decode_rect(&mut &a[..], &mut fb).unwrap();
        assert!(dec.decode_rect(&mut &fresh[..], &mut fb).is_err());
    }
}
