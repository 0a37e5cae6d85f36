//! The PIIX4 power-management function at 01.3 (8086:7113 rev 3, class 0680, INTA#): the
//! ACPI fixed hardware the guest's ACPI tables point at.
//!
//! Emulated:
//! - Configuration: the PM I/O base (PMBA, 0x40, bit 0 reads 1: I/O space) enabled by
//!   PMREGMISC (0x80) bit 0, as SeaBIOS's piix4_pm_setup programs them; SMBus base (0x90)
//!   and host configuration (0xD2) are plain storage: there is no SMBus controller, so
//!   nothing answers at the SMBus base even when SeaBIOS enables it (Linux's i2c-piix4
//!   then sees a controller that never completes a transfer). The other device-specific
//!   registers are storage with QEMU's reset values.
//!   DEVACTB (0x58) reports APMC_EN, which tells SeaBIOS "SMM is already set up" so it does
//!   not try to use SMM, which this VMM does not have (QEMU does the same without SMM).
//! - The 64-byte PM I/O block: PM1a event (status at +0, write-1-to-clear: TMR_STS,
//!   PWRBTN_STS; enable at +2: TMR_EN, GBL_EN, PWRBTN_EN, RTC_EN), PM1a control at +4 (SCI_EN; SLP_EN with SLP_TYP 0, our
//!   DSDT's \_S5, sends [`MachineRequest::PowerOff`]; other sleep types are logged and
//!   ignored), the ACPI PM timer at +8 (3.579545 MHz from the host's monotonic clock, 24
//!   bits: TMR_VAL_EXT = 0 in the FADT), and a GPE0 block at +0x0C (status, enable: two
//!   bytes each) with no event sources yet.
//! - SCI on ISA IRQ 9, level: high while SCI_EN and any enabled status bit is set.
//! - The APM control port 0xB2 ([`ApmControl`]): the FADT's SMI_CMD. Writing ACPI_ENABLE
//!   (0xF1) sets SCI_EN and ACPI_DISABLE (0xF0) clears it, which is what an SMI handler
//!   does on a real board; 0xB3 is a scratch byte.
//!
//! TMR_STS is set whenever bit 23 of the timer has flipped since the last look (an access
//! to the block or [`Piix4Pm::poll`]); a VMM that lets the guest enable the timer-overflow
//! SCI calls `poll` at least every 2.3 s. Not emulated: global lock events (GBL_STS,
//! BIOS_STS: GBL_EN is only stored) and the RTC's status (RTC_EN is only stored), bus-master
//! status, the device monitors and traps, throttling (P_CNT), suspend to RAM or disk.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bus::{BusDevice, SharedDevice};
use crate::irq::{IrqLine, MachineRequest, MachineRequests};

use super::regs::*;
use super::{PciConfig, PciFunction, PciRegion, PciSpace};

pub const PIIX4_PM_DEVICE_ID: u16 = 0x7113;
pub const PIIX4_PM_REVISION: u8 = 0x03;
const CLASS_BRIDGE_OTHER: u32 = 0x06_80_00;

/// SeaBIOS's choice of PM I/O base (and what direct kernel boot programs).
pub const PM_IO_BASE_DEFAULT: u16 = 0x600;
pub const PM_IO_LEN: u64 = 64;
pub const SCI_IRQ: u32 = 9;

// Configuration registers.
pub const PMBA: u16 = 0x40;
pub const DEVACTB: u16 = 0x58;
pub const PMREGMISC: u16 = 0x80;
pub const SMBBA: u16 = 0x90;
pub const SMBHSTCFG: u16 = 0xd2;
const PMBA_MASK: u32 = 0xffc0;
const SMBBA_MASK: u32 = 0xfff0;
const IO_SPACE_INDICATOR: u32 = 1;
const PMIOSE: u8 = 1;
/// APMC_EN (DEVACTB bit 25), byte 0x5B bit 1.
const DEVACTB_APMC_EN_BYTE: (u16, u8) = (0x5b, 0x02);

