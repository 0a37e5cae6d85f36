//! The PC's CMOS RAM and real-time clock (a Motorola MC146818 as the PC/AT wired it):
//! index port 0x70 (bit 7 masks NMI), data port 0x71, ISA IRQ 8, 128 bytes.
//!
//! Emulated:
//! - The clock, from the host's wall clock in UTC plus an offset the guest sets by writing
//!   the time registers (whole seconds). Register B selects BCD or binary and 12 or 24 h;
//!   its SET bit freezes the registers so the guest can write a consistent time, and
//!   clearing it starts the clock from what was written.
//! - Register A's UIP bit is set during the last 244 µs of every second, as on the chip, so
//!   firmware that waits for UIP to clear before reading sees it move.
//! - Register C is read-to-clear: UF (a second ended), AF (the alarm in registers 1/3/5
//!   matched, 0xC0..0xFF meaning "any"), PF (a periodic tick at register A's rate) and IRQF.
//!   Flags are computed when C is read or [`Cmos::poll`] runs; the interrupt is raised only
//!   from those points, so a VMM that wants periodic/update/alarm interrupts without the
//!   guest polling calls `poll` on the interval [`Cmos::poll_interval`] suggests.
//! - Register D always reports valid RAM and time (VRT).
//! - The bytes QEMU's `pc` machine puts in CMOS for the firmware: memory sizes, CPU count,
//!   equipment byte, no floppies, boot order (0x3D/0x38), the PS/2 century copy (0x37).
//!   Like QEMU, no checksum at 0x2E/0x2F (SeaBIOS does not check one).
//!
//! Not emulated: daylight-saving adjustment (DSE), the square-wave output, the divider
//! chain reset (register A DV bits are stored only), and the NMI mask: the index port's
//! bit 7 is remembered but NMIs are KVM's and nothing here generates one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;
use crate::irq::IrqLine;

pub const CMOS_BASE: u64 = 0x70;
pub const CMOS_PORTS: u64 = 2;
pub const RTC_IRQ: u32 = 8;

const CMOS_SIZE: usize = 128;

// Clock registers.
const REG_SECONDS: u8 = 0x00;
const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES: u8 = 0x02;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS: u8 = 0x04;
const REG_HOURS_ALARM: u8 = 0x05;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// The century byte where the IBM PC/AT (and SeaBIOS, and Linux's ACPI FADT default) keep it.
pub const REG_CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
const A_RATE_MASK: u8 = 0x0f;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_SQWE: u8 = 0x08;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;

/// An alarm byte with both top bits set matches every value.
const ALARM_DONT_CARE: u8 = 0xc0;
/// The update cycle takes 244 µs at the end of each second (MC146818 datasheet, UIP).
const UPDATE_CYCLE_NS: u32 = 244_000;
const SECS_PER_DAY: i64 = 86_400;

// Firmware bytes (see QEMU's pc_cmos_init; SeaBIOS reads these in src/fw/paravirt.c and
// src/post.c when fw_cfg does not say otherwise).
const CMOS_SHUTDOWN_STATUS: u8 = 0x0f;
const CMOS_FLOPPY_TYPES: u8 = 0x10;
const CMOS_EQUIPMENT: u8 = 0x14;
const CMOS_BASE_MEM_LOW: u8 = 0x15;
const CMOS_BASE_MEM_HIGH: u8 = 0x16;
const CMOS_EXT_MEM_LOW: u8 = 0x17;
const CMOS_EXT_MEM_HIGH: u8 = 0x18;
const CMOS_EXT_MEM2_LOW: u8 = 0x30;
const CMOS_EXT_MEM2_HIGH: u8 = 0x31;
const CMOS_MEM_ABOVE_16M_LOW: u8 = 0x34;
const CMOS_MEM_ABOVE_16M_HIGH: u8 = 0x35;
const CMOS_MEM_ABOVE_4G_LOW: u8 = 0x5b;
const CMOS_MEM_ABOVE_4G_MID: u8 = 0x5c;
const CMOS_MEM_ABOVE_4G_HIGH: u8 = 0x5d;
const CMOS_CPU_COUNT_MINUS_1: u8 = 0x5f;
/// Third boot device (high nibble) and the floppy-signature check flag (bit 0).
const CMOS_BOOT_FLAG1: u8 = 0x38;
/// First (low nibble) and second (high nibble) boot device.
const CMOS_BOOT_FLAG2: u8 = 0x3d;
/// The century again, where IBM PS/2 machines kept it; QEMU fills it in at power on.
const CMOS_PS2_CENTURY: u8 = 0x37;

