//! An ATAPI CD/DVD-ROM drive: the packet (SCSI/MMC) commands that SeaBIOS's El Torito boot
//! (src/hw/blockcmd.c, src/cdrom.c) and Linux's sr/cdrom drivers send, answered from an ISO
//! image in 2048-byte sectors.
//!
//! Emulated: INQUIRY, TEST UNIT READY, REQUEST SENSE, READ CAPACITY, READ(10), READ(12),
//! READ TOC (formats 0 and 1), MODE SENSE(10) (pages 01, 2A, 3F), GET CONFIGURATION (profile
//! list and core features), GET EVENT STATUS NOTIFICATION (media class, polled), START STOP
//! UNIT (eject/load), PREVENT ALLOW MEDIUM REMOVAL, SEEK(10), SET CD SPEED, and the sense
//! codes MMC gives for no medium (02/3A/00) and a changed medium (06/28/00). A medium that is
//! inserted (and the one present at power on) raises UNIT ATTENTION once, as on real drives.
//! Not emulated: writing, audio, READ CD/sub-channel data, multi-session media, and MODE
//! SELECT (the data-out commands): these fail with ILLEGAL REQUEST / INVALID COMMAND OPERATION
//! CODE, which drivers handle.
//!
//! The drive knows nothing of the ATA transport: [`AtapiCdrom::packet`] takes a 12-byte
//! command and says what the transport should do ([`Reply`]).

use std::io;

use thiserror::Error;

use super::ata::put_string;
use crate::disk::BlockBackend;

pub const CD_SECTOR: usize = 2048;
/// Above this a medium is called a DVD (a CD holds at most about 800 MB).
const CD_MAX_BYTES: u64 = 800 * 1000 * 1000;

/// SCSI sense data: key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

pub mod sense {
    use super::Sense;
    pub const NO_SENSE: Sense = Sense {
        key: 0,
        asc: 0,
        ascq: 0,
    };
    pub const NOT_READY_NO_MEDIUM: Sense = Sense {
        key: 2,
        asc: 0x3a,
        ascq: 0,
    };
    pub const MEDIUM_ERROR_READ: Sense = Sense {
        key: 3,
        asc: 0x11,
        ascq: 0,
    };
    pub const INVALID_OPCODE: Sense = Sense {
        key: 5,
        asc: 0x20,
        ascq: 0,
    };
    pub const LBA_OUT_OF_RANGE: Sense = Sense {
        key: 5,
        asc: 0x21,
        ascq: 0,
    };
    pub const INVALID_FIELD: Sense = Sense {
        key: 5,
        asc: 0x24,
        ascq: 0,
    };
    pub const REMOVAL_PREVENTED: Sense = Sense {
        key: 5,
        asc: 0x53,
        ascq: 2,
    };
    pub const MEDIUM_CHANGED: Sense = Sense {
        key: 6,
        asc: 0x28,
        ascq: 0,
    };
    pub const ABORTED: Sense = Sense {
        key: 0xb,
        asc: 0,
        ascq: 0,
    };
}

/// What the transport does after a packet command.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done, no data phase.
    Done,
    /// Send these bytes to the host (already cut to the command's allocation length).
    Data(Vec<u8>),
    /// Send `sectors` 2048-byte sectors from `lba` (checked against the medium).
    Read { lba: u64, sectors: u64 },
    /// CHECK CONDITION: the sense is recorded for REQUEST SENSE.
    Error(Sense),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("the guest has locked the tray (PREVENT MEDIUM REMOVAL)")]
    Locked,
    #[error("no medium in the drive")]
    NoMedium,
}

/// Media events for GET EVENT STATUS NOTIFICATION (MMC-6 table 152).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MediaEvent {
    NewMedia = 2,
    MediaRemoval = 3,
}

pub struct AtapiCdrom {
    medium: Option<Box<dyn BlockBackend>>,
    sense: Sense,
    unit_attention: bool,
    locked: bool,
    event: Option<MediaEvent>,
    model: &'static str,
    serial: String,
}

