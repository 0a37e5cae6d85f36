//! Coalesced MMIO: guest writes to a registered range (the legacy VGA window) do not exit
//! to us one by one; KVM appends them to a ring page shared by the whole VM and the guest
//! runs on. We apply them to the MMIO bus, oldest first, before anything that could
//! observe their effect: each vCPU drains the ring before it handles any exit (a read of
//! the window, a VGA register write through a port, any other device access), and the
//! display refresh drains it before it draws. Reads of the range still exit as usual.
//!
//! kvm-ioctls has a reader of this ring, but it belongs to one `VcpuFd` and takes
//! `&mut self`; the ring is one per VM and several threads drain it here, so this module
//! maps the page itself and serialises readers with a lock (the kernel is the only
//! writer of `last`, we the only writers of `first`).
//!
//! When KVM lacks `KVM_CAP_COALESCED_MMIO` (or refuses the zone), the range stays plain
//! MMIO and every write exits as before: [`CoalescedRing::setup`] says so in one debug line.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use kvm_bindings::{KVM_COALESCED_MMIO_PAGE_OFFSET, kvm_coalesced_mmio, kvm_coalesced_mmio_ring};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};

use crate::bus::Bus;

/// The VM's coalesced-MMIO ring, mapped through one vCPU's file descriptor.
pub struct CoalescedRing {
    page: NonNull<u8>,
    page_size: usize,
    /// Entries in the ring (KVM's KVM_COALESCED_MMIO_MAX for this page size).
    slots: u32,
    /// One reader at a time, so entries are applied once and in order.
    lock: Mutex<()>,
}

