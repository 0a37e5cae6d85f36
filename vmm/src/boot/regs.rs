//! The boot vCPU's state for a 64-bit Linux entry: flat segments from a small GDT,
//! identity-mapped page tables for the first 4 GiB (2 MiB pages), long mode on, RIP at
//! the kernel's 64-bit entry and RSI at the zero page, as the x86-64 boot protocol asks.
//! FPU, MSRs and the LAPIC's LINT pins get the values a PC BIOS would leave.
//!
//! The GDT and page tables are plain bytes in guest memory, built and tested without a
//! vCPU; only [`setup_long_mode`] touches KVM.

use kvm_bindings::{Msrs, kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use super::linux::LinuxBoot;
use super::{BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PD_ADDR, PDPT_ADDR, PML4_ADDR};
use crate::memory::GuestMem;

/// GDT entries: the selectors are index * 8.
pub const GDT_CODE64: u64 = gdt_entry(0xA09B, 0, 0xFFFFF);
pub const GDT_DATA: u64 = gdt_entry(0xC093, 0, 0xFFFFF);
pub const GDT_TSS: u64 = gdt_entry(0x808B, 0, 0xFFFFF);
pub const GDT: [u64; 4] = [0, GDT_CODE64, GDT_DATA, GDT_TSS];
pub const CODE_SELECTOR: u16 = 1 << 3;
pub const DATA_SELECTOR: u16 = 2 << 3;
pub const TSS_SELECTOR: u16 = 3 << 3;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page-table entry bits.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PDE_PS: u64 = 1 << 7;
/// Page directories: one per GiB of the first 4 GiB.
pub const PD_COUNT: u64 = 4;

// MSRs set for a clean start (Intel SDM vol. 4).
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// LAPIC local vector table registers and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

#[derive(Debug, Error)]
pub enum RegsError {
    #[error("writing boot structures to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error("KVM refused to {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

/// A segment descriptor from its 16 bits of flags (access byte in the low 8, the G/DB/L/AVL
/// nibble in bits 12-15), a 32-bit base and a 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0xf_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// What KVM wants for a segment register loaded from GDT entry `entry` at `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0xf_0000);
    let g = ((entry >> 55) & 1) as u8;
    // With G set the limit counts 4 KiB pages; KVM takes it in bytes.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// Writes the GDT and an empty IDT.
pub fn write_gdt(mem: &GuestMem) -> Result<(), RegsError> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_ADDR))?;
    Ok(())
}

/// Writes a PML4 → PDPT → 4 page directories identity-mapping 0..4 GiB with 2 MiB pages.
pub fn write_page_tables(mem: &GuestMem) -> Result<(), RegsError> {
    mem.write_obj(PDPT_ADDR | PTE_PRESENT | PTE_RW, GuestAddress(PML4_ADDR))?;
    for g in 0..PD_COUNT {
        let pd = PD_ADDR + g * 0x1000;
        mem.write_obj(pd | PTE_PRESENT | PTE_RW, GuestAddress(PDPT_ADDR + g * 8))?;
        let mut table = [0u8; 4096];
        for (i, slot) in table.chunks_exact_mut(8).enumerate() {
            let addr = ((g << 30) | ((i as u64) << 21)) | PTE_PRESENT | PTE_RW | PDE_PS;
            slot.copy_from_slice(&addr.to_le_bytes());
        }
        mem.write_slice(&table, GuestAddress(pd))?;
    }
    Ok(())
}

