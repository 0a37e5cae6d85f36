//! The controller driven as SeaBIOS (src/hw/ata.c, blockcmd.c, cdrom.c) and Linux
//! (ata_piix/libata-sff, sr) drive it: port by port, through the PCI configuration
//! mechanism and guest memory, with no vCPU.

use std::path::Path;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::ata::AtaDisk;
use super::atapi::{AtapiCdrom, CD_SECTOR, MediaError, op};
use super::busmaster::{CMD_START, CMD_TO_MEMORY, STATUS_ACTIVE, STATUS_ERROR, STATUS_IRQ};
use super::controller::IdeDevice;
use super::controller::status::*;
use super::pci::{IDE_DEVFN, Ide, IdeDrives};
use crate::bus::Bus;
use crate::disk::test_tools::{TempDir, have, run, s};
use crate::disk::{BlockBackend, RawImage};
use crate::memory::GuestMem;
use crate::pci::PciFunction;
use crate::pci::chipset::PcChipset;
use crate::pci::piix3::tests::Gsis;

const CMD: u64 = 0x170;
const CTL: u64 = 0x376;
const BM: u64 = 0xc000;
/// The secondary channel's bus-master registers.
const BM2: u64 = BM + 8;
const IRQ: u32 = 15;

/// A medium whose every sector holds its LBA in its first 4 bytes and a pattern after.
struct PatternDisc {
    sectors: u64,
}

fn pattern_byte(offset: u64) -> u8 {
    let lba = offset / CD_SECTOR as u64;
    let i = offset % CD_SECTOR as u64;
    if i < 4 {
        (lba as u32).to_le_bytes()[i as usize]
    } else {
        (offset.wrapping_mul(7) >> 3) as u8
    }
}

impl BlockBackend for PatternDisc {
    fn len(&self) -> u64 {
        self.sectors * CD_SECTOR as u64
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        crate::disk::check_range(self.len(), offset, buf.len() as u64)?;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern_byte(offset + i as u64);
        }
        Ok(())
    }
    fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
    fn write_zeroes(&self, _: u64, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
}

fn disc(sectors: u64) -> Box<dyn BlockBackend> {
    Box::new(PatternDisc { sectors })
}

fn expected(lba: u64, sectors: u64) -> Vec<u8> {
    let start = lba * CD_SECTOR as u64;
    (start..start + sectors * CD_SECTOR as u64)
        .map(pattern_byte)
        .collect()
}

struct Pc {
    pio: Arc<Bus>,
    mem: GuestMem,
    gsis: Gsis,
    _chipset: PcChipset,
    ide: Ide,
}

impl Pc {
    /// A CD-ROM on secondary master, as with QEMU's -cdrom.
    fn new(medium: Option<Box<dyn BlockBackend>>) -> Pc {
        let drives: IdeDrives = [
            [None, None],
            [Some(IdeDevice::Cdrom(AtapiCdrom::new(medium))), None],
        ];
        Pc::with(drives)
    }

    fn with(drives: IdeDrives) -> Pc {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let gsis = Gsis::default();
        let (tx, _rx) = crossbeam_channel::unbounded();
        let chipset = PcChipset::new(512 << 20, pio.clone(), mmio, gsis.lines(), tx).unwrap();
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let ide = Ide::new(&pio, &mem, &gsis.lines(), drives).unwrap();
        chipset.add(IDE_DEVFN, ide.function.clone());
        Pc {
            pio,
            mem,
            gsis,
            _chipset: chipset,
            ide,
        }
    }

    fn outb(&self, port: u64, v: u8) {
        self.pio.write(port, &[v]);
    }
    fn inb(&self, port: u64) -> u8 {
        let mut b = [0];
        self.pio.read(port, &mut b);
        b[0]
    }
    fn outw(&self, port: u64, v: u16) {
        self.pio.write(port, &v.to_le_bytes());
    }
    fn inw(&self, port: u64) -> u16 {
        let mut b = [0; 2];
        self.pio.read(port, &mut b);
        u16::from_le_bytes(b)
    }
    fn outl(&self, port: u64, v: u32) {
        self.pio.write(port, &v.to_le_bytes());
    }
    fn inl(&self, port: u64) -> u32 {
        let mut b = [0; 4];
        self.pio.read(port, &mut b);
        u32::from_le_bytes(b)
    }
    fn cfg_writel(&self, off: u8, v: u32) {
        self.outl(
            0xcf8,
            0x8000_0000 | u32::from(IDE_DEVFN) << 8 | u32::from(off),
        );
        self.outl(0xcfc, v);
    }
    fn cfg_readl(&self, off: u8) -> u32 {
        self.outl(
            0xcf8,
            0x8000_0000 | u32::from(IDE_DEVFN) << 8 | u32::from(off),
        );
        self.inl(0xcfc)
    }
    fn edges(&self) -> usize {
        self.gsis.line(IRQ).edges()
    }
    fn irq_level(&self) -> bool {
        self.gsis.line(IRQ).level()
    }

    /// SeaBIOS's pci_enable_iobar + pci_enable_busmaster for BAR4, and piix_ide_setup.
    fn enable_bus_master(&self) {
        self.cfg_writel(0x40, 0x8000_8000);
        self.cfg_writel(0x20, BM as u32);
        self.cfg_writel(0x04, 0x0005); // I/O space, bus master
    }

    /// SeaBIOS ata_reset on the secondary channel, master.
    fn reset(&self) {
        self.outb(CTL, 0x08 | 0x02 | 0x04); // HD15 | nIEN | SRST
        assert_eq!(self.inb(CTL) & BSY, BSY);
        self.outb(CTL, 0x08 | 0x02);
        assert_eq!(self.inb(CMD + 7) & BSY, 0);
        self.outb(CMD + 6, 0xa0);
        self.outb(CTL, 0x08);
    }

