//! Loading a Linux kernel for direct boot, with linux-loader: a bzImage (the usual
//! distribution `vmlinuz`) or, failing the bzImage magic, an ELF `vmlinux`.
//!
//! What we do, as the x86 boot protocol asks of a 64-bit boot loader: load the
//! protected-mode kernel at 1 MiB; copy the image's setup header into a zeroed
//! `boot_params` and mark ourselves as an unregistered loader (0xff); put the command line
//! at [`CMDLINE_ADDR`] after checking it against the header's `cmdline_size`; place the
//! initrd page-aligned as high as the header allows below the end of low RAM; write an
//! e820 map; write the ACPI tables and point `acpi_rsdp_addr` at them. The vCPU is then
//! started at the 64-bit entry point (see [`super::regs`]).
//!
//! [`set_framebuffer`] then describes a linear framebuffer in `screen_info`, so a stock
//! kernel shows a console on the display without a driver for the card.
//!
//! Not done: the 16-bit real-mode entry (the kernel's setup code never runs, so the EDD
//! and APM parts of the zero page stay zero), EFI handover, setup_data chains, PVH entry
//! for ELF kernels, 32-bit-only kernels. The ELF loader does not zero a segment's bss: fresh
//! guest RAM is zero already, but a reset that reloads the kernel must clear RAM first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::Elf;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use super::{
    ACPI_RSDP_ADDR, ACPI_TABLES_ADDR, BOOT_PARAMS_ADDR, CMDLINE_ADDR, HIGH_MEMORY, PD_ADDR,
};
use crate::acpi::{AcpiConfig, AcpiError};
use crate::memory::{
    E820Entry, E820Kind, FOUR_GIB, GuestMem, KVM_IDENTITY_MAP, KVM_RESERVED_LEN, MemoryLayout,
};

/// Boot protocol constants (Documentation/arch/x86/boot.rst).
const BOOT_FLAG_MAGIC: u16 = 0xAA55;
const HDRS_MAGIC: u32 = 0x5372_6448;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `xloadflags`: the kernel has the 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// The 64-bit entry point's offset in a bzImage's protected-mode part.
pub const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Before protocol 2.06 the command line limit was 255 bytes; before 2.03 the initrd had
/// to end below 0x38000000.
const OLD_CMDLINE_MAX: u32 = 255;
const OLD_INITRD_ADDR_MAX: u32 = 0x37FF_FFFF;
/// `kernel_alignment` for an ELF kernel, which has no setup header of its own.
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// The e820 table in the zero page holds this many entries.
const E820_MAX_ZEROPAGE: usize = 128;
/// The end of conventional memory as a PC BIOS reports it (the EBDA starts here).
pub const EBDA_START: u64 = 0x9_FC00;
/// Where the VGA window begins, past the 1 KiB EBDA.
const EBDA_END: u64 = 0xA_0000;
pub const IOAPIC_PAGE: u64 = 0xFEC0_0000;
pub const LAPIC_PAGE: u64 = 0xFEE0_0000;
const PAGE: u64 = 0x1000;

#[derive(Debug, Error)]
pub enum BootError {
    #[error("reading the kernel image: {0}")]
    KernelIo(std::io::Error),
    #[error("loading the kernel: {0}")]
    Kernel(linux_loader::loader::Error),
    #[error(
        "the bzImage has no 64-bit entry point (boot protocol {0:#x}); 32-bit kernels are not supported"
    )]
    Not64Bit(u16),
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: u32 },
    #[error("kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("reading the initrd: {0}")]
    InitrdIo(std::io::Error),
    #[error(
        "the initrd ({size} bytes) does not fit between the kernel end {kernel_end:#x} and {limit:#x}"
    )]
    InitrdTooBig {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("guest RAM ({0:#x} bytes below 4 GiB) is too small for a direct boot")]
    TooLittleRam(u64),
    #[error("ACPI tables: {0}")]
    Acpi(#[from] AcpiError),
    #[error("writing boot data to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Which kind of image was loaded (they enter at different places).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    BzImage,
    Elf,
}

/// Where the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// The 64-bit entry point: RIP. For a bzImage this is already load address + 0x200.
    pub entry: GuestAddress,
    /// The zero page: RSI.
    pub boot_params: GuestAddress,
    /// Where the kernel was loaded.
    pub kernel_load: GuestAddress,
    pub kind: KernelKind,
}

