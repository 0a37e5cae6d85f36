//! Input from VNC clients (and the app's viewer, which is one) into the guest's devices:
//! keys to the PS/2 keyboard as scan codes, the pointer to whichever pointing device the
//! guest actually uses: the absolute one (the virtio tablet) once its driver is up
//! (DRIVER_OK), else the PS/2 mouse as relative motion. Firmware, boot loaders and BIOS
//! programs have no virtio driver and only ever see the PS/2 mouse (through the BIOS's
//! int 15h C2xx services); an OS that loads virtio-input gets exact absolute positions.
//! QEMU routes the same way (to the input handler the guest activated last).
//!
//! The devices belong to the machine that is running now; a guest reset builds a new
//! machine, so they are attached and detached here rather than held forever.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use display::keymap::{self, ChordKey, Shift};
use display::rfb::input::InputSink;
use display::surface::Surface;

use crate::clipboard::GuestClipboard;
use crate::devices::i8042::I8042;

/// A pointing device that takes absolute positions (the virtio tablet).
pub trait AbsolutePointer: Send + Sync {
    /// `x`, `y` in `0..width`, `0..height` of the screen; RFB button mask.
    fn pointer(&self, x: u16, y: u16, width: u16, height: u16, buttons: u8);
    /// Whether the guest has a driver reading this device now; until it has, the pointer
    /// goes to the PS/2 mouse.
    fn driver_ready(&self) -> bool;
}

impl AbsolutePointer for Mutex<crate::virtio::input::VirtioTablet> {
    fn pointer(&self, x: u16, y: u16, width: u16, height: u16, buttons: u8) {
        self.lock()
            .unwrap()
            .pointer(x.into(), y.into(), buttons, width.into(), height.into());
    }
    fn driver_ready(&self) -> bool {
        self.lock().unwrap().driver_ready()
    }
}

/// Told after each key or pointer event reaches a device (the display refresh, which
/// then watches for the guest's answer closely).
pub type InputHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Devices {
    keyboard: Option<Arc<Mutex<I8042>>>,
    tablet: Option<Arc<dyn AbsolutePointer>>,
}

#[derive(Default)]
struct KeyState {
    /// Left and right Shift as the client pressed them.
    shift: [bool; 2],
    /// The last pointer position and buttons, for relative PS/2 motion.
    last: Option<(u16, u16)>,
    /// Where the last pointer event went (for a log line when that changes).
    to_tablet: bool,
}

/// The VMM's [`InputSink`].
pub struct GuestInput {
    surface: Arc<Surface>,
    devices: Mutex<Devices>,
    state: Mutex<KeyState>,
    hook: Mutex<Option<InputHook>>,
    clipboard: Arc<GuestClipboard>,
    /// Held while [`GuestInput::send_chords`] types, so two requests do not interleave.
    typing: Mutex<()>,
}

impl GuestInput {
    pub fn new(surface: Arc<Surface>) -> Arc<GuestInput> {
        Arc::new(GuestInput {
            surface,
            devices: Mutex::default(),
            state: Mutex::default(),
            hook: Mutex::default(),
            clipboard: GuestClipboard::new(),
            typing: Mutex::default(),
        })
    }

    /// Where the clients' clipboard text goes (to the guest agent, when there is one).
    pub fn guest_clipboard(&self) -> &Arc<GuestClipboard> {
        &self.clipboard
    }

    /// Sets (or with `None` clears) the [`InputHook`].
    pub fn set_hook(&self, hook: Option<InputHook>) {
        *self.hook.lock().unwrap() = hook;
    }

    fn tell_hook(&self) {
        let hook = self.hook.lock().unwrap().clone();
        if let Some(h) = hook {
            h();
        }
    }

    /// The running machine's devices (`None` while no machine runs).
    pub fn attach(
        &self,
        keyboard: Option<Arc<Mutex<I8042>>>,
        tablet: Option<Arc<dyn AbsolutePointer>>,
    ) {
        *self.devices.lock().unwrap() = Devices { keyboard, tablet };
        *self.state.lock().unwrap() = KeyState::default();
    }

