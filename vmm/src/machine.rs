//! The PC we model, assembled: guest memory with the firmware in place, the port and
//! MMIO buses with every device on them. Nothing here touches KVM: interrupt lines come
//! from a factory the caller passes (KVM's irqchip in the VMM, recording lines in
//! tests), so a test can build the whole machine and play the guest against it.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use display::surface::Surface;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use crate::acpi::{self, AcpiConfig};
use crate::bus::{Bus, BusError, shared};
use crate::clipboard::{AGENT_PORT_NAME, GuestClipboard};
use crate::config::{BootDevice, DiskBus, DiskSpec};
use crate::devices::boot_watch::{BootEvent, BootMedia};
use crate::devices::cmos::{CMOS_BASE, CMOS_PORTS, Cmos, CmosConfig, RTC_IRQ};
use crate::devices::debugcon::{DEBUGCON_PORT, DebugCon};
use crate::devices::fw_cfg::{
    FW_CFG_BASE, FW_CFG_LEN, FW_CFG_UUID, FwCfg, bootorder_bytes, e820_bytes,
};
use crate::devices::i8042::{self, I8042, KBD_IRQ, MOUSE_IRQ};
use crate::devices::ide::pci::{IDETIM, IDETIM_DECODE_ENABLE};
use crate::devices::ide::{AtaDisk, AtapiCdrom, IDE_DEVFN, Ide, IdeDevice};
use crate::devices::pflash::Pflash;
use crate::devices::reset::{PORT_A, SystemControlA};
use crate::devices::serial::{COM1_BASE, COM1_IRQ, Serial16550, UART_PORTS};
use crate::devices::vga::{Vga, VgaError, load_vgabios};
use crate::disk::probe::open_image;
use crate::disk::{BlockBackend, Counted, IoCounters, RawImage};
use crate::firmware::{Firmware, LOW_BIOS_START};
use crate::irq::{IrqLine, MachineRequest};
use crate::memory::{GuestMem, MemoryLayout};
use crate::net::Network;
use crate::option_rom::OptionRom;
use crate::pci::chipset::PcChipset;
use crate::pci::devfn;
use crate::serial_console::{FanoutWriter, SerialFanout};
use crate::smbios::{self, SmbiosConfig};
use crate::virtio::net::VirtioNet;
use crate::virtio::pci::FastPaths;
use crate::virtio::{self, block::VirtioBlock, input::VirtioTablet, serial::VirtioSerial};

/// Makes the line for one GSI of the platform's interrupt controllers.
pub type IrqFactory = Arc<dyn Fn(u32) -> Arc<dyn IrqLine> + Send + Sync>;

/// How devices reach the hypervisor: interrupt lines always, and the fast paths virtio
/// uses when the hypervisor has them (a bare factory is lines only, as in tests).
#[derive(Clone)]
pub struct Wiring {
    pub lines: IrqFactory,
    pub fast: FastPaths,
}

impl From<IrqFactory> for Wiring {
    fn from(lines: IrqFactory) -> Wiring {
        Wiring {
            lines,
            fast: FastPaths::default(),
        }
    }
}

