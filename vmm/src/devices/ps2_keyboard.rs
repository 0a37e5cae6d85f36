//! A PS/2 (AT/MF2) keyboard behind the i8042 controller.
//!
//! Emulated: the host→keyboard command set that SeaBIOS (`src/hw/kbd.c`, `ps2port.c`) and
//! Linux (`atkbd.c`) use — reset (0xFF), resend (0xFE), defaults (0xF6), disable/enable
//! scanning (0xF5/0xF4), identify (0xF2 → ACK 0xAB 0x83), LEDs (0xED + argument), scan code
//! set get/set (0xF0 + argument; set 3 is accepted and answered as set 2, which is what
//! both guests fall back to anyway), typematic rate (0xF3 + argument, stored only), echo
//! (0xEE). Anything else is answered with 0xFE (resend), as a real keyboard does for a
//! command it does not know.
//!
//! Key input arrives as XT set-1 scan codes ([`Ps2Keyboard::key_event`]) and leaves in
//! the set the guest selected (1 or 2). The i8042 translates set 2 back to set 1 when its
//! XLATE bit is on, so in the usual path (set 2 + translation) a set-1 code comes out
//! unchanged.
//!
//! PrintScreen and Pause follow the Shift/Ctrl/Alt keys the host holds, as on a real
//! keyboard (fake shift or not, SysRq, Ctrl+Break). Simplified: the fake shifts that
//! real keyboards wrap around the gray keys while Shift or NumLock is on are not sent
//! (Linux and SeaBIOS ignore them anyway).
//!
//! Not emulated: typematic auto-repeat (the host's key repeat arrives as repeated
//! presses), and set 3 with its per-key commands (0xF7–0xFD).

use std::collections::VecDeque;

/// Bytes a PS/2 device can hold before the host reads them (a real keyboard buffers 16).
pub const QUEUE_BYTES: usize = 16;

/// The LED bits of the 0xED argument, as [`Ps2Keyboard::leds`] reports them.
pub const LED_SCROLL_LOCK: u8 = 0x01;
pub const LED_NUM_LOCK: u8 = 0x02;
pub const LED_CAPS_LOCK: u8 = 0x04;

const ACK: u8 = 0xfa;
const RESEND: u8 = 0xfe;
const BAT_OK: u8 = 0xaa;
const ECHO: u8 = 0xee;

/// Typematic rate/delay after reset: 10.9 characters/s after 500 ms.
const DEFAULT_TYPEMATIC: u8 = 0x2b;

/// The i8042's set 2 → set 1 translation table (indexed by the set-2 byte, bytes 0x80 and
/// up pass through except 0x83 F7 and 0x84 Alt+SysRq). This is a fixed property of the PC
/// keyboard controller; both guests' drivers assume it.
const SET2_TO_SET1: [u8; 128] = [
    0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29,
    0x59, //
    0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03,
    0x5b, //
    0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06,
    0x5d, //
    0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09,
    0x5f, //
    0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c,
    0x61, //
    0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63,
    0x76, //
    0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f,
    0x6f, //
    0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, 0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46,
    0x54, //
];

/// What the i8042 does to one byte from the keyboard when XLATE is on. The 0xF0 break
/// prefix is handled by the caller (it is swallowed and sets bit 7 of the next byte).
pub fn translate_set2_to_set1(byte: u8) -> u8 {
    match byte {
        0x00..=0x7f => SET2_TO_SET1[byte as usize],
        0x83 => 0x41,
        0x84 => 0x54,
        _ => byte,
    }
}

/// Set-1 make code (0x01–0x7F) → set-2 make code; 0 where a set-1 code has none.
const SET1_TO_SET2: [u8; 128] = {
    let mut inv = [0u8; 128];
    let mut s2 = 1;
    while s2 < 128 {
        let s1 = SET2_TO_SET1[s2];
        if s1 < 0x80 && inv[s1 as usize] == 0 {
            inv[s1 as usize] = s2 as u8;
        }
        s2 += 1;
    }
    // F7 and Alt+SysRq are the two keys whose set-2 codes lie above 0x7F; the table
    // entries that also translate to 0x41 and 0x54 are not real keys.
    inv[0x41] = 0x83;
    inv[0x54] = 0x84;
    inv
};

/// The set-2 make code of a set-1 make code (without any 0xE0 prefix).
pub fn set1_to_set2(code: u8) -> Option<u8> {
    match SET1_TO_SET2.get(code as usize) {
        Some(&s2) if s2 != 0 => Some(s2),
        _ => None,
    }
}

