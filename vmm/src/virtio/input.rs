//! virtio-input (virtio 1.0, 5.8) as an absolute pointer: the tablet a VNC client's
//! pointer drives, so the guest cursor lands exactly where the client's is (a relative
//! PS/2 mouse never does). Shaped like QEMU's virtio-tablet so guests treat it the same:
//! ID_NAME "vmdesk tablet", QEMU's ids (BUS_VIRTUAL, 0627:0003), no property bits,
//! EV_KEY with BTN_LEFT/RIGHT/MIDDLE, EV_REL with REL_WHEEL, EV_ABS with ABS_X and ABS_Y
//! over 0..=32767, EV_SYN.
//!
//! Queue 0 (events) takes the driver's 8-byte buffers; host input becomes evdev events
//! there, a SYN_REPORT after each pointer update. Events wait, bounded at
//! [`MAX_PENDING`] (the oldest whole reports go first), while the driver has no buffers or
//! is not loaded yet. Queue 1 (status: LED and similar events from the guest) is drained
//! and ignored: a tablet has nothing to show.
//!
//! Host input may arrive on any thread ([`VirtioTablet::pointer`]); the device lock
//! orders it against the vCPU's notifications.
//!
//! Not emulated: keyboards and relative mice over virtio-input (the PS/2 devices serve),
//! horizontal wheel, multitouch.

use std::collections::VecDeque;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::{
    Activation, Interrupt, RingError, TYPE_INPUT, VirtioDevice, pending_chains, split_chain,
};
use crate::memory::GuestMem;

pub const QUEUE_SIZE: u16 = 64;
/// Events kept while the guest cannot take them.
pub const MAX_PENDING: usize = 1024;
/// The absolute axes' range (QEMU's tablet uses the same).
pub const ABS_MAX: u32 = 0x7fff;
pub const NAME: &str = "vmdesk tablet";
pub const SERIAL: &str = "vmdesk-tablet-0";

/// virtio_input_config_select.
pub mod cfg {
    pub const UNSET: u8 = 0x00;
    pub const ID_NAME: u8 = 0x01;
    pub const ID_SERIAL: u8 = 0x02;
    pub const ID_DEVIDS: u8 = 0x03;
    pub const PROP_BITS: u8 = 0x10;
    pub const EV_BITS: u8 = 0x11;
    pub const ABS_INFO: u8 = 0x12;
}

/// Linux input event codes (include/uapi/linux/input-event-codes.h).
pub mod ev {
    pub const EV_SYN: u16 = 0x00;
    pub const EV_KEY: u16 = 0x01;
    pub const EV_REL: u16 = 0x02;
    pub const EV_ABS: u16 = 0x03;
    pub const SYN_REPORT: u16 = 0;
    pub const BTN_LEFT: u16 = 0x110;
    pub const BTN_RIGHT: u16 = 0x111;
    pub const BTN_MIDDLE: u16 = 0x112;
    pub const REL_WHEEL: u16 = 0x08;
    pub const ABS_X: u16 = 0x00;
    pub const ABS_Y: u16 = 0x01;
    pub const BUS_VIRTUAL: u16 = 0x06;
}

/// Offset of the union in virtio_input_config (select, subsel, size, 5 reserved).
const CFG_UNION: usize = 8;
const CFG_LEN: usize = CFG_UNION + 128;
const EVENT_LEN: u32 = 8;

/// RFB pointer button mask bits (RFC 6143, 7.5.5): 1 left, 2 middle, 3 right, 4/5 wheel.
pub const BUTTON_LEFT: u8 = 1 << 0;
pub const BUTTON_MIDDLE: u8 = 1 << 1;
pub const BUTTON_RIGHT: u8 = 1 << 2;
pub const WHEEL_UP: u8 = 1 << 3;
pub const WHEEL_DOWN: u8 = 1 << 4;

/// One virtio_input_event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: u32,
}

