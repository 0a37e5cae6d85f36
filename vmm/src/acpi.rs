//! ACPI tables for the PC we model, built once with the `acpi_tables` crate and handed to
//! the guest in one of two ways.
//!
//! Why we build them ourselves: Debian's SeaBIOS 1.16 no longer generates ACPI tables (its
//! `acpi.c` only says tables for old QEMU are unsupported); like QEMU, we offer them through
//! fw_cfg as `etc/acpi/rsdp` and `etc/acpi/tables`, with the `etc/table-loader` script that
//! tells the firmware where to place them and how to patch their pointers and checksums
//! (SeaBIOS's `romfile_loader.c` runs it, and OVMF's AcpiPlatformDxe, which then installs
//! each table a pointer points at, if it sums to zero, through its own RSDT/XSDT; the two
//! agree on checksums only when the blob has 0 where the checksum goes, see
//! `Built::clear_checksum_bytes`). For direct kernel boot there is no firmware, so
//! [`AcpiConfig::write_to`] runs the same script itself with fixed addresses. One builder,
//! one set of tables, for both paths.
//!
//! Tables: RSDP (revision 2), XSDT and RSDT, FADT (revision 6.5; PM1a event/control and PM
//! timer blocks in port I/O, SCI on IRQ 9, SMI command port 0xB2 (ACPI enable 0xF1) as on QEMU,
//! reset register 0xCF9 ← 6, power button as a fixed feature, no sleep button),
//! FACS (the FADT must point at one), MADT (one local APIC per CPU, one IOAPIC, overrides
//! for IRQ 0 → GSI 2 and the level-triggered SCI, LINT1 as every CPU's NMI), and a DSDT
//! whose AML describes the PCI root bridge (its windows and interrupt routing), COM1, the
//! PS/2 keyboard and mouse, the CMOS clock, and the `\_S5` sleep state for power-off.
//!
//! Not provided, on purpose: HPET (we emulate none), SRAT/SLIT (one NUMA node), MCFG (no
//! PCIe ECAM on an i440FX-shaped bus), SSDTs for CPU hotplug, `_PIC`/PCI link devices
//! (the `_PRT` names GSIs directly, so legacy-PIC interrupt routing for PCI is not offered
//! to an OS that boots with `noapic`), S3/S4.

use acpi_tables::Aml;
use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, IO, Interrupt, Name, Package, Path,
    ResourceTemplate, Scope,
};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use crate::devices::fw_cfg::{FwCfg, FwCfgError};
use crate::memory::GuestMem;
use crate::pci::piix4_pm;

/// fw_cfg file names QEMU and SeaBIOS agree on.
pub const ACPI_RSDP_FILE: &str = "etc/acpi/rsdp";
pub const ACPI_TABLES_FILE: &str = "etc/acpi/tables";
pub const TABLE_LOADER_FILE: &str = "etc/table-loader";

pub const OEM_ID: [u8; 6] = *b"VMDESK";
pub const OEM_TABLE_ID: [u8; 8] = *b"VMDESKPC";
pub const OEM_REVISION: u32 = 1;

pub const LAPIC_ADDR: u32 = 0xFEE0_0000;
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;
/// PCI interrupt pins A-D end on IOAPIC inputs 16-19, as on QEMU's pc machine.
pub const PCI_GSI_BASE: u32 = 16;
/// The reset register: PIIX's reset control port, value "hard reset" (system + CPU reset).
pub const RESET_PORT: u16 = 0xCF9;
pub const RESET_VALUE: u8 = 0x06;

/// The region direct boot may put the RSDP in: Linux scans 0xE0000-0xFFFFF for it.
pub const RSDP_SCAN_START: u64 = 0xE_0000;
pub const RSDP_SCAN_END: u64 = 0x10_0000;

/// table-loader commands (SeaBIOS `romfile_loader.h`).
const CMD_ALLOCATE: u32 = 1;
const CMD_ADD_POINTER: u32 = 2;
const CMD_ADD_CHECKSUM: u32 = 3;
/// Allocation zones: anywhere in high memory, or the 0xF0000 segment (where the RSDP must
/// be for an OS to find it by scanning).
pub const ZONE_HIGH: u8 = 1;
pub const ZONE_FSEG: u8 = 2;
pub const LOADER_ENTRY_LEN: usize = 128;
const LOADER_FILE_LEN: usize = 56;

const HEADER_LEN: usize = 36;
const CHECKSUM_OFFSET: usize = 9;

#[derive(Debug, Error)]
pub enum AcpiError {
    #[error("RSDP address {0:#x} is not 16-byte aligned inside 0xE0000-0xFFFFF")]
    BadRsdpAddress(u64),
    #[error("ACPI tables address {0:#x} is not 64-byte aligned or the tables do not fit")]
    BadTablesAddress(u64),
    #[error("writing ACPI tables to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Where OVMF places PIIX4's PM register block (its PcdAcpiPmBaseAddress on i440FX).
pub const OVMF_PM_IO_BASE: u16 = 0xb000;

/// What the machine looks like, as far as ACPI needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs; APIC ids are 0..cpus (so at most 255, as 255 is the broadcast id); the
    /// IOAPIC's id is 0, in its own name space.
    pub cpus: u8,
    /// Base of the PM register block: PM1a event (4 bytes), PM1a control at +4 (2 bytes),
    /// PM timer at +8 (4 bytes). SeaBIOS moves PIIX4's PM base to 0x600 when it is given a
    /// table-loader, so 0x600 it is; OVMF puts it at [`OVMF_PM_IO_BASE`]. (QEMU builds its
    /// tables when the firmware reads them, after it placed the block; ours are built
    /// with the machine, so they follow the firmware chosen.)
    pub pm_io_base: u16,
    /// The SCI's ISA IRQ (9, level-triggered, active high as on PIIX4).
    pub sci_irq: u8,
    /// The 32-bit PCI MMIO window `[start, end)` (end exclusive).
    pub pci_hole: (u64, u64),
    /// An optional 64-bit PCI MMIO window `[start, end)`.
    pub pci_hole64: Option<(u64, u64)>,
    /// Describe COM1 at 0x3F8/IRQ 4.
    pub com1: bool,
    /// Describe the i8042 keyboard (0x60/0x64, IRQ 1) and PS/2 mouse (IRQ 12).
    pub ps2: bool,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        AcpiConfig {
            cpus: 1,
            pm_io_base: 0x600,
            sci_irq: 9,
            pci_hole: (0xE000_0000, u64::from(IOAPIC_ADDR)),
            pci_hole64: None,
            com1: true,
            ps2: true,
        }
    }
}