/// A PS/2 device's output: answers to host commands, and input events (a scan code
/// sequence, a mouse packet) kept whole so that an answer is never spliced into the
/// middle of one. Both together hold at most [`QUEUE_BYTES`].
#[derive(Default)]
pub(crate) struct Ps2Queue {
    responses: VecDeque<u8>,
    data: VecDeque<u8>,
    /// Length of each event in `data`, oldest first.
    records: VecDeque<usize>,
    /// Bytes of the event being read that are still in `data`.
    in_record: usize,
}

impl Ps2Queue {
    pub(crate) fn len(&self) -> usize {
        self.responses.len() + self.data.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn free(&self) -> usize {
        QUEUE_BYTES.saturating_sub(self.len())
    }

    /// Queues a command's answer ahead of pending input, as devices do.
    pub(crate) fn push_response(&mut self, bytes: &[u8], who: &str) {
        // Answers come only in reply to host bytes, so the host controls how many pile
        // up; a guest that never reads must not grow us without bound.
        if self.responses.len() + bytes.len() > QUEUE_BYTES {
            tracing::debug!("{who}: output full, dropping command answer {bytes:02x?}");
            return;
        }
        self.responses.extend(bytes);
    }

    /// Queues one input event whole, or nothing if it does not fit.
    pub(crate) fn push_event(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() || bytes.len() > self.free() {
            return false;
        }
        self.data.extend(bytes);
        self.records.push_back(bytes.len());
        true
    }

    /// Drops pending input events, keeping answers (and an event already half read).
    pub(crate) fn clear_events(&mut self) {
        let keep = self.in_record;
        self.data.truncate(keep);
        self.records.clear();
    }

    pub(crate) fn pop(&mut self) -> Option<u8> {
        if self.in_record == 0 {
            if let Some(b) = self.responses.pop_front() {
                return Some(b);
            }
            self.in_record = self.records.pop_front()?;
        }
        self.in_record -= 1;
        self.data.pop_front()
    }
}

/// The keyboard itself: its output queue and the state the guest set.
pub struct Ps2Keyboard {
    queue: Ps2Queue,
    /// A command that waits for its argument byte.
    pending: Option<u8>,
    scanning: bool,
    scancode_set: u8,
    leds: u8,
    typematic: u8,
    /// The last byte the host read, for 0xFE.
    last_sent: u8,
    /// Set after an overrun marker was queued, until the host reads again.
    overrun: bool,
    /// Shift, Ctrl and Alt keys held (`MOD_*`), for PrintScreen and Pause.
    modifiers: u8,
}

impl Default for Ps2Keyboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Ps2Keyboard {
    pub fn new() -> Self {
        Ps2Keyboard {
            queue: Ps2Queue::default(),
            pending: None,
            scanning: true,
            scancode_set: 2,
            leds: 0,
            typematic: DEFAULT_TYPEMATIC,
            last_sent: 0,
            overrun: false,
            modifiers: 0,
        }
    }

    /// Power-on state (the machine was reset).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// LED state the guest last set with 0xED ([`LED_SCROLL_LOCK`] etc.).
    pub fn leds(&self) -> u8 {
        self.leds
    }

    /// The scan code set the keyboard sends (1 or 2).
    pub fn scancode_set(&self) -> u8 {
        self.scancode_set
    }

    /// Whether key presses are being reported (0xF4 / 0xF5).
    pub fn scanning(&self) -> bool {
        self.scanning
    }

    /// The typematic byte the guest set with 0xF3 (stored only).
    pub fn typematic(&self) -> u8 {
        self.typematic
    }