    /// ata_atapi_process_op: a packet command, data by PIO in blocks of at most `limit`
    /// bytes. Returns the data, or the error register on CHECK CONDITION.
    fn packet(&self, cdb: &[u8; 12], limit: u16) -> Result<Vec<u8>, u8> {
        self.outb(CMD + 6, 0xa0);
        self.outb(CMD + 1, 0);
        self.outb(CMD + 2, 0);
        self.outb(CMD + 3, 0);
        self.outb(CMD + 4, limit as u8);
        self.outb(CMD + 5, (limit >> 8) as u8);
        self.outb(CMD + 7, 0xa0);
        let st = self.inb(CMD + 7);
        assert_eq!(st & (BSY | DRQ | ERR), DRQ, "packet phase: status {st:#x}");
        assert_eq!(self.inb(CMD + 2) & 3, 1, "interrupt reason: CoD");
        for w in cdb.chunks(2) {
            self.outw(CMD, u16::from_le_bytes([w[0], w[1]]));
        }
        let mut out = Vec::new();
        loop {
            let _ = self.inb(CTL);
            let st = self.inb(CMD + 7);
            assert_eq!(st & BSY, 0);
            if st & ERR != 0 {
                assert_eq!(self.inb(CMD + 2) & 3, 3);
                return Err(self.inb(CMD + 1));
            }
            if st & DRQ == 0 {
                assert_eq!(st & DRDY, DRDY);
                assert_eq!(
                    self.inb(CMD + 2) & 3,
                    3,
                    "interrupt reason: IO|CoD at the end"
                );
                return Ok(out);
            }
            assert_eq!(self.inb(CMD + 2) & 3, 2, "interrupt reason: IO for data");
            let n = usize::from(self.inb(CMD + 4)) | usize::from(self.inb(CMD + 5)) << 8;
            assert!(n <= usize::from(if limit == 0 { 0xfffe } else { limit }).max(2));
            for _ in 0..n / 2 {
                out.extend_from_slice(&self.inw(CMD).to_le_bytes());
            }
            if n % 2 == 1 {
                out.push(self.inw(CMD) as u8);
            }
        }
    }

    /// REQUEST SENSE: (key, asc, ascq).
    fn sense(&self) -> (u8, u8, u8) {
        let d = self
            .packet(&cdb(op::REQUEST_SENSE, &[(4, 18)]), 18)
            .unwrap();
        assert_eq!(d.len(), 18);
        assert_eq!(d[0], 0x70);
        (d[2] & 0xf, d[12], d[13])
    }

    fn tur(&self) -> Result<Vec<u8>, u8> {
        self.packet(&cdb(op::TEST_UNIT_READY, &[]), 0)
    }
}

fn cdb(opcode: u8, bytes: &[(usize, u8)]) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = opcode;
    for &(i, v) in bytes {
        c[i] = v;
    }
    c
}

fn read10(lba: u32, count: u16) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = op::READ_10;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&count.to_be_bytes());
    c
}

/// Error register → sense key.
fn key(err: u8) -> u8 {
    err >> 4
}

#[test]
fn seabios_detects_the_cdrom_on_secondary_master() {
    let pc = Pc::new(Some(disc(100)));
    // Primary channel: nothing answers; sc/sn do not read back.
    pc.outb(0x1f6, 0xa0);
    pc.outb(0x1f2, 0x55);
    pc.outb(0x1f3, 0xaa);
    assert_ne!((pc.inb(0x1f2), pc.inb(0x1f3)), (0x55, 0xaa));
    assert_eq!(pc.inb(0x1f7), 0);

    // ata_detect, slave 0.
    assert_eq!(pc.inb(CMD + 7) & BSY, 0);
    pc.outb(CMD + 6, 0xa0);
    let dh = pc.inb(CMD + 6);
    pc.outb(CMD + 2, 0x55);
    pc.outb(CMD + 3, 0xaa);
    assert_eq!((pc.inb(CMD + 2), pc.inb(CMD + 3), dh), (0x55, 0xaa, 0xa0));
    pc.reset();
    // The ATAPI signature after reset.
    assert_eq!((pc.inb(CMD + 4), pc.inb(CMD + 5)), (0x14, 0xeb));
    assert_eq!((pc.inb(CMD + 2), pc.inb(CMD + 3)), (1, 1));

    // IDENTIFY PACKET DEVICE by PIO, interrupts masked as SeaBIOS does.
    pc.outb(CTL, 0x0a);
    pc.outb(CMD + 6, 0xa0);
    pc.outb(CMD + 7, 0xa1);
    let st = pc.inb(CMD + 7);
    assert_eq!(st & (BSY | DRQ | ERR), DRQ);
    let words: Vec<u16> = (0..256).map(|_| pc.inw(CMD)).collect();
    assert_eq!(pc.inb(CMD + 7) & (BSY | DRQ | ERR), 0);
    pc.outb(CTL, 0x08);
    // CD-ROM (type 5), removable, ATAPI, 12-byte packets.
    assert_eq!(words[0] >> 14, 2);
    assert_eq!((words[0] >> 8) & 0x1f, 5);
    assert_ne!(words[0] & 0x80, 0);
    assert_eq!(words[0] & 3, 0);
    // ata_extract_model / ata_extract_version as SeaBIOS prints them.
    let model: String = words[27..47]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .map(char::from)
        .collect();
    assert_eq!(model.trim_end(), "vmdesk DVD-ROM");
    assert_eq!(15 - words[80].leading_zeros() as u8, 4);
    assert_ne!(words[49] & (1 << 8), 0, "DMA supported");

    // IDENTIFY DEVICE (ATA) aborts and shows the signature.
    pc.outb(CMD + 4, 0);
    pc.outb(CMD + 5, 0);
    pc.outb(CMD + 7, 0xec);
    assert_eq!(pc.inb(CMD + 7) & (ERR | DRQ), ERR);
    assert_eq!(pc.inb(CMD + 1) & 0x04, 0x04);
    assert_eq!((pc.inb(CMD + 4), pc.inb(CMD + 5)), (0x14, 0xeb));

    // Slave: registers are shared so sc/sn read back, but its status is 0 and IDENTIFY
    // PACKET gets no DRQ: SeaBIOS skips it.
    pc.outb(CMD + 6, 0xb0);
    assert_eq!(pc.inb(CMD + 6), 0xb0);
    pc.outb(CMD + 2, 0x55);
    assert_eq!(pc.inb(CMD + 2), 0x55);
    pc.outb(CMD + 7, 0xa1);
    assert_eq!(pc.inb(CMD + 7), 0);
    pc.outb(CMD + 6, 0xa0);
}

