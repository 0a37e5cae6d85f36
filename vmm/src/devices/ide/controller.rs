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
//! Drives: ATAPI CD-ROMs ([`AtapiCdrom`]). ATA hard disks on IDE are not emulated (disks are
//! virtio-blk); their ATA commands on a CD-ROM abort with the ATAPI signature, as ATAPI says.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::memory::GuestMem;

use super::atapi::{AtapiCdrom, CD_SECTOR, Reply, Sense, sense};
use super::busmaster::{
    BusMaster, CMD_START, CMD_TO_MEMORY, STATUS_ACTIVE, STATUS_ERROR, STATUS_IRQ, dma_to_guest,
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
}

const ERR_ABRT: u8 = 0x04;
/// Device control bits.
const CTL_NIEN: u8 = 0x02;
const CTL_SRST: u8 = 0x04;
/// The device register's bits 7 and 5 are obsolete and read as one.
const SELECT_ALWAYS: u8 = 0xa0;
/// ATAPI interrupt reason (in the sector count register).
const IREASON_COD: u8 = 0x01;
const IREASON_IO: u8 = 0x02;
/// The feature bit that asks for the data of a PACKET command by DMA.
const PACKET_DMA: u8 = 0x01;
/// Sectors read from the medium at a time.
const READ_BATCH: u64 = 32;

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
}

impl TaskFile {
    /// What a packet device leaves after reset or an aborted IDENTIFY DEVICE: the ATAPI
    /// signature 0xEB14 in the cylinder registers.
    fn set_atapi_signature(&mut self) {
        self.nsector = 1;
        self.sector = 1;
        self.lcyl = 0x14;
        self.hcyl = 0xeb;
    }
}

