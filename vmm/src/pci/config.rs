//! A type-0 PCI configuration space that devices embed: 256 bytes, which bits the guest may
//! write, which are write-1-to-clear, and the base address registers.
//!
//! BARs behave as the PCI Local Bus Specification (3.0, 6.2.5) says and as firmware and
//! Linux rely on: the address bits below the (power-of-two) size are read-only zero, so
//! writing all ones and reading back yields the size mask; the low bits report the kind
//! (I/O, 32- or 64-bit memory, prefetchable). A 64-bit BAR takes two slots. The expansion
//! ROM BAR (0x30) has its enable bit in bit 0. A BAR decodes only while the command
//! register enables its space (and, for the ROM, its own enable bit) and its address is a
//! real one: not 0, and not so high that the range would reach the top of its address space
//! (which is where the all-ones sizing pattern lands), the rule QEMU uses too.

use thiserror::Error;

use super::regs::*;
use super::{PciRegion, PciSpace};
use crate::bus::SharedDevice;

pub const CONFIG_SIZE: usize = 256;
/// Slot index [`PciConfig::decoded_bars`] uses for the expansion ROM.
pub const ROM_BAR_INDEX: usize = 6;

const BAR_IO_SPACE: u32 = 0x1;
const BAR_MEM_TYPE_64: u32 = 0x4;
const BAR_MEM_PREFETCH: u32 = 0x8;
const ROM_ENABLE: u32 = 0x1;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Capabilities go after the 64-byte standard header.
const FIRST_CAPABILITY: u16 = 0x40;
/// Status bits that are write-1-to-clear: master data parity error, signalled target
/// abort, received target/master abort, signalled system error, detected parity error.
const STATUS_W1C: u16 = 0xf900;
/// I/O ports are 16 bits wide on x86.
const IO_SPACE_END: u64 = 0x1_0000;
/// The highest end a 32-bit memory range may have (its last byte below 0xFFFF_FFFF).
const MEM32_END: u64 = 0xffff_ffff;

/// What a BAR maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32 { prefetchable: bool },
    Mem64 { prefetchable: bool },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error("BAR {0} does not exist (0..=5, and a 64-bit BAR needs the next slot too)")]
    BadIndex(usize),
    #[error("BAR size {0:#x} is not a power of two of at least the minimum for its kind")]
    BadSize(u64),
    #[error("BAR {0} is already in use")]
    InUse(usize),
    #[error("no room for a {0}-byte capability in configuration space")]
    NoRoom(usize),
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    kind: BarKind,
    size: u64,
}

/// A BAR (or the ROM) that decodes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedBar {
    /// 0..=5, or [`ROM_BAR_INDEX`].
    pub index: usize,
    pub space: PciSpace,
    pub base: u64,
    pub len: u64,
}

pub struct PciConfig {
    bytes: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    w1cmask: [u8; CONFIG_SIZE],
    bars: [Option<Bar>; 6],
    /// The upper half of a 64-bit BAR is marked so it cannot be reused.
    bar_high: [bool; 6],
    rom_size: Option<u64>,
    /// Where the next capability goes, and the last one's offset (to link the list).
    next_cap: u16,
    last_cap: Option<u16>,
    /// The bytes as the device set them up, taken at the first guest write, for
    /// [`PciConfig::reset`].
    power_on: Option<Box<[u8; CONFIG_SIZE]>>,
}

