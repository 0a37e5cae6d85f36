//! Fast native -> client pixel conversion shared by the encoders. `PixelFormat::convert`
//! recomputes the scaling per pixel; encoders convert every pixel of a frame, so they use
//! per-channel lookup tables instead (same results, tested against `convert`).

use crate::pixel::{Native, PixelFormat};

/// Native-to-client conversion with per-channel tables, plus the client's byte layouts
/// (full pixel, ZRLE CPIXEL, Tight TPIXEL).
pub(crate) struct Packer {
    pub pf: PixelFormat,
    native: bool,
    r: [u32; 256],
    g: [u32; 256],
    b: [u32; 256],
    /// Bytes of a full pixel.
    pub bpp: usize,
    /// Bytes of a ZRLE CPIXEL.
    pub cpixel: usize,
    /// CPIXEL takes bytes 1..4 (not 0..3) of the little-endian 32-bit value.
    cpixel_high: bool,
    /// Tight's 24-bit TPIXEL (R, G, B bytes) applies.
    pub tpixel24: bool,
}

impl Packer {
    pub fn new(pf: &PixelFormat) -> Self {
        let mut r = [0u32; 256];
        let mut g = [0u32; 256];
        let mut b = [0u32; 256];
        for i in 0..256u32 {
            r[i as usize] = pf.convert(i << 16);
            g[i as usize] = pf.convert(i << 8);
            b[i as usize] = pf.convert(i);
        }
        let uses_cpixel = pf.uses_cpixel();
        Packer {
            pf: *pf,
            native: *pf == PixelFormat::NATIVE,
            r,
            g,
            b,
            bpp: pf.bytes_per_pixel(),
            cpixel: if uses_cpixel { 3 } else { pf.bytes_per_pixel() },
            cpixel_high: uses_cpixel && !cpixel_fits_low(pf),
            tpixel24: tight_uses_tpixel24(pf),
        }
    }

    /// The client's pixel value for a native pixel.
    #[inline(always)]
    pub fn convert(&self, p: Native) -> u32 {
        if self.native {
            p & 0x00ff_ffff
        } else {
            self.r[((p >> 16) & 0xff) as usize]
                | self.g[((p >> 8) & 0xff) as usize]
                | self.b[(p & 0xff) as usize]
        }
    }

    /// Converts `w` pixels of each of `h` rows of `frame` at (x, y) into `dst` (cleared first).
    pub fn convert_rect(
        &self,
        frame: &super::PixelView<'_>,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        dst: &mut Vec<u32>,
    ) {
        dst.clear();
        dst.reserve(w * h);
        for row in y..y + h {
            let src = frame.row(x, row, w);
            if self.native {
                dst.extend(src.iter().map(|&p| p & 0x00ff_ffff));
            } else {
                dst.extend(src.iter().map(|&p| self.convert(p)));
            }
        }
    }