    pub fn has_output(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The next byte for the controller, if any.
    pub fn pop(&mut self) -> Option<u8> {
        let b = self.queue.pop()?;
        self.last_sent = b;
        self.overrun = false;
        Some(b)
    }

    fn ack(&mut self) {
        self.queue.push_response(&[ACK], "ps2 keyboard");
    }

    fn set_defaults(&mut self) {
        self.typematic = DEFAULT_TYPEMATIC;
    }

    /// A byte from the host (written to port 0x60 with no controller command pending).
    pub fn write(&mut self, byte: u8) {
        // Every argument is below 0x80; a command byte in its place starts a new command,
        // which is how real keyboards recover from a lost argument.
        if let Some(cmd) = self.pending.take()
            && byte < 0x80
        {
            self.argument(cmd, byte);
            return;
        }
        match byte {
            0xff => {
                // Back to power-on state: set 2, scanning, LEDs off, nothing queued.
                *self = Self::new();
                self.queue.push_response(&[ACK, BAT_OK], "ps2 keyboard");
            }
            0xfe => {
                let b = self.last_sent;
                self.queue.push_response(&[b], "ps2 keyboard");
            }
            0xf6 => {
                self.set_defaults();
                self.ack();
            }
            0xf5 => {
                self.set_defaults();
                self.scanning = false;
                self.queue.clear_events();
                self.ack();
            }
            0xf4 => {
                self.scanning = true;
                self.queue.clear_events();
                self.ack();
            }
            0xf3 | 0xf0 | 0xed => {
                self.pending = Some(byte);
                self.ack();
            }
            0xf2 => self.queue.push_response(&[ACK, 0xab, 0x83], "ps2 keyboard"),
            0xee => self.queue.push_response(&[ECHO], "ps2 keyboard"),
            _ => {
                tracing::debug!("ps2 keyboard: unknown command {byte:#04x}");
                self.queue.push_response(&[RESEND], "ps2 keyboard");
            }
        }
    }

    fn argument(&mut self, cmd: u8, arg: u8) {
        match cmd {
            0xed => {
                self.leds = arg & 0x07;
                self.ack();
            }
            0xf3 => {
                self.typematic = arg & 0x7f;
                self.ack();
            }
            0xf0 => match arg {
                0 => {
                    let set = self.scancode_set;
                    self.queue.push_response(&[ACK, set], "ps2 keyboard");
                }
                1 => {
                    self.scancode_set = 1;
                    self.ack();
                }
                2 | 3 => {
                    self.scancode_set = 2;
                    self.ack();
                }
                _ => self.queue.push_response(&[RESEND], "ps2 keyboard"),
            },
            _ => unreachable!("only 0xED, 0xF3 and 0xF0 take arguments"),
        }
    }

    /// A key went down or up. `code` is an XT set-1 make code with any 0xE0 prefix in the
    /// high byte (0x1C Enter, 0xE01C keypad Enter, 0xE048 Up). Also accepted: the form
    /// with bit 7 set instead of the prefix (0x9C for 0xE01C, which is how QEMU's
    /// extended key event numbers keys), and 0xE1xx for Pause. Unknown codes are dropped.
    ///
    /// Pause (0xE046 or 0xE1xx) sends its 8-byte sequence on press and nothing on
    /// release, or Ctrl+Break (E0 46) while a Ctrl key is down; PrintScreen (0xE037)
    /// carries its fake left shift unless Shift or Ctrl is down, and is SysRq (0x54)
    /// while Alt is down, as a real keyboard does.
    pub fn key_event(&mut self, code: u16, down: bool) {
        let (prefix, make) = match code {
            0x80..=0xff => (0xe0, (code & 0x7f) as u8),
            _ => ((code >> 8) as u8, (code & 0xff) as u8),
        };
        if let Some(bit) = modifier_bit(prefix, make) {
            if down {
                self.modifiers |= bit;
            } else {
                self.modifiers &= !bit;
            }
        }
        if !self.scanning {
            return;
        }
        let set2 = self.scancode_set == 2;
        let ctrl = self.modifiers & (MOD_LCTRL | MOD_RCTRL) != 0;
        let shift = self.modifiers & (MOD_LSHIFT | MOD_RSHIFT) != 0;
        let alt = self.modifiers & (MOD_LALT | MOD_RALT) != 0;
        let seq = match (prefix, make) {
            (0xe1, _) | (0xe0, 0x46) if !ctrl => {
                if !down {
                    return;
                }
                if set2 {
                    vec![0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]
                } else {
                    vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]
                }
            }
            (0xe1, _) => plain_key(set2, true, 0x46, down),
            (0xe0, 0x37) if alt => plain_key(set2, false, 0x54, down),
            (0xe0, 0x37) if !shift && !ctrl => match (set2, down) {
                (true, true) => vec![0xe0, 0x12, 0xe0, 0x7c],
                (true, false) => vec![0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12],
                (false, true) => vec![0xe0, 0x2a, 0xe0, 0x37],
                (false, false) => vec![0xe0, 0xb7, 0xe0, 0xaa],
            },
            (0x00 | 0xe0, 0x01..=0x7f) => plain_key(set2, prefix == 0xe0, make, down),
            _ => Vec::new(),
        };
        if seq.is_empty() {
            tracing::debug!("ps2 keyboard: ignoring key code {code:#06x}");
            return;
        }
        if !self.queue.push_event(&seq) {
            tracing::warn!("ps2 keyboard: buffer full, dropping key {code:#06x}");
            // A real keyboard queues an overrun marker once (0x00 in set 2, which the
            // controller turns into set 1's 0xFF) so the driver knows keys were lost.
            if !self.overrun {
                let marker = if set2 { 0x00 } else { 0xff };
                self.overrun = self.queue.push_event(&[marker]);
            }
        }
    }
}

const MOD_LSHIFT: u8 = 0x01;
const MOD_RSHIFT: u8 = 0x02;
const MOD_LCTRL: u8 = 0x04;
const MOD_RCTRL: u8 = 0x08;
const MOD_LALT: u8 = 0x10;
const MOD_RALT: u8 = 0x20;

/// The modifiers that change what PrintScreen and Pause send.
fn modifier_bit(prefix: u8, make: u8) -> Option<u8> {
    match (prefix, make) {
        (0x00, 0x2a) => Some(MOD_LSHIFT),
        (0x00, 0x36) => Some(MOD_RSHIFT),
        (0x00, 0x1d) => Some(MOD_LCTRL),
        (0xe0, 0x1d) => Some(MOD_RCTRL),
        (0x00, 0x38) => Some(MOD_LALT),
        (0xe0, 0x38) => Some(MOD_RALT),
        _ => None,
    }
}

/// The bytes of an ordinary key in the given set; empty if set 2 has no such key.
fn plain_key(set2: bool, extended: bool, make: u8, down: bool) -> Vec<u8> {
    let mut seq = Vec::with_capacity(3);
    if extended {
        seq.push(0xe0);
    }
    if set2 {
        let Some(s2) = set1_to_set2(make) else {
            return Vec::new();
        };
        if !down {
            seq.push(0xf0);
        }
        seq.push(s2);
    } else {
        seq.push(if down { make } else { make | 0x80 });
    }
    seq
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(k: &mut Ps2Keyboard) -> Vec<u8> {
        std::iter::from_fn(|| k.pop()).collect()
    }

    #[test]
    fn set1_set2_tables_are_inverse() {
        for s1 in 1u8..0x80 {
            let s2 = set1_to_set2(s1).unwrap_or_else(|| panic!("no set-2 code for {s1:#x}"));
            assert_eq!(
                translate_set2_to_set1(s2),
                s1,
                "set1 {s1:#x} via set2 {s2:#x}"
            );
        }
        assert_eq!(set1_to_set2(0x1c), Some(0x5a)); // Enter
        assert_eq!(set1_to_set2(0x1e), Some(0x1c)); // A
        assert_eq!(set1_to_set2(0x41), Some(0x83)); // F7
        assert_eq!(set1_to_set2(0x48), Some(0x75)); // keypad 8 / Up
        assert_eq!(set1_to_set2(0), None);
        assert_eq!(set1_to_set2(0x80), None);
    }

    #[test]
    fn commands_answer_like_an_mf2_keyboard() {
        let mut k = Ps2Keyboard::new();
        k.write(0xff);
        assert_eq!(drain(&mut k), [ACK, BAT_OK]);
        k.write(0xf2);
        assert_eq!(drain(&mut k), [ACK, 0xab, 0x83]);
        k.write(0xee);
        assert_eq!(drain(&mut k), [ECHO]);
        k.write(0xfe);
        assert_eq!(drain(&mut k), [ECHO], "resend repeats the last byte");
        k.write(0xf0);
        k.write(0x00);
        assert_eq!(drain(&mut k), [ACK, ACK, 2]);
        k.write(0xf0);
        k.write(0x03);
        k.write(0xf0);
        k.write(0x00);
        assert_eq!(
            drain(&mut k),
            [ACK, ACK, ACK, ACK, 2],
            "set 3 is served as set 2"
        );
        k.write(0xf0);
        k.write(0x01);
        assert_eq!(k.scancode_set(), 1);
        k.write(0xf0);
        k.write(0x07);
        assert_eq!(drain(&mut k), [ACK, ACK, ACK, RESEND]);
        k.write(0xf3);
        k.write(0x20);
        assert_eq!(k.typematic(), 0x20);
        k.write(0xf6);
        assert_eq!(k.typematic(), DEFAULT_TYPEMATIC);
        k.write(0xfb);
        assert_eq!(drain(&mut k), [ACK, ACK, ACK, RESEND]);
    }

    #[test]
    fn leds_and_interrupted_argument() {
        let mut k = Ps2Keyboard::new();
        k.write(0xed);
        k.write(LED_CAPS_LOCK | LED_NUM_LOCK);
        assert_eq!(drain(&mut k), [ACK, ACK]);
        assert_eq!(k.leds(), LED_CAPS_LOCK | LED_NUM_LOCK);
        // A command in place of the argument is a command.
        k.write(0xed);
        k.write(0xf2);
        assert_eq!(drain(&mut k), [ACK, ACK, 0xab, 0x83]);
        assert_eq!(k.leds(), LED_CAPS_LOCK | LED_NUM_LOCK);
    }

    #[test]
    fn keys_in_both_sets_and_specials() {
        let mut k = Ps2Keyboard::new();
        k.key_event(0xe048, true);
        k.key_event(0xe048, false);
        k.key_event(0x9c, true); // the bit-7 spelling of 0xE01C
        assert_eq!(drain(&mut k), [0xe0, 0x75, 0xe0, 0xf0, 0x75, 0xe0, 0x5a]);
        k.key_event(0xe037, true);
        k.key_event(0xe037, false);
        assert_eq!(
            drain(&mut k),
            [0xe0, 0x12, 0xe0, 0x7c, 0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12]
        );
        k.key_event(0xe11d, true);
        k.key_event(0xe11d, false);
        assert_eq!(
            drain(&mut k),
            [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]
        );
        k.write(0xf0);
        k.write(0x01);
        drain(&mut k);
        k.key_event(0x1c, true);
        k.key_event(0x1c, false);
        k.key_event(0xe01d, false);
        assert_eq!(drain(&mut k), [0x1c, 0x9c, 0xe0, 0x9d]);
        k.key_event(0x0100, true);
        k.key_event(0xe200, true);
        assert!(!k.has_output());
    }

    #[test]
    fn print_screen_and_pause_follow_the_modifiers() {
        let mut k = Ps2Keyboard::new();
        k.key_event(0xe046, true); // QEMU's number for Pause
        k.key_event(0xe046, false);
        assert_eq!(
            drain(&mut k),
            [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]
        );
        k.key_event(0xe01d, true);
        k.key_event(0xc6, true); // Ctrl+Break
        k.key_event(0xc6, false);
        k.key_event(0xe01d, false);
        assert_eq!(
            drain(&mut k),
            [0xe0, 0x14, 0xe0, 0x7e, 0xe0, 0xf0, 0x7e, 0xe0, 0xf0, 0x14]
        );
        k.key_event(0x38, true);
        k.key_event(0xe037, true); // Alt+SysRq
        k.key_event(0xe037, false);
        k.key_event(0x38, false);
        assert_eq!(drain(&mut k), [0x11, 0x84, 0xf0, 0x84, 0xf0, 0x11]);
        k.key_event(0x2a, true);
        k.key_event(0xe037, true); // Shift+PrintScreen: no fake shift
        k.key_event(0x2a, false);
        assert_eq!(drain(&mut k), [0x12, 0xe0, 0x7c, 0xf0, 0x12]);
        // Modifier state follows the host even while scanning is off.
        k.write(0xf5);
        k.key_event(0x1d, true);
        k.write(0xf4);
        drain(&mut k);
        k.key_event(0xe11d, true);
        assert_eq!(drain(&mut k), [0xe0, 0x7e]);
    }

    #[test]
    fn answers_never_split_a_key_sequence() {
        let mut k = Ps2Keyboard::new();
        k.key_event(0x1e, true);
        k.key_event(0x1e, false);
        assert_eq!(k.pop(), Some(0x1c));
        assert_eq!(k.pop(), Some(0xf0));
        k.write(0xee);
        assert_eq!(
            k.pop(),
            Some(0x1c),
            "the break code finishes before the answer"
        );
        assert_eq!(k.pop(), Some(ECHO));
    }

    #[test]
    fn disabled_keyboard_drops_keys_and_overflow_is_bounded() {
        let mut k = Ps2Keyboard::new();
        k.write(0xf5);
        k.key_event(0x1e, true);
        assert_eq!(drain(&mut k), [ACK]);
        k.write(0xf4);
        assert_eq!(drain(&mut k), [ACK]);
        for _ in 0..100 {
            k.key_event(0xe048, true);
            k.key_event(0xe048, false);
        }
        let out = drain(&mut k);
        // Three press/release pairs (2 + 3 bytes) fill 15 bytes; the overrun marker takes
        // the 16th, once.
        assert_eq!(out.len(), QUEUE_BYTES);
        assert_eq!(&out[..5], [0xe0, 0x75, 0xe0, 0xf0, 0x75]);
        assert_eq!(out[15], 0x00);
        k.write(0xff);
        assert_eq!(drain(&mut k), [ACK, BAT_OK]);
    }
}
