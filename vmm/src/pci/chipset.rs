//! The i440FX/PIIX chipset put together as QEMU's `pc` machine has it: the PCI root with
//! mechanism 1 at 0xCF8 (and the reset control register at 0xCF9), the host bridge at
//! 00.0, the PIIX3 ISA bridge at 01.0, the PIIX4 PM function at 01.3 with its SCI on
//! GSI 9, and the APM control port 0xB2. Other PCI devices are added to [`PcChipset::root`]
//! with an interrupt line from [`PcChipset::intx_line`].

use std::sync::{Arc, Mutex};

use crate::bus::{Bus, BusError};
use crate::devices::reset::ResetControl;
use crate::irq::MachineRequests;

use super::i440fx::I440fx;
use super::piix3::{GsiLines, PIRQ_ROUTE, Piix3};
use super::piix4_pm::{
    APM_CNT_PORT, APM_PORTS, PM_IO_BASE_DEFAULT, PMBA, PMREGMISC, Piix4Pm, SCI_IRQ,
};
use super::regs::INTERRUPT_LINE;
use super::{PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN, PciConfigIo, PciFunction, PciRoot, devfn};

pub const HOST_BRIDGE_DEVFN: u8 = devfn(0, 0);
pub const ISA_BRIDGE_DEVFN: u8 = devfn(1, 0);
pub const PM_DEVFN: u8 = devfn(1, 3);
/// The ISA IRQs SeaBIOS routes PIRQA#..PIRQD# to (src/fw/pciinit.c, pci_irqs).
pub const SEABIOS_PIRQ_IRQS: [u8; 4] = [10, 10, 11, 11];

pub struct PcChipset {
    pub root: Arc<Mutex<PciRoot>>,
    pub host_bridge: Arc<Mutex<I440fx>>,
    pub isa_bridge: Arc<Mutex<Piix3>>,
    pub pm: Arc<Mutex<Piix4Pm>>,
}

impl PcChipset {
    /// Builds the chipset and puts its ports on `pio`: 0xCF8..=0xCFF and 0xB2..=0xB3.
    /// `ram_size` is all guest RAM (the host bridge records it as QEMU's does).
    pub fn new(
        ram_size: u64,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        gsi: GsiLines,
        requests: MachineRequests,
    ) -> Result<PcChipset, BusError> {
        let mut i440fx = I440fx::new();
        i440fx.set_ram_size(ram_size);
        let host_bridge = Arc::new(Mutex::new(i440fx));
        let isa_bridge = Arc::new(Mutex::new(Piix3::new(gsi.clone())));
        let pm = Arc::new(Mutex::new(Piix4Pm::new(gsi(SCI_IRQ), requests.clone())));
        let mut root = PciRoot::new(pio.clone(), mmio);
        root.add(HOST_BRIDGE_DEVFN, host_bridge.clone());
        root.add(ISA_BRIDGE_DEVFN, isa_bridge.clone());
        root.add(PM_DEVFN, pm.clone());
        let root = Arc::new(Mutex::new(root));
        pio.insert(
            PCI_CONFIG_IO_BASE,
            PCI_CONFIG_IO_LEN,
            Arc::new(Mutex::new(PciConfigIo::new(
                root.clone(),
                ResetControl::new(requests),
            ))),
        )?;
        pio.insert(APM_CNT_PORT, APM_PORTS, pm.lock().unwrap().apm_control())?;
        Ok(PcChipset {
            root,
            host_bridge,
            isa_bridge,
            pm,
        })
    }

    /// Adds a device on bus 0.
    pub fn add(&self, devfn: u8, f: Arc<Mutex<dyn PciFunction>>) {
        self.root.lock().unwrap().add(devfn, f);
    }

    /// The interrupt line for INTx `pin` (1 = INTA#) of the device in `slot`.
    pub fn intx_line(&self, slot: u8, pin: u8) -> Arc<dyn crate::irq::IrqLine> {
        self.isa_bridge.lock().unwrap().intx_line(slot, pin)
    }

    /// A machine reset: the PCI functions to power-on state (PAM, PIRQ routes, PM base,
    /// SCI_EN, every BAR), their regions off the buses.
    pub fn reset(&self) {
        self.root.lock().unwrap().reset();
    }

    pub fn press_power_button(&self) {
        self.pm.lock().unwrap().press_power_button();
    }