    /// Appends a client pixel value as a full pixel.
    #[inline(always)]
    pub fn put_pixel(&self, v: u32, out: &mut Vec<u8>) {
        match (self.bpp, self.pf.big_endian) {
            (1, _) => out.push(v as u8),
            (2, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (2, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    /// Appends a client pixel value as a ZRLE CPIXEL.
    #[inline(always)]
    pub fn put_cpixel(&self, v: u32, out: &mut Vec<u8>) {
        if self.cpixel != 3 {
            return self.put_pixel(v, out);
        }
        let v = if self.cpixel_high { v >> 8 } else { v };
        let b = v.to_le_bytes();
        if self.pf.big_endian {
            out.extend_from_slice(&[b[2], b[1], b[0]]);
        } else {
            out.extend_from_slice(&[b[0], b[1], b[2]]);
        }
    }

    /// Appends a client pixel value as a Tight TPIXEL.
    #[inline(always)]
    pub fn put_tpixel(&self, v: u32, out: &mut Vec<u8>) {
        if !self.tpixel24 {
            return self.put_pixel(v, out);
        }
        out.extend_from_slice(&[
            (v >> self.pf.red_shift) as u8,
            (v >> self.pf.green_shift) as u8,
            (v >> self.pf.blue_shift) as u8,
        ]);
    }
}

/// `rect` cut to the frame. Rectangles normally come clipped from the session, but one
/// built from a client's request must not make an encoder index outside the frame.
pub(crate) fn clip(rect: super::Rect, frame: &super::PixelView<'_>) -> super::Rect {
    let x = usize::from(rect.x).min(frame.width);
    let y = usize::from(rect.y).min(frame.height);
    let w = usize::from(rect.w).min(frame.width - x);
    let h = usize::from(rect.h).min(frame.height - y);
    super::Rect::new(x as u16, y as u16, w as u16, h as u16)
}

/// Whether all colour bits of a CPIXEL format sit in the low 24 bits (RFC 6143 §7.7.6:
/// the CPIXEL is then the 3 low bytes, else the 3 high ones).
pub(crate) fn cpixel_fits_low(pf: &PixelFormat) -> bool {
    pf.red_shift.max(pf.green_shift).max(pf.blue_shift) < 24
        && u32::from(pf.red_max) << pf.red_shift < 1 << 24
        && u32::from(pf.green_max) << pf.green_shift < 1 << 24
        && u32::from(pf.blue_max) << pf.blue_shift < 1 << 24
}

/// Tight sends 3-byte R, G, B pixels when the client format is 32 bpp, depth 24 with
/// 8-bit channels (rfbproto "Tight Encoding", TPIXEL). The shifts do not enter into it.
pub(crate) fn tight_uses_tpixel24(pf: &PixelFormat) -> bool {
    pf.bits_per_pixel == 32
        && pf.depth == 24
        && pf.red_max == 255
        && pf.green_max == 255
        && pf.blue_max == 255
}

/// The colours of one tile, up to a limit, in a small open-addressed table that is "cleared"
/// by bumping a generation number.
pub(crate) struct Palette {
    keys: [u32; 512],
    idx: [u16; 512],
    generation: [u32; 512],
    current: u32,
    pub colours: Vec<u32>,
    /// Pixels of each colour, counted by [`add_run`](Self::add_run).
    pub counts: Vec<u32>,
}

impl Palette {
    pub fn new() -> Self {
        Palette {
            keys: [0; 512],
            idx: [0; 512],
            generation: [0; 512],
            current: 0,
            colours: Vec::with_capacity(256),
            counts: Vec::with_capacity(256),
        }
    }

    pub fn clear(&mut self) {
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.generation = [0; 512];
            self.current = 1;
        }
        self.colours.clear();
        self.counts.clear();
    }

    /// The index of `c`, adding it while fewer than `limit` colours are known; `None` when
    /// the palette is full.
    #[inline]
    pub fn insert(&mut self, c: u32, limit: usize) -> Option<usize> {
        let mut slot = (c.wrapping_mul(0x9e37_79b1) >> 23) as usize;
        loop {
            if self.generation[slot] != self.current {
                if self.colours.len() >= limit {
                    return None;
                }
                self.generation[slot] = self.current;
                self.keys[slot] = c;
                self.idx[slot] = self.colours.len() as u16;
                self.colours.push(c);
                self.counts.push(0);
                return Some(self.colours.len() - 1);
            }
            if self.keys[slot] == c {
                return Some(self.idx[slot].into());
            }
            slot = (slot + 1) & 511;
        }
    }

    /// Like [`insert`](Self::insert), also counting `n` pixels of the colour.
    #[inline]
    pub fn add_run(&mut self, c: u32, n: usize, limit: usize) -> Option<usize> {
        let i = self.insert(c, limit)?;
        self.counts[i] += n as u32;
        Some(i)
    }

    /// The index of a colour known to be present.
    #[inline]
    pub fn index(&self, c: u32) -> usize {
        let mut slot = (c.wrapping_mul(0x9e37_79b1) >> 23) as usize;
        while self.keys[slot] != c || self.generation[slot] != self.current {
            slot = (slot + 1) & 511;
        }
        self.idx[slot].into()
    }
}

impl Default for Palette {
    fn default() -> Self {
        Self::new()
    }
}

/// Calls `f(colour, length)` for each run of equal pixels, runs crossing rows.
#[inline]
pub(crate) fn for_runs(tile: &[u32], mut f: impl FnMut(u32, usize)) {
    let mut i = 0;
    while i < tile.len() {
        let c = tile[i];
        let mut j = i + 1;
        while j < tile.len() && tile[j] == c {
            j += 1;
        }
        f(c, j - i);
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_convert_and_cpixel_matches_write_cpixel() {
        let formats = [
            PixelFormat::NATIVE,
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
            },
            PixelFormat {
                big_endian: true,
                red_shift: 24,
                green_shift: 16,
                blue_shift: 8,
                ..PixelFormat::NATIVE
            },
        ];
        for pf in formats {
            let p = Packer::new(&pf);
            for n in [0u32, 0x00ff_ffff, 0x0012_3456, 0x0080_7f01, 0x00fe_dcba] {
                assert_eq!(p.convert(n), pf.convert(n));
                let mut a = Vec::new();
                let mut b = Vec::new();
                p.put_cpixel(p.convert(n), &mut a);
                pf.write_cpixel(n, &mut b);
                assert_eq!(a, b);
                a.clear();
                b.clear();
                p.put_pixel(p.convert(n), &mut a);
                pf.write_pixel(n, &mut b);
                assert_eq!(a, b);
            }
        }
    }
}