    /// Types `chords` (the control socket's `send-key`) as a VNC client that sends scan
    /// codes would: each chord's keys pressed in order, held for `hold`, released in
    /// reverse, and the next chord `hold` later. Blocks until the last key is up.
    pub fn send_chords(&self, chords: &[Vec<ChordKey>], hold: Duration) {
        let _typing = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        for (i, chord) in chords.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(hold);
            }
            for k in chord {
                self.key(k.keysym, true, Some(k.code));
            }
            std::thread::sleep(hold);
            for k in chord.iter().rev() {
                self.key(k.keysym, false, Some(k.code));
            }
        }
    }

    fn send(&self, code: u16, down: bool) {
        if let Some(k) = &self.devices.lock().unwrap().keyboard {
            k.lock().unwrap().key_event(code, down);
        } else {
            return;
        }
        self.tell_hook();
    }
}

/// RFB's button mask (bit 0 left, 1 middle, 2 right, 3/4 wheel) to PS/2's packet bits
/// (bit 0 left, 1 right, 2 middle) and a wheel step.
fn ps2_buttons(mask: u8) -> (u8, i32) {
    let buttons = (mask & 1) | ((mask & 4) >> 1) | ((mask & 2) << 1);
    let dz = if mask & 8 != 0 {
        -1
    } else if mask & 16 != 0 {
        1
    } else {
        0
    };
    (buttons, dz)
}

impl InputSink for GuestInput {
    fn key(&self, keysym: u32, down: bool, scancode: Option<u16>) {
        tracing::trace!("VNC key {keysym:#x} down={down} scancode={scancode:?}");
        // The client's own scan code wins: it names the physical key whatever the layouts.
        if let Some(code) = scancode.filter(|&c| c != 0) {
            self.send(code, down);
            return;
        }
        let Some(mapping) = keymap::keysym_to_xt(keysym) else {
            tracing::debug!("no key for keysym {keysym:#x}");
            return;
        };
        let shift_held = {
            let mut st = self.state.lock().unwrap();
            match mapping.code {
                keymap::LEFT_SHIFT => st.shift[0] = down,
                keymap::RIGHT_SHIFT => st.shift[1] = down,
                _ => {}
            }
            st.shift[0] || st.shift[1]
        };
        // Press or lift Shift around a character the client sent in the other level.
        match (down, mapping.shift, shift_held) {
            (true, Shift::Shifted, false) => {
                self.send(keymap::LEFT_SHIFT, true);
                self.send(mapping.code, true);
                self.send(keymap::LEFT_SHIFT, false);
            }
            (true, Shift::Unshifted, true) => {
                let held = {
                    let st = self.state.lock().unwrap();
                    [
                        (st.shift[0], keymap::LEFT_SHIFT),
                        (st.shift[1], keymap::RIGHT_SHIFT),
                    ]
                };
                held.iter()
                    .filter(|h| h.0)
                    .for_each(|h| self.send(h.1, false));
                self.send(mapping.code, true);
                held.iter()
                    .filter(|h| h.0)
                    .for_each(|h| self.send(h.1, true));
            }
            _ => self.send(mapping.code, down),
        }
    }

    fn pointer(&self, x: u16, y: u16, buttons: u8) {
        let devices = self.devices.lock().unwrap();
        let tablet = devices.tablet.as_ref().filter(|t| t.driver_ready());
        let mut st = self.state.lock().unwrap();
        if st.to_tablet != tablet.is_some() {
            st.to_tablet = tablet.is_some();
            tracing::debug!(
                "pointer now goes to the {}",
                if st.to_tablet {
                    "virtio tablet (its driver is up)"
                } else {
                    "PS/2 mouse (no tablet driver)"
                }
            );
        }
        if let Some(tablet) = tablet {
            // Should the guest go back to the PS/2 mouse (a reboot into firmware), its
            // motion starts from where the pointer is then, not from a stale position.
            st.last = None;
            drop(st);
            let (w, h) = self.surface.size();
            tablet.pointer(x, y, w, h, buttons);
            drop(devices);
            self.tell_hook();
            return;
        }
        let Some(k) = &devices.keyboard else { return };
        let (lx, ly) = st.last.unwrap_or((x, y));
        st.last = Some((x, y));
        let (b, dz) = ps2_buttons(buttons);
        k.lock().unwrap().mouse_event(
            i32::from(x) - i32::from(lx),
            i32::from(y) - i32::from(ly),
            dz,
            b,
        );
        drop(st);
        drop(devices);
        self.tell_hook();
    }

