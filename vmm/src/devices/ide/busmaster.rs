//! Bus-master IDE DMA (the SFF-8038i / PIIX "BMIDE" registers in BAR4): per channel a
//! command register (start, direction), a status register (active, error, interrupt; two
//! "drive can DMA" bits software keeps) and the address of a physical region descriptor
//! (PRD) table in guest memory.
//!
//! A PRD is 8 bytes: a buffer address (bit 0 ignored), a byte count in 16 bits (0 = 64 KiB)
//! and, in bit 31 of the second dword, end of table (EOT). The table is guest data and
//! untrusted: a descriptor or buffer outside guest RAM, a table without EOT (we read at
//! most the 64 KiB a table may span: 8192 entries), or a table shorter than the transfer
//! fails the command with the error bit set. It never panics and never loops forever.
//!
//! A transfer whose direction bit disagrees with the command (memory-to-device for a
//! read, or the reverse) is refused with the error bit.

use std::io;

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMem;

pub const BM_CMD: u64 = 0;
pub const BM_STATUS: u64 = 2;
pub const BM_PRD: u64 = 4;
/// Register bytes per channel (the secondary's start at 8 in the BAR).
pub const BM_CHANNEL_PORTS: u64 = 8;

pub const CMD_START: u8 = 0x01;
/// The device writes memory (a read from the disk).
pub const CMD_TO_MEMORY: u8 = 0x08;
pub const STATUS_ACTIVE: u8 = 0x01;
pub const STATUS_ERROR: u8 = 0x02;
pub const STATUS_IRQ: u8 = 0x04;
/// "Drive 0/1 DMA capable": plain read/write bits for the driver's bookkeeping.
const STATUS_DRIVE_CAPS: u8 = 0x60;
const PRD_EOT: u32 = 1 << 31;
/// A PRD table lies within one 64 KiB region: at most this many entries.
pub const MAX_PRDS: u64 = 0x1_0000 / 8;

#[derive(Default, Debug)]
pub struct BusMaster {
    pub cmd: u8,
    pub status: u8,
    pub prd: u32,
}

impl BusMaster {
    pub fn read(&self, offset: u64) -> u8 {
        match offset {
            BM_CMD => self.cmd,
            BM_STATUS => self.status,
            4..=7 => self.prd.to_le_bytes()[offset as usize - 4],
            _ => 0,
        }
    }

    /// Returns true when the write set the start bit (0 → 1).
    pub fn write(&mut self, offset: u64, v: u8) -> bool {
        match offset {
            BM_CMD => {
                let was = self.cmd & CMD_START;
                self.cmd = v & (CMD_START | CMD_TO_MEMORY);
                if self.cmd & CMD_START == 0 {
                    // Stopping the engine ends (aborts) the transfer.
                    self.status &= !STATUS_ACTIVE;
                    false
                } else if was == 0 {
                    self.status |= STATUS_ACTIVE;
                    true
                } else {
                    false
                }
            }
            BM_STATUS => {
                let w1c = v & (STATUS_ERROR | STATUS_IRQ);
                self.status = (self.status & !w1c & !STATUS_DRIVE_CAPS) | (v & STATUS_DRIVE_CAPS);
                false
            }
            4..=7 => {
                let mut b = self.prd.to_le_bytes();
                b[offset as usize - 4] = v;
                // The table is dword aligned: the low two bits read as zero.
                self.prd = u32::from_le_bytes(b) & !3;
                false
            }
            _ => false,
        }
    }
}

/// Why a DMA transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("PRD entry at {0:#x} is outside guest memory")]
    BadTable(u64),
    #[error("PRD buffer {0:#x}+{1:#x} is outside guest memory")]
    BadBuffer(u64, u64),
    #[error("PRD table at {0:#x} has no end-of-table entry")]
    NoEot(u64),
    #[error("PRD table ends {0} bytes before the transfer does")]
    TooShort(u64),
    #[error("the device could not supply the data: {0}")]
    Device(#[from] io::Error),
}