impl PciConfig {
    /// A function with these ids; `class` is base class << 16 | subclass << 8 | prog-if.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> PciConfig {
        let mut c = PciConfig {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            w1cmask: [0; CONFIG_SIZE],
            bars: [None; 6],
            bar_high: [false; 6],
            rom_size: None,
            next_cap: FIRST_CAPABILITY,
            last_cap: None,
            power_on: None,
        };
        c.set_u16(VENDOR_ID, vendor);
        c.set_u16(DEVICE_ID, device);
        c.set_u8(REVISION_ID, revision);
        c.set_u8(CLASS_PROG, class as u8);
        c.set_u16(CLASS_PROG + 1, (class >> 8) as u16);
        c.set_wmask_u16(
            COMMAND,
            COMMAND_IO
                | COMMAND_MEMORY
                | COMMAND_MASTER
                | COMMAND_PARITY
                | COMMAND_SERR
                | COMMAND_INTX_DISABLE,
        );
        c.w1cmask[STATUS as usize..STATUS as usize + 2].copy_from_slice(&STATUS_W1C.to_le_bytes());
        c.set_wmask_u8(CACHE_LINE_SIZE, 0xff);
        c.set_wmask_u8(LATENCY_TIMER, 0xff);
        c.set_wmask_u8(INTERRUPT_LINE, 0xff);
        c
    }

    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(SUBSYSTEM_VENDOR_ID, vendor);
        self.set_u16(SUBSYSTEM_ID, id);
    }

    pub fn set_header_type(&mut self, v: u8) {
        self.set_u8(HEADER_TYPE, v);
    }

    /// 1 = INTA# .. 4 = INTD#, 0 = none.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_u8(INTERRUPT_PIN, pin);
    }

    /// Declares BAR `index`. `size` is a power of two, at least 4 for I/O and 16 for memory.
    pub fn add_bar(
        &mut self,
        index: usize,
        kind: BarKind,
        size: u64,
    ) -> Result<(), PciConfigError> {
        let is64 = matches!(kind, BarKind::Mem64 { .. });
        if index >= 6 || (is64 && index >= 5) {
            return Err(PciConfigError::BadIndex(index));
        }
        if self.bars[index].is_some()
            || self.bar_high[index]
            || (is64 && (self.bars[index + 1].is_some() || self.bar_high[index + 1]))
        {
            return Err(PciConfigError::InUse(index));
        }
        let (min, max) = match kind {
            BarKind::Io => (4, IO_SPACE_END),
            BarKind::Mem32 { .. } => (16, 1 << 31),
            BarKind::Mem64 { .. } => (16, 1 << 62),
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(PciConfigError::BadSize(size));
        }
        let off = BAR0 + 4 * index as u16;
        let mask = !(size - 1);
        match kind {
            BarKind::Io => {
                self.set_u32(off, BAR_IO_SPACE);
                self.set_wmask_u32(off, mask as u32 & !0x3);
            }
            BarKind::Mem32 { prefetchable } => {
                self.set_u32(off, if prefetchable { BAR_MEM_PREFETCH } else { 0 });
                self.set_wmask_u32(off, mask as u32 & !0xf);
            }
            BarKind::Mem64 { prefetchable } => {
                let low = BAR_MEM_TYPE_64 | if prefetchable { BAR_MEM_PREFETCH } else { 0 };
                self.set_u32(off, low);
                self.set_wmask_u32(off, mask as u32 & !0xf);
                self.set_wmask_u32(off + 4, (mask >> 32) as u32);
                self.bar_high[index + 1] = true;
            }
        }
        self.bars[index] = Some(Bar { kind, size });
        Ok(())
    }

    /// Declares the expansion ROM BAR; `size` is a power of two of at least 2 KiB.
    pub fn add_rom_bar(&mut self, size: u64) -> Result<(), PciConfigError> {
        if !size.is_power_of_two() || !(0x800..=1 << 31).contains(&size) {
            return Err(PciConfigError::BadSize(size));
        }
        self.set_wmask_u32(ROM_ADDRESS, (!(size - 1) as u32 & 0xffff_f800) | ROM_ENABLE);
        self.rom_size = Some(size);
        Ok(())
    }

    /// Appends a capability with `id` and `body_len` bytes after its two-byte header
    /// (id, next pointer), links it into the list at 0x34, and returns its offset. The
    /// body starts zeroed and read-only; the device fills it with the `set_*` calls and
    /// makes what the guest may write writable.
    pub fn add_capability(&mut self, id: u8, body_len: usize) -> Result<u16, PciConfigError> {
        let len = 2 + body_len;
        let off = self.next_cap;
        if usize::from(off) + len > CONFIG_SIZE {
            return Err(PciConfigError::NoRoom(len));
        }
        self.set_u8(off, id);
        self.set_u8(off + 1, 0);
        match self.last_cap {
            Some(prev) => self.set_u8(prev + 1, off as u8),
            None => self.set_u8(CAPABILITIES, off as u8),
        }
        self.set_u16(STATUS, self.u16(STATUS) | STATUS_CAP_LIST);
        self.last_cap = Some(off);
        // Dword-aligned, as the specification requires of capability pointers.
        self.next_cap = (off + len as u16).next_multiple_of(4);
        Ok(off)
    }

    /// The regions a function decodes now, given the device behind each BAR (index as in
    /// [`DecodedBar::index`]); BARs without a device are left out.
    pub fn bar_regions(&self, devices: &[(usize, SharedDevice)]) -> Vec<PciRegion> {
        self.decoded_bars()
            .into_iter()
            .filter_map(|b| {
                let dev = devices.iter().find(|(i, _)| *i == b.index)?.1.clone();
                Some(PciRegion {
                    space: b.space,
                    base: b.base,
                    len: b.len,
                    dev,
                })
            })
            .collect()
    }

    // Device-side accessors: set values and masks regardless of what the guest may write.

    pub fn set_u8(&mut self, offset: u16, v: u8) {
        self.set_bytes(offset, &[v]);
    }
    pub fn set_u16(&mut self, offset: u16, v: u16) {
        self.set_bytes(offset, &v.to_le_bytes());
    }
    pub fn set_u32(&mut self, offset: u16, v: u32) {
        self.set_bytes(offset, &v.to_le_bytes());
    }
    fn set_bytes(&mut self, offset: u16, v: &[u8]) {
        let o = offset as usize;
        self.bytes[o..o + v.len()].copy_from_slice(v);
    }
    pub fn set_wmask_u8(&mut self, offset: u16, mask: u8) {
        self.wmask[offset as usize] = mask;
    }
    pub fn set_wmask_u16(&mut self, offset: u16, mask: u16) {
        let o = offset as usize;
        self.wmask[o..o + 2].copy_from_slice(&mask.to_le_bytes());
    }
    pub fn set_wmask_u32(&mut self, offset: u16, mask: u32) {
        let o = offset as usize;
        self.wmask[o..o + 4].copy_from_slice(&mask.to_le_bytes());
    }
    /// Makes the bits in `mask` write-1-to-clear (they are then not plainly writable).
    pub fn set_w1c_u16(&mut self, offset: u16, mask: u16) {
        let o = offset as usize;
        self.w1cmask[o..o + 2].copy_from_slice(&mask.to_le_bytes());
        for (i, b) in mask.to_le_bytes().iter().enumerate() {
            self.wmask[o + i] &= !b;
        }
    }

    pub fn u8(&self, offset: u16) -> u8 {
        self.bytes[offset as usize]
    }
    pub fn u16(&self, offset: u16) -> u16 {
        let o = offset as usize;
        u16::from_le_bytes([self.bytes[o], self.bytes[o + 1]])
    }
    pub fn u32(&self, offset: u16) -> u32 {
        let o = offset as usize;
        u32::from_le_bytes(self.bytes[o..o + 4].try_into().unwrap_or([0; 4]))
    }

    pub fn command(&self) -> u16 {
        self.u16(COMMAND)
    }

    /// A guest read. Bytes past the end of the space read as ones.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset as usize + i).copied().unwrap_or(0xff);
        }
    }

    /// A guest write, through the write masks. Bytes past the end are dropped.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        if self.power_on.is_none() {
            self.power_on = Some(Box::new(self.bytes));
        }
        for (i, &v) in data.iter().enumerate() {
            let o = offset as usize + i;
            if o >= CONFIG_SIZE {
                break;
            }
            let wm = self.wmask[o];
            let b = (self.bytes[o] & !wm) | (v & wm);
            self.bytes[o] = b & !(v & self.w1cmask[o]);
        }
    }

    /// Back to the state before the guest's first write (a machine reset): BARs
    /// unassigned, decode off, device registers at their defaults. What the device set
    /// with the `set_*` calls after the guest started writing is forgotten too.
    pub fn reset(&mut self) {
        if let Some(p) = &self.power_on {
            self.bytes = **p;
        }
    }

    /// The address BAR `index` holds now, whether or not it decodes.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bars.get(index).copied().flatten()?;
        let off = BAR0 + 4 * index as u16;
        let low = self.u32(off);
        Some(match bar.kind {
            BarKind::Io => u64::from(low & !0x3),
            BarKind::Mem32 { .. } => u64::from(low & !0xf),
            BarKind::Mem64 { .. } => u64::from(self.u32(off + 4)) << 32 | u64::from(low & !0xf),
        })
    }

    /// The BARs (and ROM) that decode now, with their sizes.
    pub fn decoded_bars(&self) -> Vec<DecodedBar> {
        let cmd = self.command();
        let mut out = Vec::new();
        for (index, bar) in self.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let Some(base) = self.bar_address(index) else {
                continue;
            };
            let (space, enabled, limit) = match bar.kind {
                BarKind::Io => (PciSpace::Pio, cmd & COMMAND_IO != 0, IO_SPACE_END),
                BarKind::Mem32 { .. } => (PciSpace::Mmio, cmd & COMMAND_MEMORY != 0, MEM32_END),
                BarKind::Mem64 { .. } => (PciSpace::Mmio, cmd & COMMAND_MEMORY != 0, u64::MAX),
            };
            if enabled && valid_range(base, bar.size, limit) {
                out.push(DecodedBar {
                    index,
                    space,
                    base,
                    len: bar.size,
                });
            }
        }
        if let Some(size) = self.rom_size {
            let v = self.u32(ROM_ADDRESS);
            let base = u64::from(v & 0xffff_f800);
            if cmd & COMMAND_MEMORY != 0
                && v & ROM_ENABLE != 0
                && valid_range(base, size, MEM32_END)
            {
                out.push(DecodedBar {
                    index: ROM_BAR_INDEX,
                    space: PciSpace::Mmio,
                    base,
                    len: size,
                });
            }
        }
        out
    }
}

