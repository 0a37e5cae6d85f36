//! [`RamMapper`] on KVM: each mapping is a user memory slot, with
//! `KVM_MEM_LOG_DIRTY_PAGES` when the device asks for dirty tracking, read back with
//! `KVM_GET_DIRTY_LOG` (which also clears the log).
//!
//! Slot numbers are taken from `first_slot` upwards so they never collide with the slots
//! [`super::KvmVm::map_memory`] gives guest RAM (0..number of RAM regions); freed numbers
//! are reused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;

use crate::memory_slots::{HostRam, PAGE_SIZE, RamMapper, SlotError, SlotId};

/// The first KVM slot number device mappings use; RAM uses fewer than this.
pub const FIRST_DEVICE_SLOT: u32 = 32;
/// KVM guarantees at least 32 user slots per address space; x86 has 509.
const LAST_DEVICE_SLOT: u32 = 500;

struct Mapping {
    region: kvm_userspace_memory_region,
    /// Keeps the host memory alive while KVM may touch it.
    _host: HostRam,
}

pub struct KvmRamMapper {
    vm: Arc<VmFd>,
    /// KVM_CAP_READONLY_MEM.
    read_only: bool,
    slots: Mutex<BTreeMap<u32, Mapping>>,
}

impl KvmRamMapper {
    pub fn new(vm: &super::KvmVm) -> KvmRamMapper {
        KvmRamMapper {
            vm: vm.fd.clone(),
            read_only: vm.readonly_mem,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    fn add(&self, guest_addr: u64, host: &HostRam, flags: u32) -> Result<SlotId, SlotError> {
        let len = host.size() as u64;
        if !guest_addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(SlotError::BadRange {
                addr: guest_addr,
                len,
            });
        }
        let mut slots = self.slots.lock().unwrap();
        let slot = (FIRST_DEVICE_SLOT..=LAST_DEVICE_SLOT)
            .find(|s| !slots.contains_key(s))
            .ok_or(SlotError::NoSlot)?;
        let region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: guest_addr,
            memory_size: len,
            userspace_addr: host.as_ptr() as u64,
        };
        // SAFETY: `host` is a live mapping of `len` bytes; the Arc clone kept in
        // `slots` holds it until the slot is deleted in `unmap` (or the VM goes away).
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| SlotError::Hypervisor(e.to_string()))?;
        slots.insert(
            slot,
            Mapping {
                region,
                _host: host.clone(),
            },
        );
        Ok(SlotId(slot))
    }
}

impl RamMapper for KvmRamMapper {
    fn map(&self, guest_addr: u64, host: &HostRam, dirty_log: bool) -> Result<SlotId, SlotError> {
        let flags = if dirty_log {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        self.add(guest_addr, host, flags)
    }

    fn map_read_only(&self, guest_addr: u64, host: &HostRam) -> Result<SlotId, SlotError> {
        if !self.read_only {
            return Err(SlotError::NoReadOnly);
        }
        self.add(guest_addr, host, KVM_MEM_READONLY)
    }

    fn unmap(&self, slot: SlotId) -> Result<(), SlotError> {
        let mut slots = self.slots.lock().unwrap();
        let m = slots.get(&slot.0).ok_or(SlotError::Unknown(slot))?;
        let region = kvm_userspace_memory_region {
            memory_size: 0,
            ..m.region
        };
        // SAFETY: a zero size deletes the slot; KVM stops using the host memory.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| SlotError::Hypervisor(e.to_string()))?;
        slots.remove(&slot.0);
        Ok(())
    }

    fn dirty_pages(&self, slot: SlotId) -> Result<Vec<u64>, SlotError> {
        let slots = self.slots.lock().unwrap();
        let m = slots.get(&slot.0).ok_or(SlotError::Unknown(slot))?;
        self.vm
            .get_dirty_log(slot.0, m.region.memory_size as usize)
            .map_err(|e| SlotError::Hypervisor(e.to_string()))
    }
}
