//! The PIIX3 PCI-to-ISA bridge at 01.0 (8086:7000, class 0601, multi-function so firmware
//! looks for 01.1..01.7) and its PCI interrupt routing.
//!
//! Emulated: the four PIRQ route control registers (0x60..=0x63, bit 7 = disabled, bits 3:0
//! = ISA IRQ; 0x80 at reset) and the INTx wiring of QEMU's `pc`: INTx# pin P of the device
//! in slot S drives PIRQ (S - 1 + P - 1) mod 4, counting pins from INTA# = 1 as the
//! interrupt-pin register does (SeaBIOS's piix_pci_slot_get_irq, QEMU's
//! pci_slot_get_pirq). A PIRQ that is asserted drives two things: the I/O APIC input
//! GSI 16 + PIRQ (for an ACPI _PRT that routes INTx straight to the I/O APIC), and, while
//! the firmware has routed it, the ISA IRQ in its route register (the PIC path, which is
//! what SeaBIOS's tables and a PIC-mode OS use). Several devices may share a PIRQ and
//! several PIRQs an ISA IRQ: a line stays high while any source holds it high.
//!
//! Route values other than the ISA IRQs the PIIX3 can steer to (3-7, 9-12, 14, 15) are
//! stored but treated as disabled, so a guest cannot drive the timer or cascade lines.
//! Not emulated: the ELCR (KVM's in-kernel PIC answers ports 0x4D0/0x4D1 itself), DMA and
//! the X-bus. The other ISA-bridge registers (0x40..=0xFF) are plain storage holding
//! QEMU's reset values, as QEMU's PIIX3 has them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::irq::IrqLine;

use super::regs::*;
use super::{PciConfig, PciFunction, PciRegion};

pub const PIIX3_DEVICE_ID: u16 = 0x7000;
const CLASS_ISA_BRIDGE: u32 = 0x06_01_00;
/// PIRQA#..PIRQD# route control.
pub const PIRQ_ROUTE: u16 = 0x60;
pub const PIRQ_COUNT: usize = 4;
const PIRQ_DISABLED: u8 = 0x80;
const PIRQ_ROUTE_MASK: u8 = 0x8f;
/// The I/O APIC input of PIRQA#; PIRQB#..D# follow.
pub const PIRQ_GSI_BASE: u32 = 16;
/// ISA IRQs the route registers may steer a PIRQ to.
const ROUTABLE_IRQS: u16 = 0b1101_1110_1111_1000;

/// DEVSEL# timing "medium" (status bits 10:9 = 01).
const STATUS_DEVSEL_MEDIUM: u16 = 0x0200;
/// Reset values QEMU's PIIX3 gives the registers we only store: IORT, XBCS, TOM, MBIRQ0,
/// MBDMA0/1, PCSC, SMICNTL, SMIEN... (read back through qtest from QEMU's `pc`).
const QEMU_DEFAULTS: [(u16, u8); 9] = [
    (0x4c, 0x4d),
    (0x4e, 0x03),
    (0x69, 0x02),
    (0x70, 0x80),
    (0x76, 0x0c),
    (0x77, 0x0c),
    (0x78, 0x02),
    (0xa0, 0x08),
    (0xa8, 0x0f),
];

/// Gives the interrupt line for a GSI (the VMM's KVM_IRQ_LINE wrapper, or a test recorder).
pub type GsiLines = Arc<dyn Fn(u32) -> Arc<dyn IrqLine> + Send + Sync>;

/// The PIRQ number INTx `pin` (1 = INTA#) of the device in `slot` drives.
pub fn pirq_of(slot: u8, pin: u8) -> usize {
    (usize::from(slot) + usize::from(pin.max(1)) + PIRQ_COUNT * 2 - 2) % PIRQ_COUNT
}

struct RouterState {
    routes: [u8; PIRQ_COUNT],
    /// How many INTx sources hold each PIRQ high.
    asserted: [u32; PIRQ_COUNT],
    /// ISA IRQs driven high now, one bit each.
    isa_high: u16,
}

struct Router {
    ioapic: [Arc<dyn IrqLine>; PIRQ_COUNT],
    isa: Vec<Arc<dyn IrqLine>>,
    state: Mutex<RouterState>,
}

