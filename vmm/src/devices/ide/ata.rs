//! An ATA hard disk on IDE, for guests without virtio drivers (older installers). The
//! command set is what SeaBIOS's ata.c and Linux's libata use: IDENTIFY DEVICE, READ/WRITE
//! SECTORS (and EXT), READ/WRITE MULTIPLE (and EXT), READ/WRITE DMA (and EXT), READ VERIFY,
//! FLUSH CACHE (and EXT), SET MULTIPLE MODE, INITIALIZE DEVICE PARAMETERS, SET FEATURES and
//! the power-management no-ops. LBA28, LBA48 and CHS addressing (with the geometry
//! IDENTIFY reports: 16 heads, 63 sectors per track).
//!
//! Not emulated: security, SMART, host-protected area, TRIM (DATA SET MANAGEMENT), NCQ
//! (that is AHCI's), and write caching is always on (FLUSH CACHE is the guest's way to make
//! writes durable, which the backend honours).
//!
//! This type holds the disk and its identity; the channel ([`super::controller`]) runs the
//! protocol.

use std::io;

use crate::disk::BlockBackend;

pub const ATA_SECTOR: usize = 512;
pub const HEADS: u64 = 16;
pub const SECTORS_PER_TRACK: u64 = 63;
/// The most sectors one DRQ block of READ/WRITE MULTIPLE may carry here.
pub const MAX_MULTIPLE: u8 = 16;

pub struct AtaDisk {
    backend: Box<dyn BlockBackend>,
    /// Sectors per DRQ block for the MULTIPLE commands (0 = not set: they abort).
    pub(super) multiple: u8,
    model: &'static str,
    serial: String,
}

impl AtaDisk {
    pub fn new(backend: Box<dyn BlockBackend>) -> AtaDisk {
        AtaDisk {
            backend,
            multiple: MAX_MULTIPLE,
            model: "vmdesk HARDDISK",
            serial: "VMDESK-HD0".to_owned(),
        }
    }

    /// Whole 512-byte sectors (a trailing partial sector is not addressable).
    pub fn sectors(&self) -> u64 {
        self.backend.len() / ATA_SECTOR as u64
    }

    pub fn read_only(&self) -> bool {
        self.backend.read_only()
    }

    /// Cylinders for the CHS geometry, capped at the 16383 ATA allows.
    pub fn cylinders(&self) -> u64 {
        (self.sectors() / (HEADS * SECTORS_PER_TRACK)).clamp(1, 16383)
    }

    /// Whether `count` sectors from `lba` are on the disk.
    pub fn in_range(&self, lba: u64, count: u64) -> bool {
        lba.checked_add(count)
            .is_some_and(|end| end <= self.sectors())
    }

    pub fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        let off = lba
            .checked_mul(ATA_SECTOR as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.backend.read_at(off, buf)
    }

    pub fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> io::Result<()> {
        let off = lba
            .checked_mul(ATA_SECTOR as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.backend.write_at(off, buf)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.backend.flush()
    }

    /// IDENTIFY DEVICE data (ATA8-ACS 7.12).
    pub fn identify(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        let sectors = self.sectors();
        let cyl = self.cylinders() as u16;
        w[0] = 0x0040; // fixed disk
        w[1] = cyl;
        w[3] = HEADS as u16;
        w[6] = SECTORS_PER_TRACK as u16;
        put_string(&mut w[10..20], &self.serial);
        put_string(&mut w[23..27], "0.1");
        put_string(&mut w[27..47], self.model);
        w[47] = 0x8000 | u16::from(MAX_MULTIPLE);
        w[49] = (1 << 9) | (1 << 8); // LBA, DMA
        w[53] = 0b111;
        w[54] = cyl;
        w[55] = HEADS as u16;
        w[56] = SECTORS_PER_TRACK as u16;
        let chs = (u64::from(cyl) * HEADS * SECTORS_PER_TRACK).min(sectors) as u32;
        w[57] = chs as u16;
        w[58] = (chs >> 16) as u16;
        if self.multiple != 0 {
            w[59] = 0x100 | u16::from(self.multiple);
        }
        let lba28 = sectors.min(0x0fff_ffff) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        w[63] = 0x0407; // multiword DMA 0-2, mode 2 selected
        w[64] = 0x0003; // PIO 3 and 4
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[80] = 0x00f0; // ATA/ATAPI-4 to -7
        w[81] = 0x0016;
        // Supported / enabled: write cache (bit 5), NOP-less; FLUSH CACHE, FLUSH CACHE EXT,
        // LBA48; "valid" bit 14 in the words that need it.
        w[82] = 1 << 5;
        w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10);
        w[84] = 1 << 14;
        w[85] = w[82];
        w[86] = (1 << 13) | (1 << 12) | (1 << 10);
        w[87] = 1 << 14;
        w[88] = 0x3f | (1 << 13); // UDMA 0-5, mode 5 selected
        for (i, word) in w[100..104].iter_mut().enumerate() {
            *word = (sectors >> (16 * i)) as u16;
        }
        w
    }
}

/// ATA strings: space padded, two characters per word, first in the high byte.
pub(super) fn put_string(words: &mut [u16], s: &str) {
    let mut b = vec![b' '; words.len() * 2];
    for (d, c) in b.iter_mut().zip(s.bytes()) {
        *d = c;
    }
    for (i, w) in words.iter_mut().enumerate() {
        *w = u16::from(b[2 * i]) << 8 | u16::from(b[2 * i + 1]);
    }
}
