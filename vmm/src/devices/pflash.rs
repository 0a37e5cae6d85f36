//! A CFI parallel NOR flash with the Intel/Sharp command set, one byte wide: OVMF's
//! variable store, the second flash device below its code on QEMU's `pc` machine.
//!
//! What is emulated is what OVMF's flash driver (QemuFlashFvbServicesRuntimeDxe) and a
//! CFI probe use, with QEMU's `pflash_cfi01` as the reference for what the guest sees:
//! read array (0xFF, 0x00), read status (0x70), clear status (0x50, which also returns
//! to read array, as QEMU does), read identifier (0x90), CFI query (0x98), byte program
//! (0x10, 0x40) and block erase (0x20 then 0xD0 on a 4 KiB block). Not emulated: buffered
//! writes (0xE8), block locking (0x60), suspend and resume; those commands are ignored and
//! the flash goes back to read array. A program writes the byte as given, as QEMU's does
//! (real NOR flash only clears bits); OVMF only ever clears bits outside an erase.
//!
//! In read-array mode the array is a read-only memory slot ([`RamMapper::map_read_only`]):
//! the guest reads it at memory speed and only writes exit, which are commands. Any other
//! mode takes the slot away so reads exit too and return status or identification
//! (QEMU calls this switching the device out of "romd" mode). Without a mapper, or on a
//! KVM without read-only slots, every access exits and is served here.
//!
//! The array is the VM's [`VarStore`]: a shared mapping of its file, so each byte
//! programmed is in the page cache at once. Returning to read array after a change asks
//! the store to put it on disk, off the vCPU thread.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::firmware::uefi::VarStore;
use crate::memory_slots::{RamMapper, SlotError, SlotId};
use vm_memory::{Bytes, VolatileMemory};

/// Erase granularity; OVMF's variable volume is laid out in blocks of this size.
pub const BLOCK_SIZE: u64 = 4096;

/// Status register: write state machine ready.
const STATUS_READY: u8 = 0x80;
/// Status register: erase error and program error, together a bad command sequence.
const STATUS_SEQUENCE_ERROR: u8 = 0x30;

/// Manufacturer and device codes answered in read-identifier mode (Intel, 28F128).
const MANUFACTURER_ID: u8 = 0x89;
const DEVICE_ID: u8 = 0x18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ReadArray,
    ReadStatus,
    ReadId,
    Query,
    /// The next write is the data to program.
    Program,
    /// The next write must confirm (0xD0) the erase of its block.
    EraseSetup,
}

pub struct Pflash {
    base: u64,
    store: Arc<VarStore>,
    mode: Mode,
    status: u8,
    /// Programmed or erased since the last return to read array.
    changed: bool,
    mapper: Option<Arc<dyn RamMapper>>,
    slot: Option<SlotId>,
}

impl Pflash {
    /// A flash at guest-physical `base` over `store`, in read-array mode.
    pub fn new(base: u64, store: Arc<VarStore>) -> Pflash {
        Pflash {
            base,
            store,
            mode: Mode::ReadArray,
            status: STATUS_READY,
            changed: false,
            mapper: None,
            slot: None,
        }
    }

    fn len(&self) -> u64 {
        self.store.len()
    }

    /// Lets the array be a read-only slot while the flash is in read-array mode.
    pub fn set_ram_mapper(&mut self, mapper: Arc<dyn RamMapper>) {
        self.mapper = Some(mapper);
        self.sync_slot();
    }

    /// Whether the array is mapped into the guest now (read-array mode with a mapper).
    pub fn is_mapped(&self) -> bool {
        self.slot.is_some()
    }