impl DmaError {
    /// A fault of the guest's DMA set-up (as opposed to the medium's).
    pub fn is_bus_error(&self) -> bool {
        !matches!(self, DmaError::Device(_))
    }
}

/// How a successful transfer ended.
#[derive(Debug, PartialEq, Eq)]
pub struct DmaDone {
    /// The PRDs described more memory than the transfer needed: the engine stays active
    /// (BMIDE spec: the interrupt bit is set, the active bit is not cleared).
    pub prd_left_over: bool,
}

/// Walks the PRD table at `table` for a transfer of `total` bytes, handing each memory
/// region (guest address, length) to `region` in order.
fn walk(
    mem: &GuestMem,
    table: u32,
    total: u64,
    mut region: impl FnMut(u64, usize) -> Result<(), DmaError>,
) -> Result<DmaDone, DmaError> {
    let mut left = total;
    for i in 0..MAX_PRDS {
        let at = u64::from(table) + i * 8;
        let mut e = [0u8; 8];
        mem.read_slice(&mut e, GuestAddress(at))
            .map_err(|_| DmaError::BadTable(at))?;
        let addr = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1);
        let word = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let len = match word & 0xffff {
            0 => 0x1_0000,
            n => u64::from(n),
        };
        let eot = word & PRD_EOT != 0;
        let n = len.min(left);
        if n > 0 {
            region(addr, n as usize)?;
            left -= n;
        }
        if left == 0 {
            return Ok(DmaDone {
                prd_left_over: n < len || !eot,
            });
        }
        if eot {
            return Err(DmaError::TooShort(left));
        }
    }
    Err(DmaError::NoEot(u64::from(table)))
}