impl Router {
    /// Drives the ISA IRQs as the current routes and PIRQ levels say, touching only the
    /// lines whose level changes.
    fn sync_isa(&self, st: &mut RouterState) {
        let mut want = 0u16;
        for (pirq, &route) in st.routes.iter().enumerate() {
            let irq = route & 0x0f;
            if st.asserted[pirq] > 0
                && route & PIRQ_DISABLED == 0
                && ROUTABLE_IRQS & (1 << irq) != 0
            {
                want |= 1 << irq;
            }
        }
        let changed = want ^ st.isa_high;
        for irq in 0..16 {
            if changed & (1 << irq) != 0 {
                self.isa[irq].set_level(want & (1 << irq) != 0);
            }
        }
        st.isa_high = want;
    }
}

/// One device's INTx# line into the router.
struct IntxLine {
    router: Arc<Router>,
    pirq: usize,
    level: AtomicBool,
}

impl IrqLine for IntxLine {
    fn set_level(&self, high: bool) {
        let mut st = self.router.state.lock().unwrap();
        if self.level.swap(high, Ordering::SeqCst) == high {
            return;
        }
        let n = &mut st.asserted[self.pirq];
        let was_high = *n > 0;
        *n = if high {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
        let is_high = *n > 0;
        if was_high != is_high {
            self.router.ioapic[self.pirq].set_level(is_high);
        }
        self.router.sync_isa(&mut st);
    }
}

pub struct Piix3 {
    config: PciConfig,
    router: Arc<Router>,
}

impl Piix3 {
    pub fn new(gsi: GsiLines) -> Piix3 {
        let mut config = PciConfig::new(VENDOR_INTEL, PIIX3_DEVICE_ID, CLASS_ISA_BRIDGE, 0);
        config.set_subsystem(SUBSYSTEM_VENDOR_QEMU, SUBSYSTEM_ID_QEMU);
        config.set_header_type(HEADER_TYPE_MULTI_FUNCTION);
        config.set_u16(STATUS, STATUS_DEVSEL_MEDIUM);
        // The other ISA-bridge registers are plain storage with QEMU's reset values.
        for off in 0x40..=0xff {
            config.set_wmask_u8(off, 0xff);
        }
        for (off, v) in QEMU_DEFAULTS {
            config.set_u8(off, v);
        }
        for i in 0..PIRQ_COUNT as u16 {
            config.set_u8(PIRQ_ROUTE + i, PIRQ_DISABLED);
            config.set_wmask_u8(PIRQ_ROUTE + i, PIRQ_ROUTE_MASK);
        }
        let router = Router {
            ioapic: std::array::from_fn(|i| gsi(PIRQ_GSI_BASE + i as u32)),
            isa: (0..16).map(|i| gsi(i)).collect(),
            state: Mutex::new(RouterState {
                routes: [PIRQ_DISABLED; PIRQ_COUNT],
                asserted: [0; PIRQ_COUNT],
                isa_high: 0,
            }),
        };
        Piix3 {
            config,
            router: Arc::new(router),
        }
    }

    /// The line a PCI device in `slot` (bus 0) raises for its interrupt `pin` (1 = INTA#,
    /// as in its interrupt-pin register; 0 is taken as INTA#).
    pub fn intx_line(&self, slot: u8, pin: u8) -> Arc<dyn IrqLine> {
        Arc::new(IntxLine {
            router: self.router.clone(),
            pirq: pirq_of(slot, pin),
            level: AtomicBool::new(false),
        })
    }

    /// The route registers as the guest last wrote them.
    pub fn routes(&self) -> [u8; PIRQ_COUNT] {
        std::array::from_fn(|i| self.config.u8(PIRQ_ROUTE + i as u16))
    }
}

impl PciFunction for Piix3 {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        let end = offset as usize + data.len();
        if (offset as usize) < PIRQ_ROUTE as usize + PIRQ_COUNT && end > PIRQ_ROUTE as usize {
            let routes = self.routes();
            let mut st = self.router.state.lock().unwrap();
            st.routes = routes;
            self.router.sync_isa(&mut st);
        }
    }

    fn reset(&mut self) {
        self.config.reset();
        let routes = self.routes();
        let mut st = self.router.state.lock().unwrap();
        st.routes = routes;
        self.router.sync_isa(&mut st);
    }

