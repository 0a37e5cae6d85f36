//! KVM as the CPU: opening /dev/kvm, creating the VM with its in-kernel interrupt
//! controllers and PIT, mapping guest memory, and the vCPU threads. Everything else
//! about the machine lives in plain devices on the buses.

pub mod coalesced;
pub mod cpuid;
pub mod ring3;
pub mod slots;
pub mod vcpu;

use std::sync::Arc;

use kvm_bindings::{
    KVM_MEM_READONLY, KVM_PIT_SPEAKER_DUMMY, kvm_msi, kvm_pit_config, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, NoDatamatch, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use vmm_sys_util::eventfd::EventFd;

use crate::doorbell::Doorbells;
use crate::irq::IrqLine;
use crate::memory::{GuestMem, KVM_IDENTITY_MAP, KVM_TSS};
use crate::pci::msix::{MsiMessage, MsiSink};
use crate::virtio::pci::FastPaths;

pub const KVM_PATH: &str = "/dev/kvm";

#[derive(Debug, Error)]
pub enum KvmError {
    #[error(
        "{KVM_PATH} does not exist: this host has no KVM (load the kvm_intel or kvm_amd module, or enable virtualization (VT-x/AMD-V) in the firmware setup)"
    )]
    Missing,
    #[error(
        "no permission to open {KVM_PATH}: add your user to the kvm group (sudo usermod -aG kvm $USER) and log in again"
    )]
    NoAccess,
    #[error("cannot open {KVM_PATH}: {0}")]
    Open(kvm_ioctls::Error),
    #[error("KVM lacks {0}, which vmdesk needs")]
    MissingCapability(&'static str),
    #[error("KVM refused to {what}: {source}")]
    Ioctl {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { what, source }
}

/// Opens /dev/kvm (or the device named by `VMDESK_KVM_DEVICE`, which tests use to
/// play a host without KVM), turning the common failures into advice.
pub fn open() -> Result<Kvm, KvmError> {
    let path = std::env::var("VMDESK_KVM_DEVICE").unwrap_or_else(|_| KVM_PATH.to_string());
    let cpath = std::ffi::CString::new(path).map_err(|_| KvmError::Missing)?;
    Kvm::new_with_path(&cpath).map_err(classify_open_error)
}

fn classify_open_error(e: kvm_ioctls::Error) -> KvmError {
    match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO | libc::ENOTTY => KvmError::Missing,
        libc::EACCES | libc::EPERM => KvmError::NoAccess,
        _ => KvmError::Open(e),
    }
}