// SAFETY: the page is a MAP_SHARED mapping that stays valid until Drop; every access to it
// goes through atomics (the indices) or volatile reads of entries the kernel has published,
// under `lock`.
unsafe impl Send for CoalescedRing {}
// SAFETY: as for Send; concurrent drains are serialised by `lock`.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Registers `[base, base + len)` for coalescing on `vm` and maps the ring through
    /// `vcpu`. `None` (after one debug line saying why) when this KVM cannot, in which case
    /// the range keeps exiting on every write.
    pub fn setup(
        kvm: &Kvm,
        vm: &VmFd,
        vcpu: &VcpuFd,
        base: u64,
        len: u64,
    ) -> Option<CoalescedRing> {
        if !kvm.check_extension(Cap::CoalescedMmio) {
            tracing::debug!(
                "KVM lacks KVM_CAP_COALESCED_MMIO: writes to {base:#x}+{len:#x} exit one by one"
            );
            return None;
        }
        let ring = match CoalescedRing::map(vcpu) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(
                    "cannot map the coalesced MMIO ring ({e}): writes to {base:#x}+{len:#x} exit one by one"
                );
                return None;
            }
        };
        if let Err(e) = vm.register_coalesced_mmio(IoEventAddress::Mmio(base), len as u32) {
            tracing::debug!(
                "KVM_REGISTER_COALESCED_MMIO {base:#x}+{len:#x} refused ({e}): its writes exit one by one"
            );
            return None;
        }
        tracing::debug!("coalescing guest writes to {base:#x}+{len:#x}");
        Some(ring)
    }

    fn map(vcpu: &VcpuFd) -> std::io::Result<CoalescedRing> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => return Err(std::io::Error::last_os_error()),
        };
        let offset = libc::off_t::from(KVM_COALESCED_MMIO_PAGE_OFFSET) * page_size as libc::off_t;
        // SAFETY: mapping one page of the vCPU fd at the offset KVM documents for the ring;
        // we check the result and own the mapping until Drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let page = NonNull::new(addr.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        let slots = ((page_size - size_of::<kvm_coalesced_mmio_ring>())
            / size_of::<kvm_coalesced_mmio>()) as u32;
        Ok(CoalescedRing {
            page,
            page_size,
            slots,
            lock: Mutex::new(()),
        })
    }

    fn first(&self) -> &AtomicU32 {
        // SAFETY: `first` is the ring's first u32, 4-byte aligned at the start of the page,
        // which lives as long as `self`; the kernel only reads it.
        unsafe { AtomicU32::from_ptr(self.page.as_ptr().cast::<u32>()) }
    }

    fn last(&self) -> &AtomicU32 {
        // SAFETY: `last` is the ring's second u32 (offset 4), aligned, valid while `self`
        // is; the kernel writes it after the entry it publishes (smp_wmb before the store).
        unsafe { AtomicU32::from_ptr(self.page.as_ptr().cast::<u32>().add(1)) }
    }

    /// True when no write is waiting.
    pub fn is_empty(&self) -> bool {
        self.first().load(Ordering::Relaxed) == self.last().load(Ordering::Acquire)
    }

    /// Applies every waiting write to `mmio` in the order the guest made them; returns how
    /// many. Cheap when the ring is empty (two loads, no lock).
    pub fn drain(&self, mmio: &Bus) -> usize {
        if self.is_empty() {
            return 0;
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        loop {
            let first = self.first().load(Ordering::Relaxed);
            let last = self.last().load(Ordering::Acquire);
            if first == last || first >= self.slots {
                if first >= self.slots {
                    // Never written so by KVM; start over rather than read past the page.
                    tracing::warn!("coalesced MMIO ring index {first} out of range; reset");
                    self.first().store(last, Ordering::Release);
                }
                return n;
            }
            let entry = self.entry(first);
            let len = (entry.len as usize).min(entry.data.len());
            // SAFETY: both members of the union are a plain u32.
            let pio = unsafe { entry.__bindgen_anon_1.pio };
            // We register no port zones; an entry marked as a port write is not ours.
            if pio == 0 {
                mmio.write(entry.phys_addr, &entry.data[..len]);
            }
            self.first()
                .store((first + 1) % self.slots, Ordering::Release);
            n += 1;
        }
    }

    fn entry(&self, i: u32) -> kvm_coalesced_mmio {
        let off =
            size_of::<kvm_coalesced_mmio_ring>() + i as usize * size_of::<kvm_coalesced_mmio>();
        debug_assert!(off + size_of::<kvm_coalesced_mmio>() <= self.page_size);
        // SAFETY: `i < slots`, so the entry lies inside the page; the kernel published it
        // before the `last` we loaded with Acquire, and does not touch it again until we
        // advance `first` past it. Volatile: the memory is shared with the kernel.
        unsafe {
            self.page
                .as_ptr()
                .add(off)
                .cast::<kvm_coalesced_mmio>()
                .read_volatile()
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this page in `map` and nothing uses it after Drop.
        unsafe {
            libc::munmap(self.page.as_ptr().cast(), self.page_size);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::bus::BusDevice;
    use crate::kvm::{KvmVm, ring3, vcpu};

    /// (kind, offset, bytes written) in the order the devices see them.
    type Accesses = Arc<Mutex<Vec<(char, u64, Vec<u8>)>>>;

    /// Logs every access, MMIO and port alike.
    struct Log(Accesses, char);

    impl BusDevice for Log {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.0.lock().unwrap().push(('r', offset, vec![]));
            data.fill(0);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((self.1, offset, data.to_vec()));
        }
    }

    const HOLE: u64 = 0x20_0000;

    #[test]
    fn writes_are_applied_in_order_before_the_next_exit() {
        let Ok(kvm) = crate::kvm::open() else {
            eprintln!("SKIP writes_are_applied_in_order_before_the_next_exit: no KVM");
            return;
        };
        let vm = KvmVm::new(&kvm).unwrap();
        // Ring-3 guest writes three times into an unbacked page (MMIO), then reads it,
        // then writes a port, then faults:
        //   mov byte [HOLE], 1 ; mov byte [HOLE+1], 2 ; mov word [HOLE+2], 0x0403
        //   mov al, [HOLE+8] ; mov byte [HOLE+9], 5 ; out dx, al ; ud2
        let code = [
            0xc6, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0x01, //
            0xc6, 0x04, 0x25, 0x01, 0x00, 0x20, 0x00, 0x02, //
            0x66, 0xc7, 0x04, 0x25, 0x02, 0x00, 0x20, 0x00, 0x03, 0x04, //
            0x8a, 0x04, 0x25, 0x08, 0x00, 0x20, 0x00, //
            0xc6, 0x04, 0x25, 0x09, 0x00, 0x20, 0x00, 0x05, //
            0xee, 0x0f, 0x0b,
        ];
        let (mut fd, mem) = ring3::setup(&kvm, &vm, &code, 0x80).unwrap();
        // A second 2 MiB page, 2..4 MiB, user-accessible and not backed by memory.
        mem.write_obj(HOLE | 0x87, GuestAddress(0x3000 + 8))
            .unwrap();
        let Some(ring) = CoalescedRing::setup(&kvm, &vm.fd, &fd, HOLE, 0x1000) else {
            eprintln!("SKIP writes_are_applied_in_order_before_the_next_exit: no coalesced MMIO");
            return;
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (pio, mmio) = (Bus::new(), Bus::new());
        mmio.insert(HOLE, 0x1000, Arc::new(Mutex::new(Log(log.clone(), 'm'))))
            .unwrap();
        pio.insert(0x80, 1, Arc::new(Mutex::new(Log(log.clone(), 'p'))))
            .unwrap();
        // The writes do not exit: the first exit is the read, and the writes before it
        // reach the device first.
        let mut exits = 0;
        while log.lock().unwrap().iter().all(|e| e.0 != 'p') && exits < 10 {
            assert_eq!(
                vcpu::run_once_with_ring(&mut fd, &pio, &mmio, Some(&ring)),
                Ok(None)
            );
            exits += 1;
        }
        assert_eq!(exits, 2, "one exit for the read, one for the port");
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                ('m', 0, vec![1]),
                ('m', 1, vec![2]),
                ('m', 2, vec![3, 4]),
                ('r', 8, vec![]),
                ('m', 9, vec![5]),
                ('p', 0, vec![0]),
            ]
        );
        assert!(ring.is_empty());
        assert_eq!(ring.drain(&mmio), 0);
    }
}