    fn regions(&self) -> Vec<PciRegion> {
        Vec::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::irq::RecordingIrq;
    use std::collections::HashMap;

    /// GSI lines that remember their level, by number.
    #[derive(Clone, Default)]
    pub(crate) struct Gsis(Arc<Mutex<HashMap<u32, Arc<RecordingIrq>>>>);

    impl Gsis {
        pub(crate) fn lines(&self) -> GsiLines {
            let map = self.0.clone();
            Arc::new(move |gsi| {
                map.lock().unwrap().entry(gsi).or_default().clone() as Arc<dyn IrqLine>
            })
        }
        pub(crate) fn line(&self, gsi: u32) -> Arc<RecordingIrq> {
            self.0.lock().unwrap()[&gsi].clone()
        }
        /// GSIs that are high now.
        pub(crate) fn high(&self) -> Vec<u32> {
            let mut v: Vec<u32> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, l)| l.level())
                .map(|(&g, _)| g)
                .collect();
            v.sort();
            v
        }
    }

    #[test]
    fn swizzle_matches_seabios() {
        // Slot 1 INTA# is PIRQA; each slot and each pin moves one along.
        assert_eq!(pirq_of(1, 1), 0);
        assert_eq!(pirq_of(2, 1), 1);
        assert_eq!(pirq_of(3, 1), 2);
        assert_eq!(pirq_of(3, 2), 3);
        assert_eq!(pirq_of(4, 2), 0);
        assert_eq!(pirq_of(0, 1), 3);
        assert_eq!(pirq_of(31, 4), 1);
    }

    #[test]
    fn ids_and_route_defaults() {
        let mut p = Piix3::new(Gsis::default().lines());
        let mut d = [0; 4];
        p.config_read(0, &mut d);
        assert_eq!(d, [0x86, 0x80, 0x00, 0x70]);
        p.config_read(0x08, &mut d);
        assert_eq!(&d[1..], &[0x00, 0x01, 0x06]);
        p.config_read(0x0c, &mut d);
        assert_eq!(d[2], 0x80);
        p.config_read(0x60, &mut d);
        assert_eq!(d, [0x80; 4]);
        p.config_read(0x04, &mut d);
        assert_eq!(d, [0x00, 0x00, 0x00, 0x02]);
        p.config_read(0x4c, &mut d);
        assert_eq!(d, [0x4d, 0x00, 0x03, 0x00]);
        p.config_write(0x4c, &[0x4c]);
        p.config_read(0x4c, &mut d);
        assert_eq!(d[0], 0x4c);
        p.config_write(0x60, &[0xff, 0x0b, 0x7a, 0x05]);
        assert_eq!(p.routes(), [0x8f, 0x0b, 0x0a, 0x05]);
    }

    #[test]
    fn intx_drives_ioapic_and_routed_isa_irq() {
        let gsis = Gsis::default();
        let mut p = Piix3::new(gsis.lines());
        // Slot 3 INTA# is PIRQC#; not routed yet: only the I/O APIC input.
        let a = p.intx_line(3, 1);
        a.set_level(true);
        assert_eq!(gsis.high(), vec![18]);
        // SeaBIOS's piix_isa_bridge_setup: PIRQA..D = 10, 10, 11, 11.
        p.config_write(0x60, &[10, 10, 11, 11]);
        assert_eq!(gsis.high(), vec![11, 18]);
        // A second device on the same PIRQ (slot 7 INTA#) keeps it up when the first drops.
        let b = p.intx_line(7, 1);
        b.set_level(true);
        a.set_level(false);
        assert_eq!(gsis.high(), vec![11, 18]);
        assert_eq!(gsis.line(18).edges(), 1);
        b.set_level(false);
        assert_eq!(gsis.high(), Vec::<u32>::new());
        // Repeated levels change nothing.
        b.set_level(false);
        assert_eq!(gsis.high(), Vec::<u32>::new());

        // Re-routing an asserted PIRQ moves the ISA line; disabling drops it.
        let c = p.intx_line(1, 1); // PIRQA
        c.set_level(true);
        assert_eq!(gsis.high(), vec![10, 16]);
        p.config_write(0x60, &[5]);
        assert_eq!(gsis.high(), vec![5, 16]);
        p.config_write(0x60, &[0x85]);
        assert_eq!(gsis.high(), vec![16]);
        // Routes to the timer or the cascade are refused.
        p.config_write(0x60, &[0x00]);
        p.config_write(0x60, &[0x02]);
        assert_eq!(gsis.high(), vec![16]);
        assert_eq!(gsis.line(0).edges(), 0);
        // Two PIRQs on one ISA IRQ: it stays high while either is.
        p.config_write(0x60, &[11]);
        let d = p.intx_line(1, 3); // PIRQC, routed to 11 above
        d.set_level(true);
        c.set_level(false);
        assert_eq!(gsis.high(), vec![11, 18]);
        d.set_level(false);
        assert!(!gsis.line(11).level());
    }
}
