//! The port-I/O and MMIO buses. Devices sit on a bus at a base address and see only
//! offsets from it; they never touch KVM, so a test can drive them exactly as a guest
//! driver would (QEMU's qtest is the model). vCPU threads hand their exits to a bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use thiserror::Error;

/// A device (or one region of one) on a bus.
pub trait BusDevice: Send {
    /// Fills `data` from the device; `offset` is relative to where it was inserted.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Hands `data` to the device; `offset` is relative to where it was inserted.
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Wraps a device for the bus.
pub fn shared<D: BusDevice + 'static>(dev: D) -> Arc<Mutex<D>> {
    Arc::new(Mutex::new(dev))
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

struct Range {
    len: u64,
    dev: SharedDevice,
}

/// Address ranges → devices. Lookups take a read lock; remapping (a BAR the firmware
/// moves) takes the write lock, which is rare.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Range>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `dev` at `[base, base + len)`.
    pub fn insert(&self, base: u64, len: u64, dev: SharedDevice) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::BadRange { base, len });
        }
        let mut ranges = self.ranges.write().unwrap();
        if let Some((&other, r)) = ranges.range(..base + len).next_back()
            && other + r.len > base
        {
            return Err(BusError::Overlap { base, len, other });
        }
        ranges.insert(base, Range { len, dev });
        Ok(())
    }

    /// Takes away the range that starts at `base`, if there is one.
    pub fn remove(&self, base: u64) -> Option<SharedDevice> {
        self.ranges.write().unwrap().remove(&base).map(|r| r.dev)
    }

    /// Takes every device off the bus. Devices that reach the bus themselves (the PCI root
    /// moves BARs on the buses that hold its configuration ports) form reference cycles
    /// with it; the machine breaks them this way when it is dropped.
    pub fn clear(&self) {
        self.ranges.write().unwrap().clear();
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap();
        let (&base, r) = ranges.range(..=addr).next_back()?;
        let end = addr.checked_add(size as u64)?;
        (end <= base + r.len).then(|| (addr - base, r.dev.clone()))
    }

    /// Reads from whichever device covers `addr`. Unclaimed addresses read as all ones,
    /// as on a PC; returns whether a device answered.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock().unwrap().read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to whichever device covers `addr`; writes nobody claims are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock().unwrap().write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Scratch {
        bytes: [u8; 8],
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Scratch {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.bytes[o..o + data.len()]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.bytes[o..o + data.len()].copy_from_slice(data);
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_offset_and_reads_ones_elsewhere() {
        let bus = Bus::new();
        let dev = shared(Scratch::default());
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.write(0x3fa, &[0xab]));
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [0xab]);
        assert_eq!(dev.lock().unwrap().writes, vec![(2, vec![0xab])]);
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b, [0xff]);
        // An access that straddles the end of a range is nobody's.
        let mut w = [0u8; 2];
        assert!(!bus.read(0x3ff, &mut w));
    }

    #[test]
    fn refuses_overlaps_and_remaps() {
        let bus = Bus::new();
        bus.insert(0x100, 0x10, shared(Scratch::default())).unwrap();
        assert_eq!(
            bus.insert(0x108, 4, shared(Scratch::default())),
            Err(BusError::Overlap {
                base: 0x108,
                len: 4,
                other: 0x100
            })
        );
        assert!(matches!(
            bus.insert(0xf0, 0x11, shared(Scratch::default())),
            Err(BusError::Overlap { .. })
        ));
        bus.insert(0xf0, 0x10, shared(Scratch::default())).unwrap();
        assert!(bus.remove(0x100).is_some());
        bus.insert(0x108, 4, shared(Scratch::default())).unwrap();
        assert!(matches!(
            bus.insert(0, 0, shared(Scratch::default())),
            Err(BusError::BadRange { .. })
        ));
    }
}