impl AtapiCdrom {
    pub fn new(medium: Option<Box<dyn BlockBackend>>) -> AtapiCdrom {
        let present = medium.is_some();
        AtapiCdrom {
            medium,
            sense: sense::NO_SENSE,
            // The first command after power on with a disc in reports the medium change,
            // so a driver rereads what is in the drive.
            unit_attention: present,
            locked: false,
            event: present.then_some(MediaEvent::NewMedia),
            model: "vmdesk DVD-ROM",
            serial: "VMDESK-CD0".to_owned(),
        }
    }

    /// A machine reset: the tray unlocked, sense cleared, and a disc in the drive is
    /// reported as changed again (the guest's driver starts afresh).
    pub fn reset(&mut self) {
        self.locked = false;
        self.sense = sense::NO_SENSE;
        self.unit_attention = self.medium.is_some();
    }

    pub fn has_medium(&self) -> bool {
        self.medium.is_some()
    }

    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Puts a disc in (replacing any). The guest sees UNIT ATTENTION / MEDIUM CHANGED once
    /// and a new-media event.
    pub fn insert(&mut self, medium: Box<dyn BlockBackend>) {
        self.medium = Some(medium);
        self.unit_attention = true;
        self.event = Some(MediaEvent::NewMedia);
    }

    /// Takes the disc out, unless the guest locked the tray (PREVENT MEDIUM REMOVAL).
    pub fn eject(&mut self) -> Result<Box<dyn BlockBackend>, MediaError> {
        self.take_medium(false)
    }

    /// Takes the disc out even from a locked tray (QEMU's `eject -f`).
    pub fn eject_forced(&mut self) -> Result<Box<dyn BlockBackend>, MediaError> {
        self.take_medium(true)
    }

    fn take_medium(&mut self, force: bool) -> Result<Box<dyn BlockBackend>, MediaError> {
        if self.locked && !force {
            return Err(MediaError::Locked);
        }
        let m = self.medium.take().ok_or(MediaError::NoMedium)?;
        self.event = Some(MediaEvent::MediaRemoval);
        Ok(m)
    }