/// The capabilities we cannot do without.
pub fn check_required(kvm: &Kvm) -> Result<(), KvmError> {
    for (cap, name) in [
        (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
        (Cap::Pit2, "an in-kernel PIT (KVM_CAP_PIT2)"),
        (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
        (Cap::ExtCpuid, "KVM_GET_SUPPORTED_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability(name));
        }
    }
    Ok(())
}

/// How many vCPUs this KVM allows in one VM.
pub fn max_vcpus(kvm: &Kvm) -> usize {
    kvm.get_max_vcpus()
}

/// A KVM VM with a PC's in-kernel PIC, IOAPIC, LAPICs and PIT.
pub struct KvmVm {
    pub fd: Arc<VmFd>,
    /// KVM_CAP_READONLY_MEM: ROM and flash in read mode can be slots.
    pub(crate) readonly_mem: bool,
}

impl KvmVm {
    pub fn new(kvm: &Kvm) -> Result<Self, KvmError> {
        let fd = kvm.create_vm().map_err(ioctl("create a VM"))?;
        // Intel VMX needs these pages for real mode; other KVMs ignore or refuse them.
        if let Err(e) = fd.set_identity_map_address(KVM_IDENTITY_MAP) {
            tracing::debug!("KVM_SET_IDENTITY_MAP_ADDR: {e}");
        }
        if let Err(e) = fd.set_tss_address(KVM_TSS as usize) {
            tracing::debug!("KVM_SET_TSS_ADDR: {e}");
        }
        fd.create_irq_chip()
            .map_err(ioctl("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(ioctl("create the in-kernel PIT"))?;
        Ok(KvmVm {
            fd: Arc::new(fd),
            readonly_mem: kvm.check_extension(Cap::ReadonlyMem),
        })
    }

    /// Hands every region of `mem` to KVM, one slot each. Regions for which
    /// `is_rom(start)` holds are read-only when KVM can do that: guest writes to them
    /// then exit as MMIO and are dropped, as writes to a ROM are.
    pub fn map_memory(&self, mem: &GuestMem, is_rom: impl Fn(u64) -> bool) -> Result<(), KvmError> {
        for (slot, region) in mem.iter().enumerate() {
            let start = region.start_addr().0;
            let flags = if is_rom(start) && self.readonly_mem {
                KVM_MEM_READONLY
            } else {
                0
            };
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|_| KvmError::MissingCapability("host mapping of guest memory"))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags,
                guest_phys_addr: start,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which the machine keeps
            // for as long as this VM exists; KVM only reads/writes within its length.
            unsafe { self.fd.set_user_memory_region(r) }.map_err(ioctl("map guest memory"))?;
        }
        Ok(())
    }

    /// A line into the in-kernel PIC and IOAPIC (ISA IRQs 0–15 reach both; 16–23 the IOAPIC).
    pub fn irq_line(&self, gsi: u32) -> Arc<dyn IrqLine> {
        irq_line(&self.fd, gsi)
    }
}

/// What this KVM offers virtio beyond trapped MMIO and INTx: KVM_SIGNAL_MSI for MSI-X
/// messages and KVM_IOEVENTFD for queue doorbells, each when the kernel has it.
pub fn fast_paths(kvm: &Kvm, vm: &Arc<VmFd>) -> FastPaths {
    let msi = kvm.check_extension(Cap::SignalMsi);
    let ioeventfd = kvm.check_extension(Cap::Ioeventfd);
    if !msi || !ioeventfd {
        tracing::debug!(
            "KVM lacks {}: virtio devices use {}",
            [
                (!msi, "KVM_CAP_SIGNAL_MSI"),
                (!ioeventfd, "KVM_CAP_IOEVENTFD")
            ]
            .iter()
            .filter_map(|(missing, name)| missing.then_some(*name))
            .collect::<Vec<_>>()
            .join(" and "),
            if msi { "trapped notifications" } else { "INTx" }
        );
    }
    FastPaths {
        msi: msi.then(|| Arc::new(KvmMsi { vm: vm.clone() }) as Arc<dyn MsiSink>),
        doorbells: ioeventfd
            .then(|| Arc::new(KvmDoorbells { vm: vm.clone() }) as Arc<dyn Doorbells>),
        gate: Arc::default(),
    }
}

/// MSI-X messages into the in-kernel LAPICs.
struct KvmMsi {
    vm: Arc<VmFd>,
}

impl MsiSink for KvmMsi {
    fn send(&self, msg: MsiMessage) {
        let msi = kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        // 0 means the interrupt was blocked (the LAPIC masked it): the guest's choice.
        if let Err(e) = self.vm.signal_msi(msi) {
            tracing::warn!("KVM_SIGNAL_MSI {:#x}/{:#x}: {e}", msg.address, msg.data);
        }
    }
}

/// Queue doorbells as KVM ioeventfds matching writes of any width.
struct KvmDoorbells {
    vm: Arc<VmFd>,
}

impl Doorbells for KvmDoorbells {
    fn register(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(std::io::Error::from)
    }

    fn unregister(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(std::io::Error::from)
    }
}

/// A line into the in-kernel interrupt controllers of `vm`.
pub fn irq_line(vm: &Arc<VmFd>, gsi: u32) -> Arc<dyn IrqLine> {
    Arc::new(KvmIrqLine {
        vm: vm.clone(),
        gsi,
    })
}

struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl IrqLine for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            tracing::warn!("KVM_IRQ_LINE gsi {}: {e}", self.gsi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_become_advice() {
        let e = classify_open_error(kvm_ioctls::Error::new(libc::EACCES));
        assert!(e.to_string().contains("kvm group"), "{e}");
        let e = classify_open_error(kvm_ioctls::Error::new(libc::ENOENT));
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