/// The three fw_cfg files SeaBIOS's table loader consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwCfgAcpi {
    /// `etc/acpi/rsdp`
    pub rsdp: Vec<u8>,
    /// `etc/acpi/tables`
    pub tables: Vec<u8>,
    /// `etc/table-loader`
    pub loader: Vec<u8>,
}

impl FwCfgAcpi {
    /// Adds the three files to `fw` under the names SeaBIOS looks for.
    pub fn add_to(self, fw: &mut FwCfg) -> Result<(), FwCfgError> {
        fw.add_file(ACPI_RSDP_FILE, self.rsdp)?;
        fw.add_file(ACPI_TABLES_FILE, self.tables)?;
        fw.add_file(TABLE_LOADER_FILE, self.loader)?;
        Ok(())
    }
}

/// The two blobs the loader knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blob {
    Rsdp,
    Tables,
}

impl Blob {
    fn name(self) -> &'static str {
        match self {
            Blob::Rsdp => ACPI_RSDP_FILE,
            Blob::Tables => ACPI_TABLES_FILE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoaderCmd {
    Allocate {
        file: Blob,
        align: u32,
        zone: u8,
    },
    /// Adds the address of `src` to the `size`-byte little-endian value at `offset` in `dest`.
    AddPointer {
        dest: Blob,
        src: Blob,
        offset: u32,
        size: u8,
    },
    /// Subtracts the byte sum of `start..start+len` from the byte at `offset`.
    AddChecksum {
        file: Blob,
        offset: u32,
        start: u32,
        len: u32,
    },
}

impl LoaderCmd {
    fn to_bytes(self) -> [u8; LOADER_ENTRY_LEN] {
        fn name(out: &mut [u8], b: Blob) {
            out[..b.name().len()].copy_from_slice(b.name().as_bytes());
        }
        let mut e = [0u8; LOADER_ENTRY_LEN];
        let (cmd, body) = e.split_at_mut(4);
        match self {
            LoaderCmd::Allocate { file, align, zone } => {
                cmd.copy_from_slice(&CMD_ALLOCATE.to_le_bytes());
                name(&mut body[..LOADER_FILE_LEN], file);
                body[56..60].copy_from_slice(&align.to_le_bytes());
                body[60] = zone;
            }
            LoaderCmd::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                cmd.copy_from_slice(&CMD_ADD_POINTER.to_le_bytes());
                name(&mut body[..LOADER_FILE_LEN], dest);
                name(&mut body[56..56 + LOADER_FILE_LEN], src);
                body[112..116].copy_from_slice(&offset.to_le_bytes());
                body[116] = size;
            }
            LoaderCmd::AddChecksum {
                file,
                offset,
                start,
                len,
            } => {
                cmd.copy_from_slice(&CMD_ADD_CHECKSUM.to_le_bytes());
                name(&mut body[..LOADER_FILE_LEN], file);
                body[56..60].copy_from_slice(&offset.to_le_bytes());
                body[60..64].copy_from_slice(&start.to_le_bytes());
                body[64..68].copy_from_slice(&len.to_le_bytes());
            }
        }
        e
    }
}

/// Tables with pointers still relative to their blob, plus the script that fixes them.
struct Built {
    rsdp: Vec<u8>,
    tables: Vec<u8>,
    cmds: Vec<LoaderCmd>,
}

impl Built {
    /// Zeroes the result byte of every ADD_CHECKSUM command, so that the firmware's
    /// checksum is the same whether it adds to the byte (SeaBIOS) or sets it (OVMF).
    fn clear_checksum_bytes(&mut self) {
        for cmd in &self.cmds {
            if let LoaderCmd::AddChecksum { file, offset, .. } = *cmd {
                let blob = match file {
                    Blob::Rsdp => &mut self.rsdp,
                    Blob::Tables => &mut self.tables,
                };
                blob[offset as usize] = 0;
            }
        }
    }
}

fn bytes_of(aml: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    aml.to_aml_bytes(&mut v);
    v
}

fn io_gas(width_bits: u8, access: AccessSize, port: u16) -> GAS {
    GAS::new(GasSpace::SystemIo, width_bits, 0, access, u64::from(port))
}

impl AcpiConfig {
    /// The DSDT, complete with header and checksum.
    pub fn dsdt(&self) -> Vec<u8> {
        let mut aml = Vec::new();
        let pci0 = RawAml(self.pci0_aml());
        let sb = Scope::new(Path::new("\\_SB_"), vec![&pci0 as &dyn Aml]);
        sb.to_aml_bytes(&mut aml);
        // \_S5: SLP_TYP 0 for PM1a and PM1b; the PM device powers off on SLP_EN with it.
        let zero: u8 = 0;
        Name::new(Path::new("\\_S5_"), &Package::new(vec![&zero, &zero])).to_aml_bytes(&mut aml);

        let mut dsdt = Sdt::new(
            *b"DSDT",
            HEADER_LEN as u32,
            2,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        );
        dsdt.append_slice(&aml);
        dsdt.as_slice().to_vec()
    }

    fn pci0_aml(&self) -> Vec<u8> {
        let bus = AddressSpace::<u16>::new_bus_number(0, 0xFF);
        let cfg_ports = IO::new(0xCF8, 0xCF8, 1, 8);
        let io_low = AddressSpace::<u16>::new_io(0, 0xCF7, None);
        let io_high = AddressSpace::<u16>::new_io(0xD00, 0xFFFF, None);
        let vga = AddressSpace::<u32>::new_memory(
            AddressSpaceCacheable::Cacheable,
            true,
            0xA_0000,
            0xB_FFFF,
            None,
        );
        // Clamp so a bad config cannot make the descriptor's length overflow 32 bits (the
        // last byte below 4 GiB is firmware ROM, never a PCI BAR, so losing it is harmless).
        let (h_start, h_end) = self.pci_hole;
        let h_start = h_start.min(u64::from(u32::MAX) - 1) as u32;
        let h_end = h_end.clamp(u64::from(h_start) + 1, u64::from(u32::MAX));
        let hole = AddressSpace::<u32>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            h_start,
            (h_end - 1) as u32,
            None,
        );
        let hole64 = self.pci_hole64.filter(|(s, e)| e > s).map(|(s, e)| {
            AddressSpace::<u64>::new_memory(
                AddressSpaceCacheable::NotCacheable,
                true,
                s,
                e - 1,
                None,
            )
        });
        let mut crs: Vec<&dyn Aml> = vec![&bus, &cfg_ports, &io_low, &io_high, &vga, &hole];
        if let Some(h) = &hole64 {
            crs.push(h);
        }
        let crs = ResourceTemplate::new(crs);