impl InputEvent {
    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }
}

struct Active {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

pub struct VirtioTablet {
    select: u8,
    subsel: u8,
    pending: VecDeque<InputEvent>,
    last_pos: Option<(u32, u32)>,
    last_buttons: u8,
    active: Option<Active>,
    broken: bool,
}

impl Default for VirtioTablet {
    fn default() -> Self {
        Self::new()
    }
}

/// Scales `v` in `0..size` to `0..=ABS_MAX` (the last pixel maps to ABS_MAX).
fn scale(v: u32, size: u32) -> u32 {
    if size <= 1 {
        return 0;
    }
    let v = u64::from(v.min(size - 1));
    (v * u64::from(ABS_MAX) / u64::from(size - 1)) as u32
}

impl VirtioTablet {
    pub fn new() -> VirtioTablet {
        VirtioTablet {
            select: cfg::UNSET,
            subsel: 0,
            pending: VecDeque::new(),
            last_pos: None,
            last_buttons: 0,
            active: None,
            broken: false,
        }
    }

    /// Host pointer input: position `(x, y)` on a `surface_w` x `surface_h` screen and the
    /// RFB button mask. Sends what changed (position, buttons, a wheel step on each press of
    /// the wheel bits), then SYN_REPORT.
    pub fn pointer(&mut self, x: u32, y: u32, buttons: u8, surface_w: u32, surface_h: u32) {
        use ev::*;
        let mut report = Vec::with_capacity(8);
        let pos = (scale(x, surface_w), scale(y, surface_h));
        if self.last_pos != Some(pos) {
            if self.last_pos.is_none_or(|p| p.0 != pos.0) {
                report.push((EV_ABS, ABS_X, pos.0));
            }
            if self.last_pos.is_none_or(|p| p.1 != pos.1) {
                report.push((EV_ABS, ABS_Y, pos.1));
            }
            self.last_pos = Some(pos);
        }
        let changed = buttons ^ self.last_buttons;
        for (bit, code) in [
            (BUTTON_LEFT, BTN_LEFT),
            (BUTTON_RIGHT, BTN_RIGHT),
            (BUTTON_MIDDLE, BTN_MIDDLE),
        ] {
            if changed & bit != 0 {
                report.push((EV_KEY, code, u32::from(buttons & bit != 0)));
            }
        }
        let pressed = changed & buttons;
        if pressed & WHEEL_UP != 0 {
            report.push((EV_REL, REL_WHEEL, 1));
        }
        if pressed & WHEEL_DOWN != 0 {
            report.push((EV_REL, REL_WHEEL, (-1i32) as u32));
        }
        self.last_buttons = buttons;
        if report.is_empty() {
            return;
        }
        report.push((EV_SYN, SYN_REPORT, 0));
        self.queue_events(report.into_iter().map(|(kind, code, value)| InputEvent {
            kind,
            code,
            value,
        }));
        self.deliver();
    }

    /// Whether a driver has set DRIVER_OK and not reset the device since: only then does
    /// the guest read what the tablet reports.
    pub fn driver_ready(&self) -> bool {
        self.active.is_some()
    }

    /// Events waiting for guest buffers.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn queue_events(&mut self, events: impl Iterator<Item = InputEvent>) {
        self.pending.extend(events);
        // Over the bound: drop the oldest whole reports.
        while self.pending.len() > MAX_PENDING {
            while let Some(e) = self.pending.pop_front() {
                if e.kind == ev::EV_SYN {
                    break;
                }
            }
        }
    }

    /// Moves pending events into the event queue's buffers and drains the status queue.
    fn deliver(&mut self) {
        if self.broken {
            return;
        }
        let Some(mut a) = self.active.take() else {
            return;
        };
        let r = match self.fill(&mut a) {
            Ok(ev) => drain_status(&mut a).map(|st| (ev, st)),
            Err(e) => Err(e),
        };
        match r {
            Ok((events, status)) => {
                if events {
                    a.interrupt.signal_used_queue(0);
                }
                if status {
                    a.interrupt.signal_used_queue(1);
                }
            }
            Err(e) => {
                tracing::warn!("virtio-input: {e}; the device needs a reset");
                self.broken = true;
                a.interrupt.set_needs_reset();
            }
        }
        self.active = Some(a);
    }

