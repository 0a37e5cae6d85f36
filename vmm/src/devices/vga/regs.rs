//! The legacy VGA register file at ports 0x3B0..=0x3DF: miscellaneous output, sequencer,
//! CRT controller, graphics controller, attribute controller (one port for index and data,
//! told apart by a flip-flop that reading input status 1 resets) and the DAC with its read
//! and write indexes.
//!
//! The CRTC, its input status 1 and feature control answer at 0x3Dx when the misc output
//! register's I/O address select bit is set (colour) and at 0x3Bx when clear (mono), as on
//! the hardware; the other range is open bus. Input status 1 flips its display-enable and
//! vertical-retrace bits on every read, so BIOS loops that wait for either edge finish at
//! once instead of spinning on a timer we do not have.

/// Sequencer register count.
pub const SR_COUNT: usize = 8;
/// Graphics controller register count (9 are defined; the index has 4 bits).
pub const GR_COUNT: usize = 16;
/// Attribute controller registers 0x00..=0x14.
pub const AR_COUNT: usize = 0x15;

/// Attribute mode control (AR 0x10) bits.
pub const AR10_GRAPHICS: u8 = 0x01;
pub const AR10_LINE_GRAPHICS: u8 = 0x04;
pub const AR10_BLINK: u8 = 0x08;
pub const AR10_8BIT: u8 = 0x40;
pub const AR10_P54_SELECT: u8 = 0x80;
/// Palette address source bit of the attribute index: clear blanks the screen.
pub const AR_INDEX_PAS: u8 = 0x20;

#[derive(Clone)]
pub struct VgaRegs {
    pub misc: u8,
    pub feature: u8,
    pub sr_index: u8,
    pub sr: [u8; SR_COUNT],
    pub gr_index: u8,
    pub gr: [u8; GR_COUNT],
    pub cr_index: u8,
    pub cr: [u8; 256],
    pub ar_index: u8,
    pub ar: [u8; AR_COUNT],
    /// false: the next 0x3C0 write is an index; true: data.
    pub ar_flip_flop: bool,
    pub pel_mask: u8,
    pub dac_read_index: u8,
    pub dac_write_index: u8,
    /// Which of R, G, B the next data access is.
    pub dac_sub_index: u8,
    /// DAC state register (0x3C7 read): 0 after a write-index write, 3 after a read-index one.
    pub dac_state: u8,
    pub dac_cache: [u8; 3],
    /// 256 entries of R, G, B; 6 significant bits unless DISPI's 8-bit DAC is on.
    pub dac: [u8; 768],
    pub st01: u8,
}

impl Default for VgaRegs {
    fn default() -> Self {
        VgaRegs {
            misc: 0,
            feature: 0,
            sr_index: 0,
            sr: [0; SR_COUNT],
            gr_index: 0,
            gr: [0; GR_COUNT],
            cr_index: 0,
            cr: [0; 256],
            ar_index: 0,
            ar: [0; AR_COUNT],
            ar_flip_flop: false,
            pel_mask: 0xff,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_sub_index: 0,
            dac_state: 0,
            dac_cache: [0; 3],
            dac: [0; 768],
            st01: 0,
        }
    }
}

/// What a register write changed, so the caller can invalidate the right things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegWrite {
    None,
    Regs,
    Palette,
}

impl VgaRegs {
    /// Whether the CRTC answers at 0x3Dx (colour) rather than 0x3Bx (mono).
    pub fn colour(&self) -> bool {
        self.misc & 1 != 0
    }

    /// Ports that belong to the other of mono/colour are not decoded.
    fn decodes(&self, port: u16) -> bool {
        match port {
            0x3b0..=0x3bf => !self.colour(),
            0x3d0..=0x3df => self.colour(),
            _ => true,
        }
    }