        let prt = bytes_of(&self.prt());
        let prt = RawAml(prt);
        let hid = EISAName::new("PNP0A03");
        let zero: u8 = 0;
        let hid = Name::new(Path::new("_HID"), &hid);
        let adr = Name::new(Path::new("_ADR"), &zero);
        let uid = Name::new(Path::new("_UID"), &zero);
        let crs = Name::new(Path::new("_CRS"), &crs);
        let prt = Name::new(Path::new("_PRT"), &prt);

        let com1 = self
            .com1
            .then(|| RawAml(isa_device("COM1", "PNP0501", 1, &[(0x3F8, 8)], &[4])));
        let kbd = self.ps2.then(|| {
            RawAml(isa_device(
                "KBD_",
                "PNP0303",
                0,
                &[(0x60, 1), (0x64, 1)],
                &[1],
            ))
        });
        let mou = self
            .ps2
            .then(|| RawAml(isa_device("MOU_", "PNP0F13", 0, &[], &[12])));
        // The CMOS clock is always there; described, Linux's rtc_cmos binds it through PnP
        // (alarm and wake included) instead of guessing a platform device.
        let rtc = Some(RawAml(isa_device(
            "RTC_",
            "PNP0B00",
            0,
            &[(crate::devices::cmos::CMOS_BASE as u16, 2)],
            &[crate::devices::cmos::RTC_IRQ],
        )));

        let mut children: Vec<&dyn Aml> = vec![&hid, &adr, &uid, &crs, &prt];
        for d in [&com1, &kbd, &mou, &rtc].into_iter().flatten() {
            children.push(d);
        }
        bytes_of(&Device::new(Path::new("PCI0"), children))
    }

    /// `_PRT`: every slot's pins A-D to GSI 16 + PIRQ, with PIRQ from the PIIX3's own
    /// swizzle ([`crate::pci::piix3::pirq_of`], QEMU's: (slot - 1 + pin - 1) & 3 with
    /// pin 1 = INTA), so the table and the wires cannot disagree.
    fn prt(&self) -> RawAml {
        let mut entries = Vec::new();
        for slot in 0u32..32 {
            for pin in 0u32..4 {
                let addr = (slot << 16) | 0xFFFF;
                let gsi =
                    PCI_GSI_BASE + crate::pci::piix3::pirq_of(slot as u8, pin as u8 + 1) as u32;
                let zero: u8 = 0;
                let pin_b = pin as u8;
                entries.push(bytes_of(&Package::new(vec![&addr, &pin_b, &zero, &gsi])));
            }
        }
        let raws: Vec<RawAml> = entries.into_iter().map(RawAml).collect();
        let refs: Vec<&dyn Aml> = raws.iter().map(|r| r as &dyn Aml).collect();
        RawAml(bytes_of(&Package::new(refs)))
    }

    fn fadt(&self) -> FADTBuilder {
        let pm = self.pm_io_base;
        let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
            .flag(Flags::Wbinvd)
            .flag(Flags::ProcC1)
            .flag(Flags::SlpButton)
            .flag(Flags::ResetRegSup);
        // PwrButton stays clear: the power button is the PM1 fixed-feature event.
        f.sci_int = u16::from(self.sci_irq).into();
        // The OS switches to ACPI mode by writing ACPI_ENABLE to the APM control port, which
        // sets SCI_EN in the PIIX4 PM model (no SMM runs here), as on QEMU's pc.
        f.smi_cmd = u32::from(piix4_pm::APM_CNT_PORT as u16).into();
        f.acpi_enable = piix4_pm::ACPI_ENABLE;
        f.acpi_disable = piix4_pm::ACPI_DISABLE;
        f.pm1a_evt_blk = u32::from(pm).into();
        f.pm1a_cnt_blk = u32::from(pm.saturating_add(4)).into();
        f.pm_tmr_blk = u32::from(pm.saturating_add(8)).into();
        f.pm1_evt_len = 4;
        f.pm1_cnt_len = 2;
        f.pm_tmr_len = 4;
        f.x_pm1a_evt_blk = io_gas(32, AccessSize::Undefined, pm);
        f.x_pm1a_cnt_blk = io_gas(16, AccessSize::Undefined, pm.saturating_add(4));
        f.x_pm_tmr_blk = io_gas(32, AccessSize::Undefined, pm.saturating_add(8));
        // C2/C3 are not supported: latencies above 100/1000 us say so.
        f.p_lvl2_lat = 0xFFFu16.into();
        f.p_lvl3_lat = 0xFFFFu16.into();
        // RTC century register in CMOS, as QEMU's pc has it.
        f.century = 0x32;
        // IA-PC boot architecture: legacy devices present, 8042 present.
        f.iapc_boot_arch = 0x0003u16.into();
        f.reset_reg = io_gas(8, AccessSize::ByteAccess, RESET_PORT);
        f.reset_value = RESET_VALUE;
        f
    }

    fn madt(&self) -> Vec<u8> {
        let mut madt = Sdt::new(
            *b"APIC",
            HEADER_LEN as u32 + 8,
            1,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        );
        madt.write_u32(36, LAPIC_ADDR);
        // PCAT_COMPAT: there are also two 8259s, which the OS must mask.
        madt.write_u32(40, 1);
        let mut entries = Vec::new();
        for id in 0..self.cpus {
            ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
        }
        // ID 0: what KVM's in-kernel IOAPIC holds in its ID register from reset (an MP-table
        // style "first ID after the CPUs" would disagree with the chip).
        IoApic::new(0, IOAPIC_ADDR, 0).to_aml_bytes(&mut entries);
        // Every CPU's LINT1 is the NMI line, as on a PC (type 4: all processors, flags
        // conforming to the bus, LINT#1).
        entries.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
        // The PIT's IRQ 0 is IOAPIC input 2 on a PC; flags 0 = conforms to the bus (ISA:
        // edge, active high).
        entries.extend_from_slice(&interrupt_override(0, 2, 0));
        // The SCI is level-triggered, active high (flags: polarity 01, trigger 11).
        entries.extend_from_slice(&interrupt_override(
            self.sci_irq,
            u32::from(self.sci_irq),
            0x000D,
        ));
        madt.append_slice(&entries);
        madt.as_slice().to_vec()
    }

