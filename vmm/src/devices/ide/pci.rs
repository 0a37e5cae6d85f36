//! The PIIX3 IDE function (8086:7010) at 01.1, as on QEMU's `pc`: class 01.01, prog-if
//! 0x80 (both channels in legacy ("compatibility") mode, bus mastering supported). The
//! channels answer at their legacy ports and ISA IRQs 14/15 whatever the PCI command
//! register says, as QEMU's piix3-ide does; BAR4 (16 I/O ports) holds the bus-master
//! registers and decodes only with I/O space enabled. Bus mastering needs the command
//! register's bus-master bit. The IDE timing registers (0x40-0x47) are kept for the
//! firmware (SeaBIOS sets the decode-enable bits) and have no effect.
//!
//! Not emulated: native-PCI mode (prog-if bits 0 and 2 are read-only zero).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::bus::{Bus, BusDevice, BusError};
use crate::machine::IrqFactory;
use crate::memory::GuestMem;
use crate::pci::regs::{COMMAND, COMMAND_IO, COMMAND_MASTER, VENDOR_INTEL};
use crate::pci::{BarKind, PciConfig, PciFunction, PciRegion, PciSpace, devfn};

use super::ata::AtaDisk;
use super::atapi::AtapiCdrom;
use super::busmaster::BM_CHANNEL_PORTS;
use super::controller::{
    CMD_PORTS, CTL_PORTS, CommandBlock, ControlBlock, IdeChannel, IdeDevice, PRIMARY_CMD,
    PRIMARY_CTL, PRIMARY_IRQ, SECONDARY_CMD, SECONDARY_CTL, SECONDARY_IRQ,
};

pub const PIIX3_IDE_DEVICE_ID: u16 = 0x7010;
pub const IDE_DEVFN: u8 = devfn(1, 1);
/// Mass storage, IDE, prog-if 0x80 (bus master, both channels legacy).
pub const IDE_CLASS: u32 = 0x01_01_80;
const BM_BAR: usize = 4;
const BM_PORTS: u64 = 2 * BM_CHANNEL_PORTS;
/// IDE timing registers, primary at 0x40 and secondary at 0x42 (16 bits each).
pub const IDETIM: u16 = 0x40;
/// Bit 15 of each channel's IDETIM: IDE decode enable (both channels, as one dword).
pub const IDETIM_DECODE_ENABLE: u32 = 0x8000_8000;

/// BAR4: both channels' bus-master registers.
pub struct BusMasterIo {
    channels: [Arc<Mutex<IdeChannel>>; 2],
}

impl BusDevice for BusMasterIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            *b = match self.channels.get((o / BM_CHANNEL_PORTS) as usize) {
                Some(ch) => ch.lock().unwrap().bm_read(o % BM_CHANNEL_PORTS),
                None => 0xff,
            };
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let o = offset + i as u64;
            if let Some(ch) = self.channels.get((o / BM_CHANNEL_PORTS) as usize) {
                ch.lock().unwrap().bm_write(o % BM_CHANNEL_PORTS, b);
            }
        }
    }
}

pub struct PiixIde {
    config: PciConfig,
    bm_io: Arc<Mutex<BusMasterIo>>,
    bus_master: Arc<AtomicBool>,
}

impl PiixIde {
    fn sync_master(&self) {
        let on = self.config.command() & COMMAND_MASTER != 0;
        self.bus_master.store(on, Ordering::SeqCst);
    }
}

impl PciFunction for PiixIde {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        if offset <= COMMAND + 1 && offset + data.len() as u16 > COMMAND {
            self.sync_master();
        }
    }
    fn regions(&self) -> Vec<PciRegion> {
        if self.config.command() & COMMAND_IO == 0 {
            return Vec::new();
        }
        self.config
            .decoded_bars()
            .into_iter()
            .filter(|b| b.index == BM_BAR)
            .map(|b| PciRegion {
                space: PciSpace::Pio,
                base: b.base,
                len: b.len,
                dev: self.bm_io.clone(),
            })
            .collect()
    }
    fn reset(&mut self) {
        self.config.reset();
        self.sync_master();
        for ch in &self.bm_io.lock().unwrap().channels {
            ch.lock().unwrap().reset();
        }
    }
}

/// What sits on the four IDE positions: `[primary, secondary]` × `[master, slave]`.
pub type IdeDrives = [[Option<IdeDevice>; 2]; 2];

/// The controller as the machine holds it.
pub struct Ide {
    pub function: Arc<Mutex<PiixIde>>,
    /// `[primary, secondary]`.
    pub channels: [Arc<Mutex<IdeChannel>>; 2],
}

impl Ide {
    /// Builds the controller, puts its legacy ports on `pio`; the caller adds
    /// [`Ide::function`] to the PCI root at [`IDE_DEVFN`].
    pub fn new(
        pio: &Bus,
        mem: &GuestMem,
        irq: &IrqFactory,
        drives: IdeDrives,
    ) -> Result<Ide, BusError> {
        let bus_master = Arc::new(AtomicBool::new(false));
        let [primary, secondary] = drives;
        let channels = [
            Arc::new(Mutex::new(IdeChannel::new(
                irq(PRIMARY_IRQ),
                mem.clone(),
                bus_master.clone(),
                primary,
            ))),
            Arc::new(Mutex::new(IdeChannel::new(
                irq(SECONDARY_IRQ),
                mem.clone(),
                bus_master.clone(),
                secondary,
            ))),
        ];
        for (ch, cmd, ctl) in [
            (&channels[0], PRIMARY_CMD, PRIMARY_CTL),
            (&channels[1], SECONDARY_CMD, SECONDARY_CTL),
        ] {
            pio.insert(
                cmd,
                CMD_PORTS,
                Arc::new(Mutex::new(CommandBlock(ch.clone()))),
            )?;
            pio.insert(
                ctl,
                CTL_PORTS,
                Arc::new(Mutex::new(ControlBlock(ch.clone()))),
            )?;
        }
        let mut config = PciConfig::new(VENDOR_INTEL, PIIX3_IDE_DEVICE_ID, IDE_CLASS, 0);
        config
            .add_bar(BM_BAR, BarKind::Io, BM_PORTS)
            .expect("BAR4 is free and 16 ports is a valid I/O BAR size");
        // IDETIM (primary, secondary) and SIDETIM: firmware writes them.
        config.set_wmask_u32(IDETIM, 0xffff_ffff);
        config.set_wmask_u8(IDETIM + 4, 0xff);
        let function = Arc::new(Mutex::new(PiixIde {
            config,
            bm_io: Arc::new(Mutex::new(BusMasterIo {
                channels: channels.clone(),
            })),
            bus_master,
        }));
        Ok(Ide { function, channels })
    }

    /// Runs `f` on the CD-ROM at `channel` (0/1), `slot` (0 = master, 1 = slave).
    pub fn with_cdrom<R>(
        &self,
        channel: usize,
        slot: usize,
        f: impl FnOnce(&mut AtapiCdrom) -> R,
    ) -> Option<R> {
        let mut ch = self.channels.get(channel)?.lock().unwrap();
        ch.cdrom(slot).map(f)
    }

    /// Runs `f` on the hard disk at `channel`, `slot`.
    pub fn with_disk<R>(
        &self,
        channel: usize,
        slot: usize,
        f: impl FnOnce(&mut AtaDisk) -> R,
    ) -> Option<R> {
        let mut ch = self.channels.get(channel)?.lock().unwrap();
        ch.disk(slot).map(f)
    }
}