// The PM I/O block: offsets from the PM base, for the FADT too.
pub const PM1_STS: u64 = 0x00;
pub const PM1_EN: u64 = 0x02;
pub const PM1_CNT: u64 = 0x04;
pub const PM_TMR: u64 = 0x08;
pub const GPE0_STS: u64 = 0x0c;
pub const GPE0_EN: u64 = 0x0e;
/// FADT lengths: PM1 event block (status + enable), control, timer, GPE0 block.
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1_CNT_LEN: u8 = 2;
pub const PM_TMR_LEN: u8 = 4;
pub const GPE0_BLK_LEN: u8 = 4;

pub const PM1_STS_TMR: u16 = 1 << 0;
pub const PM1_STS_PWRBTN: u16 = 1 << 8;
pub const PM1_STS_WAK: u16 = 1 << 15;
pub const PM1_EN_TMR: u16 = 1 << 0;
pub const PM1_EN_GBL: u16 = 1 << 5;
pub const PM1_EN_PWRBTN: u16 = 1 << 8;
pub const PM1_EN_RTC: u16 = 1 << 10;
/// Status bits this model can set; the others read as zero.
const PM1_STS_IMPLEMENTED: u16 = PM1_STS_TMR | PM1_STS_PWRBTN | PM1_STS_WAK;
/// Enable bits that hold what is written: the events the FADT does not rule out. GBL_EN
/// and RTC_EN are kept although their status bits are never set here (no firmware ever
/// releases the global lock, and the RTC alarm reaches the guest as IRQ 8 while it runs;
/// with no sleep states there is nothing for it to wake), as on QEMU's PIIX4: ACPICA
/// writes each enable it installs a handler for and reads it back, and a bit that does
/// not stick is "Could not enable … event" in the guest's log (and, for the global lock,
/// "No response from Global Lock hardware, disabling lock"). SLPBTN_EN is not kept: the
/// FADT says there is no fixed sleep button.
const PM1_EN_STORED: u16 = PM1_EN_TMR | PM1_EN_GBL | PM1_EN_PWRBTN | PM1_EN_RTC;
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
pub const PM1_CNT_SLP_TYP_MASK: u16 = 0x7 << PM1_CNT_SLP_TYP_SHIFT;
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// SCI_EN, BM_RLD and SLP_TYP hold what is written; SLP_EN is an action and reads 0.
const PM1_CNT_STORED: u16 = PM1_CNT_SCI_EN | 1 << 1 | PM1_CNT_SLP_TYP_MASK;
/// The SLP_TYP our DSDT gives \_S5 (QEMU's PIIX4 uses the same).
pub const S5_SLP_TYP: u16 = 0;

pub const PM_TIMER_HZ: u64 = 3_579_545;
const PM_TIMER_MASK: u32 = 0x00ff_ffff;

/// The APM control/status ports: the FADT's SMI_CMD and the commands it lists.
pub const APM_CNT_PORT: u64 = 0xb2;
pub const APM_PORTS: u64 = 2;
pub const ACPI_ENABLE: u8 = 0xf1;
pub const ACPI_DISABLE: u8 = 0xf0;

/// Fast back-to-back capable, DEVSEL# timing medium.
const STATUS_FAST_B2B_DEVSEL_MEDIUM: u16 = 0x0280;
/// QEMU's PIIX4 reset values for registers we only store (DEVRESD, DEVRESB bits).
const QEMU_DEFAULTS: [(u16, u8); 2] = [(0x5f, 0x10), (0x63, 0x60)];

/// Time since the machine started.
type Clock = Box<dyn Fn() -> Duration + Send>;

/// The PM I/O block's state; it is the device on the bus at the PM base.
pub struct PmRegs {
    sts: u16,
    en: u16,
    cnt: u16,
    gpe_sts: u16,
    gpe_en: u16,
    /// The timer period (bit 23 of the counter) last seen, for TMR_STS.
    last_half_period: u64,
    clock: Clock,
    sci: Arc<dyn IrqLine>,
    sci_high: bool,
    requests: MachineRequests,
}