    fn build(&self) -> Built {
        let mut tables = Vec::new();
        let mut cmds = vec![
            LoaderCmd::Allocate {
                file: Blob::Rsdp,
                align: 16,
                zone: ZONE_FSEG,
            },
            LoaderCmd::Allocate {
                file: Blob::Tables,
                align: 64,
                zone: ZONE_HIGH,
            },
        ];
        let ptr = |cmds: &mut Vec<LoaderCmd>, dest: Blob, offset: usize, size: u8| {
            cmds.push(LoaderCmd::AddPointer {
                dest,
                src: Blob::Tables,
                offset: offset as u32,
                size,
            });
        };
        let cksum = |cmds: &mut Vec<LoaderCmd>, start: usize, len: usize| {
            cmds.push(LoaderCmd::AddChecksum {
                file: Blob::Tables,
                offset: (start + CHECKSUM_OFFSET) as u32,
                start: start as u32,
                len: len as u32,
            });
        };

        // FACS first: the blob is 64-byte aligned, and so must the FACS be.
        let facs_off = tables.len();
        FACS::new().to_aml_bytes(&mut tables);

        let dsdt_off = tables.len();
        let dsdt = self.dsdt();
        tables.extend_from_slice(&dsdt);
        cksum(&mut cmds, dsdt_off, dsdt.len());

        // Pointers hold offsets into the tables blob until the loader adds its address.
        let fadt_off = tables.len();
        let fadt = self
            .fadt()
            .firmware_ctrl_32(facs_off as u32)
            .dsdt_64(dsdt_off as u64);
        let mut fadt_bytes = bytes_of(&fadt.finalize());
        let dsdt32_at = std::mem::offset_of!(FADTBuilder, dsdt);
        fadt_bytes[dsdt32_at..dsdt32_at + 4].copy_from_slice(&(dsdt_off as u32).to_le_bytes());
        ptr(
            &mut cmds,
            Blob::Tables,
            fadt_off + std::mem::offset_of!(FADTBuilder, firmware_ctrl),
            4,
        );
        ptr(&mut cmds, Blob::Tables, fadt_off + dsdt32_at, 4);
        ptr(
            &mut cmds,
            Blob::Tables,
            fadt_off + std::mem::offset_of!(FADTBuilder, x_dsdt),
            8,
        );
        cksum(&mut cmds, fadt_off, fadt_bytes.len());
        tables.extend_from_slice(&fadt_bytes);

        let madt_off = tables.len();
        let madt = self.madt();
        cksum(&mut cmds, madt_off, madt.len());
        tables.extend_from_slice(&madt);

        let pointed = [fadt_off, madt_off];

        // RSDT for loaders that only know ACPI 1.0.
        let rsdt_off = tables.len();
        let mut rsdt = Sdt::new(
            *b"RSDT",
            HEADER_LEN as u32,
            1,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        );
        for (i, &t) in pointed.iter().enumerate() {
            rsdt.append_slice(&(t as u32).to_le_bytes());
            ptr(&mut cmds, Blob::Tables, rsdt_off + HEADER_LEN + 4 * i, 4);
        }
        let rsdt = rsdt.as_slice().to_vec();
        cksum(&mut cmds, rsdt_off, rsdt.len());
        tables.extend_from_slice(&rsdt);

        let xsdt_off = tables.len();
        let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
        for (i, &t) in pointed.iter().enumerate() {
            xsdt.add_entry(t as u64);
            ptr(&mut cmds, Blob::Tables, xsdt_off + HEADER_LEN + 8 * i, 8);
        }
        let xsdt = bytes_of(&xsdt);
        cksum(&mut cmds, xsdt_off, xsdt.len());
        tables.extend_from_slice(&xsdt);

        let mut rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_off as u64));
        // RSDT address (offset 16), which the crate leaves 0.
        rsdp[16..20].copy_from_slice(&(rsdt_off as u32).to_le_bytes());
        ptr(&mut cmds, Blob::Rsdp, 16, 4);
        ptr(&mut cmds, Blob::Rsdp, 24, 8);
        // The 20-byte ACPI 1.0 checksum first: the extended one covers its byte.
        cmds.push(LoaderCmd::AddChecksum {
            file: Blob::Rsdp,
            offset: 8,
            start: 0,
            len: 20,
        });
        cmds.push(LoaderCmd::AddChecksum {
            file: Blob::Rsdp,
            offset: 32,
            start: 0,
            len: rsdp.len() as u32,
        });

        // Every byte an ADD_CHECKSUM command writes goes out as 0, as QEMU's blobs have it
        // (its linker asserts so): SeaBIOS subtracts the range's sum from the byte, but
        // OVMF's AcpiPlatformDxe (ProcessCmdAddChecksum) assigns the range's checksum to
        // it, which is right only if the byte was 0. With the crate's checksums left in,
        // every table summed to minus its old checksum under OVMF, its second pass took
        // none of them for ACPI tables, and a UEFI guest got no FADT, MADT or DSDT.
        let mut built = Built { rsdp, tables, cmds };
        built.clear_checksum_bytes();
        built
    }

    /// The files for fw_cfg: add them as [`ACPI_RSDP_FILE`], [`ACPI_TABLES_FILE`] and
    /// [`TABLE_LOADER_FILE`].
    pub fn fw_cfg_blobs(&self) -> FwCfgAcpi {
        let b = self.build();
        let loader = b.cmds.iter().flat_map(|c| c.to_bytes()).collect();
        FwCfgAcpi {
            rsdp: b.rsdp,
            tables: b.tables,
            loader,
        }
    }

    /// Size of the tables blob (what [`AcpiConfig::write_to`] needs at `tables_addr`).
    pub fn tables_len(&self) -> usize {
        self.build().tables.len()
    }

    /// Places the tables for a direct kernel boot: the RSDP at `rsdp_addr` (16-byte
    /// aligned, inside 0xE0000-0xFFFFF so Linux's scan finds it too), the rest at
    /// `tables_addr` (64-byte aligned). Runs the same loader script the firmware would.
    pub fn write_to(
        &self,
        mem: &GuestMem,
        rsdp_addr: u64,
        tables_addr: u64,
    ) -> Result<(), AcpiError> {
        let Built {
            mut rsdp,
            mut tables,
            cmds,
        } = self.build();
        if !rsdp_addr.is_multiple_of(16)
            || rsdp_addr < RSDP_SCAN_START
            || rsdp_addr.saturating_add(rsdp.len() as u64) > RSDP_SCAN_END
        {
            return Err(AcpiError::BadRsdpAddress(rsdp_addr));
        }
        let overlaps = tables_addr < rsdp_addr + rsdp.len() as u64
            && rsdp_addr < tables_addr.saturating_add(tables.len() as u64);
        if !tables_addr.is_multiple_of(64)
            || overlaps
            || tables_addr
                .checked_add(tables.len() as u64)
                .is_none_or(|e| e > 1 << 32)
        {
            return Err(AcpiError::BadTablesAddress(tables_addr));
        }
        let addr_of = |b: Blob| match b {
            Blob::Rsdp => rsdp_addr,
            Blob::Tables => tables_addr,
        };
        for cmd in cmds {
            match cmd {
                LoaderCmd::Allocate { .. } => {}
                LoaderCmd::AddPointer {
                    dest,
                    src,
                    offset,
                    size,
                } => {
                    let buf = match dest {
                        Blob::Rsdp => &mut rsdp,
                        Blob::Tables => &mut tables,
                    };
                    add_pointer(buf, offset as usize, size as usize, addr_of(src));
                }
                LoaderCmd::AddChecksum {
                    file,
                    offset,
                    start,
                    len,
                } => {
                    let buf = match file {
                        Blob::Rsdp => &mut rsdp,
                        Blob::Tables => &mut tables,
                    };
                    let sum = byte_sum(&buf[start as usize..(start + len) as usize]);
                    buf[offset as usize] = buf[offset as usize].wrapping_sub(sum);
                }
            }
        }
        mem.write_slice(&tables, GuestAddress(tables_addr))?;
        mem.write_slice(&rsdp, GuestAddress(rsdp_addr))?;
        Ok(())
    }
}

