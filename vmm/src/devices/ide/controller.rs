//! One IDE channel (a cable with a master and a slave): the ATA task-file registers at the
//! command block (8 ports) and the control block (one port: alternate status / device
//! control), the interrupt line, PIO data transfers through the data port, and the
//! channel's bus-master DMA engine.
//!
//! As on real hardware and in QEMU, both drives on a channel see every task-file write; a
//! read answers from the selected drive; an absent selected drive reads status 0 (so
//! SeaBIOS's and Linux's probes skip it) and a channel with no drives reads 0 everywhere.
//! INTRQ is a level: raised when a command completes or a PIO block is ready, dropped when
//! the status register is read or a command is written, and masked while nIEN is set in
//! device control. Commands complete synchronously (the guest's port write does the work),
//! so BSY is never seen except while a DMA command waits for the bus master.
//!
//! Drives: ATAPI CD-ROMs ([`AtapiCdrom`]) and ATA hard disks ([`AtaDisk`]) — the latter for
//! guests without virtio drivers; disks are normally virtio-blk. ATA-only commands sent to a
//! CD-ROM abort with the ATAPI signature, as ATAPI says; packet commands to a disk abort.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::memory::GuestMem;

use super::ata::{ATA_SECTOR, AtaDisk, HEADS, MAX_MULTIPLE, SECTORS_PER_TRACK};
use super::atapi::{AtapiCdrom, CD_SECTOR, Reply, Sense, sense};
use super::busmaster::{
    BusMaster, CMD_START, CMD_TO_MEMORY, DmaDone, DmaError, STATUS_ACTIVE, STATUS_ERROR,
    STATUS_IRQ, dma_from_guest, dma_to_guest,
};

pub const PRIMARY_CMD: u64 = 0x1f0;
pub const PRIMARY_CTL: u64 = 0x3f6;
pub const SECONDARY_CMD: u64 = 0x170;
pub const SECONDARY_CTL: u64 = 0x376;
pub const PRIMARY_IRQ: u32 = 14;
pub const SECONDARY_IRQ: u32 = 15;
pub const CMD_PORTS: u64 = 8;
pub const CTL_PORTS: u64 = 1;

/// Command block register offsets.
pub mod reg {
    pub const DATA: u64 = 0;
    /// Error on read, features on write.
    pub const ERROR: u64 = 1;
    /// Sector count; ATAPI interrupt reason on read.
    pub const NSECTOR: u64 = 2;
    pub const SECTOR: u64 = 3;
    /// Cylinder low / LBA mid; ATAPI byte count low.
    pub const LCYL: u64 = 4;
    /// Cylinder high / LBA high; ATAPI byte count high.
    pub const HCYL: u64 = 5;
    pub const SELECT: u64 = 6;
    /// Status on read, command on write.
    pub const STATUS: u64 = 7;
}

pub mod status {
    pub const ERR: u8 = 0x01;
    pub const DRQ: u8 = 0x08;
    /// Seek complete / service (DSC): set with DRDY when idle, as drives do.
    pub const DSC: u8 = 0x10;
    pub const DRDY: u8 = 0x40;
    pub const BSY: u8 = 0x80;
}

pub mod cmd {
    pub const NOP: u8 = 0x00;
    pub const DEVICE_RESET: u8 = 0x08;
    pub const EXECUTE_DIAGNOSTIC: u8 = 0x90;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET: u8 = 0xa1;
    pub const STANDBY_IMMEDIATE: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const IDLE: u8 = 0xe3;
    pub const CHECK_POWER_MODE: u8 = 0xe5;
    pub const SLEEP: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const IDENTIFY: u8 = 0xec;
    pub const SET_FEATURES: u8 = 0xef;
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NORETRY: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NORETRY: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const READ_VERIFY: u8 = 0x40;
    pub const READ_VERIFY_NORETRY: u8 = 0x41;
    pub const READ_VERIFY_EXT: u8 = 0x42;
    pub const RECALIBRATE: u8 = 0x10;
    pub const INITIALIZE_DEVICE_PARAMETERS: u8 = 0x91;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE_MODE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_NORETRY: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_NORETRY: u8 = 0xcb;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
}

const ERR_ABRT: u8 = 0x04;
/// The sector is not on the disk.
const ERR_IDNF: u8 = 0x10;
/// Uncorrectable data error (the backend failed a read).
const ERR_UNC: u8 = 0x40;
/// Device control bits.
const CTL_NIEN: u8 = 0x02;
const CTL_SRST: u8 = 0x04;
/// High-order byte: reads return the previous contents of the LBA48 FIFO registers.
const CTL_HOB: u8 = 0x80;
/// LBA addressing in the device register.
const SELECT_LBA: u8 = 0x40;
/// The device register's bits 7 and 5 are obsolete and read as one.
const SELECT_ALWAYS: u8 = 0xa0;
/// ATAPI interrupt reason (in the sector count register).
const IREASON_COD: u8 = 0x01;
const IREASON_IO: u8 = 0x02;
/// The feature bit that asks for the data of a PACKET command by DMA.
const PACKET_DMA: u8 = 0x01;
/// Bytes read from the medium at a time.
const READ_BATCH: usize = 64 * 1024;