#[test]
fn unit_attention_then_ready_capacity_and_pio_reads() {
    let pc = Pc::new(Some(disc(1000)));
    pc.reset();
    // First command after power on with a disc: UNIT ATTENTION / MEDIUM CHANGED, once.
    assert_eq!(pc.tur().map_err(key), Err(6));
    assert_eq!(pc.sense(), (6, 0x28, 0));
    assert_eq!(pc.tur(), Ok(vec![]));
    assert_eq!(pc.sense(), (0, 0, 0));

    let cap = pc.packet(&cdb(op::READ_CAPACITY, &[]), 8).unwrap();
    assert_eq!(cap, [0, 0, 0x03, 0xe7, 0, 0, 0x08, 0]);

    // SeaBIOS: byte count limit = one sector, one DRQ block per sector.
    let d = pc.packet(&read10(16, 3), 2048).unwrap();
    assert_eq!(d, expected(16, 3));
    // Linux: a large limit, blocks that split sectors.
    let d = pc.packet(&read10(100, 40), 0xfffe).unwrap();
    assert_eq!(d, expected(100, 40));
    // Limit 0 means as much as possible; an odd limit is rounded down to even.
    assert_eq!(pc.packet(&read10(3, 2), 0).unwrap(), expected(3, 2));
    assert_eq!(pc.packet(&read10(3, 2), 1001).unwrap(), expected(3, 2));
    // READ(12).
    let mut c = [0u8; 12];
    c[0] = op::READ_12;
    c[2..6].copy_from_slice(&998u32.to_be_bytes());
    c[6..10].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(pc.packet(&c, 2048).unwrap(), expected(998, 2));
    // Past the end: ILLEGAL REQUEST / LBA OUT OF RANGE; huge counts do not allocate.
    assert_eq!(pc.packet(&read10(999, 2), 2048).map_err(key), Err(5));
    assert_eq!(pc.sense(), (5, 0x21, 0));
    c[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(pc.packet(&c, 2048).map_err(key), Err(5));
    // Zero sectors: no data phase.
    assert_eq!(pc.packet(&read10(5, 0), 2048), Ok(vec![]));
    // An unknown command: INVALID COMMAND OPERATION CODE.
    assert_eq!(pc.packet(&cdb(0xd8, &[]), 2048).map_err(key), Err(5));
    assert_eq!(pc.sense(), (5, 0x20, 0));
}

#[test]
fn inquiry_toc_mode_sense_configuration_events() {
    let pc = Pc::new(Some(disc(1000)));
    pc.reset();
    // These answer even with the unit attention pending.
    let inq = pc.packet(&cdb(op::INQUIRY, &[(4, 36)]), 36).unwrap();
    assert_eq!((inq[0], inq[1]), (0x05, 0x80));
    assert_eq!(&inq[8..14], b"VMDESK");
    // Allocation length cuts the data.
    assert_eq!(
        pc.packet(&cdb(op::INQUIRY, &[(4, 5)]), 36).unwrap().len(),
        5
    );
    // GET EVENT STATUS NOTIFICATION, media class: new media, then no event.
    let ev = cdb(op::GET_EVENT_STATUS, &[(1, 1), (4, 0x10), (8, 8)]);
    let e = pc.packet(&ev, 8).unwrap();
    assert_eq!(e, [0, 6, 4, 0x10, 2, 2, 0, 0]);
    let e = pc.packet(&ev, 8).unwrap();
    assert_eq!(e[4..6], [0, 2]);
    // Not polled: invalid field.
    assert_eq!(
        pc.packet(&cdb(op::GET_EVENT_STATUS, &[(4, 0x10), (8, 8)]), 8)
            .map_err(key),
        Err(5)
    );
    let conf = pc
        .packet(&cdb(op::GET_CONFIGURATION, &[(8, 64)]), 64)
        .unwrap();
    assert_eq!(
        u16::from_be_bytes([conf[6], conf[7]]),
        0x0008,
        "CD-ROM profile"
    );
    assert_eq!(&conf[8..10], &[0, 0], "profile list first");
    // Now the unit attention.
    assert_eq!(pc.tur().map_err(key), Err(6));

    let toc = pc.packet(&cdb(op::READ_TOC, &[(8, 0xff)]), 0xfffe).unwrap();
    assert_eq!(toc.len(), 20);
    assert_eq!(&toc[..4], &[0, 18, 1, 1]);
    assert_eq!(&toc[4..12], &[0, 0x14, 1, 0, 0, 0, 0, 0]);
    assert_eq!(&toc[12..20], &[0, 0x14, 0xaa, 0, 0, 0, 0x03, 0xe8]);
    // MSF: lead-out at 1000 + 150 frames = 00:15:25.
    let toc = pc
        .packet(&cdb(op::READ_TOC, &[(1, 2), (8, 0xff)]), 0xfffe)
        .unwrap();
    assert_eq!(&toc[16..20], &[0, 0, 15, 25]);
    assert_eq!(&toc[8..12], &[0, 0, 2, 0]);
    // Session info.
    let s = pc
        .packet(&cdb(op::READ_TOC, &[(2, 1), (8, 12)]), 12)
        .unwrap();
    assert_eq!(&s[..4], &[0, 10, 1, 1]);

    let ms = pc
        .packet(&cdb(op::MODE_SENSE_10, &[(2, 0x2a), (8, 0xff)]), 0xfffe)
        .unwrap();
    assert_eq!(ms[8], 0x2a);
    assert_eq!(u16::from_be_bytes([ms[0], ms[1]]) as usize, ms.len() - 2);
    assert_eq!(
        pc.packet(&cdb(op::MODE_SENSE_10, &[(2, 0x0e), (8, 0xff)]), 0xfffe)
            .map_err(key),
        Err(5)
    );
}

#[test]
fn no_medium_then_insert_then_locked_eject() {
    let pc = Pc::new(None);
    pc.reset();
    assert_eq!(pc.tur().map_err(key), Err(2));
    assert_eq!(pc.sense(), (2, 0x3a, 0));
    assert_eq!(pc.packet(&read10(0, 1), 2048).map_err(key), Err(2));
    assert_eq!(
        pc.packet(&cdb(op::READ_CAPACITY, &[]), 8).map_err(key),
        Err(2)
    );
    // INQUIRY still answers.
    assert!(pc.packet(&cdb(op::INQUIRY, &[(4, 36)]), 36).is_ok());
    let conf = pc
        .packet(&cdb(op::GET_CONFIGURATION, &[(8, 8)]), 8)
        .unwrap();
    assert_eq!(&conf[6..8], &[0, 0], "no current profile");

    // The control socket inserts a disc.
    pc.ide.with_cdrom(1, 0, |cd| cd.insert(disc(50))).unwrap();
    assert_eq!(pc.tur().map_err(key), Err(6));
    assert_eq!(pc.sense(), (6, 0x28, 0));
    assert_eq!(pc.sense(), (0, 0, 0), "sense is cleared once reported");
    assert_eq!(pc.tur(), Ok(vec![]));
    assert_eq!(pc.packet(&read10(49, 1), 2048).unwrap(), expected(49, 1));

    // The guest locks the tray: eject from outside refused (unless forced), from the
    // guest refused with MEDIUM REMOVAL PREVENTED.
    pc.packet(&cdb(op::PREVENT_ALLOW, &[(4, 1)]), 0).unwrap();
    let r = pc.ide.with_cdrom(1, 0, |cd| cd.eject().err()).unwrap();
    assert_eq!(r, Some(MediaError::Locked));
    // Forced, it goes (and comes back for the rest of the test).
    let m = pc
        .ide
        .with_cdrom(1, 0, |cd| cd.eject_forced())
        .unwrap()
        .unwrap();
    pc.ide.with_cdrom(1, 0, |cd| cd.insert(m)).unwrap();
    assert_eq!(pc.tur().map_err(key), Err(6));
    assert_eq!(
        pc.packet(&cdb(op::START_STOP_UNIT, &[(4, 2)]), 0)
            .map_err(key),
        Err(5)
    );
    assert_eq!(pc.sense(), (5, 0x53, 2));
    pc.packet(&cdb(op::PREVENT_ALLOW, &[(4, 0)]), 0).unwrap();
    // The guest ejects: medium gone, media-removal event.
    pc.packet(&cdb(op::START_STOP_UNIT, &[(4, 2)]), 0).unwrap();
    assert_eq!(pc.tur().map_err(key), Err(2));
    let ev = cdb(op::GET_EVENT_STATUS, &[(1, 1), (4, 0x10), (8, 8)]);
    assert_eq!(pc.packet(&ev, 8).unwrap()[4..6], [3, 0]);
    let r = pc.ide.with_cdrom(1, 0, |cd| cd.eject().err()).unwrap();
    assert_eq!(r, Some(MediaError::NoMedium));
    // A machine reset unlocks the tray.
    pc.packet(&cdb(op::PREVENT_ALLOW, &[(4, 1)]), 0).unwrap();
    pc.ide.function.lock().unwrap().reset();
    assert_eq!(pc.ide.with_cdrom(1, 0, |cd| cd.locked()), Some(false));
    // Insert and eject from outside.
    pc.ide.with_cdrom(1, 0, |cd| cd.insert(disc(10))).unwrap();
    assert!(pc.ide.with_cdrom(1, 0, |cd| cd.eject().is_ok()).unwrap());
    assert_eq!(pc.tur().map_err(key), Err(6));
    assert_eq!(pc.tur().map_err(key), Err(2));
}

#[test]
fn interrupts_follow_nien_and_status_reads() {
    let pc = Pc::new(Some(disc(10)));
    // Linux: interrupts on. IDENTIFY PACKET raises INTRQ with the data.
    pc.outb(CTL, 0x08);
    pc.outb(CMD + 6, 0xa0);
    let e0 = pc.edges();
    pc.outb(CMD + 7, 0xa1);
    assert_eq!(pc.edges(), e0 + 1);
    assert!(pc.irq_level());
    // Alternate status does not acknowledge; status does.
    let _ = pc.inb(CTL);
    assert!(pc.irq_level());
    let _ = pc.inb(CMD + 7);
    assert!(!pc.irq_level());
    for _ in 0..256 {
        pc.inw(CMD);
    }
    // A packet command with data: one interrupt per DRQ block and one at the end.
    let e0 = pc.edges();
    pc.packet(&read10(0, 2), 2048).unwrap_err(); // unit attention: one interrupt
    assert_eq!(pc.edges(), e0 + 1);
    let e0 = pc.edges();
    pc.packet(&read10(0, 2), 2048).unwrap();
    assert_eq!(pc.edges(), e0 + 3);
    // nIEN masks the line; the pending interrupt shows when it is cleared.
    pc.outb(CTL, 0x0a);
    let e0 = pc.edges();
    pc.outb(CMD + 7, 0xe5); // CHECK POWER MODE
    assert!(!pc.irq_level());
    pc.outb(CTL, 0x08);
    assert!(pc.irq_level());
    assert_eq!(pc.edges(), e0 + 1);
    let _ = pc.inb(CMD + 7);
    assert!(!pc.irq_level());
}

/// Sets up a PRD table at 0x1000 and the bus master for a device-to-memory transfer,
/// as SeaBIOS's ata_try_dma and Linux's ata_bmdma_setup do.
fn dma_setup(pc: &Pc, prds: &[(u32, u32)]) {
    for (i, &(a, c)) in prds.iter().enumerate() {
        let mut b = a.to_le_bytes().to_vec();
        b.extend_from_slice(&c.to_le_bytes());
        pc.mem
            .write_slice(&b, GuestAddress(0x1000 + 8 * i as u64))
            .unwrap();
    }
    pc.outl(BM2 + 4, 0x1000);
    let old = pc.inb(BM2) & !(CMD_START | CMD_TO_MEMORY);
    pc.outb(BM2, old | CMD_TO_MEMORY);
    pc.outb(BM2 + 2, STATUS_ERROR | STATUS_IRQ);
}

/// A packet command with its data by DMA (feature bit 0); the bus master is started after
/// the command as Linux does (`start_first` starts it before, as some drivers do).
/// Returns (BM status, ATA status).
fn dma_packet(pc: &Pc, cdb: &[u8; 12], start_first: bool) -> (u8, u8) {
    if start_first {
        pc.outb(BM2, pc.inb(BM2) | CMD_START);
    }
    pc.outb(CMD + 6, 0xa0);
    pc.outb(CMD + 1, 1);
    pc.outb(CMD + 4, 0);
    pc.outb(CMD + 5, 0);
    pc.outb(CMD + 7, 0xa0);
    assert_eq!(pc.inb(CMD + 7) & DRQ, DRQ);
    for w in cdb.chunks(2) {
        pc.outw(CMD, u16::from_le_bytes([w[0], w[1]]));
    }
    if !start_first {
        pc.outb(BM2, pc.inb(BM2) | CMD_START);
    }
    let bm = pc.inb(BM2 + 2);
    pc.outb(BM2, pc.inb(BM2) & !CMD_START);
    let st = pc.inb(CMD + 7);
    (bm, st)
}

#[test]
fn dma_reads_land_in_guest_memory() {
    let pc = Pc::new(Some(disc(1000)));
    pc.reset();
    pc.enable_bus_master();
    assert_eq!(pc.cfg_readl(0x20), BM as u32 | 1);
    assert_eq!(pc.cfg_readl(0), 0x7010_8086);
    assert_eq!(pc.cfg_readl(8) >> 8, 0x01_01_80);
    assert_eq!(pc.tur().map_err(key), Err(6));

    // Three PRDs, the middle one 64 KiB (count 0), as SeaBIOS splits at 64 KiB boundaries.
    let total = 2048 * 40;
    dma_setup(
        &pc,
        &[
            (0x2_f000, 0x1000),
            (0x3_0000, 0),
            (0x4_0000, (total - 0x1_1000) | 1 << 31),
        ],
    );
    let e0 = pc.edges();
    let (bm, st) = dma_packet(&pc, &read10(200, 40), false);
    assert_eq!(bm & (STATUS_IRQ | STATUS_ACTIVE | STATUS_ERROR), STATUS_IRQ);
    assert_eq!(st & (BSY | DRQ | ERR), 0);
    assert_eq!(st & DRDY, DRDY);
    assert_eq!(pc.inb(CMD + 2) & 3, 3);
    assert_eq!(pc.edges(), e0 + 1);
    let mut got = vec![0u8; total as usize];
    pc.mem.read_slice(&mut got, GuestAddress(0x2_f000)).unwrap();
    assert_eq!(got, expected(200, 40));

    // Started before the command; a PRD larger than the data leaves the engine active.
    dma_setup(&pc, &[(0x10_0000, 0x8000 | 1 << 31)]);
    let (bm, st) = dma_packet(&pc, &read10(7, 1), true);
    assert_eq!(
        bm & (STATUS_IRQ | STATUS_ACTIVE),
        STATUS_IRQ | STATUS_ACTIVE
    );
    assert_eq!(st & ERR, 0);
    let mut got = vec![0u8; 2048];
    pc.mem
        .read_slice(&mut got, GuestAddress(0x10_0000))
        .unwrap();
    assert_eq!(got, expected(7, 1));

    // Small commands by DMA too (Linux may send INQUIRY that way).
    dma_setup(&pc, &[(0x20_0000, 36 | 1 << 31)]);
    let (bm, st) = dma_packet(&pc, &cdb(op::INQUIRY, &[(4, 36)]), false);
    assert_eq!(bm & STATUS_ERROR, 0);
    assert_eq!(st & ERR, 0);
    let mut inq = [0u8; 36];
    pc.mem
        .read_slice(&mut inq, GuestAddress(0x20_0000))
        .unwrap();
    assert_eq!(&inq[8..14], b"VMDESK");
}

#[test]
fn bad_prd_tables_fail_the_command_not_the_vmm() {
    let pc = Pc::new(Some(disc(1000)));
    pc.reset();
    pc.enable_bus_master();
    let _ = pc.tur();
    let cases: Vec<Vec<(u32, u32)>> = vec![
        // Buffer beyond guest RAM.
        vec![(0xf000_0000, 2048 | 1 << 31)],
        // Buffer running off the end of RAM.
        vec![((4 << 20) - 1024, 2048 | 1 << 31)],
        // Table shorter than the transfer.
        vec![(0x8000, 1024 | 1 << 31)],
        // No EOT: the table is all 1-byte entries.
        (0..8192).map(|_| (0x8000, 1)).collect(),
    ];
    for (i, prds) in cases.into_iter().enumerate() {
        dma_setup(&pc, &prds);
        let (bm, st) = dma_packet(&pc, &read10(0, 8), false);
        assert_eq!(
            bm & (STATUS_ERROR | STATUS_IRQ | STATUS_ACTIVE),
            STATUS_ERROR | STATUS_IRQ,
            "case {i}"
        );
        assert_eq!(st & (ERR | BSY | DRQ), ERR);
        assert_eq!(key(pc.inb(CMD + 1)), 0xb, "ABORTED COMMAND");
        // The drive works on.
        assert_eq!(pc.sense(), (0xb, 0, 0));
        assert_eq!(pc.tur(), Ok(vec![]));
    }
    // Table pointer outside RAM.
    dma_setup(&pc, &[]);
    pc.outl(BM2 + 4, 0xffff_0000);
    let (bm, st) = dma_packet(&pc, &read10(0, 1), false);
    assert_eq!(bm & STATUS_ERROR, STATUS_ERROR);
    assert_eq!(st & ERR, ERR);
    // Direction wrong (memory to device for a read).
    dma_setup(&pc, &[(0x8000, 2048 | 1 << 31)]);
    pc.outb(BM2, 0);
    let (bm, st) = dma_packet(&pc, &read10(0, 1), false);
    assert_eq!(bm & STATUS_ERROR, STATUS_ERROR);
    assert_eq!(st & ERR, ERR);
}

#[test]
fn no_dma_without_bus_mastering() {
    let pc = Pc::new(Some(disc(10)));
    pc.reset();
    pc.cfg_writel(0x20, BM as u32);
    pc.cfg_writel(0x04, 0x0001); // I/O only
    let _ = pc.tur();
    dma_setup(&pc, &[(0x8000, 2048 | 1 << 31)]);
    let (bm, st) = dma_packet(&pc, &read10(1, 1), false);
    assert_eq!(bm & STATUS_IRQ, 0);
    assert_eq!(st & BSY, BSY, "waits for the bus master");
    // Enabling mastering and starting again runs it.
    pc.cfg_writel(0x04, 0x0005);
    pc.outb(BM2, pc.inb(BM2) | CMD_START);
    assert_eq!(pc.inb(BM2 + 2) & STATUS_IRQ, STATUS_IRQ);
    let mut got = vec![0u8; 2048];
    pc.mem.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
    assert_eq!(got, expected(1, 1));
    // With I/O decode off, BAR4 is gone.
    pc.cfg_writel(0x04, 0);
    assert_eq!(pc.inb(BM2 + 2), 0xff);
}

fn make_iso(dir: &TempDir) -> Option<std::path::PathBuf> {
    if !have("xorriso") {
        return None;
    }
    let root = dir.path("root");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    let mut boot = vec![0u8; 2048];
    boot[0] = 0xfa;
    boot[510] = 0x55;
    boot[511] = 0xaa;
    std::fs::write(root.join("boot/prog.img"), &boot).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| ((i * 13) >> 2) as u8).collect();
    std::fs::write(root.join("data.bin"), &data).unwrap();
    let iso = dir.path("t.iso");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            s(&iso),
            "-V",
            "VMDESKTEST",
            "-b",
            "boot/prog.img",
            "-c",
            "boot/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            s(&root),
        ],
    );
    Some(iso)
}