/// Boot device codes in CMOS bytes 0x3D/0x38 (QEMU's pc set_boot_dev, SeaBIOS boot.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BootDevice {
    Floppy = 1,
    Disk = 2,
    Cdrom = 3,
    Network = 4,
}

/// Equipment byte: math coprocessor present (bit 1) and PS/2 mouse (bit 2); no floppy.
const EQUIPMENT_FPU_AND_MOUSE: u8 = 0x06;
/// Register A at power on: 32.768 kHz time base (DV = 010), 1024 Hz periodic rate.
const REG_A_DEFAULT: u8 = 0x26;
/// Register B at power on: 24-hour, BCD, no interrupts (what PC firmware expects).
const REG_B_DEFAULT: u8 = B_24H;

/// What the machine tells the firmware through CMOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmosConfig {
    pub ram_below_4g: u64,
    pub ram_above_4g: u64,
    pub cpus: u8,
}

/// Seconds and nanoseconds since the Unix epoch, UTC.
type Clock = Box<dyn Fn() -> Duration + Send>;

fn host_wall_clock() -> Duration {
    // A host clock before 1970 is a broken host; the RTC then reads 1970.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub struct Cmos {
    ram: [u8; CMOS_SIZE],
    index: u8,
    nmi_masked: bool,
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// The last guest second at which UF/AF were evaluated.
    last_second: i64,
    /// The last periodic-interrupt tick number seen (host time / period).
    last_periodic_tick: u128,
    irq: Arc<dyn IrqLine>,
    irq_high: bool,
    clock: Clock,
}

impl Cmos {
    pub fn new(cfg: CmosConfig, irq: Arc<dyn IrqLine>) -> Cmos {
        Self::with_clock(cfg, irq, Box::new(host_wall_clock))
    }

    fn with_clock(cfg: CmosConfig, irq: Arc<dyn IrqLine>, clock: Clock) -> Cmos {
        let mut c = Cmos {
            ram: [0; CMOS_SIZE],
            index: 0,
            nmi_masked: false,
            offset: 0,
            last_second: 0,
            last_periodic_tick: 0,
            irq,
            irq_high: false,
            clock,
        };
        c.ram[REG_A as usize] = REG_A_DEFAULT;
        c.ram[REG_B as usize] = REG_B_DEFAULT;
        c.ram[REG_D as usize] = D_VRT;
        c.set_firmware_bytes(cfg);
        let (now, _) = c.guest_now();
        c.ram[CMOS_PS2_CENTURY as usize] = c.encode((Fields::from_unix(now).year / 100) as u8);
        c.last_second = now;
        c.last_periodic_tick = c.periodic_tick();
        c
    }

    fn set_firmware_bytes(&mut self, cfg: CmosConfig) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let r = &mut self.ram;
        r[CMOS_SHUTDOWN_STATUS as usize] = 0;
        r[CMOS_FLOPPY_TYPES as usize] = 0;
        r[CMOS_EQUIPMENT as usize] = EQUIPMENT_FPU_AND_MOUSE;

        let base = (cfg.ram_below_4g / KIB).min(640);
        r[CMOS_BASE_MEM_LOW as usize] = base as u8;
        r[CMOS_BASE_MEM_HIGH as usize] = (base >> 8) as u8;