    fn sync_slot(&mut self) {
        let Some(mapper) = &self.mapper else { return };
        let want = self.mode == Mode::ReadArray;
        match (want, self.slot) {
            (true, None) => match mapper.map_read_only(self.base, self.store.ram()) {
                Ok(slot) => self.slot = Some(slot),
                Err(SlotError::NoReadOnly) => {
                    // Correct, only slower: every read of the store exits.
                    tracing::debug!("pflash: no read-only slots; the store is read by exits");
                    self.mapper = None;
                }
                Err(e) => {
                    tracing::warn!("pflash: cannot map the variable store: {e}");
                    self.mapper = None;
                }
            },
            (false, Some(slot)) => {
                if let Err(e) = mapper.unmap(slot) {
                    tracing::warn!("pflash: cannot unmap the variable store: {e}");
                }
                self.slot = None;
            }
            _ => {}
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        if mode == Mode::ReadArray && self.mode != Mode::ReadArray && self.changed {
            self.changed = false;
            self.store.commit();
        }
        self.mode = mode;
        self.sync_slot();
    }

    fn read_array(&self, offset: u64, data: &mut [u8]) {
        let ram = self.store.ram().as_volatile_slice();
        if ram.read_slice(data, offset as usize).is_err() {
            data.fill(0xff);
        }
    }

    /// The CFI query table (JEDEC JESD68): "QRY", the Intel command set, 3.3 V, byte
    /// writes and block erases, the device's size and one region of 4 KiB blocks.
    fn query(&self, offset: u64) -> u8 {
        let blocks = (self.len() / BLOCK_SIZE).saturating_sub(1);
        let size_log2 = 64 - self.len().saturating_sub(1).leading_zeros();
        match offset {
            0x10 => b'Q',
            0x11 => b'R',
            0x12 => b'Y',
            0x13 => 0x01, // primary command set: Intel/Sharp extended
            0x15 => 0x31, // its extended table's address
            0x1b => 0x33, // Vcc min 3.3 V
            0x1c => 0x36, // Vcc max 3.6 V
            0x1f => 0x07, // typical byte program: 2^7 us
            0x21 => 0x0a, // typical block erase: 2^10 ms
            0x23 => 0x04, // max byte program: 2^4 x typical
            0x25 => 0x04, // max block erase: 2^4 x typical
            0x27 => size_log2 as u8,
            0x28 => 0x00, // x8 interface only
            0x2c => 0x01, // one erase block region
            0x2d => blocks as u8,
            0x2e => (blocks >> 8) as u8,
            0x2f => (BLOCK_SIZE / 256) as u8,
            0x30 => ((BLOCK_SIZE / 256) >> 8) as u8,
            0x31 => b'P',
            0x32 => b'R',
            0x33 => b'I',
            0x34 => b'1',
            0x35 => b'0',
            _ => 0,
        }
    }

    fn program(&mut self, offset: u64, data: &[u8]) {
        let ram = self.store.ram().as_volatile_slice();
        if ram.write_slice(data, offset as usize).is_ok() {
            self.changed = true;
            self.status |= STATUS_READY;
        } else {
            self.status |= STATUS_SEQUENCE_ERROR;
        }
    }

    fn erase(&mut self, offset: u64) {
        let start = offset - offset % BLOCK_SIZE;
        let ram = self.store.ram().as_volatile_slice();
        let erased = [0xffu8; BLOCK_SIZE as usize];
        if ram.write_slice(&erased, start as usize).is_ok() {
            self.changed = true;
            self.status |= STATUS_READY;
        } else {
            self.status |= STATUS_SEQUENCE_ERROR;
        }
    }
}

impl BusDevice for Pflash {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.mode {
            Mode::ReadArray => self.read_array(offset, data),
            // Status is what a read answers while a command runs or after it ends.
            Mode::ReadStatus | Mode::Program | Mode::EraseSetup => data.fill(self.status),
            Mode::ReadId => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = match (offset + i as u64) % BLOCK_SIZE {
                        0 => MANUFACTURER_ID,
                        1 => DEVICE_ID,
                        _ => 0,
                    };
                }
            }
            Mode::Query => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.query(offset + i as u64);
                }
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() || offset >= self.len() {
            return;
        }
        match self.mode {
            Mode::Program => {
                self.program(offset, data);
                self.set_mode(Mode::ReadStatus);
                return;
            }
            Mode::EraseSetup => {
                if data[0] == 0xd0 {
                    self.erase(offset);
                } else {
                    self.status |= STATUS_SEQUENCE_ERROR;
                }
                self.set_mode(Mode::ReadStatus);
                return;
            }
            _ => {}
        }
        let next = match data[0] {
            0xff | 0x00 => Mode::ReadArray,
            0x10 | 0x40 => Mode::Program,
            0x20 => Mode::EraseSetup,
            0x50 => {
                self.status = 0;
                Mode::ReadArray
            }
            0x70 => Mode::ReadStatus,
            0x90 => Mode::ReadId,
            0x98 => Mode::Query,
            cmd => {
                tracing::debug!("pflash: command {cmd:#04x} at {offset:#x} is not emulated");
                Mode::ReadArray
            }
        };
        self.set_mode(next);
    }
}