fn host_sectors(iso: &Path, lba: u64, n: usize) -> Vec<u8> {
    let all = std::fs::read(iso).unwrap();
    let start = lba as usize * CD_SECTOR;
    all[start..start + n * CD_SECTOR].to_vec()
}

/// An El Torito ISO from xorriso, read as SeaBIOS's cdrom_boot does (PIO) and as Linux
/// does (DMA): the volume descriptors and every sector match the host file.
#[test]
fn xorriso_iso_reads_like_the_host_file() {
    let dir = TempDir::new("iso");
    let Some(iso) = make_iso(&dir) else {
        return;
    };
    let img = RawImage::open(&iso, true).unwrap();
    let sectors = img.len() / CD_SECTOR as u64;
    let pc = Pc::new(Some(Box::new(img)));
    pc.reset();
    // scsi_is_ready: TEST UNIT READY until it succeeds, sensing in between.
    let mut tries = 0;
    while pc.tur().is_err() {
        let _ = pc.sense();
        tries += 1;
        assert!(tries < 3);
    }
    let cap = pc.packet(&cdb(op::READ_CAPACITY, &[]), 8).unwrap();
    assert_eq!(
        u64::from(u32::from_be_bytes([cap[0], cap[1], cap[2], cap[3]])),
        sectors - 1
    );
    // cdrom_boot: the boot record volume descriptor at 17, then the boot catalog.
    let brvd = pc.packet(&read10(0x11, 1), 2048).unwrap();
    assert_eq!(brvd[0], 0);
    assert_eq!(&brvd[1..30], b"CD001\x01EL TORITO SPECIFICATION");
    let catalog = u32::from_le_bytes([brvd[0x47], brvd[0x48], brvd[0x49], brvd[0x4a]]);
    let cat = pc.packet(&read10(catalog, 1), 2048).unwrap();
    assert_eq!((cat[0], cat[0x1e], cat[0x1f]), (1, 0x55, 0xaa));
    assert_eq!(cat[0x20], 0x88, "bootable entry");
    let boot_lba = u32::from_le_bytes([cat[0x28], cat[0x29], cat[0x2a], cat[0x2b]]);
    let boot = pc.packet(&read10(boot_lba, 1), 2048).unwrap();
    assert_eq!((boot[0], boot[510], boot[511]), (0xfa, 0x55, 0xaa));
    // The primary volume descriptor, with our label.
    let pvd = pc.packet(&read10(16, 1), 2048).unwrap();
    assert_eq!(&pvd[1..6], b"CD001");
    assert_eq!(&pvd[40..50], b"VMDESKTEST");
    // The whole disc by PIO and by DMA equals the file.
    let n = sectors as u16;
    let pio = pc.packet(&read10(0, n), 0xfffe).unwrap();
    assert_eq!(pio, host_sectors(&iso, 0, n as usize));
    pc.enable_bus_master();
    let bytes = u32::from(n) * 2048;
    let mut prds = Vec::new();
    let mut at = 0;
    while at < bytes {
        let c = (bytes - at).min(0x1_0000);
        let eot = if at + c == bytes { 1 << 31 } else { 0 };
        prds.push((0x10_0000 + at, (c & 0xffff) | eot));
        at += c;
    }
    dma_setup(&pc, &prds);
    let (bm, st) = dma_packet(&pc, &read10(0, n), false);
    assert_eq!(bm & (STATUS_IRQ | STATUS_ERROR | STATUS_ACTIVE), STATUS_IRQ);
    assert_eq!(st & ERR, 0);
    let mut got = vec![0u8; bytes as usize];
    pc.mem
        .read_slice(&mut got, GuestAddress(0x10_0000))
        .unwrap();
    assert_eq!(got, pio);
}