    /// The medium size in 2048-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.medium
            .as_ref()
            .map_or(0, |m| m.len() / CD_SECTOR as u64)
    }

    /// Reads whole sectors for a transfer the drive accepted.
    pub fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        let m = self
            .medium
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the medium went away"))?;
        let off = lba
            .checked_mul(CD_SECTOR as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "LBA overflow"))?;
        m.read_at(off, buf)
    }

    /// Records a failure the transport met (a read error, a DMA fault) for REQUEST SENSE.
    pub fn set_sense(&mut self, s: Sense) {
        self.sense = s;
    }

    /// IDENTIFY PACKET DEVICE data (ATA8-ACS 7.13), as the words a guest reads.
    pub fn identify(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        // ATAPI, CD-ROM (peripheral type 5), removable, DRQ within 50 us, 12-byte packets.
        w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
        put_string(&mut w[10..20], &self.serial);
        put_string(&mut w[23..27], "0.1");
        put_string(&mut w[27..47], self.model);
        w[49] = (1 << 9) | (1 << 8); // LBA, DMA
        w[53] = 0b111; // words 54-58, 64-70 and 88 valid
        w[62] = 0x0007; // single-word DMA 0-2
        w[63] = 0x0407; // multiword DMA 0-2, mode 2 selected
        w[64] = 0x0003; // PIO 3 and 4
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[71] = 30;
        w[72] = 30;
        w[80] = 0x1e; // ATA/ATAPI-1 to -4
        w[88] = 0x3f | (1 << 13); // UDMA 0-5, mode 5 selected
        w
    }

    fn check_ready(&mut self, needs_medium: bool) -> Result<(), Sense> {
        if self.unit_attention {
            self.unit_attention = false;
            return Err(sense::MEDIUM_CHANGED);
        }
        if needs_medium && self.medium.is_none() {
            return Err(sense::NOT_READY_NO_MEDIUM);
        }
        Ok(())
    }

    /// Runs one packet command.
    pub fn packet(&mut self, cdb: &[u8; 12]) -> Reply {
        let r = self.dispatch(cdb);
        match &r {
            Ok(_) => {
                if cdb[0] != op::REQUEST_SENSE {
                    self.sense = sense::NO_SENSE;
                }
            }
            Err(s) => {
                tracing::debug!(
                    "atapi: command {:#04x} fails: sense {:x}/{:02x}/{:02x}",
                    cdb[0],
                    s.key,
                    s.asc,
                    s.ascq
                );
                self.sense = *s;
            }
        }
        match r {
            Ok(reply) => reply,
            Err(s) => Reply::Error(s),
        }
    }

    fn dispatch(&mut self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        let be16 = |i: usize| u16::from_be_bytes([cdb[i], cdb[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([cdb[i], cdb[i + 1], cdb[i + 2], cdb[i + 3]]);
        match cdb[0] {
            // Commands that answer even with a unit attention pending (MMC-6 4.1.6.1).
            op::INQUIRY => Ok(data(self.inquiry(), usize::from(cdb[4]))),
            op::REQUEST_SENSE => {
                let s = if self.unit_attention {
                    self.unit_attention = false;
                    sense::MEDIUM_CHANGED
                } else {
                    self.sense
                };
                self.sense = sense::NO_SENSE;
                Ok(data(sense_data(s), usize::from(cdb[4])))
            }
            op::GET_EVENT_STATUS => {
                // Only polled operation exists on ATAPI.
                if cdb[1] & 1 == 0 {
                    return Err(sense::INVALID_FIELD);
                }
                Ok(data(self.event_status(cdb[4]), usize::from(be16(7))))
            }
            op::GET_CONFIGURATION => Ok(data(
                self.configuration(cdb[1] & 3, be16(2)),
                usize::from(be16(7)),
            )),
            op::TEST_UNIT_READY => {
                self.check_ready(true)?;
                Ok(Reply::Done)
            }
            op::READ_CAPACITY => {
                self.check_ready(true)?;
                let last = self.sectors().saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(CD_SECTOR as u32).to_be_bytes());
                Ok(Reply::Data(d))
            }
            op::READ_10 => {
                self.check_ready(true)?;
                self.read(u64::from(be32(2)), u64::from(be16(7)))
            }
            op::READ_12 => {
                self.check_ready(true)?;
                self.read(u64::from(be32(2)), u64::from(be32(6)))
            }
            op::SEEK_10 => {
                self.check_ready(true)?;
                if u64::from(be32(2)) >= self.sectors() {
                    return Err(sense::LBA_OUT_OF_RANGE);
                }
                Ok(Reply::Done)
            }
            op::READ_TOC => {
                self.check_ready(true)?;
                let msf = cdb[1] & 2 != 0;
                // SFF-8020 put the format in the control byte's top bits.
                let format = match cdb[2] & 0xf {
                    0 => cdb[9] >> 6,
                    f => f,
                };
                let toc = match format {
                    0 => self.toc(msf, cdb[6])?,
                    1 => session_info(msf),
                    _ => return Err(sense::INVALID_FIELD),
                };
                Ok(data(toc, usize::from(be16(7))))
            }
            op::MODE_SENSE_10 => {
                self.check_ready(false)?;
                let page = cdb[2] & 0x3f;
                // Only current values (page control 0) and saved-values-not-supported aside,
                // default and changeable values read the same for a read-only drive.
                Ok(data(self.mode_sense(page)?, usize::from(be16(7))))
            }
            op::START_STOP_UNIT => {
                self.check_ready(false)?;
                let (start, loej) = (cdb[4] & 1 != 0, cdb[4] & 2 != 0);
                if loej && !start {
                    if self.locked {
                        return Err(sense::REMOVAL_PREVENTED);
                    }
                    if self.medium.take().is_some() {
                        tracing::info!("atapi: the guest ejected the disc");
                        self.event = Some(MediaEvent::MediaRemoval);
                    }
                }
                Ok(Reply::Done)
            }
            op::PREVENT_ALLOW => {
                self.check_ready(false)?;
                self.locked = cdb[4] & 1 != 0;
                Ok(Reply::Done)
            }
            op::SET_CD_SPEED => {
                self.check_ready(false)?;
                Ok(Reply::Done)
            }
            _ => {
                self.check_ready(false)?;
                Err(sense::INVALID_OPCODE)
            }
        }
    }

    fn read(&mut self, lba: u64, sectors: u64) -> Result<Reply, Sense> {
        if lba
            .checked_add(sectors)
            .is_none_or(|end| end > self.sectors())
        {
            return Err(sense::LBA_OUT_OF_RANGE);
        }
        if sectors == 0 {
            return Ok(Reply::Done);
        }
        Ok(Reply::Read { lba, sectors })
    }

    fn is_dvd(&self) -> bool {
        self.medium.as_ref().is_some_and(|m| m.len() > CD_MAX_BYTES)
    }

    fn inquiry(&self) -> Vec<u8> {
        let mut d = vec![0u8; 36];
        d[0] = 0x05; // CD/DVD device
        d[1] = 0x80; // removable
        d[2] = 0x00;
        d[3] = 0x21; // ATAPI, response data format 1 (as ATAPI drives report)
        d[4] = 36 - 5;
        pad(&mut d[8..16], "VMDESK");
        pad(&mut d[16..32], "DVD-ROM");
        pad(&mut d[32..36], "0.1");
        d
    }

    fn toc(&self, msf: bool, start_track: u8) -> Result<Vec<u8>, Sense> {
        if start_track > 1 && start_track != 0xaa {
            return Err(sense::INVALID_FIELD);
        }
        let mut d = vec![0, 0, 1, 1];
        if start_track <= 1 {
            // Track 1: data, uninterrupted (control 4), Q sub-channel position (ADR 1).
            d.extend_from_slice(&[0, 0x14, 1, 0]);
            d.extend_from_slice(&address(0, msf));
        }
        d.extend_from_slice(&[0, 0x14, 0xaa, 0]);
        d.extend_from_slice(&address(self.sectors(), msf));
        let len = (d.len() - 2) as u16;
        d[..2].copy_from_slice(&len.to_be_bytes());
        Ok(d)
    }

    fn mode_sense(&self, page: u8) -> Result<Vec<u8>, Sense> {
        let error_recovery = [0x01, 0x06, 0, 0x05, 0, 0, 0, 0];
        let capabilities = {
            let mut p = [0u8; 0x14];
            p[0] = 0x2a;
            p[1] = 0x12;
            p[2] = 0x3b; // reads CD-R, CD-RW, method 2, DVD-ROM, DVD-R, DVD-RAM
            p[4] = 0x71; // multi-session, mode 2 form 1/2, audio play
            p[5] = 0x00;
            // Tray loading, eject, lock supported; lock state.
            p[6] = 0x29 | if self.locked { 0x02 } else { 0 };
            p[8..10].copy_from_slice(&(706u16 * 16).to_be_bytes()); // max speed, kB/s
            p[10..12].copy_from_slice(&256u16.to_be_bytes()); // volume levels
            p[12..14].copy_from_slice(&512u16.to_be_bytes()); // buffer, KiB
            p[14..16].copy_from_slice(&(706u16 * 16).to_be_bytes()); // current speed
            p
        };
        let mut d = vec![0u8; 8];
        match page {
            0x01 => d.extend_from_slice(&error_recovery),
            0x2a => d.extend_from_slice(&capabilities),
            0x3f => {
                d.extend_from_slice(&error_recovery);
                d.extend_from_slice(&capabilities);
            }
            _ => return Err(sense::INVALID_FIELD),
        }
        let len = (d.len() - 2) as u16;
        d[..2].copy_from_slice(&len.to_be_bytes());
        // Medium type: 120 mm data disc, or "door closed, no disc" (0x70).
        d[2] = if self.medium.is_some() { 0x01 } else { 0x70 };
        Ok(d)
    }

    /// GET CONFIGURATION (MMC-6 6.6): the profile list and the core feature.
    fn configuration(&self, rt: u8, start: u16) -> Vec<u8> {
        const DVD_ROM: u16 = 0x0010;
        const CD_ROM: u16 = 0x0008;
        let current = match (self.medium.is_some(), self.is_dvd()) {
            (false, _) => 0,
            (true, true) => DVD_ROM,
            (true, false) => CD_ROM,
        };
        let mut features: Vec<(u16, Vec<u8>)> = Vec::new();
        // Profile list: persistent, current.
        let mut profiles = vec![0x00, 0x00, 0x03, 8];
        for p in [DVD_ROM, CD_ROM] {
            profiles.extend_from_slice(&p.to_be_bytes());
            profiles.extend_from_slice(&[u8::from(p == current), 0]);
        }
        features.push((0, profiles));
        // Core: version 2, persistent, current; ATAPI interface, DBE.
        let mut core = vec![0x00, 0x01, 0x0b, 8, 0, 0, 0, 2, 1, 0, 0, 0];
        core[4..8].copy_from_slice(&2u32.to_be_bytes());
        features.push((1, core));
        // Removable medium: tray, eject, lock (state), persistent, current.
        let lock = if self.locked { 0x04 } else { 0 };
        features.push((3, vec![0x00, 0x03, 0x03, 4, 0x29 | lock, 0, 0, 0]));
        let mut d = vec![0u8; 8];
        d[6..8].copy_from_slice(&current.to_be_bytes());
        for (code, bytes) in features {
            let take = match rt {
                // All features from `start`.
                0 | 1 => code >= start,
                // Just `start`.
                2 => code == start,
                _ => false,
            };
            if take {
                d.extend_from_slice(&bytes);
            }
        }
        let len = (d.len() - 4) as u32;
        d[..4].copy_from_slice(&len.to_be_bytes());
        d
    }

    /// GET EVENT STATUS NOTIFICATION, polled: only the media class is supported.
    fn event_status(&mut self, classes: u8) -> Vec<u8> {
        const MEDIA_CLASS: u8 = 0x10;
        if classes & MEDIA_CLASS == 0 {
            // No event available (NEA) from the requested classes.
            return vec![0, 2, 0x80, MEDIA_CLASS];
        }
        let code = self.event.take().map_or(0, |e| e as u8);
        let status = if self.medium.is_some() { 0x02 } else { 0 };
        vec![0, 6, 0x04, MEDIA_CLASS, code, status, 0, 0]
    }
}

fn data(mut d: Vec<u8>, alloc_len: usize) -> Reply {
    d.truncate(alloc_len);
    if d.is_empty() {
        Reply::Done
    } else {
        Reply::Data(d)
    }
}

fn sense_data(s: Sense) -> Vec<u8> {
    let mut d = vec![0u8; 18];
    d[0] = 0x70; // current error, fixed format
    d[2] = s.key;
    d[7] = 10;
    d[12] = s.asc;
    d[13] = s.ascq;
    d
}

/// Session info (READ TOC format 1): one session, its first track at LBA 0.
fn session_info(msf: bool) -> Vec<u8> {
    let mut d = vec![0, 10, 1, 1, 0, 0x14, 1, 0];
    d.extend_from_slice(&address(0, msf));
    d
}

/// An address field: LBA, or minutes/seconds/frames with the 2-second lead-in.
fn address(lba: u64, msf: bool) -> [u8; 4] {
    if msf {
        let f = lba + 150;
        [
            0,
            (f / 75 / 60).min(255) as u8,
            (f / 75 % 60) as u8,
            (f % 75) as u8,
        ]
    } else {
        (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
    }
}

fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst.iter_mut().zip(s.bytes()) {
        *d = c;
    }
}

/// MMC operation codes.
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const SEEK_10: u8 = 0x2b;
    pub const READ_TOC: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS: u8 = 0x4a;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_12: u8 = 0xa8;
    pub const SET_CD_SPEED: u8 = 0xbb;
}
