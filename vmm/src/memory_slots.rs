//! Host memory that a device owns and the guest reaches directly, without an exit per
//! access: the VGA linear framebuffer is the case. A device hands a [`HostRam`] region to a
//! [`RamMapper`] at the guest-physical address its BAR was given, asks for dirty logging,
//! and later reads which pages the guest wrote. On KVM this is a memory slot with
//! `KVM_MEM_LOG_DIRTY_PAGES` ([`crate::kvm::slots::KvmRamMapper`]); in tests it is
//! [`FakeRamMapper`], through which the test plays the guest's writes.
//!
//! Dirty bitmaps are `Vec<u64>`, one bit per 4 KiB page, bit `n % 64` of word `n / 64`,
//! as KVM returns them. Reading a bitmap clears it (KVM_GET_DIRTY_LOG semantics).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, VolatileMemory};

/// Page granule of dirty tracking.
pub const PAGE_SIZE: u64 = 4096;

/// Anonymous host memory a device owns and may hand to the guest.
pub type HostRam = Arc<MmapRegion<()>>;

/// Allocates `len` bytes of zeroed host memory.
pub fn alloc_host_ram(len: usize) -> Result<HostRam, SlotError> {
    MmapRegion::new(len)
        .map(Arc::new)
        .map_err(|e| SlotError::Alloc(e.to_string()))
}

/// A mapping made by a [`RamMapper`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub u32);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("cannot allocate host memory: {0}")]
    Alloc(String),
    #[error("no free memory slot")]
    NoSlot,
    #[error("guest range {addr:#x}+{len:#x} is not page aligned or overlaps a mapping")]
    BadRange { addr: u64, len: u64 },
    #[error("unknown memory slot {0:?}")]
    Unknown(SlotId),
    #[error("the hypervisor refused the memory slot: {0}")]
    Hypervisor(String),
    #[error("the hypervisor has no read-only memory slots")]
    NoReadOnly,
}

/// Puts host memory into the guest-physical address space.
pub trait RamMapper: Send + Sync {
    /// Maps all of `host` at `guest_addr` (page aligned), with dirty-page logging if asked.
    fn map(&self, guest_addr: u64, host: &HostRam, dirty_log: bool) -> Result<SlotId, SlotError>;
    /// Maps all of `host` at `guest_addr` for reading only: the guest's reads come from
    /// `host` with no exit, its writes still exit as MMIO (a flash device in read mode).
    fn map_read_only(&self, guest_addr: u64, host: &HostRam) -> Result<SlotId, SlotError>;
    /// Takes a mapping away; the guest's accesses there exit as MMIO again.
    fn unmap(&self, slot: SlotId) -> Result<(), SlotError>;
    /// Pages written since the last call (or since the mapping was made), and clears them.
    fn dirty_pages(&self, slot: SlotId) -> Result<Vec<u64>, SlotError>;
}

/// Number of u64 words a bitmap for `len` bytes takes.
pub fn bitmap_words(len: u64) -> usize {
    len.div_ceil(PAGE_SIZE).div_ceil(64) as usize
}

/// Whether page `page` is set in `bitmap`.
pub fn page_is_dirty(bitmap: &[u64], page: usize) -> bool {
    bitmap
        .get(page / 64)
        .is_some_and(|w| w & (1u64 << (page % 64)) != 0)
}

/// Sets the pages that `[offset, offset + len)` touches.
pub fn mark_range(bitmap: &mut [u64], offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    let first = offset / PAGE_SIZE;
    let last = (offset + len - 1) / PAGE_SIZE;
    for p in first..=last {
        if let Some(w) = bitmap.get_mut((p / 64) as usize) {
            *w |= 1u64 << (p % 64);
        }
    }
}

struct FakeSlot {
    addr: u64,
    host: HostRam,
    dirty_log: bool,
    read_only: bool,
    dirty: Vec<u64>,
}

/// A [`RamMapper`] without a hypervisor: tests write "guest" memory through
/// [`FakeRamMapper::guest_write`], which lands in the mapped host memory and sets dirty
/// bits exactly as KVM's dirty log would.
#[derive(Default)]
pub struct FakeRamMapper {
    slots: Mutex<BTreeMap<SlotId, FakeSlot>>,
    next: Mutex<u32>,
}

impl FakeRamMapper {
    pub fn new() -> Arc<FakeRamMapper> {
        Arc::new(FakeRamMapper::default())
    }

    /// The mappings now: (slot, guest address, length).
    pub fn mappings(&self) -> Vec<(SlotId, u64, u64)> {
        self.slots
            .lock()
            .unwrap()
            .iter()
            .map(|(&id, s)| (id, s.addr, s.host.size() as u64))
            .collect()
    }