// ---- ATA hard disk on primary master ----

const PCMD: u64 = 0x1f0;
const PCTL: u64 = 0x3f6;
const PBM: u64 = BM;

struct DiskPc {
    pc: Pc,
    file: std::path::PathBuf,
    _dir: TempDir,
}

/// A sparse raw disk of `size` bytes whose first MiB holds a pattern, on primary master;
/// the CD-ROM stays on secondary master.
fn disk_pc(size: u64, read_only: bool) -> DiskPc {
    let dir = TempDir::new("ata");
    let file = dir.path("disk.raw");
    let head: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    std::fs::write(&file, &head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size)
        .unwrap();
    let disk = AtaDisk::new(Box::new(RawImage::open(&file, read_only).unwrap()));
    let pc = Pc::with([
        [Some(IdeDevice::Disk(disk)), None],
        [
            Some(IdeDevice::Cdrom(AtapiCdrom::new(Some(disc(10))))),
            None,
        ],
    ]);
    DiskPc {
        pc,
        file,
        _dir: dir,
    }
}

fn file_sectors(file: &Path, lba: u64, n: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; (n * 512) as usize];
    std::fs::File::open(file)
        .unwrap()
        .read_exact_at(&mut b, lba * 512)
        .unwrap();
    b
}

/// SeaBIOS's send_cmd: the LBA48 high bytes first when `ext`, then the low ones.
fn ata_cmd(pc: &Pc, command: u8, lba: u64, count: u32, ext: bool) {
    pc.outb(
        PCMD + 6,
        0xa0 | 0x40 | if ext { 0 } else { (lba >> 24) as u8 & 0xf },
    );
    if ext {
        pc.outb(PCMD + 1, 0);
        pc.outb(PCMD + 2, (count >> 8) as u8);
        pc.outb(PCMD + 3, (lba >> 24) as u8);
        pc.outb(PCMD + 4, (lba >> 32) as u8);
        pc.outb(PCMD + 5, (lba >> 40) as u8);
    }
    pc.outb(PCMD + 1, 0);
    pc.outb(PCMD + 2, count as u8);
    pc.outb(PCMD + 3, lba as u8);
    pc.outb(PCMD + 4, (lba >> 8) as u8);
    pc.outb(PCMD + 5, (lba >> 16) as u8);
    pc.outb(PCMD + 7, command);
}