        // Extended memory above 1 MiB, in KiB, as far as 16 bits go (the first 64 MiB).
        let ext = (cfg.ram_below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        for (lo, hi) in [
            (CMOS_EXT_MEM_LOW, CMOS_EXT_MEM_HIGH),
            (CMOS_EXT_MEM2_LOW, CMOS_EXT_MEM2_HIGH),
        ] {
            r[lo as usize] = ext as u8;
            r[hi as usize] = (ext >> 8) as u8;
        }

        // Memory between 16 MiB and the PCI hole, in 64 KiB blocks.
        let above_16m = (cfg.ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        r[CMOS_MEM_ABOVE_16M_LOW as usize] = above_16m as u8;
        r[CMOS_MEM_ABOVE_16M_HIGH as usize] = (above_16m >> 8) as u8;

        // Memory from 4 GiB up, in 64 KiB blocks, 24 bits (up to 1 TiB).
        let above_4g = (cfg.ram_above_4g / (64 * KIB)).min(0xff_ffff);
        r[CMOS_MEM_ABOVE_4G_LOW as usize] = above_4g as u8;
        r[CMOS_MEM_ABOVE_4G_MID as usize] = (above_4g >> 8) as u8;
        r[CMOS_MEM_ABOVE_4G_HIGH as usize] = (above_4g >> 16) as u8;

        r[CMOS_CPU_COUNT_MINUS_1 as usize] = cfg.cpus.saturating_sub(1);

        self.set_boot_order(&[BootDevice::Disk, BootDevice::Floppy, BootDevice::Cdrom]);
    }

    /// The boot order SeaBIOS reads from CMOS on QEMU (its `-boot` letters), used for
    /// devices a fw_cfg `bootorder` file does not rank. Up to three entries; the default
    /// is QEMU's "cad": disk, floppy, CD.
    pub fn set_boot_order(&mut self, order: &[BootDevice]) {
        let nibble = |i: usize| order.get(i).map_or(0, |&d| d as u8);
        self.ram[CMOS_BOOT_FLAG2 as usize] = nibble(1) << 4 | nibble(0);
        // Bit 0 clear: the floppy boot-signature check stays on, as QEMU's default.
        self.ram[CMOS_BOOT_FLAG1 as usize] = nibble(2) << 4;
    }

    /// The chip's RESET pin (a machine reset): interrupt enables and flags clear; the RAM,
    /// the clock and its format stay, since they are battery-backed (and the firmware reads
    /// the shutdown status byte 0x0F to tell a warm reset from a cold one).
    pub fn reset(&mut self) {
        self.ram[REG_B as usize] &= !(B_PIE | B_AIE | B_UIE | B_SQWE);
        self.ram[REG_C as usize] = 0;
        if self.irq_high {
            self.irq_high = false;
            self.irq.set_level(false);
        }
    }

    /// Whether the guest has masked NMIs through bit 7 of the index port.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Guest wall-clock time: whole seconds since the epoch and the nanoseconds into it.
    fn guest_now(&self) -> (i64, u32) {
        let host = (self.clock)();
        let secs = i64::try_from(host.as_secs())
            .unwrap_or(i64::MAX / 2)
            .saturating_add(self.offset);
        (secs, host.subsec_nanos())
    }

    fn reg_b(&self) -> u8 {
        self.ram[REG_B as usize]
    }

    fn binary(&self) -> bool {
        self.reg_b() & B_DM_BINARY != 0
    }

    fn encode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            (v / 10) << 4 | (v % 10)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            // Tolerates non-BCD nibbles a guest may write instead of rejecting them.
            (v >> 4).wrapping_mul(10).wrapping_add(v & 0x0f)
        }
    }

    fn hour_to_reg(&self, h: u8) -> u8 {
        if self.reg_b() & B_24H != 0 {
            self.encode(h)
        } else {
            let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
            self.encode(h12) | if h >= 12 { 0x80 } else { 0 }
        }
    }

    fn hour_from_reg(&self, v: u8) -> u8 {
        if self.reg_b() & B_24H != 0 {
            self.decode(v)
        } else {
            let h12 = self.decode(v & 0x7f) % 12;
            h12 + if v & 0x80 != 0 { 12 } else { 0 }
        }
    }

    /// The clock registers' values for guest second `t`, in the current format.
    fn clock_bytes(&self, t: i64) -> [(u8, u8); 8] {
        let f = Fields::from_unix(t);
        [
            (REG_SECONDS, self.encode(f.sec)),
            (REG_MINUTES, self.encode(f.min)),
            (REG_HOURS, self.hour_to_reg(f.hour)),
            (REG_WEEKDAY, self.encode(f.weekday)),
            (REG_DAY, self.encode(f.day)),
            (REG_MONTH, self.encode(f.month)),
            (REG_YEAR, self.encode((f.year.rem_euclid(100)) as u8)),
            (
                REG_CENTURY,
                self.encode((f.year.div_euclid(100)).clamp(0, 99) as u8),
            ),
        ]
    }

    /// Copies the running time into the RAM copies of the clock registers.
    fn latch_time(&mut self) {
        let (now, _) = self.guest_now();
        for (reg, v) in self.clock_bytes(now) {
            self.ram[reg as usize] = v;
        }
    }

    /// Sets the offset so the clock runs on from what the RAM copies of the registers say.
    fn time_from_ram(&mut self) {
        let r = |reg: u8| self.decode(self.ram[reg as usize]);
        let year = i64::from(r(REG_CENTURY).min(99)) * 100 + i64::from(r(REG_YEAR).min(99));
        let month = r(REG_MONTH).clamp(1, 12);
        let day = r(REG_DAY).clamp(1, 31);
        let hour = self.hour_from_reg(self.ram[REG_HOURS as usize]).min(23);
        let t = days_from_civil(year, month, day) * SECS_PER_DAY
            + i64::from(hour) * 3600
            + i64::from(r(REG_MINUTES).min(59)) * 60
            + i64::from(r(REG_SECONDS).min(59));
        let host = i64::try_from((self.clock)().as_secs()).unwrap_or(i64::MAX / 2);
        self.offset = t.saturating_sub(host);
        let (now, _) = self.guest_now();
        self.last_second = now;
        tracing::debug!(
            "rtc: guest set the clock, offset {}s from host",
            self.offset
        );
    }

    fn periodic_period_ns(&self) -> Option<u64> {
        // Rates 1 and 2 repeat 8 and 9 (datasheet table); 0 turns the interrupt off.
        let rs = self.ram[REG_A as usize] & A_RATE_MASK;
        let shift = match rs {
            0 => return None,
            1 | 2 => rs + 7,
            _ => rs - 1,
        };
        // 2^shift ticks of the 32.768 kHz time base.
        Some((1_000_000_000u64 << shift) / 32_768)
    }

    fn periodic_tick(&self) -> u128 {
        match self.periodic_period_ns() {
            Some(p) => (self.clock)().as_nanos() / u128::from(p),
            None => 0,
        }
    }

    fn alarm_matches(&self, t: i64) -> bool {
        let f = Fields::from_unix(t);
        let field = |reg: u8, v: u8, hour: bool| {
            let a = self.ram[reg as usize];
            if a & ALARM_DONT_CARE == ALARM_DONT_CARE {
                return true;
            }
            let want = if hour {
                self.hour_from_reg(a)
            } else {
                self.decode(a)
            };
            want == v
        };
        field(REG_SECONDS_ALARM, f.sec, false)
            && field(REG_MINUTES_ALARM, f.min, false)
            && field(REG_HOURS_ALARM, f.hour, true)
    }

    /// Sets UF/AF/PF for whatever happened since the last look, and IRQF (raising IRQ 8)
    /// when an enabled one is pending.
    fn update_flags(&mut self) {
        let mut flags = 0;
        if self.reg_b() & B_SET == 0 {
            let (now, _) = self.guest_now();
            if now > self.last_second {
                flags |= C_UF;
                // An alarm fires at most once a day per setting; look back no further.
                let from = (self.last_second + 1).max(now - SECS_PER_DAY + 1);
                if (from..=now).any(|t| self.alarm_matches(t)) {
                    flags |= C_AF;
                }
            }
            self.last_second = now;
        }
        let tick = self.periodic_tick();
        if tick != self.last_periodic_tick {
            flags |= C_PF;
            self.last_periodic_tick = tick;
        }
        let c = &mut self.ram[REG_C as usize];
        *c |= flags;
        let enabled = self.ram[REG_B as usize] & (B_PIE | B_AIE | B_UIE);
        let c = &mut self.ram[REG_C as usize];
        if *c & enabled != 0 {
            *c |= C_IRQF;
        }
        if *c & C_IRQF != 0 && !self.irq_high {
            self.irq_high = true;
            self.irq.set_level(true);
        }
    }

    /// Lets time-driven flags (periodic, update-ended, alarm) raise IRQ 8 even when the
    /// guest is not reading register C. Call it every [`Cmos::poll_interval`].
    pub fn poll(&mut self) {
        self.update_flags();
    }

    /// How often [`Cmos::poll`] should run for the interrupts the guest enabled, or `None`
    /// when it enabled none.
    pub fn poll_interval(&self) -> Option<Duration> {
        let b = self.reg_b();
        let mut interval = None;
        if b & B_PIE != 0
            && let Some(p) = self.periodic_period_ns()
        {
            interval = Some(Duration::from_nanos(p));
        }
        if b & (B_UIE | B_AIE) != 0 {
            let sec = Duration::from_millis(100);
            interval = Some(interval.map_or(sec, |i: Duration| i.min(sec)));
        }
        interval
    }

    fn read_register(&mut self, index: u8) -> u8 {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                if self.reg_b() & B_SET != 0 {
                    return self.ram[index as usize];
                }
                let (now, _) = self.guest_now();
                self.clock_bytes(now)
                    .iter()
                    .find(|(r, _)| *r == index)
                    .map_or(0, |&(_, v)| v)
            }
            REG_A => {
                let (_, nanos) = self.guest_now();
                let uip = self.reg_b() & B_SET == 0 && nanos >= 1_000_000_000 - UPDATE_CYCLE_NS;
                (self.ram[REG_A as usize] & !A_UIP) | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.update_flags();
                let v = self.ram[REG_C as usize];
                self.ram[REG_C as usize] = 0;
                if self.irq_high {
                    self.irq_high = false;
                    self.irq.set_level(false);
                }
                v
            }
            REG_D => D_VRT,
            _ => self.ram[index as usize],
        }
    }

    fn write_register(&mut self, index: u8, v: u8) {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                if self.reg_b() & B_SET != 0 {
                    self.ram[index as usize] = v;
                } else {
                    self.latch_time();
                    self.ram[index as usize] = v;
                    self.time_from_ram();
                }
            }
            REG_A => {
                self.ram[REG_A as usize] = v & !A_UIP;
                self.last_periodic_tick = self.periodic_tick();
            }
            REG_B => {
                let old = self.reg_b();
                let mut v = v;
                if v & B_SET != 0 {
                    // Setting SET aborts update cycles, so the update interrupt goes too.
                    v &= !B_UIE;
                    if old & B_SET == 0 {
                        self.latch_time();
                    }
                }
                self.ram[REG_B as usize] = v;
                if old & B_SET != 0 && v & B_SET == 0 {
                    self.time_from_ram();
                }
                self.update_flags();
            }
            REG_C | REG_D => {}
            _ => self.ram[index as usize] = v,
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 1
            && let Some(b) = data.first_mut()
        {
            *b = self.read_register(self.index);
        }
        // The index port is write-only; it reads as an unclaimed port.
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => {
                self.index = v & 0x7f;
                self.nmi_masked = v & 0x80 != 0;
            }
            1 => self.write_register(self.index, v),
            _ => {}
        }
    }
}

