//! Bochs DISPI ("VBE") registers, as Bochs and QEMU's stdvga have them: an index at I/O
//! port 0x1CE and 16-bit data at 0x1CF (also at offset 0x500 of the MMIO BAR, one 16-bit
//! register every 2 bytes). SeaBIOS's bochsvga.c and Linux's bochs DRM driver program
//! them; the mode they describe wins over the legacy VGA registers while ENABLED is set.
//!
//! Emulated: ID 0xB0C0..=0xB0C5, XRES/YRES/BPP (4, 8, 15, 16, 24, 32), ENABLE with
//! GETCAPS (reads of XRES/YRES/BPP return the maxima), 8BIT_DAC, LFB_ENABLED and
//! NOCLEARMEM, BANK (64 KiB banks seen through the 0xA0000 window), VIRT_WIDTH/HEIGHT,
//! X/Y_OFFSET (panning) and VIDEO_MEMORY_64K. A mode that does not fit in video memory is
//! accepted but shown as nothing (the guest asked for the impossible; we do not panic).

pub const INDEX_ID: u16 = 0;
pub const INDEX_XRES: u16 = 1;
pub const INDEX_YRES: u16 = 2;
pub const INDEX_BPP: u16 = 3;
pub const INDEX_ENABLE: u16 = 4;
pub const INDEX_BANK: u16 = 5;
pub const INDEX_VIRT_WIDTH: u16 = 6;
pub const INDEX_VIRT_HEIGHT: u16 = 7;
pub const INDEX_X_OFFSET: u16 = 8;
pub const INDEX_Y_OFFSET: u16 = 9;
pub const INDEX_VIDEO_MEMORY_64K: u16 = 10;
const REG_COUNT: usize = 11;

pub const ID0: u16 = 0xb0c0;
pub const ID5: u16 = 0xb0c5;

pub const ENABLED: u16 = 0x01;
pub const GETCAPS: u16 = 0x02;
pub const DAC_8BIT: u16 = 0x20;
pub const LFB_ENABLED: u16 = 0x40;
pub const NOCLEARMEM: u16 = 0x80;

/// Largest resolution we offer; the surface cannot be larger.
pub const MAX_XRES: u16 = 8192;
pub const MAX_YRES: u16 = 8192;
pub const MAX_BPP: u16 = 32;

/// A DISPI mode, derived from the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispiMode {
    pub xres: u32,
    pub yres: u32,
    pub bpp: u32,
    /// Bytes from one scan line to the next in video memory.
    pub line_offset: u32,
    /// Byte offset of the top-left visible pixel.
    pub start: u32,
    pub dac_8bit: bool,
}

impl DispiMode {
    pub fn bytes_per_pixel(&self) -> u32 {
        self.bpp.div_ceil(8)
    }
}

/// What a data write did, for the device to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispiEffect {
    None,
    Changed,
    /// Just enabled and the guest did not ask to keep memory: clear `bytes`.
    Clear {
        bytes: u32,
    },
}

pub struct Dispi {
    pub index: u16,
    regs: [u16; REG_COUNT],
    vram_size: u32,
}

impl Dispi {
    pub fn new(vram_size: u32) -> Dispi {
        let mut regs = [0; REG_COUNT];
        regs[INDEX_ID as usize] = ID0;
        regs[INDEX_BPP as usize] = 8;
        regs[INDEX_XRES as usize] = 640;
        regs[INDEX_YRES as usize] = 480;
        Dispi {
            index: 0,
            regs,
            vram_size,
        }
    }

    fn reg(&self, i: u16) -> u16 {
        self.regs[usize::from(i)]
    }

    pub fn enabled(&self) -> bool {
        self.reg(INDEX_ENABLE) & ENABLED != 0
    }

    pub fn lfb_enabled(&self) -> bool {
        self.reg(INDEX_ENABLE) & LFB_ENABLED != 0
    }

    /// Byte offset in video memory of the 64 KiB bank the 0xA0000 window shows.
    pub fn bank_offset(&self) -> u32 {
        u32::from(self.reg(INDEX_BANK)) << 16
    }

    pub fn read_data(&self) -> u16 {
        let i = self.index;
        if usize::from(i) >= REG_COUNT {
            return 0;
        }
        if self.reg(INDEX_ENABLE) & GETCAPS != 0 {
            match i {
                INDEX_XRES => return MAX_XRES,
                INDEX_YRES => return MAX_YRES,
                INDEX_BPP => return MAX_BPP,
                _ => {}
            }
        }
        if i == INDEX_VIDEO_MEMORY_64K {
            return (self.vram_size >> 16) as u16;
        }
        self.reg(i)
    }