struct Drive {
    cdrom: Option<AtapiCdrom>,
    tf: TaskFile,
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

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64 + self.sectors * CD_SECTOR as u64
    }

    fn fill(&mut self, out: &mut [u8], cd: &mut AtapiCdrom) -> io::Result<()> {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.buf.len() {
                if self.sectors == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                let n = self.sectors.min(READ_BATCH);
                self.buf.resize(n as usize * CD_SECTOR, 0);
                cd.read_sectors(self.lba, &mut self.buf)?;
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
        /// ATAPI byte count limit; `None` for an ATA data-in command (IDENTIFY).
        limit: Option<u16>,
    },
    /// A packet command's data waits for the bus master to be started.
    DmaIn {
        drive: usize,
        rest: Transfer,
    },
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
        drives: [Option<AtapiCdrom>; 2],
    ) -> IdeChannel {
        let [d0, d1] = drives;
        let mut ch = IdeChannel {
            drives: [
                Drive {
                    cdrom: d0,
                    tf: TaskFile::default(),
                },
                Drive {
                    cdrom: d1,
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
        self.drives.get_mut(slot)?.cdrom.as_mut()
    }

    /// A machine reset: drives to their power-on state, bus master stopped.
    pub fn reset(&mut self) {
        self.devctl = 0;
        self.bm = BusMaster::default();
        self.reset_drives();
        self.intrq = false;
        self.update_irq();
    }

    fn present(&self) -> bool {
        self.drives.iter().any(|d| d.cdrom.is_some())
    }

    fn reset_drives(&mut self) {
        self.phase = Phase::Idle;
        for d in &mut self.drives {
            d.tf.error = 1; // diagnostic code: no error
            if d.cdrom.is_some() {
                d.tf.set_atapi_signature();
            }
            // Packet devices leave DRDY clear after reset.
            d.tf.status = 0;
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
        let absent = self.drives[sel].cdrom.is_none();
        let tf = self.drives[sel].tf;
        match offset {
            reg::ERROR => {
                if absent {
                    0
                } else {
                    tf.error
                }
            }
            reg::NSECTOR => tf.nsector,
            reg::SECTOR => tf.sector,
            reg::LCYL => tf.lcyl,
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
        match offset {
            reg::STATUS => self.command(v),
            _ => {
                for d in &mut self.drives {
                    match offset {
                        reg::ERROR => d.tf.feature = v,
                        reg::NSECTOR => d.tf.nsector = v,
                        reg::SECTOR => d.tf.sector = v,
                        reg::LCYL => d.tf.lcyl = v,
                        reg::HCYL => d.tf.hcyl = v,
                        reg::SELECT => d.tf.select = v | SELECT_ALWAYS,
                        _ => {}
                    }
                }
                if offset == reg::SELECT {
                    self.selected = usize::from(v >> 4 & 1);
                }
            }
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
        let mut complete = None;
        if let Phase::Packet {
            drive,
            cdb,
            pos,
            dma,
            limit,
        } = &mut self.phase
        {
            let n = data.len().min(cdb.len() - *pos);
            cdb[*pos..*pos + n].copy_from_slice(&data[..n]);
            *pos += n;
            if *pos == cdb.len() {
                complete = Some((*drive, *cdb, *dma, *limit));
            }
        }
        // Data written in any other phase has nowhere to go (no data-out commands).
        if let Some((drive, cdb, dma, limit)) = complete {
            self.phase = Phase::Idle;
            self.run_packet(drive, &cdb, dma, limit);
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
        if !self.present() || self.drives[self.selected].cdrom.is_none() {
            return 0;
        }
        self.drives[self.selected].tf.status
    }

    fn command(&mut self, c: u8) {
        let drive = self.selected;
        if self.drives[drive].cdrom.is_none() {
            // Nobody listens (EXECUTE DEVICE DIAGNOSTIC would reach the master; with no
            // master it does not matter).
            return;
        }
        self.intrq = false;
        self.update_irq();
        self.phase = Phase::Idle;
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
                let words = self.drives[drive].cdrom.as_ref().map(|c| c.identify());
                let chunk: Vec<u8> = words
                    .unwrap_or([0; 256])
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                let tf = self.tf(drive);
                tf.status = status::DRDY | status::DSC | status::DRQ;
                tf.error = 0;
                self.phase = Phase::PioIn {
                    drive,
                    chunk,
                    pos: 0,
                    rest: Transfer::default(),
                    limit: None,
                };
                self.raise();
            }
            cmd::IDENTIFY => {
                // ATAPI: abort and show the packet signature so the host knows.
                let tf = self.tf(drive);
                tf.set_atapi_signature();
                tf.status = status::DRDY | status::ERR;
                tf.error = ERR_ABRT;
                self.raise();
            }
            cmd::DEVICE_RESET => {
                let tf = self.tf(drive);
                tf.set_atapi_signature();
                tf.error = 1;
                tf.status = 0;
            }
            cmd::EXECUTE_DIAGNOSTIC => {
                for d in &mut self.drives {
                    if d.cdrom.is_some() {
                        d.tf.set_atapi_signature();
                        d.tf.error = 1;
                        d.tf.status = status::DRDY | status::DSC;
                    }
                }
                self.raise();
            }
            cmd::CHECK_POWER_MODE => {
                let tf = self.tf(drive);
                tf.nsector = 0xff; // active or idle
                self.ok(drive);
            }
            cmd::SET_FEATURES
            | cmd::FLUSH_CACHE
            | cmd::STANDBY_IMMEDIATE
            | cmd::IDLE_IMMEDIATE
            | cmd::STANDBY
            | cmd::IDLE
            | cmd::SLEEP => self.ok(drive),
            _ => {
                tracing::debug!("ide: ATA command {c:#04x} aborted on a packet device");
                let tf = self.tf(drive);
                tf.status = status::DRDY | status::ERR;
                tf.error = ERR_ABRT;
                self.raise();
            }
        }
    }

    fn ok(&mut self, drive: usize) {
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::DSC;
        tf.error = 0;
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
        if let Some(cd) = self.drives[drive].cdrom.as_mut() {
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

    fn run_packet(&mut self, drive: usize, cdb: &[u8; 12], dma: bool, limit: u16) {
        let Some(cd) = self.drives[drive].cdrom.as_mut() else {
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
                limit: Some(limit),
            };
            self.next_pio_block(drive);
        }
    }

    /// After a PIO block is consumed (or to start): the next block, or completion.
    fn next_pio_block(&mut self, drive: usize) {
        let Phase::PioIn { rest, limit, .. } = &mut self.phase else {
            return;
        };
        let Some(limit) = *limit else {
            // ATA PIO-in (IDENTIFY PACKET): one block and done, no interrupt at the end.
            self.phase = Phase::Idle;
            let tf = self.tf(drive);
            tf.status = status::DRDY | status::DSC;
            return;
        };
        let left = rest.remaining();
        if left == 0 {
            return self.atapi_done(drive);
        }
        // The byte count limit: 0 means the largest even count; an odd limit is used
        // rounded down unless it covers the rest (ATAPI/SFF-8020 5.11).
        let mut lim = if limit == 0 { 0xfffe } else { u64::from(limit) };
        if lim < left {
            lim &= !1;
        }
        let n = lim.max(2).min(left) as usize;
        let mut chunk = vec![0u8; n];
        let mut rest = std::mem::take(rest);
        let cd = self.drives[drive].cdrom.as_mut();
        let filled = match cd {
            Some(cd) => rest.fill(&mut chunk, cd),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        if let Err(e) = filled {
            tracing::warn!("ide: CD read failed: {e}");
            return self.atapi_error(drive, sense::MEDIUM_ERROR_READ);
        }
        self.phase = Phase::PioIn {
            drive,
            chunk,
            pos: 0,
            rest,
            limit: Some(limit),
        };
        let tf = self.tf(drive);
        tf.status = status::DRDY | status::DSC | status::DRQ;
        tf.nsector = IREASON_IO;
        tf.lcyl = n as u8;
        tf.hcyl = (n >> 8) as u8;
        self.raise();
    }

    /// Runs a waiting DMA transfer if the bus master is started and allowed to master.
    fn try_dma(&mut self) {
        if !matches!(self.phase, Phase::DmaIn { .. })
            || self.bm.cmd & CMD_START == 0
            || !self.bus_master_enabled.load(Ordering::SeqCst)
        {
            return;
        }
        let Phase::DmaIn { drive, mut rest } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        if self.bm.cmd & CMD_TO_MEMORY == 0 {
            tracing::warn!("ide: bus master set to read memory for a read from the device");
            self.bm.status = (self.bm.status & !STATUS_ACTIVE) | STATUS_ERROR | STATUS_IRQ;
            return self.atapi_error(drive, sense::ABORTED);
        }
        let Some(cd) = self.drives[drive].cdrom.as_mut() else {
            return;
        };
        let total = rest.remaining();
        let r = dma_to_guest(&self.mem, self.bm.prd, total, |b| rest.fill(b, cd));
        match r {
            Ok(done) => {
                self.bm.status |= STATUS_IRQ;
                if !done.prd_left_over {
                    self.bm.status &= !STATUS_ACTIVE;
                }
                self.atapi_done(drive);
            }
            Err(e) => {
                tracing::warn!("ide: DMA failed: {e}");
                self.bm.status = (self.bm.status & !STATUS_ACTIVE) | STATUS_IRQ;
                if e.is_bus_error() {
                    self.bm.status |= STATUS_ERROR;
                    self.atapi_error(drive, sense::ABORTED);
                } else {
                    self.atapi_error(drive, sense::MEDIUM_ERROR_READ);
                }
            }
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