/// A broken-down UTC time.
struct Fields {
    year: i64,
    month: u8,
    day: u8,
    /// 1 = Sunday, as the RTC counts.
    weekday: u8,
    hour: u8,
    min: u8,
    sec: u8,
}

impl Fields {
    fn from_unix(t: i64) -> Fields {
        let days = t.div_euclid(SECS_PER_DAY);
        let secs = t.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Fields {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday (weekday 5 when Sunday is 1).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
            hour: (secs / 3600) as u8,
            min: (secs / 60 % 60) as u8,
            sec: (secs % 60) as u8,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingIrq;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// 2026-11-26 21:42:07.5 UTC, a Thursday.
    const T0: u64 = 1_795_729_327;

    #[derive(Clone)]
    struct FakeClock(Arc<AtomicU64>);
    impl FakeClock {
        fn at(secs: u64, nanos: u64) -> Self {
            FakeClock(Arc::new(AtomicU64::new(secs * 1_000_000_000 + nanos)))
        }
        fn advance(&self, d: Duration) {
            self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        }
        fn boxed(&self) -> Clock {
            let c = self.0.clone();
            Box::new(move || Duration::from_nanos(c.load(Ordering::SeqCst)))
        }
    }

    fn cfg(ram: u64) -> CmosConfig {
        let l = crate::memory::MemoryLayout::new(ram);
        CmosConfig {
            ram_below_4g: l.below_4g,
            ram_above_4g: l.above_4g,
            cpus: 2,
        }
    }

    fn cmos_at(clock: &FakeClock) -> (Cmos, Arc<RecordingIrq>) {
        let irq = RecordingIrq::new();
        (
            Cmos::with_clock(cfg(512 * MIB), irq.clone(), clock.boxed()),
            irq,
        )
    }

    /// What firmware does: outb(index, 0x70); inb(0x71).
    fn rd(c: &mut Cmos, index: u8) -> u8 {
        c.write(0, &[index]);
        let mut b = [0];
        c.read(1, &mut b);
        b[0]
    }

    fn wr(c: &mut Cmos, index: u8, v: u8) {
        c.write(0, &[index]);
        c.write(1, &[v]);
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let f = Fields::from_unix(T0 as i64);
        assert_eq!(
            (f.year, f.month, f.day, f.hour, f.min, f.sec, f.weekday),
            (2026, 11, 26, 21, 42, 7, 5)
        );
    }

    #[test]
    fn reads_time_in_bcd_24h_by_default() {
        let clock = FakeClock::at(T0, 500_000_000);
        let (mut c, _) = cmos_at(&clock);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x07);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x42);
        assert_eq!(rd(&mut c, REG_HOURS), 0x21);
        assert_eq!(rd(&mut c, REG_WEEKDAY), 0x05);
        assert_eq!(rd(&mut c, REG_DAY), 0x26);
        assert_eq!(rd(&mut c, REG_MONTH), 0x11);
        assert_eq!(rd(&mut c, REG_YEAR), 0x26);
        assert_eq!(rd(&mut c, REG_CENTURY), 0x20);
        assert_eq!(rd(&mut c, REG_D), D_VRT);
    }