/// The e820 map for a direct boot: what a PC BIOS would report, since no BIOS runs.
/// Conventional memory up to the EBDA, the EBDA and the system BIOS area (0xE0000 up,
/// where our ACPI tables live) reserved, RAM from 1 MiB to the end of low RAM, the KVM
/// identity-map/TSS pages, the IOAPIC and LAPIC pages, and RAM above 4 GiB. Sorted by
/// address. The VGA window and the option-ROM area between are in no entry, as SeaBIOS
/// leaves them: a reserved entry over them clips the VGA ROM's resource to nothing.
pub fn direct_boot_e820(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut e = vec![
        E820Entry {
            addr: 0,
            len: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            len: EBDA_END - EBDA_START,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: ACPI_RSDP_ADDR,
            len: HIGH_MEMORY - ACPI_RSDP_ADDR,
            kind: E820Kind::Reserved,
        },
    ];
    if layout.below_4g > HIGH_MEMORY {
        e.push(E820Entry {
            addr: HIGH_MEMORY,
            len: layout.below_4g - HIGH_MEMORY,
            kind: E820Kind::Ram,
        });
    }
    for (addr, len) in [
        (IOAPIC_PAGE, PAGE),
        (LAPIC_PAGE, PAGE),
        (KVM_IDENTITY_MAP, KVM_RESERVED_LEN),
    ] {
        e.push(E820Entry {
            addr,
            len,
            kind: E820Kind::Reserved,
        });
    }
    if layout.above_4g > 0 {
        e.push(E820Entry {
            addr: FOUR_GIB,
            len: layout.above_4g,
            kind: E820Kind::Ram,
        });
    }
    e.sort_by_key(|x| x.addr);
    e
}

fn is_elf(kernel: &mut File) -> Result<bool, BootError> {
    let mut magic = [0u8; 4];
    kernel
        .seek(SeekFrom::Start(0))
        .map_err(BootError::KernelIo)?;
    let n = kernel.read(&mut magic).map_err(BootError::KernelIo)?;
    Ok(n == 4 && &magic == b"\x7fELF")
}