/// Moves `total` bytes the device produces through `fill` into guest memory along the PRD
/// table at `table`.
pub fn dma_to_guest(
    mem: &GuestMem,
    table: u32,
    total: u64,
    mut fill: impl FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<DmaDone, DmaError> {
    let mut bounce = Vec::new();
    walk(mem, table, total, |addr, n| {
        bounce.resize(n, 0);
        fill(&mut bounce)?;
        mem.write_slice(&bounce, GuestAddress(addr))
            .map_err(|_| DmaError::BadBuffer(addr, n as u64))
    })
}

/// Moves `total` bytes from guest memory along the PRD table at `table` to the device,
/// through `sink`, in order.
pub fn dma_from_guest(
    mem: &GuestMem,
    table: u32,
    total: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<DmaDone, DmaError> {
    let mut bounce = Vec::new();
    walk(mem, table, total, |addr, n| {
        bounce.resize(n, 0);
        mem.read_slice(&mut bounce, GuestAddress(addr))
            .map_err(|_| DmaError::BadBuffer(addr, n as u64))?;
        Ok(sink(&bounce)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn prd(mem: &GuestMem, at: u64, entries: &[(u32, u32)]) {
        for (i, &(a, c)) in entries.iter().enumerate() {
            let mut b = a.to_le_bytes().to_vec();
            b.extend_from_slice(&c.to_le_bytes());
            mem.write_slice(&b, GuestAddress(at + 8 * i as u64))
                .unwrap();
        }
    }

    fn counter() -> impl FnMut(&mut [u8]) -> io::Result<()> {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            for x in b {
                *x = n;
                n = n.wrapping_add(1);
            }
            Ok(())
        }
    }

    #[test]
    fn scatters_along_the_table() {
        let m = mem();
        prd(&m, 0x1000, &[(0x2000, 100), (0x3001, 156 | PRD_EOT)]);
        let r = dma_to_guest(&m, 0x1000, 256, counter()).unwrap();
        assert!(!r.prd_left_over);
        let mut b = [0u8; 100];
        m.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
        assert_eq!(b[99], 99);
        // Bit 0 of the address is ignored.
        let mut b = [0u8; 156];
        m.read_slice(&mut b, GuestAddress(0x3000)).unwrap();
        assert_eq!((b[0], b[155]), (100, 255));
    }

    #[test]
    fn gathers_from_guest_memory() {
        let m = mem();
        m.write_slice(&[1, 2, 3, 4], GuestAddress(0x5000)).unwrap();
        m.write_slice(&[5, 6], GuestAddress(0x6000)).unwrap();
        prd(&m, 0x1000, &[(0x5000, 4), (0x6000, 2 | PRD_EOT)]);
        let mut got = Vec::new();
        let r = dma_from_guest(&m, 0x1000, 6, |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert!(!r.prd_left_over);
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
        prd(&m, 0x1000, &[(0xfff0_0000, 6 | PRD_EOT)]);
        assert!(matches!(
            dma_from_guest(&m, 0x1000, 6, |_| Ok(())),
            Err(DmaError::BadBuffer(..))
        ));
    }

    #[test]
    fn count_zero_is_64k_and_leftover_is_reported() {
        let m = mem();
        prd(&m, 0, &[(0x10000, PRD_EOT)]);
        let r = dma_to_guest(&m, 0, 0x1_0000, counter()).unwrap();
        assert!(!r.prd_left_over);
        let r = dma_to_guest(&m, 0, 512, counter()).unwrap();
        assert!(r.prd_left_over);
    }

    #[test]
    fn bad_tables_fail_cleanly() {
        let m = mem();
        // Buffer outside RAM.
        prd(&m, 0, &[(0xfff0_0000, 512 | PRD_EOT)]);
        assert!(matches!(
            dma_to_guest(&m, 0, 512, counter()),
            Err(DmaError::BadBuffer(..))
        ));
        // Buffer that runs off the end of RAM.
        prd(&m, 0, &[((1 << 20) - 256, 512 | PRD_EOT)]);
        assert!(dma_to_guest(&m, 0, 512, counter()).is_err());
        // Table outside RAM.
        assert!(matches!(
            dma_to_guest(&m, 0xffff_0000, 512, counter()),
            Err(DmaError::BadTable(_))
        ));
        // Table shorter than the transfer.
        prd(&m, 0, &[(0x8000, 256 | PRD_EOT)]);
        assert!(matches!(
            dma_to_guest(&m, 0, 512, counter()),
            Err(DmaError::TooShort(256))
        ));
        // No EOT anywhere: 8192 one-byte entries then give up.
        let entries: Vec<(u32, u32)> = (0..MAX_PRDS).map(|_| (0x8000, 1)).collect();
        prd(&m, 0x10000, &entries);
        assert!(matches!(
            dma_to_guest(&m, 0x10000, 1 << 20, counter()),
            Err(DmaError::NoEot(_))
        ));
        // Table running off the end of memory without EOT.
        prd(&m, (1 << 20) - 8, &[(0x8000, 1)]);
        assert!(matches!(
            dma_to_guest(&m, (1 << 20) - 8, 512, counter()),
            Err(DmaError::BadTable(_))
        ));
    }

    #[test]
    fn registers() {
        let mut bm = BusMaster::default();
        assert!(bm.write(BM_CMD, CMD_START | CMD_TO_MEMORY | 0xf0));
        assert_eq!(bm.read(BM_CMD), CMD_START | CMD_TO_MEMORY);
        assert_eq!(bm.read(BM_STATUS) & STATUS_ACTIVE, STATUS_ACTIVE);
        assert!(!bm.write(BM_CMD, CMD_START));
        bm.status |= STATUS_IRQ | STATUS_ERROR;
        bm.write(BM_STATUS, STATUS_IRQ | 0x20);
        assert_eq!(bm.read(BM_STATUS), STATUS_ACTIVE | STATUS_ERROR | 0x20);
        bm.write(BM_CMD, 0);
        assert_eq!(bm.read(BM_STATUS) & STATUS_ACTIVE, 0);
        for (i, b) in 0x1234_5677u32.to_le_bytes().iter().enumerate() {
            bm.write(BM_PRD + i as u64, *b);
        }
        assert_eq!(bm.prd, 0x1234_5674);
    }
}