    /// Returns whether the driver must be interrupted.
    fn fill(&mut self, a: &mut Active) -> Result<bool, RingError> {
        let Some(q) = a.queues.get_mut(0).filter(|q| q.ready()) else {
            return Ok(false);
        };
        let mut used = false;
        while !self.pending.is_empty() && pending_chains(q, &a.mem)? > 0 {
            let Some(chain) = q.pop_descriptor_chain(&a.mem) else {
                return Err(RingError::Chain("available ring entry unreadable"));
            };
            let c = split_chain(chain, &a.mem, usize::from(QUEUE_SIZE))?;
            let len = match c.writable.first() {
                Some(s) if !c.bad_buffer && s.len >= EVENT_LEN => {
                    let e = self.pending.front().copied().unwrap_or(InputEvent {
                        kind: 0,
                        code: 0,
                        value: 0,
                    });
                    if a.mem.write_slice(&e.bytes(), s.addr).is_ok() {
                        self.pending.pop_front();
                        EVENT_LEN
                    } else {
                        0
                    }
                }
                // A buffer that cannot hold an event goes back empty; the event waits.
                _ => 0,
            };
            q.add_used(&a.mem, c.head, len)?;
            used = true;
        }
        Ok(used && q.needs_notification(&a.mem)?)
    }
}

/// Takes whatever the driver sent on the status queue and gives the buffers back.
fn drain_status(a: &mut Active) -> Result<bool, RingError> {
    let Some(q) = a.queues.get_mut(1).filter(|q| q.ready()) else {
        return Ok(false);
    };
    let mut used = false;
    while pending_chains(q, &a.mem)? > 0 {
        let Some(chain) = q.pop_descriptor_chain(&a.mem) else {
            return Err(RingError::Chain("available ring entry unreadable"));
        };
        let c = split_chain(chain, &a.mem, usize::from(QUEUE_SIZE))?;
        q.add_used(&a.mem, c.head, 0)?;
        used = true;
    }
    Ok(used && q.needs_notification(&a.mem)?)
}