    /// A byte read from `port` (0x3B0..=0x3DF).
    pub fn read(&mut self, port: u16) -> u8 {
        if !self.decodes(port) {
            return 0xff;
        }
        match port {
            0x3c0 => {
                if self.ar_flip_flop {
                    0
                } else {
                    self.ar_index
                }
            }
            0x3c1 => self
                .ar
                .get(usize::from(self.ar_index & 0x1f))
                .copied()
                .unwrap_or(0),
            // Input status 0: no switch sense, no interrupt pending.
            0x3c2 => 0,
            0x3c4 => self.sr_index,
            0x3c5 => self.sr[usize::from(self.sr_index) % SR_COUNT],
            0x3c6 => self.pel_mask,
            0x3c7 => self.dac_state,
            0x3c8 => self.dac_write_index,
            0x3c9 => {
                let i = usize::from(self.dac_read_index) * 3 + usize::from(self.dac_sub_index);
                let v = self.dac[i];
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    self.dac_sub_index = 0;
                    self.dac_read_index = self.dac_read_index.wrapping_add(1);
                }
                v
            }
            0x3ca => self.feature,
            0x3cc => self.misc,
            0x3ce => self.gr_index,
            0x3cf => self.gr[usize::from(self.gr_index) % GR_COUNT],
            0x3b4 | 0x3d4 => self.cr_index,
            0x3b5 | 0x3d5 => self.cr[usize::from(self.cr_index)],
            0x3ba | 0x3da => {
                // Display enable (bit 0) and vertical retrace (bit 3) flip on each read.
                self.st01 ^= 0x09;
                self.ar_flip_flop = false;
                self.st01
            }
            _ => 0xff,
        }
    }

    /// A byte written to `port` (0x3B0..=0x3DF).
    pub fn write(&mut self, port: u16, v: u8) -> RegWrite {
        if !self.decodes(port) {
            return RegWrite::None;
        }
        match port {
            0x3c0 => {
                if self.ar_flip_flop {
                    let i = usize::from(self.ar_index & 0x1f);
                    if let Some(r) = self.ar.get_mut(i) {
                        *r = match i {
                            0x00..=0x0f => v & 0x3f,
                            0x11 | 0x10 => v,
                            0x12 => v & 0x3f,
                            0x13 | 0x14 => v & 0x0f,
                            _ => v,
                        };
                    }
                } else {
                    self.ar_index = v & 0x3f;
                }
                self.ar_flip_flop = !self.ar_flip_flop;
                return RegWrite::Palette;
            }
            0x3c2 => self.misc = v,
            0x3c4 => {
                self.sr_index = v & 0x07;
                return RegWrite::None;
            }
            0x3c5 => self.sr[usize::from(self.sr_index) % SR_COUNT] = v,
            0x3c6 => {
                self.pel_mask = v;
                return RegWrite::Palette;
            }
            0x3c7 => {
                self.dac_read_index = v;
                self.dac_sub_index = 0;
                self.dac_state = 3;
                return RegWrite::None;
            }
            0x3c8 => {
                self.dac_write_index = v;
                self.dac_sub_index = 0;
                self.dac_state = 0;
                return RegWrite::None;
            }
            0x3c9 => {
                self.dac_cache[usize::from(self.dac_sub_index)] = v;
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    let i = usize::from(self.dac_write_index) * 3;
                    self.dac[i..i + 3].copy_from_slice(&self.dac_cache);
                    self.dac_sub_index = 0;
                    self.dac_write_index = self.dac_write_index.wrapping_add(1);
                }
                return RegWrite::Palette;
            }
            0x3ce => {
                self.gr_index = v & 0x0f;
                return RegWrite::None;
            }
            0x3cf => self.gr[usize::from(self.gr_index) % GR_COUNT] = v,
            0x3b4 | 0x3d4 => {
                self.cr_index = v;
                return RegWrite::None;
            }
            0x3b5 | 0x3d5 => {
                let i = self.cr_index;
                // CR11 bit 7 write-protects CR0..CR7, except CR7's line-compare bit 8.
                if self.cr[0x11] & 0x80 != 0 && i <= 7 {
                    if i == 7 {
                        self.cr[7] = (self.cr[7] & !0x10) | (v & 0x10);
                    }
                } else {
                    self.cr[usize::from(i)] = v;
                }
            }
            0x3ba | 0x3da => self.feature = v & 0x10,
            _ => return RegWrite::None,
        }
        RegWrite::Regs
    }

    /// The DAC colour of entry `i` as 0x00RRGGBB; `eight_bit` when DISPI's 8-bit DAC is on.
    pub fn dac_rgb(&self, i: u8, eight_bit: bool) -> u32 {
        let o = usize::from(i) * 3;
        let c = |v: u8| -> u32 {
            if eight_bit {
                u32::from(v)
            } else {
                // 6 bits to 8 by repeating the lowest bit, as QEMU does, so screens
                // compare pixel for pixel with QEMU's.
                let v = u32::from(v & 0x3f);
                (v << 2) | ((v & 1) * 3)
            }
        };
        c(self.dac[o]) << 16 | c(self.dac[o + 1]) << 8 | c(self.dac[o + 2])
    }

    /// The DAC index a 4-bit attribute colour selects, through the palette registers and
    /// the colour select register.
    pub fn attr_to_dac(&self, colour: u8) -> u8 {
        let p = self.ar[usize::from(colour & 0x0f)];
        if self.ar[0x10] & AR10_P54_SELECT != 0 {
            (p & 0x0f) | ((self.ar[0x14] & 0x0f) << 4)
        } else {
            (p & 0x3f) | ((self.ar[0x14] & 0x0c) << 4)
        }
    }

    /// CRTC vertical display end + 1: the number of scan lines shown.
    pub fn vertical_display_lines(&self) -> u32 {
        let cr7 = u32::from(self.cr[7]);
        (u32::from(self.cr[0x12]) | (cr7 & 0x02) << 7 | (cr7 & 0x40) << 3) + 1
    }

    /// CRTC start address (in planar units: character cells or bytes per plane).
    pub fn start_address(&self) -> u32 {
        u32::from(self.cr[0x0c]) << 8 | u32::from(self.cr[0x0d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_flip_flop_and_status_reset() {
        let mut r = VgaRegs {
            misc: 1,
            ..Default::default()
        };
        r.read(0x3da);
        r.write(0x3c0, 0x03);
        r.write(0x3c0, 0x3a);
        assert_eq!(r.ar[3], 0x3a);
        // The next write is an index again.
        r.write(0x3c0, 0x10);
        assert_eq!(r.ar_index, 0x10);
        // Reading status 1 mid-pair resets the flip-flop to "index".
        r.read(0x3da);
        r.write(0x3c0, 0x24);
        r.write(0x3c0, 0x07);
        assert_eq!(r.ar[4], 0x07);
        assert_eq!(r.ar_index, 0x24);
        assert_eq!(r.read(0x3c1), 0x07);
    }

    #[test]
    fn status_toggles_retrace_so_wait_loops_end() {
        let mut r = VgaRegs {
            misc: 1,
            ..Default::default()
        };
        let a = r.read(0x3da) & 8;
        let b = r.read(0x3da) & 8;
        assert_ne!(a, b);
        // Mono ports are not decoded in colour mode.
        assert_eq!(r.read(0x3ba), 0xff);
    }

    #[test]
    fn dac_indexes_autoincrement() {
        let mut r = VgaRegs::default();
        r.write(0x3c8, 0xfe);
        for v in [1, 2, 3, 4, 5, 6] {
            r.write(0x3c9, v);
        }
        assert_eq!(&r.dac[0xfe * 3..], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(r.read(0x3c8), 0);
        r.write(0x3c7, 0xff);
        assert_eq!(r.read(0x3c7), 3);
        assert_eq!([r.read(0x3c9), r.read(0x3c9), r.read(0x3c9)], [4, 5, 6]);
        assert_eq!(r.dac_read_index, 0);
        assert_eq!(r.dac_rgb(0xff, false), 0x101718);
        r.dac[0..3].copy_from_slice(&[0x3f, 0x2a, 0x15]);
        assert_eq!(r.dac_rgb(0, false), 0xffa857);
    }

    #[test]
    fn crtc_protect_and_mono_colour_select() {
        let mut r = VgaRegs::default();
        // Mono: 0x3B4/0x3B5.
        r.write(0x3b4, 0x11);
        r.write(0x3b5, 0x80);
        r.write(0x3b4, 0x01);
        r.write(0x3b5, 0x4f);
        assert_eq!(r.cr[1], 0);
        r.write(0x3b4, 0x07);
        r.write(0x3b5, 0xff);
        assert_eq!(r.cr[7], 0x10);
        r.write(0x3d4, 0x0e);
        assert_eq!(r.cr_index, 0x07, "colour CRTC must not decode in mono mode");
    }
}