impl Drop for Pflash {
    /// The slot goes before the machine that held it is rebuilt (a guest reset); what
    /// the guest changed is asked onto the disk.
    fn drop(&mut self) {
        if let (Some(mapper), Some(slot)) = (&self.mapper, self.slot.take()) {
            let _ = mapper.unmap(slot);
        }
        if self.changed {
            self.store.commit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_slots::FakeRamMapper;

    const BASE: u64 = 0xffc0_0000;
    const LEN: usize = 16 * BLOCK_SIZE as usize;

    /// A flash whose array is 0..=255 repeating, mapped through a fake hypervisor.
    fn flash() -> (Pflash, Arc<FakeRamMapper>) {
        let data: Vec<u8> = (0..LEN).map(|i| i as u8).collect();
        let mut f = Pflash::new(BASE, VarStore::in_memory(&data).unwrap());
        let mapper = FakeRamMapper::new();
        f.set_ram_mapper(mapper.clone());
        (f, mapper)
    }

    fn rd(f: &mut Pflash, off: u64) -> u8 {
        let mut b = [0u8];
        f.read(off, &mut b);
        b[0]
    }

    fn guest_rd(m: &FakeRamMapper, off: u64) -> Option<u8> {
        let mut b = [0u8];
        m.guest_read(BASE + off, &mut b).then_some(b[0])
    }

    #[test]
    fn ovmf_finds_a_flash_and_not_ram_or_rom() {
        // QemuFlashDetected: a byte that is not 0, then clear status (0x50) must not read
        // back as 0x50 (RAM would), then read status (0x70) must read 0 (cleared).
        let (mut f, m) = flash();
        let probe = 5;
        let original = rd(&mut f, probe);
        f.write(probe, &[0x50]);
        assert_eq!(
            rd(&mut f, probe),
            original,
            "0x50 leaves read-array mode on"
        );
        f.write(probe, &[0x70]);
        assert_eq!(rd(&mut f, probe), 0x00, "status after clear");
        assert_eq!(guest_rd(&m, probe), None, "status reads must exit");
        f.write(probe, &[0xff]);
        assert_eq!(
            guest_rd(&m, probe),
            Some(original),
            "read array maps it again"
        );
    }

    #[test]
    fn byte_programs_and_block_erases_change_the_store() {
        let (mut f, m) = flash();
        // QemuFlashWrite: 0x10 and the byte, for each byte; then read array once.
        for (i, b) in b"vmdesk".iter().enumerate() {
            f.write(0x2000 + i as u64, &[0x10]);
            f.write(0x2000 + i as u64, &[*b]);
            assert_eq!(rd(&mut f, 0), STATUS_READY, "status while programming");
        }
        f.write(0x2005, &[0xff]);
        let mut got = [0u8; 6];
        assert!(m.guest_read(BASE + 0x2000, &mut got));
        assert_eq!(&got, b"vmdesk");
        // QemuFlashEraseBlock: 0x20, 0xD0 anywhere in the block, read array.
        f.write(0x2123, &[0x20]);
        f.write(0x2123, &[0xd0]);
        assert_eq!(rd(&mut f, 0x2000) & STATUS_READY, STATUS_READY);
        f.write(0x2000, &[0xff]);
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        f.read(0x2000, &mut block);
        assert!(block.iter().all(|&b| b == 0xff));
        assert_eq!(rd(&mut f, 0x1fff), 0xff, "the block before: untouched");
        assert_eq!(rd(&mut f, 0x3000), 0x00, "the block after: untouched");
    }

    #[test]
    fn an_erase_without_its_confirmation_is_a_sequence_error_and_erases_nothing() {
        let (mut f, _m) = flash();
        f.write(0x1000, &[0x20]);
        f.write(0x1000, &[0xff]);
        assert_eq!(rd(&mut f, 0) & STATUS_SEQUENCE_ERROR, STATUS_SEQUENCE_ERROR);
        f.write(0, &[0x50]);
        f.write(0, &[0x70]);
        assert_eq!(rd(&mut f, 0), 0, "clear status clears the error");
        f.write(0, &[0xff]);
        assert_eq!(rd(&mut f, 0x1001), 0x01);
    }

    #[test]
    fn identifier_and_cfi_query() {
        let (mut f, _m) = flash();
        f.write(0, &[0x90]);
        assert_eq!((rd(&mut f, 0), rd(&mut f, 1)), (MANUFACTURER_ID, DEVICE_ID));
        f.write(0, &[0x98]);
        let qry: Vec<u8> = (0x10..0x13).map(|o| rd(&mut f, o)).collect();
        assert_eq!(qry, b"QRY");
        assert_eq!(1u64 << rd(&mut f, 0x27), LEN as u64);
        let blocks = u16::from_le_bytes([rd(&mut f, 0x2d), rd(&mut f, 0x2e)]) as u64 + 1;
        let size = u16::from_le_bytes([rd(&mut f, 0x2f), rd(&mut f, 0x30)]) as u64 * 256;
        assert_eq!((blocks, size), (LEN as u64 / BLOCK_SIZE, BLOCK_SIZE));
        f.write(0, &[0xff]);
        assert_eq!(rd(&mut f, 0x27), 0x27);
    }

    #[test]
    fn writes_outside_the_array_and_unknown_commands_change_nothing() {
        let (mut f, m) = flash();
        f.write(LEN as u64, &[0x10]);
        f.write(LEN as u64, &[0x00]);
        f.write(7, &[0xe8]); // buffered write: not emulated, back to read array
        assert_eq!(guest_rd(&m, 7), Some(7));
        assert_eq!(rd(&mut f, 7), 7);
    }

    #[test]
    fn without_read_only_slots_every_access_is_served_by_the_device() {
        struct NoReadOnly;
        impl RamMapper for NoReadOnly {
            fn map(
                &self,
                _: u64,
                _: &crate::memory_slots::HostRam,
                _: bool,
            ) -> Result<SlotId, SlotError> {
                unreachable!()
            }
            fn map_read_only(
                &self,
                _: u64,
                _: &crate::memory_slots::HostRam,
            ) -> Result<SlotId, SlotError> {
                Err(SlotError::NoReadOnly)
            }
            fn unmap(&self, _: SlotId) -> Result<(), SlotError> {
                unreachable!()
            }
            fn dirty_pages(&self, _: SlotId) -> Result<Vec<u64>, SlotError> {
                unreachable!()
            }
        }
        let mut f = Pflash::new(BASE, VarStore::in_memory(&[1u8; LEN]).unwrap());
        f.set_ram_mapper(Arc::new(NoReadOnly));
        assert!(!f.is_mapped());
        f.write(3, &[0x40]);
        f.write(3, &[0x42]);
        f.write(3, &[0xff]);
        assert_eq!((rd(&mut f, 2), rd(&mut f, 3)), (1, 0x42));
    }

    #[test]
    fn what_is_programmed_reaches_the_file() {
        if !crate::firmware::uefi::available() {
            eprintln!("SKIP: the ovmf package is not installed");
            return;
        }
        let p = std::env::temp_dir().join(format!("vmdesk-pflash-{}.fd", std::process::id()));
        let _ = std::fs::remove_file(&p);
        crate::firmware::uefi::create_vars(&p).unwrap();
        let at = 0x40000u64; // past the variable store's header, still erased (0xFF)
        {
            let mut f = Pflash::new(BASE, VarStore::open(&p).unwrap());
            f.write(at, &[0x10]);
            f.write(at, &[0x5a]);
            f.write(at, &[0xff]);
            // Before any write-back, another reader of the file sees it (page cache):
            // what survives the VMM being killed.
            assert_eq!(std::fs::read(&p).unwrap()[at as usize], 0x5a);
        }
        let mut f = Pflash::new(BASE, VarStore::open(&p).unwrap());
        assert_eq!(rd(&mut f, at), 0x5a);
        std::fs::remove_file(&p).unwrap();
    }
}