impl VirtioTablet {
    fn config(&self) -> [u8; CFG_LEN] {
        use ev::*;
        let mut c = [0u8; CFG_LEN];
        c[0] = self.select;
        c[1] = self.subsel;
        let mut payload = [0u8; 128];
        let size = match (self.select, self.subsel) {
            (cfg::ID_NAME, 0) => put_str(&mut payload, NAME),
            (cfg::ID_SERIAL, 0) => put_str(&mut payload, SERIAL),
            (cfg::ID_DEVIDS, 0) => {
                for (i, v) in [BUS_VIRTUAL, 0x0627, 0x0003, 0x0001].iter().enumerate() {
                    payload[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
                }
                8
            }
            (cfg::EV_BITS, t) => {
                let codes: &[u16] = match u16::from(t) {
                    EV_SYN => &[SYN_REPORT],
                    EV_KEY => &[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE],
                    EV_REL => &[REL_WHEEL],
                    EV_ABS => &[ABS_X, ABS_Y],
                    _ => &[],
                };
                let mut size = 0;
                for &code in codes {
                    let byte = usize::from(code / 8);
                    payload[byte] |= 1 << (code % 8);
                    size = size.max(byte + 1);
                }
                size
            }
            (cfg::ABS_INFO, a) if u16::from(a) == ABS_X || u16::from(a) == ABS_Y => {
                // min, max, fuzz, flat, res.
                payload[4..8].copy_from_slice(&ABS_MAX.to_le_bytes());
                20
            }
            // PROP_BITS: none (QEMU's tablet sets none either); anything else: empty.
            _ => 0,
        };
        c[2] = size as u8;
        c[CFG_UNION..].copy_from_slice(&payload);
        c
    }
}

fn put_str(out: &mut [u8; 128], s: &str) -> usize {
    let n = s.len().min(out.len());
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    n
}

impl VirtioDevice for VirtioTablet {
    fn device_type(&self) -> u16 {
        TYPE_INPUT
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config(), offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only select (0) and subsel (1) are the driver's to write.
        for (i, &v) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = v,
                Some(1) => self.subsel = v,
                _ => {}
            }
        }
    }
    fn activate(&mut self, a: Activation) {
        self.active = Some(Active {
            mem: a.mem,
            queues: a.queues,
            interrupt: a.interrupt,
        });
    }
    fn queue_notify(&mut self, _index: u16) {
        self.deliver();
    }
    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.select = cfg::UNSET;
        self.subsel = 0;
        // A new driver learns the position with the next update.
        self.last_pos = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::pci::common;
    use crate::virtio::pci::tests::Guest;
    use crate::virtio::status;
    use crate::virtio::testing::DriverRing;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    const EVBUF: u64 = 0x80000;

    struct Driver {
        g: Guest,
        dev: Arc<Mutex<VirtioTablet>>,
        cfg: u64,
        common: u64,
        isr: u64,
        evq: DriverRing,
        stq: DriverRing,
        kicks: [u64; 2],
    }

    impl Driver {
        /// virtio_pci_modern probe, then virtinput_probe up to the queues (not live yet).
        fn new() -> Driver {
            let dev = Arc::new(Mutex::new(VirtioTablet::new()));
            let mut g = Guest::new(dev.clone());
            assert_eq!(g.cfg_read(2, 2), 0x1052);
            assert_eq!(g.cfg_read(9, 4) & 0xff_ffff, 0x09_80_00);
            let (common, isr, cfg, notify, mult, features) = g.probe(!0);
            assert_eq!(features & 0xffff_ffff & !(3 << 28), 0, "no device features");
            let evq = DriverRing::new(&g.mem, 0x10000, 64);
            let stq = DriverRing::new(&g.mem, 0x20000, 64);
            let k0 = g.setup_queue(common, notify, mult, 0, &evq);
            let k1 = g.setup_queue(common, notify, mult, 1, &stq);
            Driver {
                g,
                dev,
                cfg,
                common,
                isr,
                evq,
                stq,
                kicks: [k0, k1],
            }
        }

        /// virtinput_cfg_select + reading `size` bytes of the union.
        fn cfg(&self, select: u8, subsel: u8) -> Vec<u8> {
            self.g.write(self.cfg, 1, u64::from(select));
            self.g.write(self.cfg + 1, 1, u64::from(subsel));
            let size = self.g.read(self.cfg + 2, 1) as usize;
            (0..size)
                .map(|i| self.g.read(self.cfg + 8 + i as u64, 1) as u8)
                .collect()
        }

        /// virtinput_fill_evt: one 8-byte buffer per descriptor.
        fn fill(&mut self, n: u64) {
            for i in 0..n {
                self.evq
                    .add_chain(&self.g.mem, &[(EVBUF + 8 * (i % 64), 8, true)]);
            }
        }

        fn events(&mut self) -> Vec<(u16, u16, i32)> {
            self.evq
                .take_used(&self.g.mem)
                .into_iter()
                .map(|(id, len)| {
                    assert_eq!(len, 8);
                    let mut b = [0u8; 8];
                    self.g
                        .mem
                        .read_slice(&mut b, GuestAddress(EVBUF + 8 * u64::from(id)))
                        .unwrap();
                    (
                        u16::from_le_bytes([b[0], b[1]]),
                        u16::from_le_bytes([b[2], b[3]]),
                        i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    )
                })
                .collect()
        }
    }

    #[test]
    fn linux_virtio_input_probe_reads_the_config() {
        let d = Driver::new();
        assert_eq!(d.cfg(cfg::ID_NAME, 0), NAME.as_bytes());
        assert_eq!(d.cfg(cfg::ID_SERIAL, 0), SERIAL.as_bytes());
        let ids = d.cfg(cfg::ID_DEVIDS, 0);
        assert_eq!(ids, [6, 0, 0x27, 0x06, 3, 0, 1, 0]);
        assert!(d.cfg(cfg::PROP_BITS, 0).is_empty());
        let key = d.cfg(cfg::EV_BITS, ev::EV_KEY as u8);
        assert_eq!(key.len(), 35);
        assert_eq!(key[34], 0x07, "BTN_LEFT, BTN_RIGHT, BTN_MIDDLE");
        assert!(key[..34].iter().all(|&b| b == 0));
        assert_eq!(d.cfg(cfg::EV_BITS, ev::EV_REL as u8), [0, 1], "REL_WHEEL");
        assert_eq!(d.cfg(cfg::EV_BITS, ev::EV_ABS as u8), [3], "ABS_X, ABS_Y");
        assert_eq!(d.cfg(cfg::EV_BITS, ev::EV_SYN as u8), [1]);
        for t in [4u8, 5, 0x11, 0x12, 0x14, 0x15, 0x17] {
            assert!(d.cfg(cfg::EV_BITS, t).is_empty(), "ev type {t}");
        }
        for axis in [ev::ABS_X, ev::ABS_Y] {
            let info = d.cfg(cfg::ABS_INFO, axis as u8);
            assert_eq!(info.len(), 20);
            assert_eq!(u32::from_le_bytes(info[0..4].try_into().unwrap()), 0);
            assert_eq!(u32::from_le_bytes(info[4..8].try_into().unwrap()), 32767);
        }
        assert!(d.cfg(cfg::ABS_INFO, 2).is_empty());
        assert!(d.cfg(0x55, 0).is_empty());
        // Writes beyond select/subsel change nothing.
        d.g.write(d.cfg + 2, 1, 99);
        d.g.write(d.cfg + 8, 4, 0xffff_ffff);
        assert_eq!(d.cfg(cfg::ID_NAME, 0), NAME.as_bytes());
    }

    #[test]
    fn pointer_events_reach_the_driver() {
        let mut d = Driver::new();
        // Events before the driver is live wait.
        d.dev.lock().unwrap().pointer(0, 0, 0, 800, 600);
        assert_eq!(d.dev.lock().unwrap().pending(), 3);
        d.fill(64);
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0xf);
        assert_eq!(
            d.events(),
            vec![
                (ev::EV_ABS, ev::ABS_X, 0),
                (ev::EV_ABS, ev::ABS_Y, 0),
                (0, 0, 0)
            ]
        );
        assert!(d.g.irq.level());
        assert_eq!(d.g.read(d.isr, 1), 1);

        // Bottom-right pixel is the top of the range; the middle is about half.
        d.dev.lock().unwrap().pointer(799, 599, 0, 800, 600);
        assert_eq!(
            d.events(),
            vec![
                (ev::EV_ABS, ev::ABS_X, 32767),
                (ev::EV_ABS, ev::ABS_Y, 32767),
                (0, 0, 0)
            ]
        );
        d.dev
            .lock()
            .unwrap()
            .pointer(400, 599, BUTTON_LEFT, 800, 600);
        assert_eq!(
            d.events(),
            vec![
                (ev::EV_ABS, ev::ABS_X, 400 * 32767 / 799),
                (ev::EV_KEY, ev::BTN_LEFT, 1),
                (0, 0, 0)
            ]
        );
        d.dev
            .lock()
            .unwrap()
            .pointer(400, 599, BUTTON_RIGHT | WHEEL_UP, 800, 600);
        assert_eq!(
            d.events(),
            vec![
                (ev::EV_KEY, ev::BTN_LEFT, 0),
                (ev::EV_KEY, ev::BTN_RIGHT, 1),
                (ev::EV_REL, ev::REL_WHEEL, 1),
                (0, 0, 0)
            ]
        );
        d.dev
            .lock()
            .unwrap()
            .pointer(400, 599, BUTTON_RIGHT | WHEEL_DOWN, 800, 600);
        assert_eq!(d.events(), vec![(ev::EV_REL, ev::REL_WHEEL, -1), (0, 0, 0)]);
        // Nothing changed: nothing sent. Off-screen and zero-sized surfaces clamp.
        d.dev
            .lock()
            .unwrap()
            .pointer(400, 599, BUTTON_RIGHT | WHEEL_DOWN, 800, 600);
        assert!(d.events().is_empty());
        d.dev.lock().unwrap().pointer(5000, 5000, 0, 0, 0);
        assert_eq!(
            d.events(),
            vec![
                (ev::EV_ABS, ev::ABS_X, 0),
                (ev::EV_ABS, ev::ABS_Y, 0),
                (ev::EV_KEY, ev::BTN_RIGHT, 0),
                (0, 0, 0)
            ]
        );
    }

    #[test]
    fn events_wait_for_buffers_and_are_bounded() {
        let mut d = Driver::new();
        d.fill(2);
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0xf);
        d.dev.lock().unwrap().pointer(1, 1, 0, 100, 100);
        assert_eq!(d.events().len(), 2);
        assert_eq!(d.dev.lock().unwrap().pending(), 1);
        // The driver gives buffers back (virtinput_recv_events re-queues) and notifies.
        d.fill(1);
        d.g.write(d.kicks[0], 2, 0);
        assert_eq!(d.events(), vec![(0, 0, 0)]);
        // No buffers at all: at most MAX_PENDING events wait, the newest kept.
        for i in 0..2000 {
            d.dev.lock().unwrap().pointer(i % 100, i % 100, 0, 100, 100);
        }
        let n = d.dev.lock().unwrap().pending();
        assert!(n <= MAX_PENDING && n > MAX_PENDING - 4, "{n}");
        // A buffer too small for an event is returned empty; the event stays.
        d.evq.add_chain(&d.g.mem, &[(EVBUF, 4, true)]);
        d.g.write(d.kicks[0], 2, 0);
        assert_eq!(
            d.evq.take_used(&d.g.mem),
            vec![(d.evq.next_desc.wrapping_sub(1) as u32, 0)]
        );
        assert_eq!(d.dev.lock().unwrap().pending(), n);
    }

    #[test]
    fn status_queue_is_drained_and_bad_rings_need_reset() {
        let mut d = Driver::new();
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0xf);
        // virtinput_status: an LED event from the guest.
        d.g.mem
            .write_slice(&[0x11, 0, 0, 0, 1, 0, 0, 0], GuestAddress(0x90000))
            .unwrap();
        d.stq.add_chain(&d.g.mem, &[(0x90000, 8, false)]);
        d.g.write(d.kicks[1], 2, 1);
        assert_eq!(d.stq.take_used(&d.g.mem).len(), 1);
        // A looping chain on the event queue.
        d.evq.write_desc(&d.g.mem, 0, EVBUF, 8, 3, 0);
        d.evq.publish(&d.g.mem, 0);
        d.dev.lock().unwrap().pointer(3, 3, 0, 10, 10);
        let st = d.g.read(d.common + common::DEVICE_STATUS, 1) as u8;
        assert_ne!(st & status::DEVICE_NEEDS_RESET, 0);
        // Reset brings it back; the queued events are still there for the next driver.
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(d.g.read(d.common + common::DEVICE_STATUS, 1), 0);
        assert!(d.dev.lock().unwrap().pending() > 0);
    }
}