/// The special registers for long mode, on top of what KVM reported (`sregs`).
pub fn long_mode_sregs(mut sregs: kvm_bindings::kvm_sregs) -> kvm_bindings::kvm_sregs {
    let code = segment_from_gdt(GDT_CODE64, 1);
    let data = segment_from_gdt(GDT_DATA, 2);
    let tss = segment_from_gdt(GDT_TSS, 3);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

fn msr(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

fn set_lvt(lapic: &mut kvm_lapic_state, reg: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (d, s) in b.iter_mut().zip(&lapic.regs[reg..reg + 4]) {
        *d = *s as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (d, s) in lapic.regs[reg..reg + 4].iter_mut().zip(v.to_le_bytes()) {
        *d = s as _;
    }
}

/// Puts the boot vCPU at the kernel's 64-bit entry: GDT and page tables into guest memory,
/// then segments, control registers, general registers, FPU, MSRs and LAPIC LINT pins.
/// Needs the in-kernel irqchip (for the LAPIC) to exist already.
pub fn setup_long_mode(vcpu: &VcpuFd, mem: &GuestMem, boot: &LinuxBoot) -> Result<(), RegsError> {
    write_gdt(mem)?;
    write_page_tables(mem)?;

    let sregs = vcpu.get_sregs().map_err(kvm("read special registers"))?;
    vcpu.set_sregs(&long_mode_sregs(sregs))
        .map_err(kvm("enter long mode"))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: boot.entry.0,
        rsi: boot.boot_params.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("set registers"))?;

    // x87 control word and MXCSR at their reset values: all exceptions masked.
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set the FPU state"))?;

    set_msrs(
        vcpu,
        &[
            msr(MSR_IA32_SYSENTER_CS, 0),
            msr(MSR_IA32_SYSENTER_ESP, 0),
            msr(MSR_IA32_SYSENTER_EIP, 0),
            msr(MSR_STAR, 0),
            msr(MSR_CSTAR, 0),
            msr(MSR_KERNEL_GS_BASE, 0),
            msr(MSR_SYSCALL_MASK, 0),
            msr(MSR_LSTAR, 0),
            msr(MSR_IA32_TSC, 0),
        ],
    )?;
    setup_secondary(vcpu)?;

    // LINT0 takes the 8259's ExtINT, LINT1 is NMI, as a PC BIOS programs them.
    let mut lapic = vcpu.get_lapic().map_err(kvm("read the LAPIC"))?;
    set_lvt(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("set the LAPIC"))?;
    Ok(())
}

/// What firmware sets up on every CPU, the boot CPU included, before a kernel runs: fast
/// strings on, and the MTRRs' default type write-back. Linux checks the CPUs it starts
/// against the boot CPU and complains of a BIOS that set up only one.
pub fn setup_secondary(vcpu: &VcpuFd) -> Result<(), RegsError> {
    set_msrs(
        vcpu,
        &[
            msr(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
            msr(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
        ],
    )
}

fn set_msrs(vcpu: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<(), RegsError> {
    // from_entries only fails beyond the FAM capacity, far above these few entries.
    if let Ok(msrs) = Msrs::from_entries(entries) {
        let n = vcpu.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
        if n != entries.len() {
            // KVM stops at the first MSR it refuses; the rest are conveniences.
            tracing::warn!(
                "KVM accepted {n} of {} boot MSRs (stopped at {:#x})",
                entries.len(),
                entries[n].index
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::linux::KernelKind;

    fn mem() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_bytes_are_the_flat_64_bit_descriptors() {
        // The values every 64-bit boot GDT has (code: 0x00af9b000000ffff, …).
        assert_eq!(GDT_CODE64, 0x00af_9b00_0000_ffff);
        assert_eq!(GDT_DATA, 0x00cf_9300_0000_ffff);
        assert_eq!(GDT_TSS, 0x008f_8b00_0000_ffff);
        let m = mem();
        write_gdt(&m).unwrap();
        let mut raw = [0u8; 32];
        m.read_slice(&mut raw, GuestAddress(BOOT_GDT_ADDR)).unwrap();
        assert_eq!(&raw[..8], &[0; 8]);
        assert_eq!(&raw[8..16], &GDT_CODE64.to_le_bytes());
        assert_eq!(m.read_obj::<u64>(GuestAddress(BOOT_IDT_ADDR)).unwrap(), 0);

        let cs = segment_from_gdt(GDT_CODE64, 1);
        assert_eq!(
            (cs.selector, cs.type_, cs.l, cs.db, cs.s, cs.present, cs.g),
            (8, 0xb, 1, 0, 1, 1, 1)
        );
        assert_eq!((cs.base, cs.limit, cs.unusable), (0, 0xffff_ffff, 0));
        let ds = segment_from_gdt(GDT_DATA, 2);
        assert_eq!((ds.selector, ds.type_, ds.l, ds.db), (16, 3, 0, 1));
        let tr = segment_from_gdt(GDT_TSS, 3);
        assert_eq!((tr.selector, tr.type_, tr.s, tr.present), (24, 0xb, 0, 1));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
        assert_eq!(gdt_entry(0x9b, 0x1234_5678, 0xabcde), 0x120a_9b34_5678_bcde);
    }

    /// Walks the tables as the MMU does: PML4[addr 47:39] → PDPT[38:30] → PD[29:21].
    fn translate(m: &GuestMem, vaddr: u64) -> Option<u64> {
        let read = |a: u64| m.read_obj::<u64>(GuestAddress(a)).unwrap();
        let pml4e = read(PML4_ADDR + ((vaddr >> 39) & 511) * 8);
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte = read((pml4e & !0xfff) + ((vaddr >> 30) & 511) * 8);
        if pdpte & PTE_PRESENT == 0 {
            return None;
        }
        let pde = read((pdpte & !0xfff) + ((vaddr >> 21) & 511) * 8);
        if pde & PTE_PRESENT == 0 || pde & PDE_PS == 0 || pde & PTE_RW == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (vaddr & 0x1f_ffff))
    }

    #[test]
    fn page_tables_identity_map_the_first_4g() {
        let m = mem();
        write_page_tables(&m).unwrap();
        for a in [
            0u64,
            0x1000,
            0x10_0000,
            0x20_0000 + 0x123,
            0x3fff_ffff,
            0x4000_0000,
            0xbfff_f000,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&m, a), Some(a), "{a:#x}");
        }
        assert_eq!(translate(&m, 0x1_0000_0000), None);
        // The tables stay clear of the zero page and the stack.
        const { assert!(PML4_ADDR >= BOOT_STACK_POINTER && PD_ADDR + PD_COUNT * 0x1000 <= 0x10000) };
    }

    #[test]
    fn sregs_enter_long_mode() {
        let s = long_mode_sregs(Default::default());
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!((s.cs.selector, s.ss.selector, s.tr.selector), (8, 16, 24));
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_ADDR, 31));
    }

    #[test]
    fn lvt_delivery_modes_keep_other_bits() {
        let mut l = kvm_lapic_state::default();
        // Masked (bit 16) with vector 0x20.
        for (d, s) in l.regs[APIC_LVT0..APIC_LVT0 + 4]
            .iter_mut()
            .zip(0x0001_0020u32.to_le_bytes())
        {
            *d = s as _;
        }
        set_lvt(&mut l, APIC_LVT0, APIC_MODE_EXTINT);
        let v = u32::from_le_bytes(std::array::from_fn(|i| l.regs[APIC_LVT0 + i] as u8));
        assert_eq!(v, 0x0001_0720);
    }

    /// On a host with KVM: the vCPU takes the state and reports it back.
    #[test]
    fn vcpu_takes_long_mode_state() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("SKIP vcpu_takes_long_mode_state: no usable /dev/kvm");
            return;
        };
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let m = mem();
        let vcpu = vm.create_vcpu(0).unwrap();
        let boot = LinuxBoot {
            entry: GuestAddress(0x10_0200),
            boot_params: GuestAddress(0x7000),
            kernel_load: GuestAddress(0x10_0000),
            kind: KernelKind::BzImage,
        };
        setup_long_mode(&vcpu, &m, &boot).unwrap();
        let r = vcpu.get_regs().unwrap();
        assert_eq!((r.rip, r.rsi, r.rflags), (0x10_0200, 0x7000, 2));
        let s = vcpu.get_sregs().unwrap();
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cs.l, 1);
        let l = vcpu.get_lapic().unwrap();
        let lvt1 = u32::from_le_bytes(std::array::from_fn(|i| l.regs[APIC_LVT1 + i] as u8));
        assert_eq!((lvt1 >> 8) & 7, APIC_MODE_NMI);
    }
}
