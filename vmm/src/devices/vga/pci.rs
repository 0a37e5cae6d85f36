//! The stdvga PCI function, laid out as QEMU's `VGA` device: 1234:1111 revision 2, class
//! 0300 (VGA-compatible display), subsystem 1af4:1100; BAR0 the 16 MiB prefetchable
//! linear framebuffer, BAR2 4 KiB of MMIO (0x000 EDID, 0x400 the VGA ports 0x3C0..=0x3DF,
//! 0x500 the DISPI registers, 0x600 QEMU's extended registers), and an expansion ROM
//! holding the VGA BIOS.
//!
//! When a [`crate::memory_slots::RamMapper`] is present, BAR0 is not on the MMIO bus: the
//! function maps video memory at the BAR's address through the mapper whenever firmware or
//! the OS assigns or moves it, and unmaps it while the BAR is unassigned or memory decode
//! is off. Without a mapper, BAR0 is ordinary MMIO.

use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, SharedDevice, shared};
use crate::pci::config::{BarKind, PciConfig, ROM_BAR_INDEX};
use crate::pci::regs::{SUBSYSTEM_ID_QEMU, SUBSYSTEM_VENDOR_QEMU};
use crate::pci::{PciFunction, PciRegion};

use super::{VRAM_SIZE, VgaCore, lock, put_le};

pub const VENDOR_ID: u16 = 0x1234;
pub const DEVICE_ID: u16 = 0x1111;
pub const REVISION: u8 = 2;
pub const CLASS_VGA: u32 = 0x03_00_00;
pub const MMIO_BAR_SIZE: u64 = 4096;
pub const LFB_BAR: usize = 0;
pub const MMIO_BAR: usize = 2;

const MMIO_VGA_PORTS: u64 = 0x400;
const MMIO_DISPI: u64 = 0x500;
const MMIO_QEXT: u64 = 0x600;
/// QEMU's extended register block: its size, then the framebuffer byte order.
const QEXT_SIZE: u32 = 8;
const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;

pub struct VgaPci {
    config: PciConfig,
    core: Arc<Mutex<VgaCore>>,
    lfb_dev: SharedDevice,
    mmio_dev: SharedDevice,
    rom_dev: Option<SharedDevice>,
}

impl VgaPci {
    pub(super) fn new(core: Arc<Mutex<VgaCore>>, rom: Option<Vec<u8>>) -> VgaPci {
        let mut config = PciConfig::new(VENDOR_ID, DEVICE_ID, CLASS_VGA, REVISION);
        config.set_subsystem(SUBSYSTEM_VENDOR_QEMU, SUBSYSTEM_ID_QEMU);
        // Sizes are valid constants, so these cannot fail.
        let _ = config.add_bar(
            LFB_BAR,
            BarKind::Mem32 { prefetchable: true },
            VRAM_SIZE as u64,
        );
        let _ = config.add_bar(
            MMIO_BAR,
            BarKind::Mem32 {
                prefetchable: false,
            },
            MMIO_BAR_SIZE,
        );
        let rom_dev = rom.filter(|r| !r.is_empty()).map(|r| {
            let size = (r.len() as u64).next_power_of_two().max(0x800);
            let _ = config.add_rom_bar(size);
            shared(Rom(r)) as SharedDevice
        });
        VgaPci {
            config,
            lfb_dev: shared(Lfb(core.clone())),
            mmio_dev: shared(Mmio(core.clone())),
            rom_dev,
            core,
        }
    }

    /// Where BAR0 decodes now, if it does.
    pub fn lfb_address(&self) -> Option<u64> {
        self.config
            .decoded_bars()
            .into_iter()
            .find(|b| b.index == LFB_BAR)
            .map(|b| b.base)
    }

    fn sync_lfb(&self) {
        let want = self.lfb_address();
        lock(&self.core).map_lfb(want);
    }
}

impl PciFunction for VgaPci {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        self.sync_lfb();
    }

    fn regions(&self) -> Vec<PciRegion> {
        let mapped = lock(&self.core).lfb.mapper.is_some();
        self.config
            .decoded_bars()
            .into_iter()
            .filter_map(|b| {
                let dev = match b.index {
                    LFB_BAR if mapped => return None,
                    LFB_BAR => self.lfb_dev.clone(),
                    MMIO_BAR => self.mmio_dev.clone(),
                    ROM_BAR_INDEX => self.rom_dev.clone()?,
                    _ => return None,
                };
                Some(PciRegion {
                    space: b.space,
                    base: b.base,
                    len: b.len,
                    dev,
                })
            })
            .collect()
    }

    fn reset(&mut self) {
        self.config.reset();
        lock(&self.core).reset();
        self.sync_lfb();
    }
}

/// BAR0 as MMIO (no mapper).
struct Lfb(Arc<Mutex<VgaCore>>);

impl BusDevice for Lfb {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).lfb_read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.0).lfb_write(offset, data);
    }
}

/// BAR2: QEMU's MMIO layout.
struct Mmio(Arc<Mutex<VgaCore>>);

impl BusDevice for Mmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = lock(&self.0);
        match offset {
            // The VGA ports 0x3C0..=0x3DF, one byte each.
            MMIO_VGA_PORTS..0x420 => {
                for (i, b) in data.iter_mut().enumerate() {
                    let port = 0x3c0 + (offset - MMIO_VGA_PORTS) + i as u64;
                    *b = if port <= 0x3df {
                        c.port_read(port as u16)
                    } else {
                        0xff
                    };
                }
            }
            MMIO_DISPI..0x516 => {
                c.dispi.index = ((offset - MMIO_DISPI) / 2) as u16;
                put_le(data, u32::from(c.dispi_read()));
            }
            MMIO_QEXT => put_le(data, QEXT_SIZE),
            0x604 => put_le(data, QEXT_LITTLE_ENDIAN),
            // EDID (0x000..0x400) and the rest: nothing there.
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = lock(&self.0);
        match offset {
            MMIO_VGA_PORTS..0x420 => {
                for (i, &b) in data.iter().enumerate() {
                    let port = 0x3c0 + (offset - MMIO_VGA_PORTS) + i as u64;
                    if port <= 0x3df {
                        c.port_write(port as u16, b);
                    }
                }
            }
            MMIO_DISPI..0x516 => {
                c.dispi.index = ((offset - MMIO_DISPI) / 2) as u16;
                c.dispi_write(super::le16(data));
            }
            // Byte order: only little endian is offered; a big-endian request is ignored.
            _ => {}
        }
    }
}

/// The expansion ROM: the image, then zeros up to the BAR size; writes are dropped.
struct Rom(Vec<u8>);

impl BusDevice for Rom {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.0.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}
