//! ZRLE decoding (RFC 6143 §7.7.6): one zlib stream for the whole connection.

use std::io::Read;

use flate2::{Decompress, FlushDecompress};

use super::{Cursor, DecodeError, DecodedFrame, PixelReader, Result, malformed};
use crate::encoding::Rect;

const E: &str = "ZRLE";

pub(super) struct ZrleState {
    z: Decompress,
    comp: Vec<u8>,
    data: Vec<u8>,
}

impl ZrleState {
    pub fn new() -> Self {
        ZrleState {
            z: Decompress::new(true),
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
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        let (rw, rh) = (usize::from(rect.w), usize::from(rect.h));
        let tiles = rw.div_ceil(64) * rh.div_ceil(64);
        // The most any valid tile can take: subencoding, a 127-colour palette, and per pixel a
        // pixel plus a run-length byte or so. Beyond this the data cannot be valid.
        let max_data = tiles * (1 + 127 * px.cpixel) + rw * rh * (px.cpixel + 2) + 16;
        if len > max_data + max_data / 8 + 1024 {
            return Err(malformed(
                E,
                "compressed length larger than the rectangle can need",
            ));
        }
        self.comp.clear();
        r.take(len as u64).read_to_end(&mut self.comp)?;
        if self.comp.len() != len {
            return Err(DecodeError::Truncated);
        }
        self.data.clear();
        let mut inp = 0;
        loop {
            self.data.reserve(64 * 1024);
            let (bi, bo) = (self.z.total_in(), self.z.total_out());
            self.z
                .decompress_vec(&self.comp[inp..], &mut self.data, FlushDecompress::Sync)
                .map_err(|e| DecodeError::Zlib(e.to_string()))?;
            inp += (self.z.total_in() - bi) as usize;
            if self.data.len() > max_data {
                return Err(malformed(E, "more tile data than the rectangle holds"));
            }
            let progressed = self.z.total_in() != bi || self.z.total_out() != bo;
            if (inp == self.comp.len() && self.data.len() < self.data.capacity()) || !progressed {
                break;
            }
        }
        let mut c = Cursor::new(&self.data);
        let (rx, ry) = (usize::from(rect.x), usize::from(rect.y));
        let mut palette = [0u32; 128];
        for ty in (0..rh).step_by(64) {
            let th = (rh - ty).min(64);
            for tx in (0..rw).step_by(64) {
                let tw = (rw - tx).min(64);
                let (x0, y0) = (rx + tx, ry + ty);
                let sub = c.u8(E)?;
                let cpix =
                    |c: &mut Cursor<'_>| -> Result<u32> { Ok(px.cpixel(c.take(px.cpixel, E)?)) };
                match sub {
                    0 => {
                        for i in 0..tw * th {
                            let p = cpix(&mut c)?;
                            fb.set(x0 + i % tw, y0 + i / tw, p);
                        }
                    }
                    1 => {
                        let p = cpix(&mut c)?;
                        fb.fill(x0, y0, tw, th, p);
                    }
                    2..=16 => {
                        let n = usize::from(sub);
                        for p in palette.iter_mut().take(n) {
                            *p = cpix(&mut c)?;
                        }
                        let bits = match n {
                            2 => 1,
                            3..=4 => 2,
                            _ => 4,
                        };
                        let row_bytes = (tw * bits).div_ceil(8);
                        for y in 0..th {
                            let row = c.take(row_bytes, E)?;
                            for x in 0..tw {
                                let bit = x * bits;
                                let i = (row[bit / 8] >> (8 - bits - bit % 8)) as usize
                                    & ((1 << bits) - 1);
                                if i >= n {
                                    return Err(malformed(E, "palette index out of range"));
                                }
                                fb.set(x0 + x, y0 + y, palette[i]);
                            }
                        }
                    }
                    128 | 130..=255 => {
                        let n = if sub == 128 {
                            0
                        } else {
                            usize::from(sub - 128)
                        };
                        for p in palette.iter_mut().take(n) {
                            *p = cpix(&mut c)?;
                        }
                        let mut i = 0;
                        while i < tw * th {
                            let (p, long) = if sub == 128 {
                                (cpix(&mut c)?, true)
                            } else {
                                let b = c.u8(E)?;
                                let idx = usize::from(b & 127);
                                if idx >= n {
                                    return Err(malformed(E, "palette index out of range"));
                                }
                                (palette[idx], b & 128 != 0)
                            };
                            let mut run = 1;
                            if long {
                                loop {
                                    let b = c.u8(E)?;
                                    run += usize::from(b);
                                    if b != 255 {
                                        break;
                                    }
                                }
                            }
                            if i + run > tw * th {
                                return Err(malformed(E, "run past the end of its tile"));
                            }
                            for k in i..i + run {
                                fb.set(x0 + k % tw, y0 + k / tw, p);
                            }
                            i += run;
                        }
                    }
                    _ => return Err(malformed(E, "unknown tile subencoding")),
                }
            }
        }
        if !c.is_empty() {
            return Err(malformed(E, "data left after the last tile"));
        }
        Ok(())
    }
}
