//! A minimal 64-bit guest that starts directly at CPL 3 with IOPL 3: identity-mapped
//! 2 MiB, no IDT, no interrupts. Such code runs natively even on a KVM that emulates
//! guest kernel mode, so it is what tests and benchmarks use to exercise the vCPU loop
//! (port I/O exits, faults) on every host.

use kvm_bindings::kvm_segment;
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use super::{KvmError, KvmVm, vcpu};
use crate::memory::GuestMem;

/// Where the code is placed and starts.
pub const CODE_ADDR: u64 = 0x10000;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const MEM_LEN: usize = 2 << 20;

fn seg(selector: u16, type_: u8, code64: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db: u8::from(!code64),
        s: 1,
        l: u8::from(code64),
        g: 1,
        ..Default::default()
    }
}

/// Builds the guest in `vm`: memory mapped, vCPU 0 ready at [`CODE_ADDR`] running `code`.
/// `rdx` starts as `rdx` (a port number, say).
pub fn setup(kvm: &Kvm, vm: &KvmVm, code: &[u8], rdx: u64) -> Result<(VcpuFd, GuestMem), KvmError> {
    let bad = |_| KvmError::MissingCapability("guest memory for the ring-3 guest");
    let mem = GuestMem::from_ranges(&[(GuestAddress(0), MEM_LEN)])
        .map_err(|_| KvmError::MissingCapability("guest memory for the ring-3 guest"))?;
    // One user-accessible 2 MiB page: PML4 → PDPT → PD entry with PS.
    mem.write_obj(PDPT | 0x7, GuestAddress(PML4)).map_err(bad)?;
    mem.write_obj(PD | 0x7, GuestAddress(PDPT)).map_err(bad)?;
    mem.write_obj(0x87u64, GuestAddress(PD)).map_err(bad)?;
    mem.write_slice(code, GuestAddress(CODE_ADDR))
        .map_err(bad)?;
    vm.map_memory(&mem, |_| false)?;

    let fd = vcpu::create(kvm, vm, 0, 1)?;
    let ioctl = |what| move |source| KvmError::Ioctl { what, source };
    let mut s = fd.get_sregs().map_err(ioctl("read special registers"))?;
    s.cs = seg(0x33, 0xb, true);
    let data = seg(0x2b, 0x3, false);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.cr3 = PML4;
    s.cr4 = 1 << 5; // PAE
    s.cr0 = 0x8000_0000 | 0x20 | 0x10 | 0x1; // PG | NE | ET | PE
    s.efer = (1 << 8) | (1 << 10); // LME | LMA
    fd.set_sregs(&s).map_err(ioctl("set special registers"))?;
    let mut r = fd.get_regs().map_err(ioctl("read registers"))?;
    r.rip = CODE_ADDR;
    r.rdx = rdx;
    r.rflags = 0x2 | (3 << 12); // IOPL 3: ring 3 may use in/out
    fd.set_regs(&r).map_err(ioctl("set registers"))?;
    Ok((fd, mem))
}
