//! Conventional PCI as a PC with an i440FX/PIIX chipset has it: one bus (0), configuration
//! mechanism 1 at ports 0xCF8/0xCFC ([`PciConfigIo`]), a root ([`PciRoot`]) that owns the
//! functions and moves their BARs on the PIO and MMIO buses when firmware or the OS
//! programs them, and the chipset's own functions: the i440FX host bridge (00.0), the PIIX3
//! PCI-to-ISA bridge with INTx routing (01.0) and the PIIX4 ACPI power-management function
//! (01.3).
//!
//! Not emulated: PCI-to-PCI bridges (so only bus 0 exists), MMCONFIG (PCIe extended
//! configuration space), MSI (non-X) capabilities, and bus-master arbitration. MSI-X tables
//! live in [`msix`]; a device that wants MSI-X builds the capability in its own
//! [`PciConfig`] through it.

pub mod chipset;
pub mod config;
pub mod i440fx;
pub mod msix;
pub mod piix3;
pub mod piix4_pm;
pub mod root;

pub use chipset::PcChipset;
pub use config::{BarKind, PciConfig};
pub use root::{PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN, PciConfigIo, PciRoot};

use crate::bus::SharedDevice;

/// Which bus a region decodes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PciSpace {
    Pio,
    Mmio,
}

/// An address range a function currently decodes, and the device that answers there.
#[derive(Clone)]
pub struct PciRegion {
    pub space: PciSpace,
    pub base: u64,
    pub len: u64,
    pub dev: SharedDevice,
}

impl std::fmt::Debug for PciRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRegion")
            .field("space", &self.space)
            .field("base", &format_args!("{:#x}", self.base))
            .field("len", &format_args!("{:#x}", self.len))
            .finish_non_exhaustive()
    }
}

/// One PCI function as the root sees it: 256 bytes of configuration space and the ranges
/// it decodes. Offsets and lengths come from the guest: an implementation must accept any
/// `offset` below 256 with 1, 2 or 4 bytes (the root never passes more than that, nor an
/// access that crosses offset 256).
pub trait PciFunction: Send {
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    fn config_write(&mut self, offset: u16, data: &[u8]);
    /// The ranges this function decodes now: only those whose decode is enabled (command
    /// register, or a device-specific enable) and whose base is assigned. The root calls it
    /// after every configuration write and moves the ranges on the buses.
    fn regions(&self) -> Vec<PciRegion>;
    /// A machine reset: back to power-on state (the root remaps afterwards).
    fn reset(&mut self) {}
}

/// Packs bus 0 device/function numbers the way configuration cycles carry them.
pub const fn devfn(device: u8, function: u8) -> u8 {
    (device & 0x1f) << 3 | (function & 0x07)
}

/// Standard type-0 header offsets.
pub mod regs {
    pub const VENDOR_ID: u16 = 0x00;
    pub const DEVICE_ID: u16 = 0x02;
    pub const COMMAND: u16 = 0x04;
    pub const STATUS: u16 = 0x06;
    pub const REVISION_ID: u16 = 0x08;
    pub const CLASS_PROG: u16 = 0x09;
    pub const CACHE_LINE_SIZE: u16 = 0x0c;
    pub const LATENCY_TIMER: u16 = 0x0d;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BAR0: u16 = 0x10;
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
    pub const SUBSYSTEM_ID: u16 = 0x2e;
    pub const ROM_ADDRESS: u16 = 0x30;
    pub const CAPABILITIES: u16 = 0x34;
    pub const INTERRUPT_LINE: u16 = 0x3c;
    pub const INTERRUPT_PIN: u16 = 0x3d;

    pub const COMMAND_IO: u16 = 1 << 0;
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    pub const COMMAND_MASTER: u16 = 1 << 2;
    pub const COMMAND_PARITY: u16 = 1 << 6;
    pub const COMMAND_SERR: u16 = 1 << 8;
    pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

    pub const HEADER_TYPE_MULTI_FUNCTION: u8 = 0x80;

    /// QEMU's subsystem ids (Red Hat/Qumranet, "QEMU"): SeaBIOS takes its QEMU path when
    /// the host bridge carries them.
    pub const SUBSYSTEM_VENDOR_QEMU: u16 = 0x1af4;
    pub const SUBSYSTEM_ID_QEMU: u16 = 0x1100;
    pub const VENDOR_INTEL: u16 = 0x8086;
}