    fn clipboard(&self, text: String) {
        self.clipboard.from_client(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingIrq;

    #[test]
    fn the_hook_hears_each_event_that_reached_a_device() {
        let input = GuestInput::new(Surface::new(640, 480));
        let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = heard.clone();
        input.set_hook(Some(Arc::new(move || {
            h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })));
        // No machine: nothing reached the guest, nothing to watch for.
        input.key(0x61, true, None);
        input.pointer(10, 10, 0);
        assert_eq!(heard.load(std::sync::atomic::Ordering::Relaxed), 0);
        let (tx, _rx) = crossbeam_channel::unbounded();
        let kbd = Arc::new(Mutex::new(I8042::new(
            RecordingIrq::new(),
            RecordingIrq::new(),
            tx,
        )));
        input.attach(Some(kbd), None);
        input.key(0x61, true, None);
        input.key(0x61, false, None);
        input.pointer(20, 20, 1);
        assert_eq!(heard.load(std::sync::atomic::Ordering::Relaxed), 3);
        input.set_hook(None);
        input.key(0x61, true, None);
        assert_eq!(heard.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    fn setup() -> (Arc<GuestInput>, Arc<Mutex<I8042>>) {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let kbd = Arc::new(Mutex::new(I8042::new(
            RecordingIrq::new(),
            RecordingIrq::new(),
            tx,
        )));
        let input = GuestInput::new(Surface::new(640, 480));
        input.attach(Some(kbd.clone()), None);
        (input, kbd)
    }

    /// Everything the keyboard has queued, as the guest would read it (set 1 after the
    /// controller's translation, the power-on default).
    fn drain(kbd: &Arc<Mutex<I8042>>) -> Vec<u8> {
        let mut out = vec![];
        let mut k = kbd.lock().unwrap();
        while k.read_status() & 1 != 0 {
            out.push(k.read_data());
        }
        out
    }

    #[test]
    fn keysyms_become_scan_codes_with_shift_as_needed() {
        let (input, kbd) = setup();
        input.key('a' as u32, true, None);
        input.key('a' as u32, false, None);
        assert_eq!(drain(&kbd), [0x1e, 0x9e]);
        // 'A' without the client pressing Shift: we press and release it around the key.
        input.key('A' as u32, true, None);
        input.key('A' as u32, false, None);
        assert_eq!(drain(&kbd), [0x2a, 0x1e, 0xaa, 0x9e]);
        // With the client's Shift held, 'A' goes as is.
        input.key(0xffe1, true, None);
        input.key('A' as u32, true, None);
        assert_eq!(drain(&kbd), [0x2a, 0x1e]);
        input.key('A' as u32, false, None);
        input.key(0xffe1, false, None);
        assert_eq!(drain(&kbd), [0x9e, 0xaa]);
        // Up arrow: an extended key.
        input.key(0xff52, true, None);
        assert_eq!(drain(&kbd), [0xe0, 0x48]);
    }

    #[test]
    fn chords_press_in_order_and_release_in_reverse() {
        let (input, kbd) = setup();
        let chords =
            keymap::parse_chords(&["ctrl-alt-Delete", "Return", "a", "shift-a", "A"]).unwrap();
        #[rustfmt::skip]
        let want = [
            0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d, // ctrl-alt-Delete
            0x1c, 0x9c, // Return
            0x1e, 0x9e, // a
            0x2a, 0x1e, 0x9e, 0xaa, // shift-a
            0x2a, 0x1e, 0x9e, 0xaa, // A: the same keys
        ];
        // The keyboard holds 16 bytes: read as the guest would, chord by chord.
        let mut got = vec![];
        for chord in &chords {
            input.send_chords(std::slice::from_ref(chord), Duration::ZERO);
            got.extend(drain(&kbd));
        }
        assert_eq!(got, want);
        // A chord's keys are held together: the releases wait for `hold`.
        let t = std::time::Instant::now();
        input.send_chords(&chords[1..3], Duration::from_millis(30));
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(drain(&kbd), [0x1c, 0x9c, 0x1e, 0x9e]);
    }

    #[test]
    fn scan_codes_from_the_client_pass_through() {
        let (input, kbd) = setup();
        // A German client's 'z' keysym on the key a US layout calls 'y': the code wins.
        input.key('z' as u32, true, Some(0x15));
        assert_eq!(drain(&kbd), [0x15]);
    }

    #[test]
    fn no_devices_no_panic() {
        let input = GuestInput::new(Surface::new(10, 10));
        input.key('a' as u32, true, None);
        input.pointer(5, 5, 1);
    }

    /// SeaBIOS's int 15h C200 (enable): the controller's "to the aux device" command,
    /// then the mouse's Enable Data Reporting, acknowledged with 0xFA.
    fn enable_mouse(kbd: &Arc<Mutex<I8042>>) {
        {
            let mut k = kbd.lock().unwrap();
            k.write_command(0xd4);
            k.write_data(0xf4);
        }
        assert_eq!(drain(kbd), [0xfa]);
    }

    #[test]
    fn pointer_goes_to_the_ps2_mouse_until_the_tablet_driver_is_up() {
        use crate::virtio::input::{VirtioTablet, ev};
        use crate::virtio::pci::{common, tests::Guest};
        use crate::virtio::testing::DriverRing;

        let (input, kbd) = setup();
        let tablet = Arc::new(Mutex::new(VirtioTablet::new()));
        input.attach(
            Some(kbd.clone()),
            Some(tablet.clone() as Arc<dyn AbsolutePointer>),
        );
        // A BIOS program: the machine has a tablet, but nothing drives it; the PS/2 mouse
        // is what the guest enabled.
        enable_mouse(&kbd);
        input.pointer(100, 100, 0);
        input.pointer(150, 80, 0);
        // Status (bit 3 always set, no sign bits), +50 right, +20 up (PS/2's y points up).
        assert_eq!(drain(&kbd), [0x08, 50, 20]);
        input.pointer(140, 90, 1);
        assert_eq!(
            drain(&kbd),
            [0x39, 0xf6, 0xf6],
            "left button, 10 left, 10 down"
        );
        assert_eq!(
            tablet.lock().unwrap().pending(),
            0,
            "nothing for the tablet"
        );

        // Linux's virtio-input probe up to DRIVER_OK, with buffers for events.
        let mut g = Guest::new(tablet.clone());
        let (common_cfg, _isr, _cfg, notify, mult, _) = g.probe(!0);
        let mut evq = DriverRing::new(&g.mem, 0x10000, 64);
        let stq = DriverRing::new(&g.mem, 0x20000, 64);
        g.setup_queue(common_cfg, notify, mult, 0, &evq);
        g.setup_queue(common_cfg, notify, mult, 1, &stq);
        for i in 0..64 {
            evq.add_chain(&g.mem, &[(0x80000 + 8 * i, 8, true)]);
        }
        g.write(common_cfg + common::DEVICE_STATUS, 1, 0xf);
        assert!(tablet.lock().unwrap().driver_ready());

        // Now the tablet gets absolute positions and the mouse nothing.
        input.pointer(639, 0, 0);
        let used = evq.take_used(&g.mem);
        assert_eq!(used.len(), 3, "ABS_X, ABS_Y, SYN_REPORT: {used:?}");
        let mut first = [0u8; 8];
        vm_memory::Bytes::read_slice(&g.mem, &mut first, vm_memory::GuestAddress(0x80000)).unwrap();
        assert_eq!(u16::from_le_bytes([first[0], first[1]]), ev::EV_ABS);
        assert_eq!(
            u32::from_le_bytes(first[4..8].try_into().unwrap()),
            crate::virtio::input::ABS_MAX
        );
        assert!(drain(&kbd).is_empty());

        // The driver resets the device (the guest rebooted into firmware): back to PS/2,
        // with motion counted from the first position after the switch.
        g.write(common_cfg + common::DEVICE_STATUS, 1, 0);
        assert!(!tablet.lock().unwrap().driver_ready());
        input.pointer(300, 200, 0);
        // No motion; the left button the mouse last reported as held comes up.
        assert_eq!(drain(&kbd), [0x08, 0, 0]);
        input.pointer(305, 200, 0);
        assert_eq!(drain(&kbd), [0x08, 5, 0]);
        assert!(evq.take_used(&g.mem).is_empty());
    }

    #[test]
    fn rfb_buttons_to_ps2() {
        assert_eq!(ps2_buttons(1), (1, 0));
        assert_eq!(ps2_buttons(2), (4, 0)); // middle
        assert_eq!(ps2_buttons(4), (2, 0)); // right
        assert_eq!(ps2_buttons(8), (0, -1));
        assert_eq!(ps2_buttons(16), (0, 1));
    }
}