/// AML bytes produced elsewhere, to nest them in the crate's builders.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// A device behind the root bridge with fixed I/O ports and ISA IRQs.
fn isa_device(name: &str, hid: &str, uid: u8, ports: &[(u16, u8)], irqs: &[u32]) -> Vec<u8> {
    let ios: Vec<IO> = ports.iter().map(|&(p, n)| IO::new(p, p, 1, n)).collect();
    // ISA interrupts: edge-triggered, active high, exclusive.
    let ints: Vec<Interrupt> = irqs
        .iter()
        .map(|&i| Interrupt::new(true, true, false, false, i))
        .collect();
    let mut res: Vec<&dyn Aml> = Vec::new();
    res.extend(ios.iter().map(|i| i as &dyn Aml));
    res.extend(ints.iter().map(|i| i as &dyn Aml));
    let crs = ResourceTemplate::new(res);
    let hid = EISAName::new(hid);
    let hid = Name::new(Path::new("_HID"), &hid);
    let uid = Name::new(Path::new("_UID"), &uid);
    let crs = Name::new(Path::new("_CRS"), &crs);
    bytes_of(&Device::new(Path::new(name), vec![&hid, &uid, &crs]))
}

/// MADT Interrupt Source Override (type 2, length 10), ISA bus.
fn interrupt_override(irq: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let mut e = [0u8; 10];
    e[0] = 2;
    e[1] = 10;
    e[2] = 0;
    e[3] = irq;
    e[4..8].copy_from_slice(&gsi.to_le_bytes());
    e[8..10].copy_from_slice(&flags.to_le_bytes());
    e
}

fn byte_sum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// The byte that makes `data` sum to zero (ACPI's and SMBIOS's checksums).
pub(crate) fn checksum_of(data: &[u8]) -> u8 {
    0u8.wrapping_sub(byte_sum(data))
}