    pub fn write_data(&mut self, v: u16) -> DispiEffect {
        let i = self.index;
        let r = usize::from(i);
        match i {
            INDEX_ID => {
                if (ID0..=ID5).contains(&v) {
                    self.regs[r] = v;
                }
                return DispiEffect::None;
            }
            INDEX_XRES | INDEX_YRES => {
                let max = if i == INDEX_XRES { MAX_XRES } else { MAX_YRES };
                if v == 0 || v > max {
                    return DispiEffect::None;
                }
                self.regs[r] = v;
            }
            INDEX_BPP => {
                let v = if v == 0 { 8 } else { v };
                if !matches!(v, 4 | 8 | 15 | 16 | 24 | 32) {
                    return DispiEffect::None;
                }
                self.regs[r] = v;
            }
            INDEX_BANK => {
                // Only banks inside video memory; the 8-bit DAC flag bit QEMU hides here
                // in later versions is not part of the interface drivers use.
                if u32::from(v) < self.vram_size >> 16 {
                    self.regs[r] = v;
                }
            }
            INDEX_ENABLE => {
                let was = self.enabled();
                self.regs[r] = v & (ENABLED | GETCAPS | DAC_8BIT | LFB_ENABLED | NOCLEARMEM);
                if v & ENABLED != 0 && !was {
                    // A fresh mode: the virtual screen is the visible one, unpanned.
                    self.regs[usize::from(INDEX_VIRT_WIDTH)] = self.reg(INDEX_XRES);
                    self.regs[usize::from(INDEX_X_OFFSET)] = 0;
                    self.regs[usize::from(INDEX_Y_OFFSET)] = 0;
                    // All of video memory is there to pan over, as Bochs offers it.
                    self.regs[usize::from(INDEX_VIRT_HEIGHT)] = u16::MAX;
                    self.fix_virt_height();
                    if v & NOCLEARMEM == 0 {
                        let bytes = self
                            .line_offset()
                            .saturating_mul(u32::from(self.reg(INDEX_YRES)))
                            .min(self.vram_size);
                        return DispiEffect::Clear { bytes };
                    }
                }
            }
            INDEX_VIRT_WIDTH => {
                self.regs[r] = v.max(self.reg(INDEX_XRES));
                self.fix_virt_height();
            }
            INDEX_VIRT_HEIGHT => {
                self.regs[r] = v;
                self.fix_virt_height();
            }
            INDEX_X_OFFSET | INDEX_Y_OFFSET => self.regs[r] = v,
            _ => return DispiEffect::None,
        }
        DispiEffect::Changed
    }

    fn line_offset(&self) -> u32 {
        let w = u32::from(self.reg(INDEX_VIRT_WIDTH).max(self.reg(INDEX_XRES)));
        match self.reg(INDEX_BPP) {
            4 => w / 2,
            bpp => w * u32::from(bpp).div_ceil(8),
        }
    }

    /// The virtual height is what fits in video memory, at most what was asked.
    fn fix_virt_height(&mut self) {
        let lo = self.line_offset().max(1);
        let fits = (self.vram_size / lo).min(u32::from(u16::MAX)) as u16;
        let want = self.reg(INDEX_VIRT_HEIGHT).max(self.reg(INDEX_YRES));
        self.regs[usize::from(INDEX_VIRT_HEIGHT)] = want.min(fits);
    }

    /// The mode to show, when enabled and it fits in video memory.
    pub fn mode(&self) -> Option<DispiMode> {
        if !self.enabled() {
            return None;
        }
        let bpp = u32::from(self.reg(INDEX_BPP));
        let xres = u32::from(self.reg(INDEX_XRES));
        let yres = u32::from(self.reg(INDEX_YRES));
        let line_offset = self.line_offset();
        let bypp = bpp.div_ceil(8);
        let start = u64::from(self.reg(INDEX_Y_OFFSET)) * u64::from(line_offset)
            + u64::from(self.reg(INDEX_X_OFFSET)) * u64::from(bypp);
        let end = start
            + u64::from(line_offset) * u64::from(yres.saturating_sub(1))
            + u64::from(xres * bypp);
        if end > u64::from(self.vram_size) {
            return None;
        }
        Some(DispiMode {
            xres,
            yres,
            bpp,
            line_offset,
            start: start as u32,
            dac_8bit: self.reg(INDEX_ENABLE) & DAC_8BIT != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wr(d: &mut Dispi, i: u16, v: u16) -> DispiEffect {
        d.index = i;
        d.write_data(v)
    }
    fn rd(d: &mut Dispi, i: u16) -> u16 {
        d.index = i;
        d.read_data()
    }

    #[test]
    fn id_probe_caps_and_memory_size() {
        let mut d = Dispi::new(16 << 20);
        wr(&mut d, INDEX_ID, ID5);
        assert_eq!(rd(&mut d, INDEX_ID), ID5);
        wr(&mut d, INDEX_ID, 0x1234);
        assert_eq!(rd(&mut d, INDEX_ID), ID5);
        assert_eq!(rd(&mut d, INDEX_VIDEO_MEMORY_64K), 256);
        wr(&mut d, INDEX_ENABLE, GETCAPS);
        assert_eq!(rd(&mut d, INDEX_XRES), MAX_XRES);
        assert_eq!(rd(&mut d, INDEX_BPP), 32);
        wr(&mut d, INDEX_ENABLE, 0);
        assert_eq!(rd(&mut d, INDEX_XRES), 640);
    }

    #[test]
    fn mode_geometry_panning_and_limits() {
        let mut d = Dispi::new(16 << 20);
        wr(&mut d, INDEX_BPP, 32);
        wr(&mut d, INDEX_XRES, 1024);
        wr(&mut d, INDEX_YRES, 768);
        assert_eq!(
            wr(&mut d, INDEX_ENABLE, ENABLED | LFB_ENABLED),
            DispiEffect::Clear {
                bytes: 1024 * 768 * 4
            }
        );
        assert_eq!(rd(&mut d, INDEX_VIRT_HEIGHT), 4096);
        wr(&mut d, INDEX_Y_OFFSET, 768);
        let m = d.mode().unwrap();
        assert_eq!((m.xres, m.yres, m.line_offset), (1024, 768, 4096));
        assert_eq!(m.start, 768 * 4096);
        // Panned past the end of memory: nothing to show, no panic.
        wr(&mut d, INDEX_Y_OFFSET, 4000);
        assert_eq!(d.mode(), None);
        // Bad values are ignored.
        wr(&mut d, INDEX_BPP, 7);
        wr(&mut d, INDEX_BANK, 256);
        assert_eq!(rd(&mut d, INDEX_BPP), 32);
        assert_eq!(d.bank_offset(), 0);
        wr(&mut d, INDEX_BANK, 255);
        assert_eq!(d.bank_offset(), 255 << 16);
    }
}