#[derive(Clone, Copy, Default, Debug)]
struct TaskFile {
    feature: u8,
    nsector: u8,
    sector: u8,
    lcyl: u8,
    hcyl: u8,
    select: u8,
    error: u8,
    status: u8,
    /// The previous values of the two-deep LBA48 registers.
    hob_feature: u8,
    hob_nsector: u8,
    hob_sector: u8,
    hob_lcyl: u8,
    hob_hcyl: u8,
}

impl TaskFile {
    /// What an ATA device leaves after reset: the ATA signature.
    fn set_ata_signature(&mut self) {
        self.nsector = 1;
        self.sector = 1;
        self.lcyl = 0;
        self.hcyl = 0;
    }

    /// What a packet device leaves after reset or an aborted IDENTIFY DEVICE: the ATAPI
    /// signature 0xEB14 in the cylinder registers.
    fn set_atapi_signature(&mut self) {
        self.nsector = 1;
        self.sector = 1;
        self.lcyl = 0x14;
        self.hcyl = 0xeb;
    }
}

/// What can sit on an IDE position.
pub enum IdeDevice {
    Cdrom(AtapiCdrom),
    Disk(AtaDisk),
}

/// Where a transfer's sectors come from.
trait SectorSource {
    fn sector_size(&self) -> usize;
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl SectorSource for AtapiCdrom {
    fn sector_size(&self) -> usize {
        CD_SECTOR
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_sectors(lba, buf)
    }
}

impl SectorSource for AtaDisk {
    fn sector_size(&self) -> usize {
        ATA_SECTOR
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_sectors(lba, buf)
    }
}

impl IdeDevice {
    fn source(&mut self) -> &mut dyn SectorSource {
        match self {
            IdeDevice::Cdrom(c) => c,
            IdeDevice::Disk(d) => d,
        }
    }
}

struct Drive {
    dev: Option<IdeDevice>,
    tf: TaskFile,
}

impl Drive {
    fn cdrom(&mut self) -> Option<&mut AtapiCdrom> {
        match &mut self.dev {
            Some(IdeDevice::Cdrom(c)) => Some(c),
            _ => None,
        }
    }
    fn disk(&mut self) -> Option<&mut AtaDisk> {
        match &mut self.dev {
            Some(IdeDevice::Disk(d)) => Some(d),
            _ => None,
        }
    }
}

/// Bytes a command still has to deliver: a buffer, then sectors from the medium.
#[derive(Debug, Default)]
struct Transfer {
    buf: Vec<u8>,
    pos: usize,
    lba: u64,
    sectors: u64,
}

impl Transfer {
    fn bytes(buf: Vec<u8>) -> Transfer {
        Transfer {
            buf,
            ..Transfer::default()
        }
    }

    fn sectors(lba: u64, sectors: u64) -> Transfer {
        Transfer {
            lba,
            sectors,
            ..Transfer::default()
        }
    }

    fn remaining(&self, sector_size: usize) -> u64 {
        (self.buf.len() - self.pos) as u64 + self.sectors * sector_size as u64
    }

