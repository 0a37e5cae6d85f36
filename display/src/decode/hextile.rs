//! Hextile decoding (RFC 6143 §7.7.4). Strict where the spec is: a tile that needs a
//! background or foreground the rectangle never set, or a subrectangle leaving its tile, is
//! an error.

use std::io::Read;

use super::{DecodedFrame, PixelReader, Result, malformed, read_u8};
use crate::encoding::Rect;

const RAW: u8 = 1;
const BACKGROUND: u8 = 2;
const FOREGROUND: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;

pub(super) fn decode<R: Read>(
    px: &PixelReader,
    rect: Rect,
    r: &mut R,
    fb: &mut DecodedFrame,
) -> Result<()> {
    let (rx, ry) = (usize::from(rect.x), usize::from(rect.y));
    let (rw, rh) = (usize::from(rect.w), usize::from(rect.h));
    let mut bg = None;
    let mut fg = None;
    let mut raw = vec![0u8; 16 * 16 * px.bpp];
    for ty in (0..rh).step_by(16) {
        let th = (rh - ty).min(16);
        for tx in (0..rw).step_by(16) {
            let tw = (rw - tx).min(16);
            let (x0, y0) = (rx + tx, ry + ty);
            let flags = read_u8(r)?;
            if flags & RAW != 0 {
                let buf = &mut raw[..tw * th * px.bpp];
                r.read_exact(buf)?;
                for (i, b) in buf.chunks_exact(px.bpp).enumerate() {
                    fb.set(x0 + i % tw, y0 + i / tw, px.pixel(b));
                }
                continue;
            }
            if flags & BACKGROUND != 0 {
                bg = Some(px.read_pixel(r)?);
            }
            let bgp = bg.ok_or(malformed("Hextile", "tile without a background"))?;
            fb.fill(x0, y0, tw, th, bgp);
            if flags & FOREGROUND != 0 {
                fg = Some(px.read_pixel(r)?);
            }
            if flags & ANY_SUBRECTS == 0 {
                continue;
            }
            let n = read_u8(r)?;
            let coloured = flags & SUBRECTS_COLOURED != 0;
            for _ in 0..n {
                let colour = if coloured {
                    px.read_pixel(r)?
                } else {
                    fg.ok_or(malformed("Hextile", "subrects without a foreground"))?
                };
                let xy = read_u8(r)?;
                let wh = read_u8(r)?;
                let (sx, sy) = (usize::from(xy >> 4), usize::from(xy & 15));
                let (sw, sh) = (usize::from(wh >> 4) + 1, usize::from(wh & 15) + 1);
                if sx + sw > tw || sy + sh > th {
                    return Err(malformed("Hextile", "subrectangle outside its tile"));
                }
                fb.fill(x0 + sx, y0 + sy, sw, sh, colour);
            }
        }
    }
    Ok(())
}