impl PmRegs {
    fn ticks(&self) -> u64 {
        let ns = (self.clock)().as_nanos();
        (ns * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64
    }

    fn timer(&self) -> u32 {
        self.ticks() as u32 & PM_TIMER_MASK
    }

    /// Sets TMR_STS if the timer's bit 23 flipped since the last look.
    fn check_timer(&mut self) {
        let half = self.ticks() >> 23;
        if half != self.last_half_period {
            self.last_half_period = half;
            self.sts |= PM1_STS_TMR;
        }
    }

    fn update_sci(&mut self) {
        let pending = self.sts & self.en != 0 || self.gpe_sts & self.gpe_en != 0;
        let level = self.cnt & PM1_CNT_SCI_EN != 0 && pending;
        if level != self.sci_high {
            self.sci_high = level;
            self.sci.set_level(level);
        }
    }

    fn byte(&self, off: u64, timer: u32) -> u8 {
        let lo_hi = |v: u16, base: u64| (v >> (8 * (off - base))) as u8;
        match off {
            0..=1 => lo_hi(self.sts, PM1_STS),
            2..=3 => lo_hi(self.en, PM1_EN),
            4..=5 => lo_hi(self.cnt, PM1_CNT),
            8..=11 => (timer >> (8 * (off - PM_TMR))) as u8,
            0xc..=0xd => lo_hi(self.gpe_sts, GPE0_STS),
            0xe..=0xf => lo_hi(self.gpe_en, GPE0_EN),
            _ => 0,
        }
    }

    fn control_written(&mut self, v: u16) {
        if v & PM1_CNT_SLP_EN == 0 {
            return;
        }
        let typ = (v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
        if typ == S5_SLP_TYP {
            tracing::info!("acpi: guest entered S5 (soft off)");
            let _ = self.requests.send(MachineRequest::PowerOff);
        } else {
            tracing::info!("acpi: guest asked for sleep type {typ}, which is not supported");
        }
    }
}

impl BusDevice for PmRegs {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.check_timer();
        // One timer sample per access, so a dword read is consistent.
        let timer = self.timer();
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.byte(offset + i as u64, timer);
        }
        self.update_sci();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.check_timer();
        let mut cnt_written = false;
        for (i, &v) in data.iter().enumerate() {
            let off = offset + i as u64;
            let shift = 8 * (off & 1);
            let v16 = u16::from(v) << shift;
            let byte_mask = 0xffu16 << shift;
            match off {
                0..=1 => self.sts &= !(v16 & PM1_STS_IMPLEMENTED),
                2..=3 => self.en = (self.en & !byte_mask) | (v16 & PM1_EN_STORED & byte_mask),
                4..=5 => {
                    // SLP_EN is kept only until the access is done.
                    let stored = PM1_CNT_STORED | PM1_CNT_SLP_EN;
                    self.cnt = (self.cnt & !byte_mask) | (v16 & stored & byte_mask);
                    cnt_written = true;
                }
                0xc..=0xd => self.gpe_sts &= !v16,
                0xe..=0xf => self.gpe_en = (self.gpe_en & !byte_mask) | v16,
                _ => {}
            }
        }
        if cnt_written {
            let cnt = self.cnt;
            self.cnt &= !PM1_CNT_SLP_EN;
            self.control_written(cnt);
        }
        self.update_sci();
    }
}

/// Ports 0xB2 (APM control, the FADT's SMI_CMD) and 0xB3 (APM status, scratch).
pub struct ApmControl {
    regs: Arc<Mutex<PmRegs>>,
    control: u8,
    status: u8,
}

impl BusDevice for ApmControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        data[0] = if offset == 0 {
            self.control
        } else {
            self.status
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let v = data[0];
        if offset != 0 {
            self.status = v;
            return;
        }
        self.control = v;
        let mut regs = self.regs.lock().unwrap();
        match v {
            ACPI_ENABLE => regs.cnt |= PM1_CNT_SCI_EN,
            ACPI_DISABLE => regs.cnt &= !PM1_CNT_SCI_EN,
            _ => return,
        }
        regs.update_sci();
    }
}

pub struct Piix4Pm {
    config: PciConfig,
    regs: Arc<Mutex<PmRegs>>,
}

impl Piix4Pm {
    pub fn new(sci: Arc<dyn IrqLine>, requests: MachineRequests) -> Piix4Pm {
        let start = Instant::now();
        Self::with_clock(sci, requests, Box::new(move || start.elapsed()))
    }