    fn fill(&mut self, out: &mut [u8], src: &mut dyn SectorSource) -> io::Result<()> {
        let size = src.sector_size();
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.buf.len() {
                if self.sectors == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                let n = self.sectors.min((READ_BATCH / size) as u64);
                self.buf.resize(n as usize * size, 0);
                src.read(self.lba, &mut self.buf)?;
                self.lba += n;
                self.sectors -= n;
                self.pos = 0;
            }
            let k = (out.len() - done).min(self.buf.len() - self.pos);
            out[done..done + k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
            done += k;
            self.pos += k;
        }
        Ok(())
    }
}

enum Phase {
    Idle,
    /// The host writes the 12-byte command packet.
    Packet {
        drive: usize,
        cdb: [u8; 12],
        pos: usize,
        dma: bool,
        limit: u16,
    },
    /// The host reads `chunk` through the data port; `rest` follows in further DRQ blocks.
    PioIn {
        drive: usize,
        chunk: Vec<u8>,
        pos: usize,
        rest: Transfer,
        mode: PioMode,
    },
    /// The host writes `chunk` (one DRQ block) through the data port, for `lba`;
    /// `sectors` (this block included) are still to come.
    PioOut {
        drive: usize,
        chunk: Vec<u8>,
        pos: usize,
        lba: u64,
        sectors: u64,
        block: u64,
    },
    /// Data for the host waits for the bus master to be started.
    DmaIn {
        drive: usize,
        rest: Transfer,
    },
    /// A DMA write to the disk waits for the bus master.
    DmaOut {
        drive: usize,
        lba: u64,
        sectors: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PioMode {
    /// One block and done (IDENTIFY data).
    Single,
    /// ATAPI data: blocks up to the byte count limit, interrupt reason, final interrupt.
    Atapi { limit: u16 },
    /// ATA sectors, `block` per DRQ block, no interrupt after the last.
    Ata { block: u64 },
}

pub struct IdeChannel {
    drives: [Drive; 2],
    selected: usize,
    devctl: u8,
    intrq: bool,
    line: bool,
    irq: Arc<dyn IrqLine>,
    phase: Phase,
    pub(super) bm: BusMaster,
    mem: GuestMem,
    /// The PCI command register's bus-master enable (the function owns it).
    bus_master_enabled: Arc<AtomicBool>,
}

impl IdeChannel {
    pub fn new(
        irq: Arc<dyn IrqLine>,
        mem: GuestMem,
        bus_master_enabled: Arc<AtomicBool>,
        drives: [Option<IdeDevice>; 2],
    ) -> IdeChannel {
        let [d0, d1] = drives;
        let mut ch = IdeChannel {
            drives: [
                Drive {
                    dev: d0,
                    tf: TaskFile::default(),
                },
                Drive {
                    dev: d1,
                    tf: TaskFile::default(),
                },
            ],
            selected: 0,
            devctl: 0,
            intrq: false,
            line: false,
            irq,
            phase: Phase::Idle,
            bm: BusMaster::default(),
            mem,
            bus_master_enabled,
        };
        ch.reset_drives();
        ch
    }

    /// The CD-ROM at `slot` (0 = master, 1 = slave), for insert/eject from the control socket.
    pub fn cdrom(&mut self, slot: usize) -> Option<&mut AtapiCdrom> {
        self.drives.get_mut(slot)?.cdrom()
    }

    /// The hard disk at `slot`.
    pub fn disk(&mut self, slot: usize) -> Option<&mut AtaDisk> {
        self.drives.get_mut(slot)?.disk()
    }

    /// A machine reset: drives to their power-on state, bus master stopped.
    pub fn reset(&mut self) {
        self.devctl = 0;
        self.bm = BusMaster::default();
        for d in &mut self.drives {
            if let Some(cd) = d.cdrom() {
                cd.reset();
            }
        }
        self.reset_drives();
        self.intrq = false;
        self.update_irq();
    }

    fn present(&self) -> bool {
        self.drives.iter().any(|d| d.dev.is_some())
    }

    fn reset_drives(&mut self) {
        self.phase = Phase::Idle;
        for d in &mut self.drives {
            d.tf.error = 1; // diagnostic code: no error
            match d.dev {
                Some(IdeDevice::Cdrom(_)) => {
                    d.tf.set_atapi_signature();
                    // Packet devices leave DRDY clear after reset.
                    d.tf.status = 0;
                }
                Some(IdeDevice::Disk(_)) => {
                    d.tf.set_ata_signature();
                    d.tf.status = status::DRDY | status::DSC;
                }
                None => d.tf.status = 0,
            }
        }
    }

    fn update_irq(&mut self) {
        let level = self.intrq && self.devctl & CTL_NIEN == 0;
        if level != self.line {
            self.line = level;
            self.irq.set_level(level);
        }
    }

    fn raise(&mut self) {
        self.intrq = true;
        self.update_irq();
    }

    fn tf(&mut self, drive: usize) -> &mut TaskFile {
        &mut self.drives[drive].tf
    }

    fn read_reg(&mut self, offset: u64) -> u8 {
        if !self.present() {
            return 0;
        }
        let sel = self.selected;
        let absent = self.drives[sel].dev.is_none();
        let tf = self.drives[sel].tf;
        let hob = self.devctl & CTL_HOB != 0;
        match offset {
            reg::ERROR if absent => 0,
            reg::ERROR if hob => tf.hob_feature,
            reg::ERROR => tf.error,
            reg::NSECTOR if hob => tf.hob_nsector,
            reg::NSECTOR => tf.nsector,
            reg::SECTOR if hob => tf.hob_sector,
            reg::SECTOR => tf.sector,
            reg::LCYL if hob => tf.hob_lcyl,
            reg::LCYL => tf.lcyl,
            reg::HCYL if hob => tf.hob_hcyl,
            reg::HCYL => tf.hcyl,
            reg::SELECT => tf.select,
            reg::STATUS => {
                self.intrq = false;
                self.update_irq();
                if absent { 0 } else { tf.status }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u8) {
        if offset == reg::STATUS {
            return self.command(v);
        }
        // A write to the command block ends a HOB read-back.
        self.devctl &= !CTL_HOB;
        for d in &mut self.drives {
            let tf = &mut d.tf;
            match offset {
                reg::ERROR => (tf.hob_feature, tf.feature) = (tf.feature, v),
                reg::NSECTOR => (tf.hob_nsector, tf.nsector) = (tf.nsector, v),
                reg::SECTOR => (tf.hob_sector, tf.sector) = (tf.sector, v),
                reg::LCYL => (tf.hob_lcyl, tf.lcyl) = (tf.lcyl, v),
                reg::HCYL => (tf.hob_hcyl, tf.hcyl) = (tf.hcyl, v),
                reg::SELECT => tf.select = v | SELECT_ALWAYS,
                _ => {}
            }
        }
        if offset == reg::SELECT {
            self.selected = usize::from(v >> 4 & 1);
        }
    }

    fn read_data(&mut self, data: &mut [u8]) {
        let mut finished = None;
        if let Phase::PioIn {
            drive, chunk, pos, ..
        } = &mut self.phase
        {
            let n = data.len().min(chunk.len() - *pos);
            data[..n].copy_from_slice(&chunk[*pos..*pos + n]);
            data[n..].fill(0);
            *pos += n;
            if *pos == chunk.len() {
                finished = Some(*drive);
            }
        } else {
            data.fill(0);
        }
        if let Some(drive) = finished {
            self.next_pio_block(drive);
        }
    }

    fn write_data(&mut self, data: &[u8]) {
        match &mut self.phase {
            Phase::Packet {
                drive,
                cdb,
                pos,
                dma,
                limit,
            } => {
                let n = data.len().min(cdb.len() - *pos);
                cdb[*pos..*pos + n].copy_from_slice(&data[..n]);
                *pos += n;
                if *pos == cdb.len() {
                    let (drive, cdb, dma, limit) = (*drive, *cdb, *dma, *limit);
                    self.phase = Phase::Idle;
                    self.run_packet(drive, &cdb, dma, limit);
                }
            }
            Phase::PioOut {
                drive, chunk, pos, ..
            } => {
                let n = data.len().min(chunk.len() - *pos);
                chunk[*pos..*pos + n].copy_from_slice(&data[..n]);
                *pos += n;
                if *pos == chunk.len() {
                    let drive = *drive;
                    self.pio_out_block_done(drive);
                }
            }
            // Data written in any other phase has nowhere to go.
            _ => {}
        }
    }

    fn write_control(&mut self, v: u8) {
        let was = self.devctl;
        self.devctl = v;
        if v & CTL_SRST != 0 && was & CTL_SRST == 0 {
            // Reset asserted: both drives busy until it is released.
            self.phase = Phase::Idle;
            for d in &mut self.drives {
                d.tf.status = status::BSY;
            }
        } else if v & CTL_SRST == 0 && was & CTL_SRST != 0 {
            self.reset_drives();
        }
        self.update_irq();
    }

    fn alt_status(&self) -> u8 {
        if !self.present() || self.drives[self.selected].dev.is_none() {
            return 0;
        }
        self.drives[self.selected].tf.status
    }

    fn command(&mut self, c: u8) {
        let drive = self.selected;
        let is_cd = match self.drives[drive].dev {
            // Nobody listens.
            None => return,
            Some(IdeDevice::Cdrom(_)) => true,
            Some(IdeDevice::Disk(_)) => false,
        };
        self.intrq = false;
        self.update_irq();
        self.phase = Phase::Idle;
        // Commands both kinds answer alike.
        match c {
            cmd::EXECUTE_DIAGNOSTIC => {
                for d in &mut self.drives {
                    match d.dev {
                        Some(IdeDevice::Cdrom(_)) => d.tf.set_atapi_signature(),
                        Some(IdeDevice::Disk(_)) => d.tf.set_ata_signature(),
                        None => continue,
                    }
                    d.tf.error = 1;
                    d.tf.status = status::DRDY | status::DSC;
                }
                return self.raise();
            }
            cmd::CHECK_POWER_MODE => {
                self.tf(drive).nsector = 0xff; // active or idle
                return self.ok(drive);
            }
            cmd::SET_FEATURES
            | cmd::STANDBY_IMMEDIATE
            | cmd::IDLE_IMMEDIATE
            | cmd::STANDBY
            | cmd::IDLE
            | cmd::SLEEP => return self.ok(drive),
            _ => {}
        }
        if is_cd {
            self.atapi_command(drive, c);
        } else {
            self.ata_command(drive, c);
        }
    }

    fn atapi_command(&mut self, drive: usize, c: u8) {
        match c {
            cmd::PACKET => {
                let tf = self.tf(drive);
                let dma = tf.feature & PACKET_DMA != 0;
                let limit = u16::from_le_bytes([tf.lcyl, tf.hcyl]);
                tf.status = status::DRDY | status::DSC | status::DRQ;
                tf.nsector = IREASON_COD;
                tf.error = 0;
                // No interrupt: IDENTIFY PACKET says DRQ comes within 50 us.
                self.phase = Phase::Packet {
                    drive,
                    cdb: [0; 12],
                    pos: 0,
                    dma,
                    limit,
                };
            }
            cmd::IDENTIFY_PACKET => {
                let words = self.drives[drive].cdrom().map(|c| c.identify());
                self.start_identify(drive, words.unwrap_or([0; 256]));
            }
            cmd::IDENTIFY => {
                // ATAPI: abort and show the packet signature so the host knows.
                let tf = self.tf(drive);
                tf.set_atapi_signature();
                self.abort(drive);
            }
            cmd::DEVICE_RESET => {
                let tf = self.tf(drive);
                tf.set_atapi_signature();
                tf.error = 1;
                tf.status = 0;
            }
            cmd::FLUSH_CACHE => self.ok(drive),
            _ => {
                tracing::debug!("ide: ATA command {c:#04x} aborted on a packet device");
                self.abort(drive);
            }
        }
    }

    fn ata_command(&mut self, drive: usize, c: u8) {
        let multiple = self.drives[drive].disk().map_or(0, |d| d.multiple);
        match c {
            cmd::IDENTIFY => {
                let words = self.drives[drive].disk().map(|d| d.identify());
                self.start_identify(drive, words.unwrap_or([0; 256]));
            }
            cmd::READ_SECTORS | cmd::READ_SECTORS_NORETRY => self.ata_rw(drive, false, false, 1),
            cmd::READ_SECTORS_EXT => self.ata_rw(drive, true, false, 1),
            cmd::READ_MULTIPLE | cmd::READ_MULTIPLE_EXT if multiple == 0 => self.abort(drive),
            cmd::READ_MULTIPLE => self.ata_rw(drive, false, false, u64::from(multiple)),
            cmd::READ_MULTIPLE_EXT => self.ata_rw(drive, true, false, u64::from(multiple)),
            cmd::WRITE_SECTORS | cmd::WRITE_SECTORS_NORETRY => self.ata_rw(drive, false, true, 1),
            cmd::WRITE_SECTORS_EXT => self.ata_rw(drive, true, true, 1),
            cmd::WRITE_MULTIPLE | cmd::WRITE_MULTIPLE_EXT if multiple == 0 => self.abort(drive),
            cmd::WRITE_MULTIPLE => self.ata_rw(drive, false, true, u64::from(multiple)),
            cmd::WRITE_MULTIPLE_EXT => self.ata_rw(drive, true, true, u64::from(multiple)),
            // Block size 0 marks DMA.
            cmd::READ_DMA | cmd::READ_DMA_NORETRY => self.ata_rw(drive, false, false, 0),
            cmd::READ_DMA_EXT => self.ata_rw(drive, true, false, 0),
            cmd::WRITE_DMA | cmd::WRITE_DMA_NORETRY => self.ata_rw(drive, false, true, 0),
            cmd::WRITE_DMA_EXT => self.ata_rw(drive, true, true, 0),
            cmd::READ_VERIFY | cmd::READ_VERIFY_NORETRY | cmd::READ_VERIFY_EXT => {
                let lba48 = c == cmd::READ_VERIFY_EXT;
                match self.ata_range(drive, lba48) {
                    Some(_) => self.ok(drive),
                    None => self.ata_error(drive, ERR_IDNF | ERR_ABRT),
                }
            }
            cmd::FLUSH_CACHE | cmd::FLUSH_CACHE_EXT => {
                let r = self.drives[drive].disk().map(|d| d.flush());
                match r {
                    Some(Ok(())) => self.ok(drive),
                    Some(Err(e)) => {
                        tracing::warn!("ide: disk flush failed: {e}");
                        self.abort(drive);
                    }
                    None => self.abort(drive),
                }
            }
            cmd::SET_MULTIPLE_MODE => {
                let n = self.tf(drive).nsector;
                if n == 0 || (n.is_power_of_two() && n <= MAX_MULTIPLE) {
                    if let Some(d) = self.drives[drive].disk() {
                        d.multiple = n;
                    }
                    self.ok(drive);
                } else {
                    self.abort(drive);
                }
            }
            cmd::INITIALIZE_DEVICE_PARAMETERS => self.ok(drive),
            c if c & 0xf0 == cmd::RECALIBRATE => self.ok(drive),
            _ => {
                tracing::debug!("ide: ATA command {c:#04x} aborted on a disk");
                self.abort(drive);
            }
        }
    }

    /// The sectors an ATA read/write command addresses, if they are on the disk.
    fn ata_range(&mut self, drive: usize, lba48: bool) -> Option<(u64, u64)> {
        let t = self.drives[drive].tf;
        let (lba, count) = if lba48 {
            let lba = u64::from(t.hob_hcyl) << 40
                | u64::from(t.hob_lcyl) << 32
                | u64::from(t.hob_sector) << 24
                | u64::from(t.hcyl) << 16
                | u64::from(t.lcyl) << 8
                | u64::from(t.sector);
            let count = u64::from(t.hob_nsector) << 8 | u64::from(t.nsector);
            (lba, if count == 0 { 65536 } else { count })
        } else {
            let count = if t.nsector == 0 {
                256
            } else {
                u64::from(t.nsector)
            };
            if t.select & SELECT_LBA != 0 {
                let lba = u64::from(t.select & 0xf) << 24
                    | u64::from(t.hcyl) << 16
                    | u64::from(t.lcyl) << 8
                    | u64::from(t.sector);
                (lba, count)
            } else {
                // CHS, with the geometry IDENTIFY reports. Sector numbers start at 1.
                let cyl = u64::from(t.hcyl) << 8 | u64::from(t.lcyl);
                let head = u64::from(t.select & 0xf);
                let sector = u64::from(t.sector);
                if sector == 0 || sector > SECTORS_PER_TRACK {
                    return None;
                }
                ((cyl * HEADS + head) * SECTORS_PER_TRACK + sector - 1, count)
            }
        };
        let disk = self.drives[drive].disk()?;
        disk.in_range(lba, count).then_some((lba, count))
    }

    /// READ/WRITE SECTORS, MULTIPLE or (block 0) DMA.
    fn ata_rw(&mut self, drive: usize, lba48: bool, write: bool, block: u64) {
        let Some((lba, sectors)) = self.ata_range(drive, lba48) else {
            return self.ata_error(drive, ERR_IDNF | ERR_ABRT);
        };
        if write && self.drives[drive].disk().is_none_or(|d| d.read_only()) {
            return self.abort(drive);
        }
        self.tf(drive).error = 0;
        match (write, block) {
            (false, 0) => {
                self.tf(drive).status = status::BSY | status::DRDY;
                self.phase = Phase::DmaIn {
                    drive,
                    rest: Transfer::sectors(lba, sectors),
                };
                self.try_dma();
            }
            (true, 0) => {
                self.tf(drive).status = status::BSY | status::DRDY;
                self.phase = Phase::DmaOut {
                    drive,
                    lba,
                    sectors,
                };
                self.try_dma();
            }
            (false, _) => {
                self.phase = Phase::PioIn {
                    drive,
                    chunk: Vec::new(),
                    pos: 0,
                    rest: Transfer::sectors(lba, sectors),
                    mode: PioMode::Ata { block },
                };
                self.next_pio_block(drive);
            }
            (true, _) => {
                // The first block is asked for without an interrupt (PIO data-out).
                let n = block.min(sectors);
                self.phase = Phase::PioOut {
                    drive,
                    chunk: vec![0; n as usize * ATA_SECTOR],
                    pos: 0,
                    lba,
                    sectors,
                    block,
                };
                self.tf(drive).status = status::DRDY | status::DSC | status::DRQ;
            }
        }
    }

    /// A PIO data-out block is complete: write it, then ask for the next or finish.
    fn pio_out_block_done(&mut self, drive: usize) {
        let Phase::PioOut {
            chunk,
            lba,
            sectors,
            block,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        let n = (chunk.len() / ATA_SECTOR) as u64;
        let r = match self.drives[drive].disk() {
            Some(d) => d.write_sectors(lba, &chunk),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        if let Err(e) = r {
            tracing::warn!("ide: disk write failed: {e}");
            return self.abort(drive);
        }
        let left = sectors - n;
        if left == 0 {
            return self.ok(drive);
        }
        let next = block.min(left);
        self.phase = Phase::PioOut {
            drive,
            chunk: vec![0; next as usize * ATA_SECTOR],
            pos: 0,
            lba: lba + n,
            sectors: left,
            block,
        };
        self.tf(drive).status = status::DRDY | status::DSC | status::DRQ;
        self.raise();
    }

    fn start_identify(&mut self, drive: usize, words: [u16; 256]) {
        let chunk: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::DSC | status::DRQ;
        tf.error = 0;
        self.phase = Phase::PioIn {
            drive,
            chunk,
            pos: 0,
            rest: Transfer::default(),
            mode: PioMode::Single,
        };
        self.raise();
    }

    fn ok(&mut self, drive: usize) {
        self.phase = Phase::Idle;
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::DSC;
        tf.error = 0;
        self.raise();
    }

    fn abort(&mut self, drive: usize) {
        self.ata_error(drive, ERR_ABRT);
    }

    fn ata_error(&mut self, drive: usize, error: u8) {
        self.phase = Phase::Idle;
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::ERR;
        tf.error = error;
        self.raise();
    }

    fn atapi_done(&mut self, drive: usize) {
        self.phase = Phase::Idle;
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::DSC;
        tf.nsector = IREASON_IO | IREASON_COD;
        tf.error = 0;
        self.raise();
    }

    fn atapi_error(&mut self, drive: usize, s: Sense) {
        self.phase = Phase::Idle;
        if let Some(cd) = self.drives[drive].cdrom() {
            cd.set_sense(s);
        }
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::ERR;
        tf.nsector = IREASON_IO | IREASON_COD;
        tf.error = s.key << 4
            | if s.key == sense::ABORTED.key {
                ERR_ABRT
            } else {
                0
            };
        self.raise();
    }

    /// A command with data finished (`Ok`) or failed reading its medium (`Err`).
    fn data_done(&mut self, drive: usize, r: Result<(), ()>) {
        let is_cd = self.drives[drive].cdrom().is_some();
        match (is_cd, r) {
            (true, Ok(())) => self.atapi_done(drive),
            (true, Err(())) => self.atapi_error(drive, sense::MEDIUM_ERROR_READ),
            (false, Ok(())) => self.ok(drive),
            (false, Err(())) => self.ata_error(drive, ERR_UNC),
        }
    }

    fn run_packet(&mut self, drive: usize, cdb: &[u8; 12], dma: bool, limit: u16) {
        let Some(cd) = self.drives[drive].cdrom() else {
            return;
        };
        let rest = match cd.packet(cdb) {
            Reply::Done => return self.atapi_done(drive),
            Reply::Error(s) => return self.atapi_error(drive, s),
            Reply::Data(d) => Transfer::bytes(d),
            Reply::Read { lba, sectors } => Transfer::sectors(lba, sectors),
        };
        if dma {
            let tf = self.tf(drive);
            tf.status = status::BSY | status::DRDY;
            self.phase = Phase::DmaIn { drive, rest };
            self.try_dma();
        } else {
            self.phase = Phase::PioIn {
                drive,
                chunk: Vec::new(),
                pos: 0,
                rest,
                mode: PioMode::Atapi { limit },
            };
            self.next_pio_block(drive);
        }
    }

    /// After a PIO block is consumed (or to start): the next block, or completion.
    fn next_pio_block(&mut self, drive: usize) {
        let Phase::PioIn { rest, mode, .. } = &mut self.phase else {
            return;
        };
        let mode = *mode;
        let mut rest = std::mem::take(rest);
        let Some(dev) = self.drives[drive].dev.as_mut() else {
            self.phase = Phase::Idle;
            return;
        };
        let src = dev.source();
        let left = rest.remaining(src.sector_size());
        let n = match mode {
            PioMode::Single => {
                // IDENTIFY: one block and done, no interrupt at the end.
                self.phase = Phase::Idle;
                self.tf(drive).status = status::DRDY | status::DSC;
                return;
            }
            PioMode::Ata { .. } if left == 0 => {
                self.phase = Phase::Idle;
                self.tf(drive).status = status::DRDY | status::DSC;
                return;
            }
            PioMode::Atapi { .. } if left == 0 => return self.atapi_done(drive),
            PioMode::Ata { block } => (block * ATA_SECTOR as u64).min(left),
            PioMode::Atapi { limit } => {
                // The byte count limit: 0 means the largest even count; an odd limit is
                // used rounded down unless it covers the rest (ATAPI/SFF-8020 5.11).
                let mut lim = if limit == 0 { 0xfffe } else { u64::from(limit) };
                if lim < left {
                    lim &= !1;
                }
                lim.max(2).min(left)
            }
        } as usize;
        let mut chunk = vec![0u8; n];
        if let Err(e) = rest.fill(&mut chunk, src) {
            tracing::warn!("ide: read failed: {e}");
            return self.data_done(drive, Err(()));
        }
        self.phase = Phase::PioIn {
            drive,
            chunk,
            pos: 0,
            rest,
            mode,
        };
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::DSC | status::DRQ;
        if let PioMode::Atapi { .. } = mode {
            tf.nsector = IREASON_IO;
            tf.lcyl = n as u8;
            tf.hcyl = (n >> 8) as u8;
        }
        self.raise();
    }

    /// Runs a waiting DMA transfer if the bus master is started and allowed to master.
    fn try_dma(&mut self) {
        let to_memory = match self.phase {
            Phase::DmaIn { .. } => true,
            Phase::DmaOut { .. } => false,
            _ => return,
        };
        if self.bm.cmd & CMD_START == 0 || !self.bus_master_enabled.load(Ordering::SeqCst) {
            return;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        let drive = match phase {
            Phase::DmaIn { drive, .. } | Phase::DmaOut { drive, .. } => drive,
            _ => return,
        };
        if (self.bm.cmd & CMD_TO_MEMORY != 0) != to_memory {
            tracing::warn!("ide: bus master direction disagrees with the command");
            self.bm.status = (self.bm.status & !STATUS_ACTIVE) | STATUS_ERROR | STATUS_IRQ;
            return self.dma_fault(drive);
        }
        let Some(dev) = self.drives[drive].dev.as_mut() else {
            return;
        };
        let r = match phase {
            Phase::DmaIn { mut rest, .. } => {
                let src = dev.source();
                let total = rest.remaining(src.sector_size());
                dma_to_guest(&self.mem, self.bm.prd, total, |b| rest.fill(b, src))
            }
            Phase::DmaOut { lba, sectors, .. } => match dev {
                IdeDevice::Disk(disk) => dma_write(&self.mem, self.bm.prd, disk, lba, sectors),
                IdeDevice::Cdrom(_) => return,
            },
            _ => return,
        };
        match r {
            Ok(done) => {
                self.bm.status |= STATUS_IRQ;
                if !done.prd_left_over {
                    self.bm.status &= !STATUS_ACTIVE;
                }
                self.data_done(drive, Ok(()));
            }
            Err(e) => {
                tracing::warn!("ide: DMA failed: {e}");
                self.bm.status = (self.bm.status & !STATUS_ACTIVE) | STATUS_IRQ;
                if e.is_bus_error() {
                    self.bm.status |= STATUS_ERROR;
                    self.dma_fault(drive);
                } else {
                    self.data_done(drive, Err(()));
                }
            }
        }
    }

    /// The guest's DMA set-up was wrong: the command fails as aborted.
    fn dma_fault(&mut self, drive: usize) {
        if self.drives[drive].cdrom().is_some() {
            self.atapi_error(drive, sense::ABORTED);
        } else {
            self.abort(drive);
        }
    }

    pub(super) fn bm_read(&self, offset: u64) -> u8 {
        self.bm.read(offset)
    }

    pub(super) fn bm_write(&mut self, offset: u64, v: u8) {
        if self.bm.write(offset, v) {
            self.try_dma();
        }
    }
}

/// A DMA write: guest memory along the PRD table to the disk, in batches.
fn dma_write(
    mem: &GuestMem,
    table: u32,
    disk: &mut AtaDisk,
    lba: u64,
    sectors: u64,
) -> Result<DmaDone, DmaError> {
    let mut pending = Vec::with_capacity(READ_BATCH);
    let mut at = lba;
    let total = sectors * ATA_SECTOR as u64;
    let done = dma_from_guest(mem, table, total, |b| {
        pending.extend_from_slice(b);
        while pending.len() >= READ_BATCH {
            disk.write_sectors(at, &pending[..READ_BATCH])?;
            at += (READ_BATCH / ATA_SECTOR) as u64;
            pending.drain(..READ_BATCH);
        }
        Ok(())
    })?;
    // The total is whole sectors, so what is left is too.
    disk.write_sectors(at, &pending)?;
    Ok(done)
}

/// The command block ports of a channel, for the PIO bus.
pub struct CommandBlock(pub Arc<Mutex<IdeChannel>>);

impl BusDevice for CommandBlock {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut ch = self.0.lock().unwrap();
        if offset == reg::DATA {
            ch.read_data(data);
        } else {
            // Wider accesses to the 8-bit registers read each byte's register.
            for (i, b) in data.iter_mut().enumerate() {
                *b = ch.read_reg(offset + i as u64);
            }
            tracing::trace!("ide: read {offset} -> {data:x?}");
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut ch = self.0.lock().unwrap();
        if offset == reg::DATA {
            ch.write_data(data);
        } else {
            tracing::trace!("ide: write {offset} <- {data:x?}");
            for (i, &b) in data.iter().enumerate() {
                ch.write_reg(offset + i as u64, b);
            }
        }
    }
}

/// The control block port (alternate status / device control).
pub struct ControlBlock(pub Arc<Mutex<IdeChannel>>);

impl BusDevice for ControlBlock {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let v = self.0.lock().unwrap().alt_status();
        tracing::trace!("ide: read altstatus -> {v:#x}");
        data.fill(v);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            tracing::trace!("ide: write devctl <- {v:#x}");
            self.0.lock().unwrap().write_control(v);
        }
    }
}
