//! Guest writes that the hypervisor turns into eventfd signals without an exit to us
//! (KVM_IOEVENTFD): a virtio driver's queue notification becomes a counter bump on an
//! eventfd that a device thread waits on, so the writing vCPU goes straight back into the
//! guest. Devices see [`Doorbells`]; the VMM implements it with KVM and tests run without.

use vmm_sys_util::eventfd::EventFd;

/// Registers eventfds to be signalled by guest MMIO writes.
pub trait Doorbells: Send + Sync {
    /// From now on a write of any width at guest-physical `addr` signals `fd` instead of
    /// exiting to the VMM.
    fn register(&self, fd: &EventFd, addr: u64) -> std::io::Result<()>;
    /// Undoes [`Doorbells::register`]: writes at `addr` exit to the VMM again.
    fn unregister(&self, fd: &EventFd, addr: u64) -> std::io::Result<()>;
}
