//! Direct Linux boot: the VMM plays boot loader (no firmware). [`linux`] puts the kernel,
//! initrd, command line, e820 map, ACPI tables and zero page in guest memory, following
//! the kernel's x86 boot protocol (Documentation/arch/x86/boot.rst); [`regs`] sets the
//! boot vCPU up in 64-bit long mode at the kernel's 64-bit entry point.
//!
//! Where things go in low memory (all below the 640 KiB boundary except the kernel,
//! ACPI and initrd):
//!
//! | address  | what                                       |
//! |----------|--------------------------------------------|
//! | 0x500    | GDT (null, code64, data, TSS)              |
//! | 0x520    | IDT (empty: the kernel installs its own)   |
//! | 0x7000   | boot_params ("zero page")                  |
//! | 0x8ff0   | initial stack pointer                      |
//! | 0x9000   | PML4, then PDPT at 0xA000, PDs 0xB000-0xEFFF |
//! | 0x20000  | kernel command line                        |
//! | 0xE0000  | ACPI RSDP, tables right after it           |
//! | 1 MiB    | kernel (protected-mode part of a bzImage)  |
//! | high     | initrd, page-aligned, as high as allowed   |

pub mod linux;
pub mod regs;

pub use linux::{BootError, KernelKind, LinearFramebuffer, LinuxBoot};

/// Where the boot GDT lives.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Where the (empty) boot IDT lives.
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// The zero page.
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// The initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The identity-mapping page tables: PML4, PDPT, then four page directories.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xA000;
pub const PD_ADDR: u64 = 0xB000;
/// The command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// The kernel's load address: the start of "high" memory.
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// ACPI for direct boot, inside the area Linux scans for an RSDP.
pub const ACPI_RSDP_ADDR: u64 = 0xE_0000;
pub const ACPI_TABLES_ADDR: u64 = 0xE_0040;