/// ata_pio_transfer reading: `blocks` DRQ blocks of `block` sectors.
fn pio_read(pc: &Pc, blocks: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &n in blocks {
        let _ = pc.inb(PCTL);
        let st = pc.inb(PCMD + 7);
        assert_eq!(st & (BSY | DRQ | ERR), DRQ, "status {st:#x}");
        for _ in 0..n * 128 {
            out.extend_from_slice(&pc.inl(PCMD).to_le_bytes());
        }
    }
    let st = pc.inb(PCMD + 7);
    assert_eq!(st & (BSY | DRQ | ERR), 0, "after the last block: {st:#x}");
    assert_eq!(st & DRDY, DRDY);
    out
}

fn pio_write(pc: &Pc, data: &[u8], block: usize) {
    for chunk in data.chunks(block * 512) {
        let st = pc.inb(PCMD + 7);
        assert_eq!(st & (BSY | DRQ | ERR), DRQ, "status {st:#x}");
        for w in chunk.chunks(2) {
            pc.outw(PCMD, u16::from_le_bytes([w[0], w[1]]));
        }
    }
    let st = pc.inb(PCMD + 7);
    assert_eq!(st & (BSY | DRQ | ERR), 0, "after the last block: {st:#x}");
}

#[test]
fn seabios_detects_the_ata_disk_and_reads_its_identity() {
    let d = disk_pc(200 << 30, false);
    let pc = &d.pc;
    // ata_detect: registers echo, reset, the ATA signature.
    pc.outb(PCMD + 6, 0xa0);
    pc.outb(PCMD + 2, 0x55);
    pc.outb(PCMD + 3, 0xaa);
    assert_eq!((pc.inb(PCMD + 2), pc.inb(PCMD + 3)), (0x55, 0xaa));
    pc.outb(PCTL, 0x0e);
    pc.outb(PCTL, 0x0a);
    assert_eq!(pc.inb(PCMD + 7) & (BSY | DRDY), DRDY);
    assert_eq!((pc.inb(PCMD + 4), pc.inb(PCMD + 5)), (0, 0));
    // init_drive_atapi first: IDENTIFY PACKET aborts on a disk.
    pc.outb(PCMD + 6, 0xa0);
    pc.outb(PCMD + 7, 0xa1);
    let st = pc.inb(PCMD + 7);
    assert_eq!(st & (ERR | DRQ), ERR);
    assert_ne!(st, 0, "SeaBIOS then looks for an ATA drive");
    // init_drive_ata: IDENTIFY DEVICE.
    pc.outb(PCMD + 7, 0xec);
    assert_eq!(pc.inb(PCMD + 7) & (BSY | DRQ | ERR), DRQ);
    let w: Vec<u16> = (0..256).map(|_| pc.inw(PCMD)).collect();
    assert_eq!(pc.inb(PCMD + 7) & DRQ, 0);
    pc.outb(PCTL, 0x08);
    assert_eq!(w[0] & 0x8000, 0, "ATA");
    let sectors = (200u64 << 30) / 512;
    assert_ne!(w[83] & (1 << 10), 0, "LBA48");
    let lba48 = w[100..104]
        .iter()
        .enumerate()
        .fold(0u64, |a, (i, &x)| a | u64::from(x) << (16 * i));
    assert_eq!(lba48, sectors);
    assert_eq!(u32::from(w[60]) | u32::from(w[61]) << 16, 0x0fff_ffff);
    assert_eq!((w[1], w[3], w[6]), (16383, 16, 63));
    let model: String = w[27..47]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .map(char::from)
        .collect();
    assert_eq!(model.trim_end(), "vmdesk HARDDISK");
    assert_eq!(15 - w[80].leading_zeros(), 7, "ATA-7");
    // The CD on the other channel is unaffected.
    assert_eq!((pc.inb(CMD + 4), pc.inb(CMD + 5)), (0x14, 0xeb));
}