/// How the machine starts.
#[derive(Clone)]
pub enum Boot {
    /// Through the BIOS, like a real PC.
    Firmware(Firmware),
    /// Straight into a Linux kernel (no firmware runs).
    Linux {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
}

#[derive(Clone)]
pub struct MachineConfig {
    pub memory: u64,
    pub cpus: u32,
    pub boot: Boot,
    /// Milliseconds before the firmware reboots when nothing boots; `None` halts.
    pub reboot_timeout: Option<u32>,
    /// `--option-rom` files, offered to the firmware as fw_cfg `genroms/NAME`.
    pub option_roms: Vec<OptionRom>,
    /// An ISO in the IDE CD-ROM (secondary master); opened read-only at every (re)build.
    pub cdrom: Option<PathBuf>,
    /// The drive stays (empty) after the control socket ejected the ISO, so media changed
    /// at run time survive a guest reset.
    pub cdrom_drive: bool,
    /// The disks: virtio-blk ones on PCI slots from [`FIRST_DISK_SLOT`], IDE ones at
    /// [`IDE_DISK_PLACES`], each in the order given.
    pub disks: Vec<DiskSpec>,
    /// What fw_cfg's `bootorder` lists first; empty: the CD, then the disks.
    pub boot_order: Vec<BootDevice>,
    /// The boot order of this build only, when not empty (`--boot-once`); the VMM clears
    /// it when the guest resets, and [`MachineConfig::boot_order`] applies from then on.
    pub boot_once: Vec<BootDevice>,
    /// The screen: with one, the machine has a standard VGA (PCI 00:02.0, as on QEMU)
    /// drawing into it; `None` is a headless machine with no graphics device.
    pub display: Option<Arc<Surface>>,
    /// SeaBIOS offers its boot menu (and waits for Esc).
    pub boot_menu: bool,
}

/// PCI slots: 02 is the VGA's (as on QEMU), 03 the network card's (when the VM has a
/// network), disks from 04, then the tablet, then the guest agent's virtio-serial device.
pub const NET_SLOT: u8 = 3;
/// PCI slots: 02 is the VGA's (as on QEMU), 03 the network card's, disks from 04, then
/// the tablet, then the guest agent's virtio-serial device.
pub const FIRST_DISK_SLOT: u8 = 4;
/// virtio disks that fit on bus 0's 32 slots beside the tablet and the agent's device.
pub const MAX_DISKS: usize = 32 - FIRST_DISK_SLOT as usize - 2;
/// Where IDE disks go, `(channel, drive)` in order: primary master, primary slave,
/// secondary slave (the secondary master is the CD-ROM's place, as on QEMU).
pub const IDE_DISK_PLACES: [(usize, usize); 3] = [(0, 0), (0, 1), (1, 1)];

impl MachineConfig {
    /// A machine with no CD-ROM and the firmware's defaults for everything optional.
    pub fn new(memory: u64, cpus: u32, boot: Boot) -> MachineConfig {
        MachineConfig {
            memory,
            cpus,
            boot,
            reboot_timeout: None,
            option_roms: Vec::new(),
            cdrom: None,
            cdrom_drive: false,
            disks: Vec::new(),
            boot_order: Vec::new(),
            boot_once: Vec::new(),
            display: None,
            boot_menu: false,
        }
    }
}

/// Where the VGA sits on bus 0 (QEMU's `pc` puts it there too).
pub const VGA_DEVFN: u8 = devfn(2, 0);
/// Where direct kernel boot places the VGA's BARs: where SeaBIOS puts them on QEMU `pc`.
pub const DIRECT_BOOT_LFB: u32 = 0xfd00_0000;
pub const DIRECT_BOOT_VGA_MMIO: u32 = 0xfebf_0000;
/// The mode direct kernel boot leaves the display in, for the kernel's framebuffer console.
pub const DIRECT_BOOT_MODE: (u16, u16, u16) = (1024, 768, 32);

/// Where a character device's output goes. Files are opened once and shared by every
/// incarnation of the machine (a guest reset rebuilds the machine, not the files).
#[derive(Clone, Default)]
pub enum Sink {
    #[default]
    None,
    Stdout,
    File(Arc<File>),
}

impl Sink {
    pub fn writer(&self) -> Box<dyn Write + Send> {
        match self {
            Sink::None => Box::new(std::io::sink()),
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(f) => Box::new(SharedFile(f.clone())),
        }
    }
}

struct SharedFile(Arc<File>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

#[derive(Clone, Default)]
pub struct Outputs {
    pub serial: Sink,
    /// COM1's viewers (`--serial-socket`): with them, what the UART sends goes to the
    /// fan-out as well as to [`Outputs::serial`].
    pub serial_clients: Option<Arc<SerialFanout>>,
    pub debugcon: Sink,
    /// Where the guest agent's clipboard goes; with one, the machine has a virtio-serial
    /// device with the agent's port.
    pub clipboard: Option<Arc<GuestClipboard>>,
    /// The I/O counters of each of [`MachineConfig::disks`], by index, added to by every
    /// build of the machine; a disk without one here gets its own.
    pub disk_io: Vec<Arc<IoCounters>>,
    /// The VM's network, which outlives each build: with one, the machine has a
    /// virtio-net card at [`NET_SLOT`] attached to it.
    pub network: Option<Arc<Network>>,
}

#[derive(Debug, Error)]
pub enum MachineError {
    #[error("cannot allocate {0} MiB of guest memory: {1}")]
    Memory(u64, String),
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    #[error("cannot place the firmware in guest memory: {0}")]
    Firmware(String),
    #[error("disk {0}: {1}")]
    Disk(PathBuf, std::io::Error),
    #[error("cdrom {0}: {1}")]
    Cdrom(PathBuf, std::io::Error),
    #[error("{0} IDE disks given; the IDE controller takes at most {max}", max = IDE_DISK_PLACES.len())]
    TooManyIdeDisks(usize),
    #[error(transparent)]
    Vga(#[from] VgaError),
    #[error("network card: {0}")]
    Net(std::io::Error),
}

/// The machine's network card and the network it is attached to.
pub struct NetCard {
    pub network: Arc<Network>,
    pub card: Arc<Mutex<VirtioNet>>,
}

impl NetCard {
    /// The control socket's `net` status: the network's, and the card's counters.
    pub fn status(&self) -> serde_json::Value {
        let mut status = self.network.status();
        let counters = self
            .card
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counters();
        status["counters"] = serde_json::to_value(counters).unwrap_or_default();
        status
    }
}

/// A built machine, ready for CPUs.
pub struct Machine {
    pub layout: MemoryLayout,
    pub mem: GuestMem,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub serial: Arc<Mutex<Serial16550>>,
    pub chipset: PcChipset,
    pub cmos: Arc<Mutex<Cmos>>,
    pub i8042: Arc<Mutex<I8042>>,
    /// The PIIX3 IDE controller (01.1) and its CD-ROM, for eject/change-media.
    pub ide: Ide,
    /// The I/O counters of each disk, by index in [`MachineConfig::disks`].
    pub disk_io: Vec<Arc<IoCounters>>,
    /// The absolute pointer VNC's pointer events go to.
    pub tablet: Arc<Mutex<VirtioTablet>>,
    /// The virtio-serial device with the guest agent's port, when [`Outputs::clipboard`]
    /// asked for one.
    pub agent: Option<Arc<Mutex<VirtioSerial>>>,
    /// The network card, when the VM has a network.
    pub net: Option<NetCard>,
    /// The graphics device, when the machine has a display.
    pub vga: Option<Vga>,
    /// OVMF's variable store, a flash device below the firmware, with UEFI.
    pub pflash: Option<Arc<Mutex<Pflash>>>,
    /// Resets and poweroffs that devices ask for.
    pub requests: Receiver<MachineRequest>,
    /// What the firmware's log says about the boot (see [`crate::devices::boot_watch`]).
    pub boot_events: Receiver<BootEvent>,
    rom: Option<(u64, u64)>,
    /// What the device threads pass while the VM runs ([`crate::pause`]).
    pub gate: Arc<crate::pause::DeviceGate>,
}

impl Drop for Machine {
    /// The PCI root and the configuration ports it answers on hold each other (through
    /// the port bus): without this the whole machine, its guest memory, its KVM objects
    /// and its virtio threads would outlive every reset.
    fn drop(&mut self) {
        // A machine dropped while paused: its device threads must get out to end.
        self.gate.resume();
        self.pio.clear();
        self.mmio.clear();
    }
}

impl Machine {
    pub fn new(
        cfg: &MachineConfig,
        wiring: impl Into<Wiring>,
        out: &Outputs,
    ) -> Result<Machine, MachineError> {
        let Wiring { lines: irq, fast } = wiring.into();
        let layout = MemoryLayout::new(cfg.memory);
        let firmware = match &cfg.boot {
            Boot::Firmware(fw) => Some(fw),
            Boot::Linux { .. } => None,
        };
        let rom = firmware.map(|fw| (fw.base(), fw.image.len() as u64));
        let mem = allocate(&layout, rom)?;
        if let Some(fw) = firmware {
            load_firmware(&mem, fw)?;
        }

        let (tx, requests) = crossbeam_channel::unbounded();
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let pflash = match firmware.and_then(|fw| fw.vars.clone().zip(fw.vars_base())) {
            Some((vars, base)) => {
                let len = vars.len();
                let flash = shared(Pflash::new(base, vars));
                mmio.insert(base, len, flash.clone())?;
                Some(flash)
            }
            None => None,
        };

        let com1_out = match &out.serial_clients {
            Some(clients) => Box::new(FanoutWriter::new(out.serial.writer(), clients.clone())),
            None => out.serial.writer(),
        };
        let serial = shared(Serial16550::new(irq(COM1_IRQ), com1_out));
        pio.insert(COM1_BASE, UART_PORTS, serial.clone())?;
        let (boot_tx, boot_events) = crossbeam_channel::unbounded();
        pio.insert(
            DEBUGCON_PORT,
            1,
            shared(DebugCon::with_boot_watch(out.debugcon.writer(), boot_tx)),
        )?;
        pio.insert(PORT_A, 1, shared(SystemControlA::new(tx.clone())))?;
        let (chipset, cmos, i8042) = add_chipset(cfg, &layout, &mem, &pio, &mmio, &irq, &tx)?;
        // Every disk's backend, counted; then the IDE ones to the controller and the
        // virtio ones to their slots.
        let disk_io: Vec<Arc<IoCounters>> = (0..cfg.disks.len())
            .map(|i| out.disk_io.get(i).cloned().unwrap_or_default())
            .collect();
        let mut ide_disks = Vec::new();
        let mut virtio_disks = 0u8;
        for (i, disk) in cfg.disks.iter().enumerate() {
            let backend = open_image(&disk.path, disk.format, disk.read_only)
                .map_err(|e| MachineError::Disk(disk.path.clone(), e))?;
            let backend: Box<dyn BlockBackend> =
                Box::new(Counted::new(backend, disk_io[i].clone()));
            match disk.bus {
                DiskBus::Ide => ide_disks.push(backend),
                DiskBus::Virtio => {
                    let blk = VirtioBlock::new(backend, &format!("vmdesk-disk{i}"))
                        .with_gate(fast.gate.clone());
                    virtio::pci::attach(
                        &chipset,
                        FIRST_DISK_SLOT + virtio_disks,
                        Arc::new(Mutex::new(blk)),
                        &mem,
                        &fast,
                    );
                    virtio_disks += 1;
                }
            }
        }
        let ide = add_ide(cfg, ide_disks, &mem, &pio, &irq, &chipset)?;
        let net = match &out.network {
            Some(network) => {
                let backend = network.backend().map_err(MachineError::Net)?;
                let card = Arc::new(Mutex::new(VirtioNet::new(
                    network.mac().0,
                    backend,
                    network.rx_space(),
                )));
                virtio::pci::attach(&chipset, NET_SLOT, card.clone(), &mem, &fast);
                network.attach(card.clone(), fast.gate.clone());
                Some(NetCard {
                    network: network.clone(),
                    card,
                })
            }
            None => None,
        };
        let tablet = Arc::new(Mutex::new(VirtioTablet::new()));
        let tablet_slot = FIRST_DISK_SLOT + virtio_disks;
        virtio::pci::attach(&chipset, tablet_slot, tablet.clone(), &mem, &fast);
        let agent = out.clipboard.as_ref().map(|clipboard| {
            let ports = vec![(AGENT_PORT_NAME.to_owned(), clipboard.port())];
            let serial = Arc::new(Mutex::new(VirtioSerial::new(ports)));
            virtio::pci::attach(&chipset, tablet_slot + 1, serial.clone(), &mem, &fast);
            serial
        });
        let vga = match &cfg.display {
            Some(surface) => {
                // The VGA BIOS only matters when firmware runs to load it.
                let rom = firmware.map(|_| load_vgabios(None)).transpose()?;
                let vga = Vga::new(surface.clone(), rom)?;
                vga.attach(&pio, &mmio)?;
                chipset.add(VGA_DEVFN, vga.pci_function());
                if matches!(cfg.boot, Boot::Linux { .. }) {
                    program_vga_like_firmware(&chipset, &vga);
                }
                Some(vga)
            }
            None => None,
        };

        Ok(Machine {
            layout,
            mem,
            pio,
            mmio,
            serial,
            chipset,
            cmos,
            i8042,
            ide,
            disk_io,
            tablet,
            agent,
            net,
            vga,
            pflash,
            requests,
            boot_events,
            rom,
            gate: fast.gate.clone(),
        })
    }

    /// Lets time-driven device events happen when the guest is not polling: the RTC's
    /// periodic/update/alarm interrupts and the PM timer's overflow SCI. Call it at
    /// least every [`Machine::poll_interval`].
    pub fn poll_timers(&self) {
        self.cmos.lock().unwrap().poll();
        self.chipset.pm.lock().unwrap().poll();
    }

    /// How long until [`Machine::poll_timers`] should run again.
    pub fn poll_interval(&self) -> std::time::Duration {
        // The PM timer wraps its 24-bit counter every 4.7 s: poll well within that.
        let pm = std::time::Duration::from_secs(1);
        self.cmos
            .lock()
            .unwrap()
            .poll_interval()
            .map_or(pm, |rtc| rtc.min(pm))
    }

    /// Whether guest memory at `addr` is firmware ROM (mapped read-only).
    pub fn is_rom(&self, addr: u64) -> bool {
        self.rom
            .is_some_and(|(base, len)| addr >= base && addr < base + len)
    }
}

fn allocate(layout: &MemoryLayout, rom: Option<(u64, u64)>) -> Result<GuestMem, MachineError> {
    let mut ranges: Vec<(GuestAddress, usize)> = layout
        .ram_ranges()
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    if let Some((base, len)) = rom {
        ranges.push((GuestAddress(base), len as usize));
    }
    ranges.sort_by_key(|r| r.0);
    GuestMem::from_ranges(&ranges)
        .map_err(|e| MachineError::Memory(layout.ram_size >> 20, e.to_string()))
}

fn load_firmware(mem: &GuestMem, fw: &Firmware) -> Result<(), MachineError> {
    mem.write_slice(&fw.image, GuestAddress(fw.base()))
        .map_err(|e| MachineError::Firmware(e.to_string()))?;
    let low = fw.low_bios();
    let at = LOW_BIOS_START + (crate::firmware::LOW_BIOS_LEN - low.len() as u64);
    mem.write_slice(low, GuestAddress(at))
        .map_err(|e| MachineError::Firmware(e.to_string()))
}

/// The chipset devices the machine keeps handles to.
type Chipset = (PcChipset, Arc<Mutex<Cmos>>, Arc<Mutex<I8042>>);
/// What SeaBIOS and its VGA BIOS would have done before a kernel runs: the BARs placed,
/// decode on, a linear mode set. `Vga::linear_framebuffer` then describes it for
/// `screen_info`.
fn program_vga_like_firmware(chipset: &PcChipset, vga: &Vga) {
    use crate::pci::regs::{BAR0, COMMAND, COMMAND_IO, COMMAND_MEMORY};
    {
        let mut root = chipset.root.lock().unwrap();
        root.config_write(0, VGA_DEVFN, BAR0, &DIRECT_BOOT_LFB.to_le_bytes());
        root.config_write(0, VGA_DEVFN, BAR0 + 8, &DIRECT_BOOT_VGA_MMIO.to_le_bytes());
        root.config_write(
            0,
            VGA_DEVFN,
            COMMAND,
            &(COMMAND_IO | COMMAND_MEMORY).to_le_bytes(),
        );
    }
    let (w, h, bpp) = DIRECT_BOOT_MODE;
    vga.set_linear_mode(w, h, bpp);
}

/// The chipset: PCI host bridge and ISA bridge, power management, CMOS, fw_cfg, i8042.
fn add_chipset(
    cfg: &MachineConfig,
    layout: &MemoryLayout,
    mem: &GuestMem,
    pio: &Arc<Bus>,
    mmio: &Arc<Bus>,
    irq: &IrqFactory,
    tx: &Sender<MachineRequest>,
) -> Result<Chipset, MachineError> {
    let chipset = PcChipset::new(
        layout.ram_size,
        pio.clone(),
        mmio.clone(),
        irq.clone(),
        tx.clone(),
    )?;
    let cmos = Cmos::new(
        CmosConfig {
            ram_below_4g: layout.below_4g,
            ram_above_4g: layout.above_4g,
            cpus: cfg.cpus as u8,
        },
        irq(RTC_IRQ),
    );
    let cmos = shared(cmos);
    pio.insert(CMOS_BASE, CMOS_PORTS, cmos.clone())?;
    let i8042 = Arc::new(Mutex::new(I8042::new(
        irq(KBD_IRQ),
        irq(MOUSE_IRQ),
        tx.clone(),
    )));
    i8042::attach(pio, i8042.clone())?;
    match cfg.boot {
        Boot::Firmware(_) => {
            let fw_cfg = firmware_config(cfg, layout, mem)?;
            pio.insert(FW_CFG_BASE, FW_CFG_LEN, shared(fw_cfg))?;
        }
        // No firmware will program the chipset: do what it would have done.
        Boot::Linux { .. } => chipset.program_like_seabios(),
    }
    Ok((chipset, cmos, i8042))
}

/// The IDE controller QEMU's `pc` always has, with a CD-ROM on secondary master when an
/// ISO is given (QEMU's -cdrom place) and the IDE disks at [`IDE_DISK_PLACES`]. Without
/// them, no drive is attached.
fn add_ide(
    cfg: &MachineConfig,
    disks: Vec<Box<dyn BlockBackend>>,
    mem: &GuestMem,
    pio: &Bus,
    irq: &IrqFactory,
    chipset: &PcChipset,
) -> Result<Ide, MachineError> {
    let cdrom = match &cfg.cdrom {
        Some(path) => {
            let iso =
                RawImage::open(path, true).map_err(|e| MachineError::Cdrom(path.clone(), e))?;
            Some(IdeDevice::Cdrom(AtapiCdrom::new(Some(Box::new(iso)))))
        }
        None if cfg.cdrom_drive => Some(IdeDevice::Cdrom(AtapiCdrom::new(None))),
        None => None,
    };
    if disks.len() > IDE_DISK_PLACES.len() {
        return Err(MachineError::TooManyIdeDisks(disks.len()));
    }
    let mut drives: crate::devices::ide::IdeDrives = [[None, None], [cdrom, None]];
    for (backend, (channel, drive)) in disks.into_iter().zip(IDE_DISK_PLACES) {
        drives[channel][drive] = Some(IdeDevice::Disk(AtaDisk::new(backend)));
    }
    let ide = Ide::new(pio, mem, irq, drives)?;
    chipset.add(IDE_DEVFN, ide.function.clone());
    if let Boot::Linux { .. } = cfg.boot {
        // What SeaBIOS's piix_ide_setup does: the IDE decode-enable bits of both channels'
        // timing registers, which Linux's ata_piix checks before it probes a port.
        chipset.root.lock().unwrap().config_write(
            0,
            IDE_DEVFN,
            IDETIM,
            &IDETIM_DECODE_ENABLE.to_le_bytes(),
        );
    }
    Ok(ide)
}

/// The boot devices as the firmware sees them now, for the boot status's words: the CD
/// drive and its ISO, and the disk SeaBIOS boots as its hard disk (the first in the boot
/// order, which lists the disks in the order given).
pub fn boot_media(cfg: &MachineConfig) -> BootMedia<'_> {
    BootMedia {
        cdrom_drive: cfg.cdrom_drive,
        cdrom: cfg.cdrom.as_deref(),
        disk: cfg.disks.first().map(|d| d.path.as_path()),
    }
}

/// What the machine's ACPI tables describe.
pub fn acpi_config(cfg: &MachineConfig, layout: &MemoryLayout) -> AcpiConfig {
    let pm_io_base = match &cfg.boot {
        Boot::Firmware(fw) if fw.is_uefi() => acpi::OVMF_PM_IO_BASE,
        _ => AcpiConfig::default().pm_io_base,
    };
    AcpiConfig {
        cpus: cfg.cpus as u8,
        pm_io_base,
        // The 32-bit PCI window: from the end of low RAM (at least 2 GiB, as SeaBIOS
        // allocates) to the IOAPIC.
        pci_hole: (
            layout.below_4g.max(PCI_HOLE_MIN),
            u64::from(acpi::IOAPIC_ADDR),
        ),
        ..AcpiConfig::default()
    }
}

/// Below this, SeaBIOS never places PCI memory BARs.
const PCI_HOLE_MIN: u64 = 0x8000_0000;

/// What the machine's SMBIOS tables describe.
pub fn smbios_config(cfg: &MachineConfig, layout: &MemoryLayout) -> SmbiosConfig {
    // Type 4's processor ID, as QEMU fills it from the vCPU's CPUID leaf 1: under KVM the
    // signature is the host's, and so are the feature flags but for what KVM filters.
    let leaf1 = std::arch::x86_64::__cpuid(1);
    SmbiosConfig {
        cpus: cfg.cpus,
        ram_size: layout.ram_size,
        ram_below_4g: layout.below_4g,
        ram_above_4g: layout.above_4g,
        uuid: machine_uuid(cfg),
        cpuid_signature: leaf1.eax,
        cpuid_features: leaf1.edx,
    }
}

/// The machine's UUID, for SMBIOS and fw_cfg's UUID item. vmdesk-vmm is told no name or
/// UUID for the VM, so it is derived from the files that are the VM's own and that stay
/// with it from run to run: its disk images and its EFI variable store, by path (a
/// name-based UUID: the same paths give the same UUID; a clone, with copies of its own,
/// gets another, and so does a VM whose rename moved its images). A machine with none
/// of these, which nothing tells apart from any other, gets the nil UUID, which firmware
/// and guests take for "not set", as QEMU gives without `-uuid`: one UUID shared by
/// unrelated VMs would be worse, since systemd makes a new KVM guest's machine ID from it.
pub fn machine_uuid(cfg: &MachineConfig) -> [u8; 16] {
    use std::os::unix::ffi::OsStrExt;
    let vars = match &cfg.boot {
        Boot::Firmware(fw) => fw.vars.as_ref().and_then(|v| v.path()),
        Boot::Linux { .. } => None,
    };
    let files = cfg
        .disks
        .iter()
        .map(|d| ("disk", d.path.as_path()))
        .chain(vars.map(|p| ("efivars", p)));
    let mut name = Vec::new();
    for (what, path) in files {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        for part in [what.as_bytes(), path.as_os_str().as_bytes()] {
            name.extend_from_slice(part);
            name.push(0);
        }
    }
    if name.is_empty() {
        [0; 16]
    } else {
        smbios::name_based_uuid(&name)
    }
}

/// fw_cfg as SeaBIOS reads it on QEMU: CPU counts, the e820 map, boot options, our ACPI
/// tables with the loader script that places them, and our SMBIOS tables.
fn firmware_config(
    cfg: &MachineConfig,
    layout: &MemoryLayout,
    mem: &GuestMem,
) -> Result<FwCfg, MachineError> {
    let mut fw = FwCfg::new(mem.clone());
    fw.set_ram_size(layout.ram_size);
    fw.set_cpus(cfg.cpus as u16, cfg.cpus as u16);
    // No boot menu prompt unless asked, as on QEMU (SeaBIOS then waits 2.5 s for Esc).
    fw.set_boot_menu(cfg.boot_menu);
    let files = [
        ("etc/e820", e820_bytes(&layout.firmware_e820())),
        (
            "etc/boot-menu-wait",
            BOOT_MENU_WAIT_MS.to_le_bytes().to_vec(),
        ),
        // u32::MAX halts after a boot failure, as QEMU's default (reboot-timeout=-1).
        (
            "etc/boot-fail-wait",
            cfg.reboot_timeout
                .unwrap_or(u32::MAX)
                .to_le_bytes()
                .to_vec(),
        ),
    ];
    let order = bootorder(cfg);
    if !order.is_empty() {
        let paths: Vec<&str> = order.iter().map(String::as_str).collect();
        fw.add_file("bootorder", bootorder_bytes(&paths))
            .map_err(|e| MachineError::Firmware(e.to_string()))?;
    }
    let acpi = acpi_config(cfg, layout).fw_cfg_blobs();
    let acpi_files = [
        (acpi::ACPI_RSDP_FILE, acpi.rsdp),
        (acpi::ACPI_TABLES_FILE, acpi.tables),
        (acpi::TABLE_LOADER_FILE, acpi.loader),
    ];
    // SMBIOS reaches a guest only through firmware, which is why it is here: a direct
    // Linux boot has no fw_cfg and so no SMBIOS (QEMU's -kernel has them, since SeaBIOS
    // runs before the kernel there). An entry point of our own in the 0xF0000 segment,
    // where Linux looks, would give it them; no guest of ours has needed them yet.
    let smbios = smbios_config(cfg, layout);
    // QEMU's UUID item carries the same UUID as type 1 (its -uuid), in RFC 4122 order.
    fw.add_item(FW_CFG_UUID, smbios.uuid.to_vec());
    let smbios = smbios.fw_cfg_blobs();
    let smbios_files = [
        (smbios::SMBIOS_ANCHOR_FILE, smbios.anchor),
        (smbios::SMBIOS_TABLES_FILE, smbios.tables),
    ];
    let roms = cfg
        .option_roms
        .iter()
        .map(|r| (r.fw_cfg_name.as_str(), r.data.clone()));
    let all = files.into_iter().chain(acpi_files).chain(smbios_files);
    for (name, data) in all.chain(roms) {
        fw.add_file(name, data)
            .map_err(|e| MachineError::Firmware(e.to_string()))?;
    }
    Ok(fw)
}

/// OpenFirmware device paths for fw_cfg `bootorder`, as QEMU writes them: the CD on the
/// IDE secondary master, IDE disks by channel and drive, virtio disks by PCI slot
/// (`scsi@S/disk@0,0`, which SeaBIOS matches by its prefix and OVMF translates into a
/// UEFI device path); disks in the order given. [`MachineConfig::boot_once`] when
/// set, else [`MachineConfig::boot_order`], else the CD first.
pub fn bootorder(cfg: &MachineConfig) -> Vec<String> {
    let ide_path = |(channel, drive): (usize, usize)| {
        format!("/pci@i0cf8/ide@1,1/drive@{channel}/disk@{drive}")
    };
    let cd = cfg.cdrom_drive.then(|| ide_path((1, 0)));
    let (mut ide, mut virtio) = (IDE_DISK_PLACES.into_iter(), FIRST_DISK_SLOT as usize..);
    let disks: Vec<String> = cfg
        .disks
        .iter()
        .filter_map(|d| match d.bus {
            DiskBus::Ide => ide.next().map(ide_path),
            DiskBus::Virtio => virtio
                .next()
                .map(|slot| format!("/pci@i0cf8/scsi@{slot:x}/disk@0,0")),
        })
        .collect();
    let order = if !cfg.boot_once.is_empty() {
        cfg.boot_once.clone()
    } else if cfg.boot_order.is_empty() {
        vec![BootDevice::Cdrom, BootDevice::Disk]
    } else {
        cfg.boot_order.clone()
    };
    let mut out = Vec::new();
    for dev in order {
        match dev {
            BootDevice::Cdrom => out.extend(cd.clone()),
            BootDevice::Disk => out.extend(disks.iter().cloned()),
        }
    }
    out.dedup();
    out
}

/// How long SeaBIOS's boot menu waits for a key when it is shown.
const BOOT_MENU_WAIT_MS: u16 = 2500;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fw_cfg::FW_CFG_FILE_DIR;
    use crate::irq::RecordingIrq;
    use crate::option_rom::{OptionRom, wrap_program};

    /// Reads `len` bytes of fw_cfg item `key` through the I/O ports, as SeaBIOS does.
    fn fw_cfg_read(m: &Machine, key: u16, len: usize) -> Vec<u8> {
        assert!(m.pio.write(FW_CFG_BASE, &key.to_le_bytes()));
        (0..len)
            .map(|_| {
                let mut b = [0u8];
                assert!(m.pio.read(FW_CFG_BASE + 1, &mut b));
                b[0]
            })
            .collect()
    }

    /// A fw_cfg file's contents, found in the directory as SeaBIOS's qemu_romfile_init
    /// finds it; `None` when the directory has no such file.
    fn fw_cfg_file(m: &Machine, name: &str) -> Option<Vec<u8>> {
        let count = u32::from_be_bytes(fw_cfg_read(m, FW_CFG_FILE_DIR, 4).try_into().unwrap());
        let dir = fw_cfg_read(m, FW_CFG_FILE_DIR, 4 + 64 * count as usize);
        let mut field = name.as_bytes().to_vec();
        field.push(0);
        let entry = dir[4..].chunks(64).find(|e| e[8..].starts_with(&field))?;
        let size = u32::from_be_bytes(entry[0..4].try_into().unwrap());
        let key = u16::from_be_bytes(entry[4..6].try_into().unwrap());
        Some(fw_cfg_read(m, key, size as usize))
    }

    fn test_firmware() -> Firmware {
        Firmware {
            path: "test.bin".into(),
            image: vec![0; 256 << 10],
            vars: None,
        }
    }

    /// The SMBIOS files as SeaBIOS and OVMF fetch them: an entry point whose table length
    /// is the tables file's size (both firmwares refuse the tables otherwise), the tables
    /// this machine's [`smbios_config`] makes, and the UUID item matching type 1's.
    #[test]
    fn smbios_tables_are_fw_cfg_files() {
        let dir =
            std::env::temp_dir().join(format!("vmdesk-machine-smbios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("d.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let spec = crate::config::parse_disk(&format!("{},format=raw", disk.display())).unwrap();
        let cfg = MachineConfig {
            disks: vec![spec],
            ..MachineConfig::new(5 << 30, 2, Boot::Firmware(test_firmware()))
        };
        let m = Machine::new(&cfg, irqs(), &Outputs::default()).unwrap();
        let anchor = fw_cfg_file(&m, smbios::SMBIOS_ANCHOR_FILE).expect("the anchor file");
        let tables = fw_cfg_file(&m, smbios::SMBIOS_TABLES_FILE).expect("the tables file");
        assert_eq!((anchor.len(), &anchor[0..4]), (31, &b"_SM_"[..]));
        assert_eq!(
            u16::from_le_bytes([anchor[22], anchor[23]]) as usize,
            tables.len()
        );
        let want = smbios_config(&cfg, &m.layout);
        assert_eq!(
            (want.cpus, want.ram_below_4g, want.ram_above_4g),
            (2, 3 << 30, 2 << 30)
        );
        let blobs = want.fw_cfg_blobs();
        assert_eq!((anchor, tables.clone()), (blobs.anchor, blobs.tables));

        // The UUID: stable, derived from the disk, the same in the item and in type 1
        // (there with its first three fields little-endian).
        let uuid = fw_cfg_read(&m, crate::devices::fw_cfg::FW_CFG_UUID, 16);
        assert_ne!(uuid, [0; 16]);
        assert_eq!(uuid, machine_uuid(&cfg));
        let system = &tables[..tables[1] as usize];
        assert_eq!(system[0], 1);
        let mut wire = uuid.clone();
        wire[0..4].reverse();
        wire[4..6].reverse();
        wire[6..8].reverse();
        assert_eq!(&system[8..24], &wire[..]);
        let again = Machine::new(&cfg, irqs(), &Outputs::default()).unwrap();
        assert_eq!(
            fw_cfg_read(&again, crate::devices::fw_cfg::FW_CFG_UUID, 16),
            uuid
        );
        // Nothing of the VM's own to derive it from: not set.
        let bare = MachineConfig::new(64 << 20, 1, Boot::Firmware(test_firmware()));
        assert_eq!(machine_uuid(&bare), [0; 16]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A direct boot has no fw_cfg, and so no SMBIOS (see `firmware_config`).
    #[test]
    fn direct_boot_has_no_fw_cfg() {
        let m = Machine::new(&cfg(None), irqs(), &Outputs::default()).unwrap();
        let mut b = [0u8];
        assert!(!m.pio.read(FW_CFG_BASE + 1, &mut b));
    }

    #[test]
    fn option_roms_are_fw_cfg_genroms_files() {
        let rom = wrap_program(&[0xF4], "t").unwrap();
        let option_rom =
            OptionRom::from_bytes(std::path::Path::new("t.rom"), "t.rom", rom.clone()).unwrap();
        let cfg = MachineConfig {
            option_roms: vec![option_rom],
            ..MachineConfig::new(64 << 20, 1, Boot::Firmware(test_firmware()))
        };
        let m = Machine::new(&cfg, irqs(), &Outputs::default()).unwrap();
        assert_eq!(fw_cfg_file(&m, "genroms/t.rom"), Some(rom));
    }

    fn cfg(cdrom: Option<PathBuf>) -> MachineConfig {
        let boot = Boot::Linux {
            kernel: PathBuf::from("/nonexistent"),
            initrd: None,
            cmdline: String::new(),
        };
        MachineConfig {
            cdrom_drive: cdrom.is_some(),
            cdrom,
            ..MachineConfig::new(64 << 20, 1, boot)
        }
    }

    fn irqs() -> IrqFactory {
        Arc::new(|_| RecordingIrq::new() as Arc<dyn IrqLine>)
    }

    fn cfg_read(m: &Machine, devfn: u8, off: u8) -> u32 {
        let addr = 0x8000_0000u32 | u32::from(devfn) << 8 | u32::from(off);
        m.pio.write(0xcf8, &addr.to_le_bytes());
        let mut b = [0; 4];
        m.pio.read(0xcfc, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn ide_at_01_1_with_the_cdrom_on_secondary_master() {
        let iso = std::env::temp_dir().join(format!("vmdesk-machine-{}.iso", std::process::id()));
        std::fs::write(&iso, vec![0u8; 2048 * 20]).unwrap();
        let m = Machine::new(&cfg(Some(iso.clone())), irqs(), &Outputs::default()).unwrap();
        assert_eq!(cfg_read(&m, IDE_DEVFN, 0), 0x7010_8086);
        // Direct boot: the decode enables Linux's ata_piix checks are on.
        assert_eq!(cfg_read(&m, IDE_DEVFN, 0x40), IDETIM_DECODE_ENABLE);
        assert_eq!(
            m.ide.with_cdrom(1, 0, |cd| cd.sectors()),
            Some(20),
            "ISO on ata1-0"
        );
        assert!(m.ide.with_cdrom(0, 0, |_| ()).is_none());
        // The ATAPI signature at the secondary channel's ports.
        let mut b = [0u8; 2];
        m.pio.read(0x174, &mut b[..1]);
        m.pio.read(0x175, &mut b[1..]);
        assert_eq!(b, [0x14, 0xeb]);
        std::fs::remove_file(&iso).unwrap();

        let e = Machine::new(
            &cfg(Some(PathBuf::from("/nonexistent.iso"))),
            irqs(),
            &Outputs::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/nonexistent.iso"), "{e}");
    }

    #[test]
    fn direct_boot_display_is_a_linear_framebuffer_ready_for_screen_info() {
        let surface = Surface::new(640, 480);
        let cfg = MachineConfig {
            display: Some(surface.clone()),
            ..cfg(None)
        };
        let m = Machine::new(&cfg, irqs(), &Outputs::default()).unwrap();
        let vga = m.vga.as_ref().unwrap();
        assert_eq!(
            vga.linear_framebuffer(),
            Some(crate::devices::vga::LinearFramebuffer {
                base: u64::from(DIRECT_BOOT_LFB),
                size: 16 << 20,
                width: 1024,
                height: 768,
                stride: 4096,
                bpp: 32,
            })
        );
        // Without a hypervisor mapping, the LFB is MMIO: a pixel written there shows.
        assert!(m.mmio.write(
            u64::from(DIRECT_BOOT_LFB) + 4 * 1025,
            &0x00ab_cdefu32.to_le_bytes()
        ));
        vga.refresh();
        assert_eq!(surface.size(), (1024, 768));
        assert_eq!(surface.read(|v| v.pixels[1025]), 0xabcdef);
        // The legacy VGA decodes too.
        let mut b = [0];
        assert!(m.pio.read(0x3cc, &mut b));
    }

    #[test]
    fn ide_disks_take_the_ide_places_and_virtio_disks_the_slots_in_order() {
        use crate::config::parse_disk;
        let dir = std::env::temp_dir().join(format!("vmdesk-machine-ide-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut disks = Vec::new();
        for (i, bus) in ["virtio", "ide", "virtio", "ide"].iter().enumerate() {
            let path = dir.join(format!("d{i}.raw"));
            std::fs::write(&path, vec![0u8; (i + 1) << 20]).unwrap();
            disks.push(parse_disk(&format!("{},format=raw,if={bus}", path.display())).unwrap());
        }
        let iso = dir.join("cd.iso");
        std::fs::write(&iso, vec![0u8; 2048 * 20]).unwrap();
        let cfg = MachineConfig {
            disks,
            ..cfg(Some(iso))
        };
        let m = Machine::new(&cfg, irqs(), &Outputs::default()).unwrap();
        // IDE disks 1 and 3 on primary master and slave; the CD stays on secondary master.
        assert_eq!(m.ide.with_disk(0, 0, |d| d.sectors()), Some(2 << 11));
        assert_eq!(m.ide.with_disk(0, 1, |d| d.sectors()), Some(4 << 11));
        assert_eq!(m.ide.with_cdrom(1, 0, |cd| cd.sectors()), Some(20));
        // virtio disks 0 and 2 on slots 4 and 5, the tablet after them on 6.
        assert_eq!(cfg_read(&m, devfn(4, 0), 0), 0x1042_1af4);
        assert_eq!(cfg_read(&m, devfn(5, 0), 0), 0x1042_1af4);
        assert_eq!(cfg_read(&m, devfn(6, 0), 0), 0x1052_1af4);
        assert_eq!(m.disk_io.len(), 4);
        // bootorder: the CD, then the disks in the order given.
        assert_eq!(
            bootorder(&cfg),
            [
                "/pci@i0cf8/ide@1,1/drive@1/disk@0",
                "/pci@i0cf8/scsi@4/disk@0,0",
                "/pci@i0cf8/ide@1,1/drive@0/disk@0",
                "/pci@i0cf8/scsi@5/disk@0,0",
                "/pci@i0cf8/ide@1,1/drive@0/disk@1",
            ]
        );
        // --boot disk,cdrom; --boot-once cdrom wins while set.
        let mut cfg = MachineConfig {
            boot_order: vec![BootDevice::Disk, BootDevice::Cdrom],
            boot_once: vec![BootDevice::Cdrom],
            ..cfg
        };
        assert_eq!(bootorder(&cfg), ["/pci@i0cf8/ide@1,1/drive@1/disk@0"]);
        cfg.boot_once.clear();
        assert_eq!(bootorder(&cfg)[0], "/pci@i0cf8/scsi@4/disk@0,0");
        assert_eq!(bootorder(&cfg)[4], "/pci@i0cf8/ide@1,1/drive@1/disk@0");
        // A fourth IDE disk has no place.
        let mut four = cfg.clone();
        four.disks.extend(cfg.disks[1..2].iter().cloned());
        four.disks.extend(cfg.disks[3..4].iter().cloned());
        let e = Machine::new(&four, irqs(), &Outputs::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("at most 3"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn headless_machine_has_no_vga() {
        let cfg = cfg(None);
        let m = Machine::new(&cfg, irqs(), &Outputs::default()).unwrap();
        assert!(m.vga.is_none());
        let mut b = [0];
        assert!(!m.pio.read(0x3cc, &mut b));
    }
}