    /// A guest write of `data` at guest-physical `addr`; false when no writable mapping
    /// covers it (on KVM the write would exit as MMIO).
    pub fn guest_write(&self, addr: u64, data: &[u8]) -> bool {
        let mut slots = self.slots.lock().unwrap();
        for s in slots.values_mut() {
            let len = s.host.size() as u64;
            if !s.read_only && addr >= s.addr && addr + data.len() as u64 <= s.addr + len {
                let off = addr - s.addr;
                if s.host
                    .as_volatile_slice()
                    .write_slice(data, off as usize)
                    .is_err()
                {
                    return false;
                }
                if s.dirty_log {
                    mark_range(&mut s.dirty, off, data.len() as u64);
                }
                return true;
            }
        }
        false
    }

    /// A guest read at guest-physical `addr`; false when no mapping covers it.
    pub fn guest_read(&self, addr: u64, data: &mut [u8]) -> bool {
        let slots = self.slots.lock().unwrap();
        slots.values().any(|s| {
            let len = s.host.size() as u64;
            addr >= s.addr
                && addr + data.len() as u64 <= s.addr + len
                && s.host
                    .as_volatile_slice()
                    .read_slice(data, (addr - s.addr) as usize)
                    .is_ok()
        })
    }
}

impl FakeRamMapper {
    fn add(
        &self,
        guest_addr: u64,
        host: &HostRam,
        dirty_log: bool,
        read_only: bool,
    ) -> Result<SlotId, SlotError> {
        let len = host.size() as u64;
        let mut slots = self.slots.lock().unwrap();
        let overlaps = slots
            .values()
            .any(|s| guest_addr < s.addr + s.host.size() as u64 && s.addr < guest_addr + len);
        if !guest_addr.is_multiple_of(PAGE_SIZE) || overlaps {
            return Err(SlotError::BadRange {
                addr: guest_addr,
                len,
            });
        }
        let mut next = self.next.lock().unwrap();
        let id = SlotId(*next);
        *next += 1;
        slots.insert(
            id,
            FakeSlot {
                addr: guest_addr,
                host: host.clone(),
                dirty_log,
                read_only,
                dirty: vec![0; bitmap_words(len)],
            },
        );
        Ok(id)
    }
}

impl RamMapper for FakeRamMapper {
    fn map(&self, guest_addr: u64, host: &HostRam, dirty_log: bool) -> Result<SlotId, SlotError> {
        self.add(guest_addr, host, dirty_log, false)
    }

    fn map_read_only(&self, guest_addr: u64, host: &HostRam) -> Result<SlotId, SlotError> {
        self.add(guest_addr, host, false, true)
    }

    fn unmap(&self, slot: SlotId) -> Result<(), SlotError> {
        self.slots
            .lock()
            .unwrap()
            .remove(&slot)
            .map(|_| ())
            .ok_or(SlotError::Unknown(slot))
    }

    fn dirty_pages(&self, slot: SlotId) -> Result<Vec<u64>, SlotError> {
        let mut slots = self.slots.lock().unwrap();
        let s = slots.get_mut(&slot).ok_or(SlotError::Unknown(slot))?;
        let n = s.dirty.len();
        Ok(std::mem::replace(&mut s.dirty, vec![0; n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_mapper_logs_dirty_pages_and_clears_on_read() {
        let m = FakeRamMapper::new();
        let ram = alloc_host_ram(64 << 10).unwrap();
        let id = m.map(0xfd00_0000, &ram, true).unwrap();
        assert!(matches!(
            m.map(0xfd00_8000, &ram, true),
            Err(SlotError::BadRange { .. })
        ));
        assert!(m.guest_write(0xfd00_2ffe, &[1, 2, 3, 4]));
        assert!(!m.guest_write(0xfe00_0000, &[1]));
        let d = m.dirty_pages(id).unwrap();
        assert_eq!(d, vec![0b1100]);
        assert_eq!(m.dirty_pages(id).unwrap(), vec![0]);
        let mut b = [0u8; 4];
        ram.as_volatile_slice().read_slice(&mut b, 0x2ffe).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        m.unmap(id).unwrap();
        assert_eq!(m.unmap(id), Err(SlotError::Unknown(id)));
        assert!(!m.guest_write(0xfd00_0000, &[1]));
    }

    #[test]
    fn bitmap_helpers() {
        let mut b = vec![0u64; 2];
        mark_range(&mut b, 63 * 4096 + 10, 4096);
        assert!(page_is_dirty(&b, 63) && page_is_dirty(&b, 64));
        assert!(!page_is_dirty(&b, 62) && !page_is_dirty(&b, 65));
        assert!(!page_is_dirty(&b, 1000));
        mark_range(&mut b, 1 << 30, 1); // out of range: ignored
        assert_eq!(bitmap_words(16 << 20), 64);
    }
}