#[test]
fn ata_pio_reads_and_writes_lba28_lba48_chs_multiple() {
    let d = disk_pc(200 << 30, false);
    let pc = &d.pc;
    pc.outb(PCTL, 0x0a); // nIEN, as SeaBIOS
    // READ SECTORS, 3 sectors from LBA 5: one DRQ block per sector.
    ata_cmd(pc, 0x20, 5, 3, false);
    assert_eq!(pio_read(pc, &[1, 1, 1]), file_sectors(&d.file, 5, 3));
    // WRITE SECTORS, 2 sectors at LBA 100.
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    ata_cmd(pc, 0x30, 100, 2, false);
    pio_write(pc, &data, 1);
    assert_eq!(file_sectors(&d.file, 100, 2), data);
    // LBA48 beyond 2^28 sectors (128 GiB): write then read back.
    let far = 0x1000_0010u64;
    ata_cmd(pc, 0x34, far, 2, true);
    pio_write(pc, &data, 1);
    assert_eq!(file_sectors(&d.file, far, 2), data);
    ata_cmd(pc, 0x24, far, 2, true);
    assert_eq!(pio_read(pc, &[1, 1]), data);
    // HOB read-back of the LBA48 registers.
    pc.outb(PCTL, 0x0a | 0x80);
    assert_eq!(pc.inb(PCMD + 3), (far >> 24) as u8);
    pc.outb(PCTL, 0x0a);
    assert_eq!(pc.inb(PCMD + 3), far as u8);
    // CHS: cylinder 0, head 1, sector 1 = LBA 63.
    pc.outb(PCMD + 6, 0xa1);
    pc.outb(PCMD + 2, 1);
    pc.outb(PCMD + 3, 1);
    pc.outb(PCMD + 4, 0);
    pc.outb(PCMD + 5, 0);
    pc.outb(PCMD + 7, 0x20);
    assert_eq!(pio_read(pc, &[1]), file_sectors(&d.file, 63, 1));
    // READ MULTIPLE after SET MULTIPLE MODE 4: blocks of 4, 4, 2.
    pc.outb(PCMD + 6, 0xa0);
    pc.outb(PCMD + 2, 4);
    pc.outb(PCMD + 7, 0xc6);
    assert_eq!(pc.inb(PCMD + 7) & ERR, 0);
    ata_cmd(pc, 0xc4, 200, 10, false);
    assert_eq!(pio_read(pc, &[4, 4, 2]), file_sectors(&d.file, 200, 10));
    // An invalid multiple count aborts.
    pc.outb(PCMD + 2, 3);
    pc.outb(PCMD + 7, 0xc6);
    assert_eq!(pc.inb(PCMD + 7) & ERR, ERR);
    // Count 0 means 256 sectors in LBA28.
    ata_cmd(pc, 0x20, 0, 0, false);
    assert_eq!(pio_read(pc, &[1; 256]), file_sectors(&d.file, 0, 256));
    // Beyond the end: IDNF, and the drive goes on.
    ata_cmd(pc, 0x24, (200 << 30) / 512 - 1, 2, true);
    assert_eq!(pc.inb(PCMD + 7) & (ERR | DRQ), ERR);
    assert_eq!(pc.inb(PCMD + 1) & 0x10, 0x10);
    pc.outb(PCMD + 7, 0xe7); // FLUSH CACHE
    assert_eq!(pc.inb(PCMD + 7) & (ERR | BSY), 0);
    // Unknown commands abort.
    pc.outb(PCMD + 7, 0xf8);
    assert_eq!(pc.inb(PCMD + 1), 0x04);
}

