//! The PCI root: the functions on bus 0 by device/function number, configuration cycles to
//! them, and the placing of what they decode on the PIO and MMIO buses; and
//! [`PciConfigIo`], configuration mechanism 1 at ports 0xCF8..=0xCFF.
//!
//! After every configuration write the root asks each function for its decoded regions and
//! moves whatever changed: firmware assigns BARs and then turns decode on, Linux turns
//! decode off while it sizes a BAR, and a region may pass through an address another device
//! holds. A region that would overlap something already on the bus is logged and left off
//! the bus (the guest's accesses there go to the earlier device), never a panic; it is
//! tried again after the next configuration write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::bus::{Bus, BusDevice};
use crate::devices::reset::ResetControl;

use super::{PciFunction, PciRegion, PciSpace};

pub const PCI_CONFIG_IO_BASE: u64 = 0xcf8;
pub const PCI_CONFIG_IO_LEN: u64 = 8;

/// Bit 31 of the address dword: the next data-port access is a configuration cycle.
const CONFIG_ENABLE: u32 = 0x8000_0000;

struct Slot {
    function: Arc<Mutex<dyn PciFunction>>,
    /// Regions that are on a bus now, as inserted.
    mapped: Vec<PciRegion>,
}

pub struct PciRoot {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    slots: BTreeMap<u8, Slot>,
}

fn same_region(a: &PciRegion, b: &PciRegion) -> bool {
    a.space == b.space && a.base == b.base && a.len == b.len && Arc::ptr_eq(&a.dev, &b.dev)
}

impl PciRoot {
    pub fn new(pio: Arc<Bus>, mmio: Arc<Bus>) -> PciRoot {
        PciRoot {
            pio,
            mmio,
            slots: BTreeMap::new(),
        }
    }

    /// Puts `f` at `devfn` on bus 0 (replacing, and unmapping, whatever was there) and maps
    /// the regions it already decodes.
    pub fn add(&mut self, devfn: u8, f: Arc<Mutex<dyn PciFunction>>) {
        if let Some(old) = self.slots.remove(&devfn) {
            tracing::warn!("pci: replacing the function at {}", fmt_devfn(devfn));
            for r in &old.mapped {
                self.bus(r.space).remove(r.base);
            }
        }
        self.slots.insert(
            devfn,
            Slot {
                function: f,
                mapped: Vec::new(),
            },
        );
        self.update_regions();
    }

    /// A machine reset: every function back to power-on state, the buses to match.
    pub fn reset(&mut self) {
        for s in self.slots.values() {
            s.function.lock().unwrap().reset();
        }
        self.update_regions();
    }

    fn bus(&self, space: PciSpace) -> &Bus {
        match space {
            PciSpace::Pio => &self.pio,
            PciSpace::Mmio => &self.mmio,
        }
    }