    #[test]
    fn reads_time_in_binary_12h() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, _) = cmos_at(&clock);
        wr(&mut c, REG_B, B_DM_BINARY);
        assert_eq!(rd(&mut c, REG_SECONDS), 7);
        assert_eq!(rd(&mut c, REG_MINUTES), 42);
        // 21 h is 9 PM.
        assert_eq!(rd(&mut c, REG_HOURS), 0x80 | 9);
        assert_eq!(rd(&mut c, REG_YEAR), 26);
        assert_eq!(rd(&mut c, REG_CENTURY), 20);
    }

    #[test]
    fn uip_is_set_only_at_the_end_of_a_second() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, _) = cmos_at(&clock);
        assert_eq!(rd(&mut c, REG_A), REG_A_DEFAULT);
        clock.advance(Duration::from_micros(999_900));
        assert_eq!(rd(&mut c, REG_A), REG_A_DEFAULT | A_UIP);
        clock.advance(Duration::from_micros(200));
        assert_eq!(rd(&mut c, REG_A) & A_UIP, 0);
    }

    #[test]
    fn guest_sets_the_time_with_set_bit_and_it_runs_on() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, _) = cmos_at(&clock);
        // Linux's mc146818_set_time: SET, write fields, clear SET.
        wr(&mut c, REG_B, B_24H | B_SET);
        wr(&mut c, REG_HOURS, 0x08);
        wr(&mut c, REG_MINUTES, 0x30);
        wr(&mut c, REG_SECONDS, 0x00);
        wr(&mut c, REG_DAY, 0x01);
        wr(&mut c, REG_MONTH, 0x01);
        wr(&mut c, REG_YEAR, 0x99);
        wr(&mut c, REG_CENTURY, 0x19);
        // Frozen while SET is on.
        clock.advance(Duration::from_secs(5));
        assert_eq!(rd(&mut c, REG_SECONDS), 0x00);
        wr(&mut c, REG_B, B_24H);
        clock.advance(Duration::from_secs(3));
        assert_eq!(rd(&mut c, REG_SECONDS), 0x03);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x30);
        assert_eq!(rd(&mut c, REG_HOURS), 0x08);
        assert_eq!(rd(&mut c, REG_YEAR), 0x99);
        assert_eq!(rd(&mut c, REG_CENTURY), 0x19);
        // A lone write without SET moves just that field.
        wr(&mut c, REG_MINUTES, 0x45);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x45);
        assert_eq!(rd(&mut c, REG_HOURS), 0x08);
    }

    #[test]
    fn index_port_masks_nmi_with_bit_7() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, _) = cmos_at(&clock);
        assert_eq!(rd(&mut c, 0x80 | CMOS_EQUIPMENT), EQUIPMENT_FPU_AND_MOUSE);
        assert!(c.nmi_masked());
        wr(&mut c, 0x40, 0x5a);
        assert_eq!(rd(&mut c, 0xc0), 0x5a);
        assert_eq!(rd(&mut c, 0x40), 0x5a);
        assert!(!c.nmi_masked());
    }

    #[test]
    fn memory_bytes_for_512_mib() {
        let irq = RecordingIrq::new();
        let mut c = Cmos::new(cfg(512 * MIB), irq);
        let w = |c: &mut Cmos, lo: u8| u16::from_le_bytes([rd(c, lo), rd(c, lo + 1)]);
        assert_eq!(w(&mut c, 0x15), 640);
        assert_eq!(w(&mut c, 0x17), 0xffff);
        assert_eq!(w(&mut c, 0x30), 0xffff);
        assert_eq!(w(&mut c, 0x34), ((512 - 16) * MIB / (64 << 10)) as u16);
        assert_eq!(rd(&mut c, 0x5b), 0);
        assert_eq!(rd(&mut c, 0x5c), 0);
        assert_eq!(rd(&mut c, 0x5d), 0);
        assert_eq!(rd(&mut c, 0x5f), 1);
        assert_eq!(rd(&mut c, 0x10), 0);
        assert_eq!(rd(&mut c, 0x0f), 0);
        // As QEMU's pc (checked against qemu-system-x86_64 -M pc -m 512 through qtest):
        // no checksum, boot order "cad", the PS/2 century byte.
        assert_eq!(w(&mut c, 0x2e), 0);
        assert_eq!(rd(&mut c, 0x3d), 0x12);
        assert_eq!(rd(&mut c, 0x38), 0x30);
        assert_eq!(rd(&mut c, 0x37), rd(&mut c, REG_CENTURY));
        c.set_boot_order(&[BootDevice::Cdrom, BootDevice::Disk]);
        assert_eq!(rd(&mut c, 0x3d), 0x23);
        assert_eq!(rd(&mut c, 0x38), 0x00);
        c.set_boot_order(&[BootDevice::Network]);
        assert_eq!(rd(&mut c, 0x3d), 0x04);
    }

    #[test]
    fn memory_bytes_for_4_gib_split_at_3_gib() {
        let irq = RecordingIrq::new();
        let mut config = cfg(4 * GIB);
        config.cpus = 8;
        let mut c = Cmos::new(config, irq);
        // 3 GiB - 16 MiB in 64 KiB blocks.
        assert_eq!(rd(&mut c, 0x34), 0x00);
        assert_eq!(rd(&mut c, 0x35), 0xbf);
        // 1 GiB in 64 KiB blocks = 0x4000.
        assert_eq!(rd(&mut c, 0x5b), 0x00);
        assert_eq!(rd(&mut c, 0x5c), 0x40);
        assert_eq!(rd(&mut c, 0x5d), 0x00);
        assert_eq!(rd(&mut c, 0x5f), 7);
        // Tiny guests: extended memory counts from 1 MiB and never underflows.
        let mut c = Cmos::new(
            CmosConfig {
                ram_below_4g: 2 * MIB,
                ram_above_4g: 0,
                cpus: 0,
            },
            RecordingIrq::new(),
        );
        assert_eq!(rd(&mut c, 0x17), 0x00);
        assert_eq!(rd(&mut c, 0x18), 0x04);
        assert_eq!(rd(&mut c, 0x34), 0);
        assert_eq!(rd(&mut c, 0x5f), 0);
    }

    #[test]
    fn register_c_clears_on_read_and_drives_irq_8() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, irq) = cmos_at(&clock);
        // Nothing happened yet; rate 0 so no periodic flag.
        wr(&mut c, REG_A, 0x20);
        assert_eq!(rd(&mut c, REG_C), 0);
        clock.advance(Duration::from_secs(1));
        // Update ended, but UIE is off: flag without IRQF, no interrupt.
        assert_eq!(rd(&mut c, REG_C), C_UF);
        assert_eq!(rd(&mut c, REG_C), 0);
        assert_eq!(irq.edges(), 0);

        wr(&mut c, REG_B, B_24H | B_UIE);
        clock.advance(Duration::from_secs(1));
        c.poll();
        assert!(irq.level());
        assert_eq!(irq.edges(), 1);
        assert_eq!(rd(&mut c, REG_C), C_IRQF | C_UF);
        assert!(!irq.level());
        assert_eq!(rd(&mut c, REG_C), 0);
    }

    #[test]
    fn alarm_and_periodic_flags() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, irq) = cmos_at(&clock);
        // Alarm at hh:mm:10 for any hour and minute (don't-care bytes).
        wr(&mut c, REG_SECONDS_ALARM, 0x10);
        wr(&mut c, REG_MINUTES_ALARM, 0xff);
        wr(&mut c, REG_HOURS_ALARM, 0xc0);
        wr(&mut c, REG_B, B_24H | B_AIE);
        assert_eq!(rd(&mut c, REG_C) & C_AF, 0);
        clock.advance(Duration::from_secs(2)); // :09
        assert_eq!(rd(&mut c, REG_C) & C_AF, 0);
        clock.advance(Duration::from_secs(1)); // :10
        c.poll();
        assert!(irq.level());
        let v = rd(&mut c, REG_C);
        assert_eq!(v & (C_IRQF | C_AF), C_IRQF | C_AF);

        // 1024 Hz periodic interrupt.
        wr(&mut c, REG_B, B_24H | B_PIE);
        assert_eq!(c.poll_interval(), Some(Duration::from_nanos(976_562)));
        clock.advance(Duration::from_micros(1000));
        c.poll();
        assert_eq!(rd(&mut c, REG_C) & (C_IRQF | C_PF), C_IRQF | C_PF);
        assert_eq!(irq.edges(), 2);
    }

    #[test]
    fn reset_keeps_ram_and_clock_but_drops_interrupts() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, irq) = cmos_at(&clock);
        wr(&mut c, CMOS_SHUTDOWN_STATUS, 0x0a);
        wr(&mut c, REG_B, B_24H | B_DM_BINARY | B_UIE);
        clock.advance(Duration::from_secs(1));
        c.poll();
        assert!(irq.level());
        c.reset();
        assert!(!irq.level());
        assert_eq!(rd(&mut c, REG_B), B_24H | B_DM_BINARY);
        assert_eq!(rd(&mut c, REG_C), 0);
        assert_eq!(rd(&mut c, CMOS_SHUTDOWN_STATUS), 0x0a);
        assert_eq!(rd(&mut c, REG_SECONDS), 8);
    }

    #[test]
    fn survives_garbage_from_the_guest() {
        let clock = FakeClock::at(T0, 0);
        let (mut c, _) = cmos_at(&clock);
        for index in 0..=0xffu8 {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                wr(&mut c, index, v);
                rd(&mut c, index);
            }
        }
        c.read(0, &mut [0u8; 4]);
        c.write(1, &[]);
        wr(&mut c, REG_B, 0);
        let _ = rd(&mut c, REG_HOURS);
    }
}