/// Loads `kernel` (and `initrd`) for a direct boot and writes everything the kernel reads
/// at entry. With `acpi`, the tables go to 0xE0000 and the zero page points at them.
pub fn load(
    mem: &GuestMem,
    layout: &MemoryLayout,
    kernel: &mut File,
    initrd: Option<&mut File>,
    cmdline: &str,
    acpi: Option<&AcpiConfig>,
) -> Result<LinuxBoot, BootError> {
    // The kernel, the page tables and the e820 "RAM from 1 MiB" all need RAM past 1 MiB.
    if layout.below_4g <= HIGH_MEMORY + PD_ADDR {
        return Err(BootError::TooLittleRam(layout.below_4g));
    }
    let mut params = boot_params::default();
    let (boot, kernel_end) = if is_elf(kernel)? {
        let r = Elf::load(mem, None, kernel, Some(GuestAddress(HIGH_MEMORY)))
            .map_err(BootError::Kernel)?;
        params.hdr.boot_flag = BOOT_FLAG_MAGIC;
        params.hdr.header = HDRS_MAGIC;
        params.hdr.kernel_alignment = ELF_KERNEL_ALIGNMENT;
        // An ELF kernel has no header limit; allow the modern maximum.
        params.hdr.cmdline_size = 2047;
        params.hdr.initrd_addr_max = OLD_INITRD_ADDR_MAX;
        let boot = LinuxBoot {
            entry: r.kernel_load,
            boot_params: GuestAddress(BOOT_PARAMS_ADDR),
            kernel_load: r.kernel_load,
            kind: KernelKind::Elf,
        };
        (boot, r.kernel_end)
    } else {
        let r = BzImage::load(
            mem,
            Some(GuestAddress(HIGH_MEMORY)),
            kernel,
            Some(GuestAddress(HIGH_MEMORY)),
        )
        .map_err(BootError::Kernel)?;
        // BzImage::load only succeeds after reading the header.
        let hdr = r.setup_header.unwrap_or_default();
        if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BootError::Not64Bit(hdr.version));
        }
        params.hdr = hdr;
        // The decompressor needs init_size bytes from the load address (protocol 2.10+).
        let end = r
            .kernel_end
            .max(r.kernel_load.0.saturating_add(u64::from(hdr.init_size)));
        let boot = LinuxBoot {
            entry: GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
            boot_params: GuestAddress(BOOT_PARAMS_ADDR),
            kernel_load: r.kernel_load,
            kind: KernelKind::BzImage,
        };
        (boot, end)
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;

    // Command line.
    let max = if params.hdr.version >= 0x0206 || boot.kind == KernelKind::Elf {
        params.hdr.cmdline_size
    } else {
        OLD_CMDLINE_MAX
    };
    if cmdline.len() > max as usize {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let cl = Cmdline::try_from(cmdline, max as usize + 1).map_err(BootError::Cmdline)?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(BootError::Kernel)?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = max;

    // Initrd: as high as allowed, page-aligned, above the kernel.
    if let Some(initrd) = initrd {
        let size = initrd.seek(SeekFrom::End(0)).map_err(BootError::InitrdIo)?;
        initrd
            .seek(SeekFrom::Start(0))
            .map_err(BootError::InitrdIo)?;
        let addr_max = if params.hdr.version >= 0x0203 && params.hdr.initrd_addr_max != 0 {
            params.hdr.initrd_addr_max
        } else {
            OLD_INITRD_ADDR_MAX
        };
        let limit = (u64::from(addr_max) + 1).min(layout.below_4g);
        let too_big = BootError::InitrdTooBig {
            size,
            kernel_end,
            limit,
        };
        let addr = match limit.checked_sub(size) {
            Some(a) => a & !(PAGE - 1),
            None => return Err(too_big),
        };
        if addr
            < kernel_end
                .checked_next_multiple_of(PAGE)
                .unwrap_or(u64::MAX)
            || size > u64::from(u32::MAX)
        {
            return Err(too_big);
        }
        mem.read_exact_volatile_from(GuestAddress(addr), initrd, size as usize)
            .map_err(|e| match e {
                vm_memory::GuestMemoryError::IOError(io) => BootError::InitrdIo(io),
                other => BootError::Memory(other),
            })?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    // e820.
    let e820 = direct_boot_e820(layout);
    for (slot, e) in params
        .e820_table
        .iter_mut()
        .zip(e820.iter().take(E820_MAX_ZEROPAGE))
    {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.len,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = e820.len().min(E820_MAX_ZEROPAGE) as u8;

    // ACPI.
    if let Some(acpi) = acpi {
        acpi.write_to(mem, ACPI_RSDP_ADDR, ACPI_TABLES_ADDR)?;
        params.acpi_rsdp_addr = ACPI_RSDP_ADDR;
    }

    mem.write_obj(params, boot.boot_params)?;
    Ok(boot)
}

/// `screen_info.orig_video_isVGA` for a VESA linear framebuffer.
const VIDEO_TYPE_VLFB: u8 = 0x23;
/// `screen_info.capabilities`: `ext_lfb_base` holds the upper 32 bits of the base.
const VIDEO_CAPABILITY_64BIT_BASE: u32 = 1 << 1;

/// The standard VGA's description of its linear framebuffer (a 32-bit XRGB8888 mode the
/// VMM set through DISPI), which a stock kernel's simpledrm / vesafb draws a console on.
pub use crate::devices::vga::LinearFramebuffer;

/// Describes `fb` in the zero page's `screen_info` (after [`load`]), as a VESA BIOS
/// would leave it after a mode switch: type VLFB, 32 bpp, red at bit 16, green at 8,
/// blue at 0, size in 64 KiB units.
pub fn set_framebuffer(
    mem: &GuestMem,
    boot: &LinuxBoot,
    fb: &LinearFramebuffer,
) -> Result<(), BootError> {
    let mut params: boot_params = mem.read_obj(boot.boot_params)?;
    let si = &mut params.screen_info;
    si.orig_video_isVGA = VIDEO_TYPE_VLFB;
    let narrow = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    si.lfb_width = narrow(fb.width);
    si.lfb_height = narrow(fb.height);
    si.lfb_depth = 32;
    si.lfb_linelength = narrow(fb.stride);
    si.lfb_base = fb.base as u32;
    si.ext_lfb_base = (fb.base >> 32) as u32;
    si.capabilities = if fb.base >> 32 != 0 {
        VIDEO_CAPABILITY_64BIT_BASE
    } else {
        0
    };
    si.lfb_size = fb.size.div_ceil(64 * 1024).min(u64::from(u32::MAX)) as u32;
    (si.red_size, si.red_pos) = (8, 16);
    (si.green_size, si.green_pos) = (8, 8);
    (si.blue_size, si.blue_pos) = (8, 0);
    (si.rsvd_size, si.rsvd_pos) = (0, 0);
    mem.write_obj(params, boot.boot_params)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MIB;
    use std::io::Write;
    use vmm_sys_util::tempfile::TempFile;

    /// A fake bzImage: one setup sector after the boot sector, a setup header as a
    /// 64-bit-capable protocol-2.15 kernel has it, then `payload` as the protected-mode part.
    fn bzimage(payload: &[u8], version: u16, xloadflags: u16) -> TempFile {
        let mut img = vec![0u8; 1024];
        img[0x1f1] = 1; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = 0x01; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        img[0x260..0x264].copy_from_slice(&(4 * MIB as u32).to_le_bytes()); // init_size
        img.extend_from_slice(payload);
        let f = TempFile::new().unwrap();
        f.as_file().write_all(&img).unwrap();
        f
    }

    fn file(data: &[u8]) -> TempFile {
        let f = TempFile::new().unwrap();
        f.as_file().write_all(data).unwrap();
        f
    }

    fn machine(ram: u64) -> (GuestMem, MemoryLayout) {
        let layout = MemoryLayout::new(ram);
        (layout.allocate().unwrap(), layout)
    }

    fn params_of(mem: &GuestMem) -> boot_params {
        mem.read_obj(GuestAddress(BOOT_PARAMS_ADDR)).unwrap()
    }

    #[test]
    fn bzimage_with_initrd_and_acpi() {
        let (mem, layout) = machine(64 * MIB);
        let payload: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        let k = bzimage(&payload, 0x020f, XLF_KERNEL_64);
        let initrd_data = vec![0x5a; 300_000];
        let i = file(&initrd_data);
        let cmd = "console=ttyS0 panic=-1";
        let boot = load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            Some(&mut i.as_file().try_clone().unwrap()),
            cmd,
            Some(&AcpiConfig::default()),
        )
        .unwrap();
        assert_eq!(boot.kind, KernelKind::BzImage);
        assert_eq!(boot.kernel_load, GuestAddress(HIGH_MEMORY));
        assert_eq!(boot.entry, GuestAddress(HIGH_MEMORY + 0x200));
        assert_eq!(boot.boot_params, GuestAddress(BOOT_PARAMS_ADDR));
        // The protected-mode part is at 1 MiB.
        let mut got = vec![0u8; payload.len()];
        mem.read_slice(&mut got, GuestAddress(HIGH_MEMORY)).unwrap();
        assert_eq!(got, payload);

        let p = params_of(&mem);
        let hdr = p.hdr;
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.version }, 0x020f);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        let mut c = vec![0u8; cmd.len() + 1];
        mem.read_slice(&mut c, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&c[..cmd.len()], cmd.as_bytes());
        assert_eq!(c[cmd.len()], 0);

        // Initrd: page-aligned, ending at or below the end of RAM, above the kernel's
        // decompression area, and as high as possible.
        let (ri, rs) = (u64::from(hdr.ramdisk_image), u64::from(hdr.ramdisk_size));
        assert_eq!(rs, initrd_data.len() as u64);
        assert_eq!(ri % PAGE, 0);
        assert!(ri + rs <= 64 * MIB && ri + rs + PAGE > 64 * MIB);
        assert!(ri >= HIGH_MEMORY + 4 * MIB);
        let mut got = vec![0u8; initrd_data.len()];
        mem.read_slice(&mut got, GuestAddress(ri)).unwrap();
        assert_eq!(got, initrd_data);

        // e820.
        let n = p.e820_entries as usize;
        let table: Vec<(u64, u64, u32)> = p.e820_table[..n]
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect();
        assert_eq!(
            table,
            vec![
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
                (0xe0000, 0x20000, 2),
                (0x100000, 64 * MIB - 0x100000, 1),
                (0xFEC0_0000, 0x1000, 2),
                (0xFEE0_0000, 0x1000, 2),
                (KVM_IDENTITY_MAP, KVM_RESERVED_LEN, 2),
            ]
        );

        // ACPI: the RSDP is where the zero page says, in the BIOS area.
        assert_eq!({ p.acpi_rsdp_addr }, ACPI_RSDP_ADDR);
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(ACPI_RSDP_ADDR))
            .unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }

    #[test]
    fn cmdline_longer_than_the_header_allows_is_refused() {
        let (mem, layout) = machine(32 * MIB);
        let k = bzimage(&[0; 512], 0x020f, XLF_KERNEL_64);
        let long = "x".repeat(2048);
        let err = load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            None,
            &long,
            None,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            BootError::CmdlineTooLong {
                len: 2048,
                max: 2047
            }
        ));
        // Exactly the limit is fine.
        let ok = "x".repeat(2047);
        load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            None,
            &ok,
            None,
        )
        .unwrap();
        assert_eq!({ params_of(&mem).acpi_rsdp_addr }, 0);
    }

    #[test]
    fn refuses_32_bit_kernels_garbage_and_huge_initrds() {
        let (mem, layout) = machine(32 * MIB);
        let k = bzimage(&[0; 512], 0x020f, 0);
        let r = load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            None,
            "",
            None,
        );
        assert!(matches!(r, Err(BootError::Not64Bit(0x020f))));

        let junk = file(&[0x42; 4096]);
        let r = load(
            &mem,
            &layout,
            &mut junk.as_file().try_clone().unwrap(),
            None,
            "",
            None,
        );
        assert!(matches!(r, Err(BootError::Kernel(_))));

        let k = bzimage(&[0; 512], 0x020f, XLF_KERNEL_64);
        let big = file(&vec![0; 30 * MIB as usize]);
        let r = load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            Some(&mut big.as_file().try_clone().unwrap()),
            "",
            None,
        );
        assert!(matches!(r, Err(BootError::InitrdTooBig { .. })));
    }

    #[test]
    fn initrd_respects_initrd_addr_max() {
        // 2 GiB of guest RAM is not allocated for real: mmap is lazy.
        let (mem, layout) = machine(2048 * MIB);
        let k = bzimage(&[0; 512], 0x020f, XLF_KERNEL_64);
        // Patch initrd_addr_max down to 256 MiB - 1.
        let f = k.as_file();
        let mut w = f.try_clone().unwrap();
        w.seek(SeekFrom::Start(0x22c)).unwrap();
        w.write_all(&(256 * MIB as u32 - 1).to_le_bytes()).unwrap();
        let i = file(&[1; 5000]);
        load(
            &mem,
            &layout,
            &mut f.try_clone().unwrap(),
            Some(&mut i.as_file().try_clone().unwrap()),
            "",
            None,
        )
        .unwrap();
        let hdr = params_of(&mem).hdr;
        assert_eq!({ hdr.ramdisk_image }, (256 * MIB - 2 * PAGE) as u32);
    }

    /// A minimal ELF64 vmlinux: one PT_LOAD segment with physical address 16 MiB.
    fn elf_vmlinux(code: &[u8]) -> TempFile {
        let mut img = vec![0u8; 0x1000];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = 2; // 64-bit
        img[5] = 1; // little-endian
        img[6] = 1; // ELF version
        img[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        img[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        img[20..24].copy_from_slice(&1u32.to_le_bytes());
        img[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
        img[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        img[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        img[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        img[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        img[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        let ph = &mut img[64..120];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
        ph[16..24].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes()); // p_vaddr
        ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // p_paddr
        ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
        ph[40..48].copy_from_slice(&(code.len() as u64 + 0x1000).to_le_bytes()); // p_memsz
        ph[48..56].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_align
        img.extend_from_slice(code);
        file(&img)
    }

    #[test]
    fn elf_vmlinux_enters_at_e_entry() {
        let (mem, layout) = machine(64 * MIB);
        let code = [0xf4u8; 64]; // hlt
        let k = elf_vmlinux(&code);
        let boot = load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            None,
            "console=ttyS0",
            Some(&AcpiConfig::default()),
        )
        .unwrap();
        assert_eq!(boot.kind, KernelKind::Elf);
        assert_eq!(boot.entry, GuestAddress(0x100_0000));
        let mut got = [0u8; 64];
        mem.read_slice(&mut got, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(got, code);
        // The zero page carries a header we made up, as the protocol requires.
        let p = params_of(&mem);
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!(p.hdr.type_of_loader, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ p.acpi_rsdp_addr }, ACPI_RSDP_ADDR);
    }

    /// A real distribution kernel, when the test assets are there: its header must say
    /// 64-bit entry and a 2047-byte command line, and it must land where we expect.
    #[test]
    fn real_vmlinuz_loads() {
        let dir = std::env::var_os("VMDESK_ASSETS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/assets")
            });
        let Ok(mut k) = File::open(dir.join("vmlinuz")) else {
            eprintln!(
                "SKIP real_vmlinuz_loads: no {}",
                dir.join("vmlinuz").display()
            );
            return;
        };
        let (mem, layout) = machine(512 * MIB);
        let boot = load(
            &mem,
            &layout,
            &mut k,
            None,
            "console=ttyS0",
            Some(&AcpiConfig::default()),
        )
        .unwrap();
        assert_eq!(boot.kind, KernelKind::BzImage);
        assert_eq!(boot.entry, GuestAddress(HIGH_MEMORY + 0x200));
        let hdr = params_of(&mem).hdr;
        assert!({ hdr.version } >= 0x020c);
        assert_ne!({ hdr.xloadflags } & XLF_KERNEL_64, 0);
        assert_eq!({ hdr.cmdline_size }, 2047);
        assert_eq!({ hdr.code32_start }, HIGH_MEMORY as u32);
    }

    #[test]
    fn framebuffer_goes_into_screen_info() {
        let (mem, layout) = machine(32 * MIB);
        let k = bzimage(&[0; 512], 0x020f, XLF_KERNEL_64);
        let boot = load(
            &mem,
            &layout,
            &mut k.as_file().try_clone().unwrap(),
            None,
            "console=tty0",
            None,
        )
        .unwrap();
        let fb = LinearFramebuffer {
            base: 0xFD00_0000,
            width: 1024,
            height: 768,
            stride: 4096,
            size: 16 * MIB,
            bpp: 32,
        };
        set_framebuffer(&mem, &boot, &fb).unwrap();
        let p = params_of(&mem);
        let si = p.screen_info;
        assert_eq!(si.orig_video_isVGA, 0x23);
        assert_eq!(
            ({ si.lfb_width }, { si.lfb_height }, { si.lfb_depth }),
            (1024, 768, 32)
        );
        assert_eq!({ si.lfb_linelength }, 4096);
        assert_eq!(({ si.lfb_base }, { si.ext_lfb_base }), (0xFD00_0000, 0));
        assert_eq!({ si.lfb_size }, 256, "64 KiB units");
        assert_eq!((si.red_pos, si.green_pos, si.blue_pos), (16, 8, 0));
        // The rest of the zero page is untouched.
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        // A base above 4 GiB uses the extension field.
        set_framebuffer(
            &mem,
            &boot,
            &LinearFramebuffer {
                base: 0x8_0000_0000,
                ..fb
            },
        )
        .unwrap();
        let si = params_of(&mem).screen_info;
        assert_eq!(({ si.lfb_base }, { si.ext_lfb_base }), (0, 8));
        assert_eq!({ si.capabilities }, VIDEO_CAPABILITY_64BIT_BASE);
    }

    #[test]
    fn e820_for_a_large_guest_has_ram_above_4g() {
        let layout = MemoryLayout::new(6 * 1024 * MIB);
        let e = direct_boot_e820(&layout);
        assert_eq!(
            e.last(),
            Some(&E820Entry {
                addr: FOUR_GIB,
                len: 3 * 1024 * MIB,
                kind: E820Kind::Ram
            })
        );
        assert!(e.windows(2).all(|w| w[0].addr + w[0].len <= w[1].addr));
        assert!(
            e.iter()
                .all(|x| x.addr + x.len <= 0xC_0000 || x.addr >= 0xE_0000),
            "nothing over the VGA ROM at 0xC0000: {e:?}"
        );
        assert!(
            e.iter().any(|x| x.kind == E820Kind::Reserved
                && x.addr <= ACPI_RSDP_ADDR
                && x.addr + x.len >= ACPI_TABLES_ADDR + 0x1000),
            "the ACPI tables are reserved: {e:?}"
        );
    }
}
