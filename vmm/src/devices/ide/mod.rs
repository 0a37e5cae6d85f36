//! The PIIX3 IDE controller with ATAPI CD-ROM drives: what SeaBIOS's El Torito boot and
//! Linux's ata_piix + sr drivers use to read installer ISOs.
//!
//! - [`pci`]: the PCI function (8086:7010 at 01.1) and [`Ide`], which builds it all;
//! - [`controller`]: one channel's ATA registers, interrupts, PIO, and its DMA engine;
//! - [`busmaster`]: the bus-master registers and the PRD table walk;
//! - [`atapi`]: the CD-ROM's packet commands and sense data;
//! - [`ata`]: an ATA hard disk's identity (for guests without virtio drivers).

pub mod ata;
pub mod atapi;
pub mod busmaster;
pub mod controller;
pub mod pci;

pub use ata::AtaDisk;
pub use atapi::{AtapiCdrom, MediaError};
pub use controller::IdeDevice;
pub use pci::{IDE_DEVFN, Ide, IdeDrives, PiixIde};

#[cfg(test)]
mod tests;