    /// A configuration read. Absent functions and other buses read as all ones, which is
    /// how enumeration finds nothing there.
    pub fn config_read(&self, bus: u8, devfn: u8, offset: u16, data: &mut [u8]) {
        match self.function(bus, devfn, offset, data.len()) {
            Some(f) => f.lock().unwrap().config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write; the buses follow whatever it changed.
    pub fn config_write(&mut self, bus: u8, devfn: u8, offset: u16, data: &[u8]) {
        let Some(f) = self.function(bus, devfn, offset, data.len()) else {
            return;
        };
        f.lock().unwrap().config_write(offset, data);
        self.update_regions();
    }

    fn function(
        &self,
        bus: u8,
        devfn: u8,
        offset: u16,
        len: usize,
    ) -> Option<Arc<Mutex<dyn PciFunction>>> {
        // Only 1, 2 and 4 byte accesses inside the 256-byte space reach a function.
        if bus != 0 || !matches!(len, 1 | 2 | 4) || usize::from(offset) + len > 256 {
            return None;
        }
        self.slots.get(&devfn).map(|s| s.function.clone())
    }

    /// Brings the buses in line with what every function decodes now: removals first, so
    /// a region may move to where another one just left.
    fn update_regions(&mut self) {
        let wanted: Vec<(u8, Vec<PciRegion>)> = self
            .slots
            .iter()
            .map(|(&devfn, s)| (devfn, s.function.lock().unwrap().regions()))
            .collect();
        for (devfn, want) in &wanted {
            let Some(slot) = self.slots.get_mut(devfn) else {
                continue;
            };
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut slot.mapped)
                .into_iter()
                .partition(|m| want.iter().any(|w| same_region(m, w)));
            slot.mapped = keep;
            for r in gone {
                let bus = match r.space {
                    PciSpace::Pio => &self.pio,
                    PciSpace::Mmio => &self.mmio,
                };
                bus.remove(r.base);
                tracing::debug!("pci: {} unmapped {:?}", fmt_devfn(*devfn), r);
            }
        }
        for (devfn, want) in wanted {
            for w in want {
                let Some(slot) = self.slots.get(&devfn) else {
                    continue;
                };
                if slot.mapped.iter().any(|m| same_region(m, &w)) {
                    continue;
                }
                match self.bus(w.space).insert(w.base, w.len, w.dev.clone()) {
                    Ok(()) => {
                        tracing::debug!("pci: {} mapped {:?}", fmt_devfn(devfn), w);
                        if let Some(slot) = self.slots.get_mut(&devfn) {
                            slot.mapped.push(w);
                        }
                    }
                    Err(e) => tracing::warn!("pci: {} cannot map {:?}: {e}", fmt_devfn(devfn), w),
                }
            }
        }
    }
}

fn fmt_devfn(devfn: u8) -> String {
    format!("00:{:02x}.{}", devfn >> 3, devfn & 7)
}

/// Configuration mechanism 1: the address dword at 0xCF8 and the data window at
/// 0xCFC..=0xCFF. Only a 32-bit write latches the address (byte and word writes there
/// belong to other registers on real chipsets); a byte at 0xCF9 is the PIIX reset control
/// register, which this device forwards. Reads of the data window with bit 31 clear, and
/// of functions that do not exist, return all ones.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    reset: ResetControl,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>, reset: ResetControl) -> PciConfigIo {
        PciConfigIo {
            root,
            reset,
            address: 0,
        }
    }

    /// The target of a data-port access at `port_offset` (0..=3 into 0xCFC).
    fn target(&self, port_offset: u64) -> Option<(u8, u8, u16)> {
        if self.address & CONFIG_ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) as u8;
        let devfn = (self.address >> 8) as u8;
        let reg = (self.address & 0xfc) as u16 + port_offset as u16;
        Some((bus, devfn, reg))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (1, 1) => self.reset.read(0, data),
            (4..=7, _) => match self.target(offset - 4) {
                Some((bus, devfn, reg)) => {
                    self.root.lock().unwrap().config_read(bus, devfn, reg, data)
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => {
                let mut b = [0; 4];
                b.copy_from_slice(data);
                // Bits 1:0 are reserved and read back as zero.
                self.address = u32::from_le_bytes(b) & !0x3;
            }
            (1, 1) => self.reset.write(0, data),
            (4..=7, _) => {
                if let Some((bus, devfn, reg)) = self.target(offset - 4) {
                    self.root
                        .lock()
                        .unwrap()
                        .config_write(bus, devfn, reg, data);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::shared;
    use crate::irq::MachineRequest;
    use crate::pci::config::BarKind;
    use crate::pci::{PciConfig, devfn};

    /// A device with an I/O BAR and a memory BAR, each answering with its own byte.
    pub(crate) struct TestFunction {
        config: PciConfig,
        io: Arc<Mutex<Echo>>,
        mem: Arc<Mutex<Echo>>,
    }

    pub(crate) struct Echo(pub(crate) u8);
    impl BusDevice for Echo {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(self.0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    impl TestFunction {
        pub(crate) fn new() -> Self {
            let mut config = PciConfig::new(0x1af4, 0x1000, 0x02_00_00, 0);
            config.set_interrupt_pin(1);
            config.add_bar(0, BarKind::Io, 0x20).unwrap();
            config
                .add_bar(
                    1,
                    BarKind::Mem32 {
                        prefetchable: false,
                    },
                    0x1000,
                )
                .unwrap();
            TestFunction {
                config,
                io: shared(Echo(0x10)),
                mem: shared(Echo(0x20)),
            }
        }
    }

    impl PciFunction for TestFunction {
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            self.config.read(offset, data);
        }
        fn config_write(&mut self, offset: u16, data: &[u8]) {
            self.config.write(offset, data);
        }
        fn regions(&self) -> Vec<PciRegion> {
            self.config
                .bar_regions(&[(0, self.io.clone()), (1, self.mem.clone())])
        }
    }

    struct Rig {
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        requests: crossbeam_channel::Receiver<MachineRequest>,
    }

    /// The PIO bus with mechanism 1 on it, and a test function at 00:03.0.
    fn rig() -> Rig {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut root = PciRoot::new(pio.clone(), mmio.clone());
        root.add(devfn(3, 0), Arc::new(Mutex::new(TestFunction::new())));
        let root = Arc::new(Mutex::new(root));
        pio.insert(
            PCI_CONFIG_IO_BASE,
            PCI_CONFIG_IO_LEN,
            shared(PciConfigIo::new(root, ResetControl::new(tx))),
        )
        .unwrap();
        Rig {
            pio,
            mmio,
            requests: rx,
        }
    }

    // SeaBIOS's src/hw/pci.c, port by port.
    fn cmd(pio: &Bus, bdf: u16, reg: u16) {
        let a = 0x8000_0000 | u32::from(bdf) << 8 | u32::from(reg & 0xfc);
        pio.write(0xcf8, &a.to_le_bytes());
    }
    fn readl(pio: &Bus, bdf: u16, reg: u16) -> u32 {
        cmd(pio, bdf, reg);
        let mut b = [0; 4];
        pio.read(0xcfc, &mut b);
        u32::from_le_bytes(b)
    }
    fn readw(pio: &Bus, bdf: u16, reg: u16) -> u16 {
        cmd(pio, bdf, reg);
        let mut b = [0; 2];
        pio.read(0xcfc + u64::from(reg & 2), &mut b);
        u16::from_le_bytes(b)
    }
    fn writel(pio: &Bus, bdf: u16, reg: u16, v: u32) {
        cmd(pio, bdf, reg);
        pio.write(0xcfc, &v.to_le_bytes());
    }
    fn writew(pio: &Bus, bdf: u16, reg: u16, v: u16) {
        cmd(pio, bdf, reg);
        pio.write(0xcfc + u64::from(reg & 2), &v.to_le_bytes());
    }

    const BDF: u16 = 3 << 3;

    #[test]
    fn absent_functions_read_all_ones() {
        let r = rig();
        assert_eq!(readw(&r.pio, BDF, 0), 0x1af4);
        assert_eq!(readw(&r.pio, BDF, 2), 0x1000);
        assert_eq!(readw(&r.pio, 2 << 3, 0), 0xffff);
        assert_eq!(readl(&r.pio, 1 << 8 | BDF, 0), 0xffff_ffff);
        // With the enable bit clear the data port reads ones too.
        r.pio.write(0xcf8, &(u32::from(BDF) << 8).to_le_bytes());
        let mut b = [0; 4];
        r.pio.read(0xcfc, &mut b);
        assert_eq!(b, [0xff; 4]);
        // The address dword reads back.
        cmd(&r.pio, BDF, 0x3e);
        r.pio.read(0xcf8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_183c);
    }

    #[test]
    fn bars_are_sized_assigned_and_follow_decode() {
        let r = rig();
        // pci_bios_get_bar: save, write ones, read the mask back.
        for (bar, want) in [(0x10, 0xffff_ffe1u32), (0x14, 0xffff_f000)] {
            let old = readl(&r.pio, BDF, bar);
            writel(&r.pio, BDF, bar, !0);
            assert_eq!(readl(&r.pio, BDF, bar), want);
            writel(&r.pio, BDF, bar, old);
        }
        // pci_region_map_one_entry, then pci_bios_init_device turns decode on.
        writel(&r.pio, BDF, 0x10, 0xc000);
        writel(&r.pio, BDF, 0x14, 0xfebf_0000);
        let mut b = [0];
        assert!(!r.pio.read(0xc000, &mut b));
        writew(&r.pio, BDF, 0x04, 0x0003);
        assert!(r.pio.read(0xc01f, &mut b));
        assert_eq!(b, [0x10]);
        assert!(r.mmio.read(0xfebf_0ffc, &mut b));
        assert_eq!(b, [0x20]);
        // Moving the BAR moves the region.
        writel(&r.pio, BDF, 0x10, 0xc100);
        assert!(!r.pio.read(0xc000, &mut b));
        assert!(r.pio.read(0xc100, &mut b));
        // Memory decode off: gone from MMIO, I/O stays.
        writew(&r.pio, BDF, 0x04, 0x0001);
        assert!(!r.mmio.read(0xfebf_0000, &mut b));
        assert!(r.pio.read(0xc100, &mut b));
        writew(&r.pio, BDF, 0x04, 0);
        assert!(!r.pio.read(0xc100, &mut b));
    }

    #[test]
    fn overlapping_bar_is_logged_not_fatal_and_retried() {
        let r = rig();
        let squatter = shared(Echo(0x77));
        r.pio.insert(0xc000, 0x10, squatter).unwrap();
        writel(&r.pio, BDF, 0x10, 0xc000);
        writew(&r.pio, BDF, 0x04, 0x0001);
        let mut b = [0];
        r.pio.read(0xc000, &mut b);
        assert_eq!(b, [0x77]);
        r.pio.remove(0xc000);
        // The next configuration write maps it.
        writew(&r.pio, BDF, 0x04, 0x0001);
        r.pio.read(0xc000, &mut b);
        assert_eq!(b, [0x10]);
    }

    #[test]
    fn cf9_resets_while_dword_cf8_latches() {
        let r = rig();
        cmd(&r.pio, BDF, 0);
        r.pio.write(0xcf9, &[0x02]);
        assert!(r.requests.try_recv().is_err());
        r.pio.write(0xcf9, &[0x06]);
        assert_eq!(r.requests.try_recv(), Ok(MachineRequest::Reset));
        // The address latched before is still there; a dword write still latches.
        assert_eq!(readw(&r.pio, BDF, 0), 0x1af4);
        let mut b = [0; 4];
        r.pio.read(0xcf8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_1800);
        assert!(r.requests.try_recv().is_err());
        // Byte and word writes to 0xCF8 do not latch.
        r.pio.write(0xcf8, &[0x00]);
        r.pio.write(0xcfa, &[0x00, 0x00]);
        r.pio.read(0xcf8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_1800);
    }

    #[test]
    fn config_access_as_firmware_code() {
        let pio = Arc::new(Bus::new());
        let mut root = PciRoot::new(pio.clone(), Arc::new(Bus::new()));
        root.add(devfn(3, 0), Arc::new(Mutex::new(TestFunction::new())));
        root.config_write(0, devfn(3, 0), 0x10, &0xd000u32.to_le_bytes());
        root.config_write(0, devfn(3, 0), 0x04, &[0x01]);
        let mut b = [0];
        assert!(pio.read(0xd000, &mut b));
        let mut w = [0; 2];
        root.config_read(0, devfn(3, 0), 0, &mut w);
        assert_eq!(w, [0xf4, 0x1a]);
        // Misaligned or oversized accesses do not reach the function.
        let mut big = [0; 8];
        root.config_read(0, devfn(3, 0), 0, &mut big);
        assert_eq!(big, [0xff; 8]);
        root.config_read(0, devfn(3, 0), 255, &mut w);
        assert_eq!(w, [0xff; 2]);
    }
}