    fn with_clock(sci: Arc<dyn IrqLine>, requests: MachineRequests, clock: Clock) -> Piix4Pm {
        let mut config = PciConfig::new(
            VENDOR_INTEL,
            PIIX4_PM_DEVICE_ID,
            CLASS_BRIDGE_OTHER,
            PIIX4_PM_REVISION,
        );
        config.set_subsystem(SUBSYSTEM_VENDOR_QEMU, SUBSYSTEM_ID_QEMU);
        config.set_interrupt_pin(1);
        config.set_u16(STATUS, STATUS_FAST_B2B_DEVSEL_MEDIUM);
        // Registers we do not model are storage, as on QEMU's PIIX4; the ones we model get
        // their own masks below.
        for off in 0x40..=0xff {
            config.set_wmask_u8(off, 0xff);
        }
        for (off, v) in QEMU_DEFAULTS {
            config.set_u8(off, v);
        }
        config.set_u32(PMBA, IO_SPACE_INDICATOR);
        config.set_wmask_u32(PMBA, PMBA_MASK);
        config.set_wmask_u8(PMREGMISC, PMIOSE);
        config.set_u32(SMBBA, IO_SPACE_INDICATOR);
        config.set_wmask_u32(SMBBA, SMBBA_MASK);
        config.set_wmask_u8(SMBHSTCFG, 0x0f);
        config.set_u8(DEVACTB_APMC_EN_BYTE.0, DEVACTB_APMC_EN_BYTE.1);
        let mut regs = PmRegs {
            sts: 0,
            en: 0,
            cnt: 0,
            gpe_sts: 0,
            gpe_en: 0,
            last_half_period: 0,
            clock,
            sci,
            sci_high: false,
            requests,
        };
        regs.last_half_period = regs.ticks() >> 23;
        Piix4Pm {
            config,
            regs: Arc::new(Mutex::new(regs)),
        }
    }

    /// The device for ports [`APM_CNT_PORT`]..+[`APM_PORTS`].
    pub fn apm_control(&self) -> Arc<Mutex<ApmControl>> {
        Arc::new(Mutex::new(ApmControl {
            regs: self.regs.clone(),
            control: 0,
            status: 0,
        }))
    }

    /// Where the PM I/O block decodes now, if it does.
    pub fn pm_io_base(&self) -> Option<u16> {
        let base = (self.config.u32(PMBA) & PMBA_MASK) as u16;
        (self.config.u8(PMREGMISC) & PMIOSE != 0 && base != 0).then_some(base)
    }

    /// The power button: PWRBTN_STS, and an SCI if the guest enabled it.
    pub fn press_power_button(&mut self) {
        let mut regs = self.regs.lock().unwrap();
        regs.sts |= PM1_STS_PWRBTN;
        regs.update_sci();
    }

    /// Samples the PM timer for overflow (TMR_STS), raising the SCI if enabled.
    pub fn poll(&mut self) {
        let mut regs = self.regs.lock().unwrap();
        regs.check_timer();
        regs.update_sci();
    }
}

impl PciFunction for Piix4Pm {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn reset(&mut self) {
        self.config.reset();
        let mut regs = self.regs.lock().unwrap();
        regs.sts = 0;
        regs.en = 0;
        regs.cnt = 0;
        regs.gpe_sts = 0;
        regs.gpe_en = 0;
        regs.update_sci();
    }