#[test]
fn ata_interrupts_per_block() {
    let d = disk_pc(1 << 20, false);
    let pc = &d.pc;
    pc.outb(PCTL, 0x08);
    let line = pc.gsis.line(14);
    // PIO read: an interrupt as each block is ready, none after the last.
    let e0 = line.edges();
    ata_cmd(pc, 0x20, 0, 2, false);
    assert_eq!(line.edges(), e0 + 1);
    let _ = pc.inb(PCMD + 7);
    for _ in 0..256 {
        pc.inw(PCMD);
    }
    assert_eq!(line.edges(), e0 + 2);
    let _ = pc.inb(PCMD + 7);
    for _ in 0..256 {
        pc.inw(PCMD);
    }
    assert_eq!(line.edges(), e0 + 2);
    // PIO write: the first block without one, then one per block incl. the end.
    let e0 = line.edges();
    ata_cmd(pc, 0x30, 8, 2, false);
    assert_eq!(line.edges(), e0);
    for _ in 0..256 {
        pc.outw(PCMD, 0x1234);
    }
    assert_eq!(line.edges(), e0 + 1);
    let _ = pc.inb(PCMD + 7);
    for _ in 0..256 {
        pc.outw(PCMD, 0x1234);
    }
    assert_eq!(line.edges(), e0 + 2);
    assert_eq!(file_sectors(&d.file, 8, 2), [0x34, 0x12].repeat(512));
}

fn pdma_setup(pc: &Pc, prds: &[(u32, u32)], to_memory: bool) {
    for (i, &(a, c)) in prds.iter().enumerate() {
        let mut b = a.to_le_bytes().to_vec();
        b.extend_from_slice(&c.to_le_bytes());
        pc.mem
            .write_slice(&b, GuestAddress(0x1000 + 8 * i as u64))
            .unwrap();
    }
    pc.outl(PBM + 4, 0x1000);
    pc.outb(PBM, if to_memory { CMD_TO_MEMORY } else { 0 });
    pc.outb(PBM + 2, STATUS_ERROR | STATUS_IRQ);
}

/// SeaBIOS's ata_dma_transfer: start, wait for the interrupt bit, stop.
fn pdma_run(pc: &Pc) -> (u8, u8) {
    pc.outb(PBM, pc.inb(PBM) | CMD_START);
    let bm = pc.inb(PBM + 2);
    pc.outb(PBM, pc.inb(PBM) & !CMD_START);
    (bm, pc.inb(PCMD + 7))
}

#[test]
fn ata_dma_reads_and_writes() {
    let d = disk_pc(200 << 30, false);
    let pc = &d.pc;
    pc.enable_bus_master();
    // READ DMA: 40 sectors across two PRDs.
    pdma_setup(
        pc,
        &[
            (0x2_0000, 0x3000),
            (0x3_0000, (40 * 512 - 0x3000) | 1 << 31),
        ],
        true,
    );
    ata_cmd(pc, 0xc8, 17, 40, false);
    let (bm, st) = pdma_run(pc);
    assert_eq!(bm & (STATUS_IRQ | STATUS_ERROR | STATUS_ACTIVE), STATUS_IRQ);
    assert_eq!(st & (BSY | DRQ | ERR), 0);
    let want = file_sectors(&d.file, 17, 40);
    let mut a = vec![0u8; 0x3000];
    pc.mem.read_slice(&mut a, GuestAddress(0x2_0000)).unwrap();
    let mut b = vec![0u8; 40 * 512 - 0x3000];
    pc.mem.read_slice(&mut b, GuestAddress(0x3_0000)).unwrap();
    assert_eq!([a, b].concat(), want);

    // WRITE DMA EXT far out: 300 sectors (more than one internal batch), two 64 KiB PRDs
    // and the rest in a third.
    let data: Vec<u8> = (0..300 * 512u32).map(|i| (i % 251) as u8).collect();
    pc.mem.write_slice(&data, GuestAddress(0x10_0000)).unwrap();
    pdma_setup(
        pc,
        &[
            (0x10_0000, 0),
            (0x11_0000, 0),
            (0x12_0000, (300 * 512 - 0x2_0000) | 1 << 31),
        ],
        false,
    );
    let far = 0x1234_5678u64;
    ata_cmd(pc, 0x35, far, 300, true);
    let (bm, st) = pdma_run(pc);
    assert_eq!(bm & (STATUS_IRQ | STATUS_ERROR | STATUS_ACTIVE), STATUS_IRQ);
    assert_eq!(st & (BSY | DRQ | ERR), 0);
    assert_eq!(file_sectors(&d.file, far, 300), data);

    // Bad PRD for a write: BM error, ABRT, nothing beyond the fault written.
    pdma_setup(pc, &[(0xf000_0000, 512 | 1 << 31)], false);
    ata_cmd(pc, 0xca, 900, 1, false);
    let (bm, st) = pdma_run(pc);
    assert_eq!(bm & STATUS_ERROR, STATUS_ERROR);
    assert_eq!(st & ERR, ERR);
    assert_eq!(pc.inb(PCMD + 1), 0x04);
    // Direction bit wrong for a read.
    pdma_setup(pc, &[(0x2_0000, 512 | 1 << 31)], false);
    ata_cmd(pc, 0xc8, 0, 1, false);
    let (bm, st) = pdma_run(pc);
    assert_eq!(bm & STATUS_ERROR, STATUS_ERROR);
    assert_eq!(st & ERR, ERR);
}

#[test]
fn read_only_disk_refuses_writes() {
    let d = disk_pc(1 << 20, true);
    let pc = &d.pc;
    ata_cmd(pc, 0x30, 0, 1, false);
    assert_eq!(pc.inb(PCMD + 7) & (ERR | DRQ), ERR);
    assert_eq!(pc.inb(PCMD + 1), 0x04);
    ata_cmd(pc, 0x20, 0, 1, false);
    assert_eq!(pio_read(pc, &[1]), file_sectors(&d.file, 0, 1));
    assert!(
        d.pc.ide
            .with_disk(0, 0, |disk| disk.sectors() == 2048)
            .unwrap()
    );
}