/// A range is real when it is not at 0 and ends at or below `max_end`: for memory below
/// 4 GiB that is 0xFFFF_FFFF, so the all-ones sizing pattern, which ends exactly at 4 GiB,
/// never decodes; ranges that wrap never do either.
fn valid_range(base: u64, len: u64, max_end: u64) -> bool {
    base != 0 && base.checked_add(len).is_some_and(|end| end <= max_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd32(c: &PciConfig, off: u16) -> u32 {
        let mut b = [0; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr32(c: &mut PciConfig, off: u16, v: u32) {
        c.write(off, &v.to_le_bytes());
    }

    #[test]
    fn ids_and_read_only_bytes() {
        let mut c = PciConfig::new(0x1234, 0x1111, 0x03_00_00, 2);
        assert_eq!(rd32(&c, 0), 0x1111_1234);
        assert_eq!(rd32(&c, 8), 0x0300_0002);
        wr32(&mut c, 0, 0xffff_ffff);
        assert_eq!(rd32(&c, 0), 0x1111_1234);
        c.write(INTERRUPT_LINE, &[11]);
        assert_eq!(c.u8(INTERRUPT_LINE), 11);
        // Command: only the implemented bits stick.
        c.write(COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), 0x0547);
    }

    #[test]
    fn status_bits_are_write_one_to_clear() {
        let mut c = PciConfig::new(0x1234, 0x1111, 0, 0);
        c.set_u16(STATUS, 0x2010);
        c.write(STATUS, &0x2000u16.to_le_bytes());
        assert_eq!(c.u16(STATUS), 0x0010);
    }

    #[test]
    fn bar_sizing_and_decoding() {
        let mut c = PciConfig::new(0x1234, 0x1111, 0, 0);
        c.add_bar(0, BarKind::Mem32 { prefetchable: true }, 16 << 20)
            .unwrap();
        c.add_bar(1, BarKind::Io, 32).unwrap();
        c.add_bar(
            2,
            BarKind::Mem64 {
                prefetchable: false,
            },
            1 << 14,
        )
        .unwrap();
        c.add_rom_bar(64 << 10).unwrap();
        assert_eq!(
            c.add_bar(4, BarKind::Io, 3),
            Err(PciConfigError::BadSize(3))
        );
        assert_eq!(c.add_bar(3, BarKind::Io, 4), Err(PciConfigError::InUse(3)));
        assert_eq!(
            c.add_bar(
                5,
                BarKind::Mem64 {
                    prefetchable: false
                },
                16
            ),
            Err(PciConfigError::BadIndex(5))
        );

        assert_eq!(rd32(&c, 0x10), 0x8);
        assert_eq!(rd32(&c, 0x14), 0x1);
        assert_eq!(rd32(&c, 0x18), 0x4);
        for off in [0x10, 0x14, 0x18, 0x1c, 0x30] {
            wr32(&mut c, off, !0);
        }
        assert_eq!(rd32(&c, 0x10), 0xff00_0008);
        assert_eq!(rd32(&c, 0x14), 0xffff_ffe1);
        assert_eq!(rd32(&c, 0x18), 0xffff_c004);
        assert_eq!(rd32(&c, 0x1c), 0xffff_ffff);
        assert_eq!(rd32(&c, 0x30), 0xffff_0001);
        // Decode on with the sizing pattern still in place: nothing decodes.
        c.write(COMMAND, &[0x03]);
        assert_eq!(c.decoded_bars(), vec![]);

        wr32(&mut c, 0x10, 0xfd00_0000);
        wr32(&mut c, 0x14, 0xc040);
        wr32(&mut c, 0x18, 0x0000_4000);
        wr32(&mut c, 0x1c, 0x8);
        wr32(&mut c, 0x30, 0xfeb0_0000);
        let d = c.decoded_bars();
        assert_eq!(
            d,
            vec![
                DecodedBar {
                    index: 0,
                    space: PciSpace::Mmio,
                    base: 0xfd00_0000,
                    len: 16 << 20
                },
                DecodedBar {
                    index: 1,
                    space: PciSpace::Pio,
                    base: 0xc040,
                    len: 32
                },
                DecodedBar {
                    index: 2,
                    space: PciSpace::Mmio,
                    base: 0x8_0000_4000,
                    len: 1 << 14
                },
            ]
        );
        // The ROM decodes once its own enable bit is set.
        wr32(&mut c, 0x30, 0xfeb0_0001);
        assert_eq!(c.decoded_bars().len(), 4);
        c.write(COMMAND, &[0x01]);
        assert_eq!(c.decoded_bars().len(), 1);
    }

    #[test]
    fn reset_restores_power_on_bytes() {
        let mut c = PciConfig::new(0x1234, 0x1111, 0, 0);
        c.add_bar(0, BarKind::Io, 16).unwrap();
        c.set_u8(0x60, 0x80);
        c.set_wmask_u8(0x60, 0xff);
        wr32(&mut c, 0x10, 0xc000);
        c.write(COMMAND, &[0x01]);
        c.write(0x60, &[0x0b]);
        assert_eq!(c.decoded_bars().len(), 1);
        c.reset();
        assert_eq!(c.decoded_bars(), vec![]);
        assert_eq!(rd32(&c, 0x10), 0x1);
        assert_eq!(c.u8(0x60), 0x80);
        assert_eq!(c.u16(0), 0x1234);
    }

    #[test]
    fn capabilities_form_a_list() {
        let mut c = PciConfig::new(0x1af4, 0x1041, 0, 1);
        assert_eq!(c.u16(STATUS) & STATUS_CAP_LIST, 0);
        let a = c.add_capability(0x09, 14).unwrap();
        let b = c.add_capability(0x11, 10).unwrap();
        assert_eq!((a, b), (0x40, 0x50));
        assert_eq!(c.u8(CAPABILITIES), 0x40);
        assert_eq!(c.u16(STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
        assert_eq!((c.u8(0x40), c.u8(0x41)), (0x09, 0x50));
        assert_eq!((c.u8(0x50), c.u8(0x51)), (0x11, 0x00));
        // Read-only unless the device says otherwise.
        c.write(0x41, &[0x99]);
        assert_eq!(c.u8(0x41), 0x50);
        assert_eq!(
            c.add_capability(0x09, 200),
            Err(PciConfigError::NoRoom(202))
        );
    }

    #[test]
    fn out_of_range_accesses_are_harmless() {
        let mut c = PciConfig::new(1, 2, 0, 0);
        let mut b = [0; 4];
        c.read(254, &mut b);
        assert_eq!(&b[2..], &[0xff, 0xff]);
        c.write(255, &[1, 2, 3, 4]);
    }
}