    fn regions(&self) -> Vec<PciRegion> {
        let Some(base) = self.pm_io_base() else {
            return Vec::new();
        };
        let dev: SharedDevice = self.regs.clone();
        vec![PciRegion {
            space: PciSpace::Pio,
            base: u64::from(base),
            len: PM_IO_LEN,
            dev,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingIrq;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Clone, Default)]
    struct FakeClock(Arc<AtomicU64>);
    impl FakeClock {
        fn advance(&self, d: Duration) {
            self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        }
        fn boxed(&self) -> Clock {
            let c = self.0.clone();
            Box::new(move || Duration::from_nanos(c.load(Ordering::SeqCst)))
        }
    }

    struct Rig {
        pm: Piix4Pm,
        sci: Arc<RecordingIrq>,
        requests: crossbeam_channel::Receiver<MachineRequest>,
        clock: FakeClock,
    }

    fn rig() -> Rig {
        let sci = RecordingIrq::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let clock = FakeClock::default();
        let pm = Piix4Pm::with_clock(sci.clone(), tx, clock.boxed());
        Rig {
            pm,
            sci,
            requests: rx,
            clock,
        }
    }

    fn io_read16(pm: &Piix4Pm, off: u64) -> u16 {
        let mut b = [0; 2];
        pm.regs.lock().unwrap().read(off, &mut b);
        u16::from_le_bytes(b)
    }
    fn io_write16(pm: &Piix4Pm, off: u64, v: u16) {
        pm.regs.lock().unwrap().write(off, &v.to_le_bytes());
    }
    fn timer(pm: &Piix4Pm) -> u32 {
        let mut b = [0; 4];
        pm.regs.lock().unwrap().read(PM_TMR, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn config_as_seabios_programs_it() {
        let mut r = rig();
        let mut d = [0; 4];
        r.pm.config_read(0, &mut d);
        assert_eq!(d, [0x86, 0x80, 0x13, 0x71]);
        r.pm.config_read(0x08, &mut d);
        assert_eq!(d, [0x03, 0x00, 0x80, 0x06]);
        r.pm.config_read(0x3c, &mut d);
        assert_eq!(d[1], 1);
        r.pm.config_read(0x04, &mut d);
        assert_eq!(d, [0x00, 0x00, 0x80, 0x02]);
        r.pm.config_read(0x5c, &mut d);
        assert_eq!(d, [0x00, 0x00, 0x00, 0x10]);
        // SeaBIOS's smm.c skips SMM set-up when APMC_EN is already on.
        r.pm.config_read(DEVACTB, &mut d);
        assert_ne!(u32::from_le_bytes(d) & 1 << 25, 0);
        assert!(r.pm.regions().is_empty());
        r.pm.config_write(PMBA, &0x601u32.to_le_bytes());
        assert!(r.pm.regions().is_empty());
        r.pm.config_write(PMREGMISC, &[0x01]);
        let regions = r.pm.regions();
        assert_eq!(regions.len(), 1);
        assert_eq!(
            (regions[0].space, regions[0].base, regions[0].len),
            (PciSpace::Pio, 0x600, 64)
        );
        r.pm.config_read(PMBA, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x601);
        // A base with low bits set is aligned to the 64-byte block.
        r.pm.config_write(PMBA, &0xb03fu32.to_le_bytes());
        assert_eq!(r.pm.pm_io_base(), Some(0xb000));
        r.pm.config_write(SMBBA, &0x701u32.to_le_bytes());
        r.pm.config_write(SMBHSTCFG, &[0x09]);
        r.pm.config_read(SMBBA, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x701);
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_and_wraps_at_24_bits() {
        let r = rig();
        let t0 = timer(&r.pm);
        r.clock.advance(Duration::from_millis(10));
        let t1 = timer(&r.pm);
        assert_eq!(t1.wrapping_sub(t0), 35_795);
        // The counter is 24 bits; its overflow (bit 23 flipping) sets TMR_STS.
        assert_eq!(io_read16(&r.pm, PM1_STS) & PM1_STS_TMR, 0);
        r.clock.advance(Duration::from_secs(3));
        assert!(timer(&r.pm) <= PM_TIMER_MASK);
        assert_ne!(io_read16(&r.pm, PM1_STS) & PM1_STS_TMR, 0);
        io_write16(&r.pm, PM1_STS, PM1_STS_TMR);
        assert_eq!(io_read16(&r.pm, PM1_STS) & PM1_STS_TMR, 0);
    }

    #[test]
    fn pm_timer_follows_the_host_clock() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let pm = Piix4Pm::new(RecordingIrq::new(), tx);
        let start = Instant::now();
        let t0 = timer(&pm);
        std::thread::sleep(Duration::from_millis(20));
        let t1 = timer(&pm);
        let elapsed = start.elapsed();
        let ticks = u64::from(t1.wrapping_sub(t0) & PM_TIMER_MASK);
        let max = elapsed.as_nanos() as u64 * PM_TIMER_HZ / 1_000_000_000 + 1;
        assert!(
            (20 * PM_TIMER_HZ / 1000..=max).contains(&ticks),
            "{ticks} ticks"
        );
    }

    #[test]
    fn power_button_raises_sci_once_acpi_is_on() {
        let mut r = rig();
        let apm = r.pm.apm_control();
        r.pm.press_power_button();
        // Not enabled: status only.
        assert_ne!(io_read16(&r.pm, PM1_STS) & PM1_STS_PWRBTN, 0);
        assert!(!r.sci.level());
        io_write16(&r.pm, PM1_EN, PM1_EN_PWRBTN);
        assert!(!r.sci.level());
        // The OS switches to ACPI mode through SMI_CMD.
        apm.lock().unwrap().write(0, &[ACPI_ENABLE]);
        assert_ne!(io_read16(&r.pm, PM1_CNT) & PM1_CNT_SCI_EN, 0);
        assert!(r.sci.level());
        // The OS's handler acknowledges: the level drops.
        io_write16(&r.pm, PM1_STS, PM1_STS_PWRBTN);
        assert!(!r.sci.level());
        r.pm.press_power_button();
        assert!(r.sci.level());
        assert_eq!(r.sci.edges(), 2);
        apm.lock().unwrap().write(0, &[ACPI_DISABLE]);
        assert!(!r.sci.level());
    }

    #[test]
    fn slp_en_with_s5_powers_off() {
        let r = rig();
        // Sleep type without SLP_EN: nothing.
        io_write16(&r.pm, PM1_CNT, PM1_CNT_SCI_EN | 1 << PM1_CNT_SLP_TYP_SHIFT);
        assert!(r.requests.try_recv().is_err());
        // S3-ish type with SLP_EN: logged, ignored.
        io_write16(
            &r.pm,
            PM1_CNT,
            PM1_CNT_SCI_EN | 1 << PM1_CNT_SLP_TYP_SHIFT | PM1_CNT_SLP_EN,
        );
        assert!(r.requests.try_recv().is_err());
        // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN: _S5 is 0.
        io_write16(&r.pm, PM1_CNT, PM1_CNT_SCI_EN);
        io_write16(&r.pm, PM1_CNT, PM1_CNT_SCI_EN | PM1_CNT_SLP_EN);
        assert_eq!(r.requests.try_recv(), Ok(MachineRequest::PowerOff));
        // SLP_EN reads back as 0.
        assert_eq!(io_read16(&r.pm, PM1_CNT), PM1_CNT_SCI_EN);
        // A byte write of the high half alone works too.
        r.pm.regs
            .lock()
            .unwrap()
            .write(PM1_CNT + 1, &[(PM1_CNT_SLP_EN >> 8) as u8]);
        assert_eq!(r.requests.try_recv(), Ok(MachineRequest::PowerOff));
    }

    #[test]
    fn enables_that_acpica_installs_read_back() {
        let r = rig();
        // What Linux's ACPICA writes for the events it installs handlers for, one at a
        // time with a read back; SLPBTN_EN (bit 9, no fixed sleep button) does not stick.
        for bit in [PM1_EN_TMR, PM1_EN_GBL, PM1_EN_PWRBTN, PM1_EN_RTC] {
            let before = io_read16(&r.pm, PM1_EN);
            io_write16(&r.pm, PM1_EN, before | bit);
            assert_eq!(io_read16(&r.pm, PM1_EN), before | bit, "bit {bit:#x}");
        }
        io_write16(&r.pm, PM1_EN, 0xffff);
        assert_eq!(io_read16(&r.pm, PM1_EN), PM1_EN_STORED);
        // None of the stored-only enables raises an SCI by itself.
        r.pm.apm_control().lock().unwrap().write(0, &[ACPI_ENABLE]);
        io_write16(&r.pm, PM1_EN, PM1_EN_GBL | PM1_EN_RTC);
        assert!(!r.sci.level());
    }

    #[test]
    fn gpe_block_is_status_and_enable() {
        let r = rig();
        io_write16(&r.pm, GPE0_EN, 0x0004);
        assert_eq!(io_read16(&r.pm, GPE0_EN), 0x0004);
        assert_eq!(io_read16(&r.pm, GPE0_STS), 0);
        // Unused offsets read zero and ignore writes.
        io_write16(&r.pm, 0x20, 0xffff);
        assert_eq!(io_read16(&r.pm, 0x20), 0);
    }
}