    /// What SeaBIOS does to the chipset (pciinit.c: piix_isa_bridge_setup and
    /// piix4_pm_config_setup), for direct kernel boot where no firmware runs: PIRQs to
    /// IRQs 10/10/11/11, PM I/O at 0x600 enabled, SCI line 9 in the interrupt-line
    /// register. Devices' own interrupt-line registers are the caller's (or the OS's).
    pub fn program_like_seabios(&self) {
        let mut root = self.root.lock().unwrap();
        root.config_write(0, ISA_BRIDGE_DEVFN, PIRQ_ROUTE, &SEABIOS_PIRQ_IRQS);
        root.config_write(0, PM_DEVFN, INTERRUPT_LINE, &[SCI_IRQ as u8]);
        root.config_write(
            0,
            PM_DEVFN,
            PMBA,
            &(u32::from(PM_IO_BASE_DEFAULT) | 1).to_le_bytes(),
        );
        root.config_write(0, PM_DEVFN, PMREGMISC, &[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::MachineRequest;
    use crate::pci::piix3::tests::Gsis;
    use crate::pci::piix4_pm::{
        ACPI_ENABLE, PM_TIMER_HZ, PM1_CNT_SCI_EN, PM1_CNT_SLP_EN, PM1_EN_PWRBTN, PM1_STS_PWRBTN,
    };
    use crate::pci::root::tests::TestFunction;
    use std::time::{Duration, Instant};

    struct Machine {
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        gsis: Gsis,
        chipset: PcChipset,
        requests: crossbeam_channel::Receiver<MachineRequest>,
    }

    fn machine() -> Machine {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let gsis = Gsis::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let chipset =
            PcChipset::new(512 << 20, pio.clone(), mmio.clone(), gsis.lines(), tx).unwrap();
        Machine {
            pio,
            mmio,
            gsis,
            chipset,
            requests: rx,
        }
    }

    // Port I/O exactly as SeaBIOS's src/hw/pci.c and src/x86.h do it.
    fn outl(pio: &Bus, port: u64, v: u32) {
        pio.write(port, &v.to_le_bytes());
    }
    fn outw(pio: &Bus, port: u64, v: u16) {
        pio.write(port, &v.to_le_bytes());
    }
    fn outb(pio: &Bus, port: u64, v: u8) {
        pio.write(port, &[v]);
    }
    fn inl(pio: &Bus, port: u64) -> u32 {
        let mut b = [0; 4];
        pio.read(port, &mut b);
        u32::from_le_bytes(b)
    }
    fn inw(pio: &Bus, port: u64) -> u16 {
        let mut b = [0; 2];
        pio.read(port, &mut b);
        u16::from_le_bytes(b)
    }
    fn inb(pio: &Bus, port: u64) -> u8 {
        let mut b = [0];
        pio.read(port, &mut b);
        b[0]
    }
    fn ioconfig_cmd(bdf: u16, addr: u16) -> u32 {
        0x8000_0000 | u32::from(bdf) << 8 | u32::from(addr & 0xfc)
    }
    fn readl(pio: &Bus, bdf: u16, addr: u16) -> u32 {
        outl(pio, 0xcf8, ioconfig_cmd(bdf, addr));
        inl(pio, 0xcfc)
    }
    fn readw(pio: &Bus, bdf: u16, addr: u16) -> u16 {
        outl(pio, 0xcf8, ioconfig_cmd(bdf, addr));
        inw(pio, 0xcfc + u64::from(addr & 2))
    }
    fn readb(pio: &Bus, bdf: u16, addr: u16) -> u8 {
        outl(pio, 0xcf8, ioconfig_cmd(bdf, addr));
        inb(pio, 0xcfc + u64::from(addr & 3))
    }
    fn writel(pio: &Bus, bdf: u16, addr: u16, v: u32) {
        outl(pio, 0xcf8, ioconfig_cmd(bdf, addr));
        outl(pio, 0xcfc, v);
    }
    fn writew(pio: &Bus, bdf: u16, addr: u16, v: u16) {
        outl(pio, 0xcf8, ioconfig_cmd(bdf, addr));
        outw(pio, 0xcfc + u64::from(addr & 2), v);
    }
    fn writeb(pio: &Bus, bdf: u16, addr: u16, v: u8) {
        outl(pio, 0xcf8, ioconfig_cmd(bdf, addr));
        outb(pio, 0xcfc + u64::from(addr & 3), v);
    }

    /// SeaBIOS's pci_next: skips functions 1..7 of single-function devices.
    fn enumerate(pio: &Bus) -> Vec<(u16, u16, u16)> {
        let mut found = Vec::new();
        let mut bdf: u16 = 0;
        loop {
            if bdf >= 256 {
                return found;
            }
            let v = readw(pio, bdf, 0x00);
            if v != 0x0000 && v != 0xffff {
                found.push((bdf, v, readw(pio, bdf, 0x02)));
                if bdf & 7 == 0 && readb(pio, bdf, 0x0e) & 0x80 == 0 {
                    bdf += 8;
                } else {
                    bdf += 1;
                }
            } else if bdf & 7 == 0 {
                bdf += 8;
            } else {
                bdf += 1;
            }
        }
    }

    /// SeaBIOS's piix4_pm_config_setup on 01.3.
    fn piix4_pm_setup(pio: &Bus) {
        let bdf = u16::from(PM_DEVFN);
        writeb(pio, bdf, 0x3c, 9);
        writel(pio, bdf, 0x40, 0x600 | 1);
        writeb(pio, bdf, 0x80, 0x01);
        writel(pio, bdf, 0x90, 0x700 | 1);
        writeb(pio, bdf, 0xd2, 0x09);
    }

    #[test]
    fn seabios_enumerates_the_chipset() {
        let m = machine();
        m.chipset
            .add(devfn(3, 0), Arc::new(Mutex::new(TestFunction::new())));
        assert_eq!(
            enumerate(&m.pio),
            vec![
                (0x00, 0x8086, 0x1237),
                (0x08, 0x8086, 0x7000),
                (0x0b, 0x8086, 0x7113),
                (0x18, 0x1af4, 0x1000),
            ]
        );
        assert_eq!(readw(&m.pio, 0x10, 0x00), 0xffff);
        // The QEMU northbridge signature and the class codes SeaBIOS matches on.
        assert_eq!(readl(&m.pio, 0x00, 0x2c), 0x1100_1af4);
        assert_eq!(readw(&m.pio, 0x00, 0x0a), 0x0600);
        assert_eq!(readw(&m.pio, 0x08, 0x0a), 0x0601);
        assert_eq!(readw(&m.pio, 0x0b, 0x0a), 0x0680);
        assert_eq!(readb(&m.pio, 0x0b, 0x08), 3);
        assert_eq!(readb(&m.pio, 0x0b, 0x3d), 1);
        assert_eq!(readw(&m.pio, 0x08, 0x2e), 0x1100);
    }

    #[test]
    fn pm_block_after_piix4_pm_setup() {
        let m = machine();
        assert_eq!(inl(&m.pio, 0x608), 0xffff_ffff);
        piix4_pm_setup(&m.pio);
        assert_eq!(readl(&m.pio, 0x0b, 0x40), 0x601);
        // The PM timer runs at 3.579545 MHz.
        let start = Instant::now();
        let t0 = inl(&m.pio, 0x608);
        std::thread::sleep(Duration::from_millis(30));
        let t1 = inl(&m.pio, 0x608);
        let elapsed = start.elapsed();
        assert_eq!(t1 >> 24, 0);
        let ticks = u64::from(t1.wrapping_sub(t0) & 0xff_ffff);
        let max = elapsed.as_nanos() as u64 * PM_TIMER_HZ / 1_000_000_000 + 1;
        assert!(
            (30 * PM_TIMER_HZ / 1000..=max).contains(&ticks),
            "{ticks} ticks in {elapsed:?}"
        );

        // The power button, once the OS enabled ACPI mode and the button event.
        outw(&m.pio, 0x602, PM1_EN_PWRBTN);
        outb(&m.pio, 0xb2, ACPI_ENABLE);
        assert!(!m.gsis.line(9).level());
        m.chipset.press_power_button();
        assert!(m.gsis.line(9).level());
        assert_ne!(inw(&m.pio, 0x600) & PM1_STS_PWRBTN, 0);
        outw(&m.pio, 0x600, PM1_STS_PWRBTN);
        assert!(!m.gsis.line(9).level());

        // \_S5: SLP_TYP 0 with SLP_EN.
        outw(&m.pio, 0x604, PM1_CNT_SCI_EN | PM1_CNT_SLP_EN);
        assert_eq!(m.requests.try_recv(), Ok(MachineRequest::PowerOff));

        // Moving the PM base moves the block.
        writel(&m.pio, 0x0b, 0x40, 0xb001);
        assert_eq!(inl(&m.pio, 0x608), 0xffff_ffff);
        assert_ne!(inl(&m.pio, 0xb008), 0xffff_ffff);
        // Turning PMIOSE off removes it.
        writeb(&m.pio, 0x0b, 0x80, 0);
        assert_eq!(inl(&m.pio, 0xb008), 0xffff_ffff);
    }

    #[test]
    fn cf9_reset_and_cf8_latch_share_the_port() {
        let m = machine();
        outl(&m.pio, 0xcf8, ioconfig_cmd(0x08, 0x00));
        outb(&m.pio, 0xcf9, 0x06);
        assert_eq!(m.requests.try_recv(), Ok(MachineRequest::Reset));
        assert_eq!(inl(&m.pio, 0xcf8), 0x8000_0800);
        assert_eq!(inw(&m.pio, 0xcfc), 0x8086);
        outl(&m.pio, 0xcf8, ioconfig_cmd(0x0b, 0x00));
        assert_eq!(inw(&m.pio, 0xcfe), 0x7113);
        assert!(m.requests.try_recv().is_err());
    }

    #[test]
    fn bars_through_config_io_land_on_the_buses() {
        let m = machine();
        m.chipset
            .add(devfn(3, 0), Arc::new(Mutex::new(TestFunction::new())));
        let bdf = 0x18;
        // pci_bios_get_bar for both BARs.
        let mut sizes = Vec::new();
        for bar in [0x10, 0x14] {
            let old = readl(&m.pio, bdf, bar);
            writel(&m.pio, bdf, bar, !0);
            sizes.push(readl(&m.pio, bdf, bar));
            writel(&m.pio, bdf, bar, old);
        }
        assert_eq!(sizes, vec![0xffff_ffe1, 0xffff_f000]);
        writel(&m.pio, bdf, 0x10, 0xc000);
        writel(&m.pio, bdf, 0x14, 0xfebf_f000);
        writew(&m.pio, bdf, 0x04, 0x0007);
        assert_eq!(inb(&m.pio, 0xc000), 0x10);
        let mut b = [0];
        assert!(m.mmio.read(0xfebf_f000, &mut b));
        assert_eq!(b, [0x20]);
        writew(&m.pio, bdf, 0x04, 0x0000);
        assert_eq!(inb(&m.pio, 0xc000), 0xff);
        assert!(!m.mmio.read(0xfebf_f000, &mut b));
    }

    #[test]
    fn pirq_routing_drives_the_lines_firmware_chose() {
        let m = machine();
        // piix_isa_bridge_setup.
        for (i, irq) in SEABIOS_PIRQ_IRQS.iter().enumerate() {
            writeb(&m.pio, 0x08, 0x60 + i as u16, *irq);
        }
        assert_eq!(readl(&m.pio, 0x08, 0x60), 0x0b0b_0a0a);
        // Slot 3 INTA# is PIRQC#: ISA IRQ 11 and I/O APIC input 18.
        let line = m.chipset.intx_line(3, 1);
        line.set_level(true);
        assert_eq!(m.gsis.high(), vec![11, 18]);
        line.set_level(false);
        assert_eq!(m.gsis.high(), Vec::<u32>::new());
        // Slot 4 INTA# is PIRQD#, slot 5 INTA# wraps to PIRQA#.
        let d = m.chipset.intx_line(4, 1);
        let a = m.chipset.intx_line(5, 1);
        d.set_level(true);
        a.set_level(true);
        assert_eq!(m.gsis.high(), vec![10, 11, 16, 19]);
    }

    #[test]
    fn direct_boot_programming_matches_seabios() {
        let m = machine();
        m.chipset.program_like_seabios();
        assert_eq!(readl(&m.pio, 0x08, 0x60), 0x0b0b_0a0a);
        assert_eq!(readb(&m.pio, 0x0b, 0x3c), 9);
        assert_eq!(m.chipset.pm.lock().unwrap().pm_io_base(), Some(0x600));
        assert_ne!(inl(&m.pio, 0x608), 0xffff_ffff);
    }

    #[test]
    fn reset_returns_the_chipset_to_power_on() {
        let m = machine();
        m.chipset.program_like_seabios();
        let line = m.chipset.intx_line(3, 1);
        line.set_level(true);
        assert_eq!(m.gsis.high(), vec![11, 18]);
        outb(&m.pio, 0xb2, ACPI_ENABLE);
        writeb(&m.pio, 0x00, 0x59, 0x30);
        m.chipset.reset();
        // PIRQs disabled again: only the I/O APIC input stays (the device still asserts).
        assert_eq!(m.gsis.high(), vec![18]);
        assert_eq!(readl(&m.pio, 0x08, 0x60), 0x8080_8080);
        assert_eq!(readb(&m.pio, 0x00, 0x59), 0);
        assert_eq!(inl(&m.pio, 0x608), 0xffff_ffff);
        m.chipset.program_like_seabios();
        assert_eq!(inw(&m.pio, 0x604) & PM1_CNT_SCI_EN, 0);
    }

    /// Every dword of 00.0, 01.0 and 01.3 against what QEMU 7.2's `-M pc -m 512` reports
    /// at power on (read through qtest with `-S`): all-zero dwords are left out.
    #[test]
    fn power_on_config_matches_qemu_pc() {
        let m = machine();
        let qemu: [(u16, &[(u16, u32)]); 3] = [
            (
                0x00,
                &[
                    (0x00, 0x1237_8086),
                    (0x08, 0x0600_0002),
                    (0x2c, 0x1100_1af4),
                    (0x54, 0x4000_0000),
                    (0x70, 0x0002_0000),
                ],
            ),
            (
                0x08,
                &[
                    (0x00, 0x7000_8086),
                    (0x04, 0x0200_0000),
                    (0x08, 0x0601_0000),
                    (0x0c, 0x0080_0000),
                    (0x2c, 0x1100_1af4),
                    (0x4c, 0x0003_004d),
                    (0x60, 0x8080_8080),
                    (0x68, 0x0000_0200),
                    (0x70, 0x0000_0080),
                    (0x74, 0x0c0c_0000),
                    (0x78, 0x0000_0002),
                    (0xa0, 0x0000_0008),
                    (0xa8, 0x0000_000f),
                ],
            ),
            (
                0x0b,
                &[
                    (0x00, 0x7113_8086),
                    (0x04, 0x0280_0000),
                    (0x08, 0x0680_0003),
                    (0x2c, 0x1100_1af4),
                    (0x3c, 0x0000_0100),
                    (0x40, 0x0000_0001),
                    // QEMU without SMM (KVM here) presets APMC_EN; the qtest run had SMM.
                    (0x58, 0x0200_0000),
                    (0x5c, 0x1000_0000),
                    (0x60, 0x6000_0000),
                    // QEMU has an SMBus controller at 0xb100, enabled; we have none.
                    (0x90, 0x0000_0001),
                ],
            ),
        ];
        for (bdf, want) in qemu {
            for off in (0..256).step_by(4) {
                let expect = want.iter().find(|(o, _)| *o == off).map_or(0, |w| w.1);
                assert_eq!(readl(&m.pio, bdf, off), expect, "{bdf:#x} offset {off:#x}");
            }
        }
    }

    /// Whatever a guest does to the chipset's ports, nothing panics.
    #[test]
    fn survives_any_port_access() {
        let m = machine();
        m.chipset.program_like_seabios();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let ports = [
            0xcf8u64, 0xcf9, 0xcfa, 0xcfb, 0xcfc, 0xcfd, 0xcfe, 0xcff, 0xb2, 0xb3,
        ];
        for _ in 0..20_000 {
            let r = next();
            let width = [1usize, 2, 4][(r % 3) as usize];
            let v = (r >> 8) as u32;
            let port = if r & 0x100_0000 != 0 {
                ports[((r >> 32) % ports.len() as u64) as usize]
            } else {
                0x600 + (r >> 40) % 0x48
            };
            // Keep the PM block and the reset register from being too busy to test.
            if port == 0xcf9 && v & 4 != 0 {
                continue;
            }
            if r & 1 == 0 {
                m.pio.write(port, &v.to_le_bytes()[..width]);
            } else {
                let mut b = [0u8; 4];
                m.pio.read(port, &mut b[..width]);
            }
        }
        while m.requests.try_recv().is_ok() {}
    }
}