fn add_pointer(buf: &mut [u8], offset: usize, size: usize, base: u64) {
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(&buf[offset..offset + size]);
    let p = u64::from_le_bytes(v).wrapping_add(base);
    buf[offset..offset + size].copy_from_slice(&p.to_le_bytes()[..size]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Reads a whole table at `addr` from `read`, checking its signature, that its length
    /// field is what it says and that it sums to zero.
    fn table(read: &dyn Fn(u64, usize) -> Vec<u8>, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
        let head = read(addr, HEADER_LEN);
        assert_eq!(&head[..4], sig, "signature at {addr:#x}");
        let len = le32(&head, 4) as usize;
        assert!(len >= HEADER_LEN);
        let t = read(addr, len);
        assert_eq!(byte_sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
        t
    }

    struct Found {
        madt: Vec<u8>,
        dsdt: Vec<u8>,
        fadt: Vec<u8>,
    }

    /// Walks RSDP → XSDT/RSDT → FADT → DSDT/FACS, and the MADT, as an OS does.
    fn walk(read: &dyn Fn(u64, usize) -> Vec<u8>, rsdp_addr: u64) -> Found {
        let rsdp = read(rsdp_addr, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(byte_sum(&rsdp[..20]), 0);
        assert_eq!(byte_sum(&rsdp), 0);
        assert_eq!(le32(&rsdp, 20), 36);
        let xsdt = table(read, le64(&rsdp, 24), b"XSDT");
        let rsdt = table(read, u64::from(le32(&rsdp, 16)), b"RSDT");
        let x_entries: Vec<u64> = (HEADER_LEN..xsdt.len())
            .step_by(8)
            .map(|o| le64(&xsdt, o))
            .collect();
        let r_entries: Vec<u64> = (HEADER_LEN..rsdt.len())
            .step_by(4)
            .map(|o| u64::from(le32(&rsdt, o)))
            .collect();
        assert_eq!(x_entries, r_entries);
        let mut by_sig = HashMap::new();
        for &e in &x_entries {
            let sig: [u8; 4] = read(e, 4).try_into().unwrap();
            by_sig.insert(sig, e);
        }
        let fadt = table(read, by_sig[b"FACP"], b"FACP");
        let madt = table(read, by_sig[b"APIC"], b"APIC");
        assert_eq!(fadt.len(), 276);
        let facs_addr = u64::from(le32(&fadt, 36));
        assert_eq!(facs_addr % 64, 0, "FACS must be 64-byte aligned");
        let facs = read(facs_addr, 64);
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(le32(&facs, 4), 64);
        let dsdt32 = u64::from(le32(&fadt, 40));
        let x_dsdt = le64(&fadt, 140);
        assert_eq!(dsdt32, x_dsdt);
        let dsdt = table(read, x_dsdt, b"DSDT");
        Found { madt, dsdt, fadt }
    }

    fn check_contents(cfg: &AcpiConfig, f: &Found) {
        // FADT fields the OS relies on.
        let fadt = &f.fadt;
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI_INT");
        assert_eq!(le32(fadt, 48), 0xb2, "SMI_CMD");
        assert_eq!((fadt[52], fadt[53]), (0xf1, 0xf0), "ACPI_ENABLE/DISABLE");
        assert_eq!(le32(fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(le32(fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(le32(fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!((fadt[88], fadt[89], fadt[91]), (4, 2, 4));
        let flags = le32(fadt, 112);
        assert_eq!(flags & (1 << 4), 0, "power button is a fixed feature");
        assert_ne!(flags & (1 << 5), 0, "no sleep button");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(
            &fadt[116..120],
            &[1, 8, 0, 1],
            "reset reg: system I/O, 8 bits"
        );
        assert_eq!(le64(fadt, 120), 0xCF9);
        assert_eq!(fadt[128], 6);
        assert_eq!((fadt[8], fadt[131]), (6, 5), "FADT 6.5");

        // MADT: one local APIC per CPU, the IOAPIC, two overrides, the NMI line.
        let m = &f.madt;
        assert_eq!(le32(m, 36), LAPIC_ADDR);
        let mut off = 44;
        let (mut lapics, mut ioapics, mut isos, mut nmis) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while off < m.len() {
            let (ty, len) = (m[off], m[off + 1] as usize);
            assert!(len >= 2 && off + len <= m.len());
            match ty {
                0 => {
                    assert_eq!(le32(m, off + 4) & 1, 1, "enabled");
                    lapics.push(m[off + 3]);
                }
                1 => ioapics.push((m[off + 2], le32(m, off + 4), le32(m, off + 8))),
                2 => isos.push((
                    m[off + 3],
                    le32(m, off + 4),
                    u16::from_le_bytes([m[off + 8], m[off + 9]]),
                )),
                4 => nmis.push(m[off + 2..off + len].to_vec()),
                t => panic!("unexpected MADT entry type {t}"),
            }
            off += len;
        }
        assert_eq!(lapics, (0..cfg.cpus).collect::<Vec<_>>());
        assert_eq!(
            ioapics,
            vec![(0, IOAPIC_ADDR, 0)],
            "the in-kernel IOAPIC's id"
        );
        assert_eq!(isos, vec![(0, 2, 0), (9, 9, 0xD)]);
        assert_eq!(nmis, vec![vec![0xff, 0, 0, 1]], "all CPUs: LINT1 is NMI");

        // DSDT: the names an OS looks for are there.
        let d = &f.dsdt;
        for name in [
            &b"_SB_"[..],
            b"PCI0",
            b"_PRT",
            b"_CRS",
            b"_S5_",
            b"COM1",
            b"KBD_",
            b"MOU_",
        ] {
            assert!(
                d.windows(4).any(|w| w == name),
                "{} in DSDT",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(d[8], 2, "DSDT revision 2: 64-bit integers");
    }

    fn mem() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn direct_boot_tables_walk_and_checksum() {
        let cfg = AcpiConfig {
            cpus: 4,
            ..Default::default()
        };
        let m = mem();
        cfg.write_to(&m, 0xE_0000, 0xE_0040).unwrap();
        let read = |a: u64, n: usize| {
            let mut v = vec![0u8; n];
            m.read_slice(&mut v, GuestAddress(a)).unwrap();
            v
        };
        let f = walk(&read, 0xE_0000);
        check_contents(&cfg, &f);
    }

    #[test]
    fn odd_configs_do_not_panic() {
        for cfg in [
            AcpiConfig {
                cpus: 0,
                pm_io_base: 0xFFFF,
                pci_hole: (0, u64::MAX),
                pci_hole64: Some((5, 5)),
                com1: false,
                ps2: false,
                ..Default::default()
            },
            AcpiConfig {
                cpus: 254,
                pci_hole: (u64::MAX, 0),
                pci_hole64: Some((0, u64::MAX)),
                ..Default::default()
            },
        ] {
            let blobs = cfg.fw_cfg_blobs();
            for fw in [Loader::SeaBios, Loader::Ovmf] {
                let (memory, placed) = run_loader(&blobs, fw);
                let read = |a: u64, n: usize| memory[a as usize..a as usize + n].to_vec();
                let f = walk(&read, placed[ACPI_RSDP_FILE]);
                assert!(f.madt.len() >= 44 + 12 + 20);
            }
        }
    }

    #[test]
    fn write_to_refuses_bad_addresses() {
        let cfg = AcpiConfig::default();
        let m = mem();
        assert!(matches!(
            cfg.write_to(&m, 0xE_0008, 0x8_0000),
            Err(AcpiError::BadRsdpAddress(_))
        ));
        assert!(matches!(
            cfg.write_to(&m, 0x9_0000, 0x8_0000),
            Err(AcpiError::BadRsdpAddress(_))
        ));
        assert!(matches!(
            cfg.write_to(&m, 0xE_0000, 0x8_0010),
            Err(AcpiError::BadTablesAddress(_))
        ));
        assert!(matches!(
            cfg.write_to(&m, 0xE_0000, 0xE_0000),
            Err(AcpiError::BadTablesAddress(_))
        ));
        assert!(matches!(
            cfg.write_to(&m, !15u64, 0x8_0000),
            Err(AcpiError::BadRsdpAddress(_))
        ));
        assert!(matches!(
            cfg.write_to(&m, 0xE_0000, !63u64),
            Err(AcpiError::BadTablesAddress(_))
        ));
        // Outside guest RAM.
        assert!(matches!(
            cfg.write_to(&m, 0xE_0000, 0x20_0000),
            Err(AcpiError::Memory(_))
        ));
    }

    /// The two firmware implementations of the table loader, which differ where it matters.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Loader {
        /// SeaBIOS's `romfile_loader.c`: ADD_CHECKSUM subtracts the range's sum from the
        /// result byte.
        SeaBios,
        /// OVMF's `QemuFwCfgAcpi.c`: ADD_CHECKSUM sets the result byte to the range's
        /// checksum; alignment at most a page; an ADD_POINTER's value must lie inside the
        /// pointee blob before it is relocated.
        Ovmf,
    }

    /// The table loader run over the fw_cfg blobs into a fake 1 MiB memory, with `fw`'s
    /// rules: FSEG allocations from 0xF0000, HIGH ones from 0x80000 (OVMF ignores the
    /// zone, so placing it as SeaBIOS does loses nothing).
    fn run_loader(blobs: &FwCfgAcpi, fw: Loader) -> (Vec<u8>, HashMap<String, u64>) {
        let files: HashMap<&str, &[u8]> = [
            (ACPI_RSDP_FILE, &blobs.rsdp[..]),
            (ACPI_TABLES_FILE, &blobs.tables[..]),
        ]
        .into();
        let mut memory = vec![0u8; 0x10_0000];
        let mut placed: HashMap<String, u64> = HashMap::new();
        let mut sizes: HashMap<String, usize> = HashMap::new();
        let (mut fseg, mut high) = (0xF_0000u64, 0x8_0000u64);
        let name = |b: &[u8]| -> String {
            assert_eq!(b[55], 0, "file name NUL-terminated");
            let end = b.iter().position(|&c| c == 0).unwrap();
            String::from_utf8(b[..end].to_vec()).unwrap()
        };
        assert_eq!(blobs.loader.len() % LOADER_ENTRY_LEN, 0);
        for e in blobs.loader.chunks(LOADER_ENTRY_LEN) {
            let body = &e[4..];
            match le32(e, 0) {
                CMD_ALLOCATE => {
                    let f = name(&body[..56]);
                    let align = u64::from(le32(body, 56));
                    assert!(align.is_power_of_two());
                    if fw == Loader::Ovmf {
                        assert!(align <= 4096, "OVMF refuses alignments above a page");
                    }
                    let data = files[f.as_str()];
                    let next = match body[60] {
                        ZONE_FSEG => &mut fseg,
                        ZONE_HIGH => &mut high,
                        z => panic!("zone {z}"),
                    };
                    let at = next.div_ceil(align) * align;
                    *next = at + data.len() as u64;
                    memory[at as usize..at as usize + data.len()].copy_from_slice(data);
                    assert!(placed.insert(f.clone(), at).is_none(), "allocated once");
                    sizes.insert(f, data.len());
                }
                CMD_ADD_POINTER => {
                    let dest = name(&body[..56]);
                    let src = name(&body[56..112]);
                    let off = le32(body, 112) as usize;
                    let size = body[116] as usize;
                    assert!(matches!(size, 1 | 2 | 4 | 8));
                    assert!(off + size <= sizes[&dest]);
                    let at = placed[&dest] as usize + off;
                    if fw == Loader::Ovmf {
                        let mut v = [0u8; 8];
                        v[..size].copy_from_slice(&memory[at..at + size]);
                        assert!(
                            (u64::from_le_bytes(v) as usize) < sizes[&src],
                            "OVMF: pointer at {dest}+{off:#x} points outside {src}"
                        );
                    }
                    add_pointer(&mut memory, at, size, placed[&src]);
                }
                CMD_ADD_CHECKSUM => {
                    let f = name(&body[..56]);
                    let (off, start, len) = (
                        le32(body, 56) as usize,
                        le32(body, 60) as usize,
                        le32(body, 64) as usize,
                    );
                    assert!(off < sizes[&f] && start + len <= sizes[&f]);
                    let base = placed[&f] as usize;
                    let sum = byte_sum(&memory[base + start..base + start + len]);
                    memory[base + off] = match fw {
                        Loader::SeaBios => memory[base + off].wrapping_sub(sum),
                        Loader::Ovmf => 0u8.wrapping_sub(sum),
                    };
                }
                c => panic!("unknown loader command {c}"),
            }
        }
        (memory, placed)
    }

    #[test]
    fn table_loader_script_resolves_like_seabios_and_ovmf() {
        let cfg = AcpiConfig {
            cpus: 2,
            pci_hole64: Some((1 << 35, 1 << 36)),
            ..Default::default()
        };
        let blobs = cfg.fw_cfg_blobs();
        assert_eq!(blobs.rsdp.len(), 36);
        for fw in [Loader::SeaBios, Loader::Ovmf] {
            let (memory, placed) = run_loader(&blobs, fw);
            assert_eq!(placed[ACPI_TABLES_FILE] % 64, 0);
            let rsdp_at = placed[ACPI_RSDP_FILE];
            assert!((0xF_0000..0x10_0000).contains(&rsdp_at) && rsdp_at % 16 == 0);
            let read = |a: u64, n: usize| memory[a as usize..a as usize + n].to_vec();
            let f = walk(&read, rsdp_at);
            check_contents(&cfg, &f);
        }
        // The same tables as direct boot writes, apart from where they are.
        assert_eq!(blobs.tables.len(), cfg.tables_len());
    }

    /// QEMU's convention, which OVMF depends on: the byte an ADD_CHECKSUM command writes is
    /// 0 in the blob, because OVMF sets it to the range's checksum (a checksum taken with
    /// the old byte in the range) where SeaBIOS subtracts the sum from it.
    #[test]
    fn checksum_bytes_are_zero_in_the_blobs() {
        let blobs = AcpiConfig::default().fw_cfg_blobs();
        let mut n = 0;
        for e in blobs.loader.chunks(LOADER_ENTRY_LEN) {
            if le32(e, 0) != CMD_ADD_CHECKSUM {
                continue;
            }
            let body = &e[4..];
            let file = body[..56].split(|&c| c == 0).next().unwrap();
            let blob = match file {
                b"etc/acpi/rsdp" => &blobs.rsdp,
                b"etc/acpi/tables" => &blobs.tables,
                f => panic!("checksum in {}", String::from_utf8_lossy(f)),
            };
            let off = le32(body, 56) as usize;
            assert_eq!(blob[off], 0, "checksum byte at {off:#x}");
            n += 1;
        }
        // DSDT, FADT, MADT, RSDT, XSDT, and the RSDP's two.
        assert_eq!(n, 7);
    }

    /// OVMF's second pass: every ADD_POINTER target that is a FACS, or a table whose
    /// length fits its blob and whose bytes sum to zero, is installed (RSDT and XSDT
    /// excepted, OVMF builds its own); anything else is quietly taken for opaque data.
    /// So a table with a bad checksum is not an error, it is just missing from the OS.
    #[test]
    fn ovmf_installs_every_table_the_script_points_at() {
        let cfg = AcpiConfig::default();
        let blobs = cfg.fw_cfg_blobs();
        let (memory, placed) = run_loader(&blobs, Loader::Ovmf);
        let size = |name: &str| match name {
            ACPI_RSDP_FILE => blobs.rsdp.len(),
            _ => blobs.tables.len(),
        };
        let mut installed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in blobs.loader.chunks(LOADER_ENTRY_LEN) {
            if le32(e, 0) != CMD_ADD_POINTER {
                continue;
            }
            let body = &e[4..];
            let name = |b: &[u8]| {
                String::from_utf8(b.split(|&c| c == 0).next().unwrap().to_vec()).unwrap()
            };
            let (dest, src) = (name(&body[..56]), name(&body[56..112]));
            let (off, psize) = (le32(body, 112) as usize, body[116] as usize);
            let at = placed[&dest] as usize + off;
            let mut v = [0u8; 8];
            v[..psize].copy_from_slice(&memory[at..at + psize]);
            let target = u64::from_le_bytes(v) as usize;
            if !seen.insert(target) {
                continue;
            }
            let remaining = placed[&src] as usize + size(&src) - target;
            let sig = &memory[target..target + 4];
            let len = le32(&memory, target + 4) as usize;
            if sig == b"FACS" && (64..=remaining).contains(&len) {
                installed.push("FACS".to_string());
            } else if (HEADER_LEN..=remaining).contains(&len)
                && byte_sum(&memory[target..target + len]) == 0
            {
                if sig != b"RSDT" && sig != b"XSDT" {
                    installed.push(String::from_utf8_lossy(sig).into_owned());
                }
            } else {
                panic!(
                    "OVMF would not take {dest}+{off:#x}'s target ({}) for an ACPI table",
                    String::from_utf8_lossy(sig)
                );
            }
        }
        assert_eq!(installed, ["FACS", "DSDT", "FACP", "APIC"]);
    }

    /// The firmware's view end to end: the files come out of the fw_cfg device by DMA,
    /// exactly as SeaBIOS's `qemu_romfile_init` + `romfile_loader_execute` fetch them.
    #[test]
    fn fw_cfg_serves_the_loader_files() {
        use crate::bus::BusDevice;
        use crate::devices::fw_cfg::{FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FW_CFG_FILE_DIR};
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        let cfg = AcpiConfig::default();
        let blobs = cfg.fw_cfg_blobs();
        blobs.clone().add_to(&mut fw).unwrap();
        let mut dma_read = |key: u16, len: usize, at: u64| -> Vec<u8> {
            let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ | (u32::from(key) << 16);
            let mut d = Vec::new();
            d.extend_from_slice(&ctl.to_be_bytes());
            d.extend_from_slice(&(len as u32).to_be_bytes());
            d.extend_from_slice(&at.to_be_bytes());
            m.write_slice(&d, GuestAddress(0x500)).unwrap();
            fw.write(8, &0x500u32.to_be_bytes());
            assert_eq!(m.read_obj::<u32>(GuestAddress(0x500)).unwrap(), 0);
            let mut v = vec![0u8; len];
            m.read_slice(&mut v, GuestAddress(at)).unwrap();
            v
        };
        let count = u32::from_be_bytes(dma_read(FW_CFG_FILE_DIR, 4, 0x1000).try_into().unwrap());
        let dir = dma_read(FW_CFG_FILE_DIR, 4 + 64 * count as usize, 0x1000);
        let mut files = HashMap::new();
        for e in dir[4..].chunks(64) {
            let name =
                String::from_utf8(e[8..].split(|&c| c == 0).next().unwrap().to_vec()).unwrap();
            let size = u32::from_be_bytes(e[..4].try_into().unwrap()) as usize;
            let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
            files.insert(name, dma_read(key, size, 0x2_0000));
        }
        assert_eq!(files[ACPI_RSDP_FILE], blobs.rsdp);
        assert_eq!(files[ACPI_TABLES_FILE], blobs.tables);
        assert_eq!(files[TABLE_LOADER_FILE], blobs.loader);
    }

    #[test]
    fn prt_routes_slots_with_the_piix_swizzle() {
        let cfg = AcpiConfig::default();
        let prt = cfg.prt().0;
        // PackageOp, PkgLength, 128 entries.
        assert_eq!(prt[0], 0x12);
        let mut at = 1 + usize::from(prt[1] >> 6) + 1;
        assert_eq!(prt[at], 128);
        at += 1;
        for slot in 0u32..32 {
            for pin in 0u32..4 {
                // Each entry: PackageOp, 1-byte PkgLength, count 4, then the four values.
                assert_eq!(prt[at], 0x12);
                let len = prt[at + 1] as usize;
                let e = &prt[at + 2..at + 1 + len];
                assert_eq!(e[0], 4);
                let mut vals = Vec::new();
                let mut i = 1;
                while i < e.len() {
                    match e[i] {
                        0x00 => (vals.push(0), i += 1),
                        0x01 => (vals.push(1), i += 1),
                        0x0A => (vals.push(u32::from(e[i + 1])), i += 2),
                        0x0C => (vals.push(le32(e, i + 1)), i += 5),
                        0x0B => (
                            vals.push(u32::from(u16::from_le_bytes([e[i + 1], e[i + 2]]))),
                            i += 3,
                        ),
                        b => panic!("unexpected AML byte {b:#x}"),
                    };
                }
                // QEMU's pc: PIRQ = (slot - 1 + pin) & 3 with pin 0 = INTA; PIRQ A-D = GSI 16-19.
                let gsi = 16 + ((slot + 3 + pin) & 3);
                assert_eq!(vals, vec![(slot << 16) | 0xFFFF, pin, 0, gsi]);
                at += 1 + len;
            }
        }
        assert_eq!(at, prt.len());
    }

    #[test]
    fn iasl_disassembles_the_dsdt() {
        let have_iasl = std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have_iasl {
            eprintln!(
                "SKIP iasl_disassembles_the_dsdt: iasl not installed (Debian package acpica-tools)"
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("vmdesk-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aml = dir.join("dsdt.aml");
        std::fs::write(&aml, AcpiConfig::default().dsdt()).unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .current_dir(&dir)
            .output()
            .unwrap();
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "iasl -d failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dsl = dsl.unwrap();
        for want in [
            "Device (PCI0)",
            "Name (\\_S5, Package (0x02)",
            "EisaId (\"PNP0A03\")",
            "Name (_PRT,",
            "EisaId (\"PNP0501\")",
            "0x0CF8",
            "0xFEBFFFFF",
        ] {
            assert!(dsl.contains(want), "{want} missing from:\n{dsl}");
        }
    }
}
