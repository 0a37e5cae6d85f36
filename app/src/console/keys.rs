//! Keys for the guest: egui's physical key → PC scan code (XT set 1, `0xE0xx` for
//! extended keys, as display::keymap and our i8042 number them), the keysym that travels
//! beside it, the Ctrl+Alt release chord of the keyboard grab, and the send-key menu.
//!
//! The scan code is what matters: the server (ours, and QEMU's) gives the guest the key at
//! that position, and the guest's own layout makes a character of it, so any host/guest
//! layout pair works. The keysym is informational for such servers.
//!
//! Limits of egui 0.37's physical key: it folds the keypad into the main keys (Numpad1 is
//! `Num1`, NumpadEnter is `Enter`, NumpadDivide is `Slash`, NumpadSubtract is `Minus`), so
//! keypad keys arrive as their main-block twins; NumpadAdd is the only `Plus` and keeps its
//! keypad code. Keys egui has no name for (NumpadMultiply, media keys) come with no
//! physical key and are sent as keysyms only.

use eframe::egui::Key;

/// Left Shift / Control / Alt, for synthetic chords.
pub const SHIFT: (u16, u32) = (0x2a, 0xffe1);
pub const CTRL: (u16, u32) = (0x1d, 0xffe3);
pub const ALT: (u16, u32) = (0x38, 0xffe9);

/// The scan code of the key at physical position `key` (named after a US keyboard).
pub fn scancode(key: Key) -> Option<u16> {
    use Key::*;
    Some(match key {
        Escape => 0x01,
        Num1 => 0x02,
        Num2 => 0x03,
        Num3 => 0x04,
        Num4 => 0x05,
        Num5 => 0x06,
        Num6 => 0x07,
        Num7 => 0x08,
        Num8 => 0x09,
        Num9 => 0x0a,
        Num0 => 0x0b,
        Minus => 0x0c,
        Equals => 0x0d,
        Backspace => 0x0e,
        Tab => 0x0f,
        Q => 0x10,
        W => 0x11,
        E => 0x12,
        R => 0x13,
        T => 0x14,
        Y => 0x15,
        U => 0x16,
        I => 0x17,
        O => 0x18,
        P => 0x19,
        OpenBracket => 0x1a,
        CloseBracket => 0x1b,
        Enter => 0x1c,
        ControlLeft => 0x1d,
        A => 0x1e,
        S => 0x1f,
        D => 0x20,
        F => 0x21,
        G => 0x22,
        H => 0x23,
        J => 0x24,
        K => 0x25,
        L => 0x26,
        Semicolon => 0x27,
        Quote => 0x28,
        Backtick => 0x29,
        ShiftLeft => 0x2a,
        Backslash => 0x2b,
        Z => 0x2c,
        X => 0x2d,
        C => 0x2e,
        V => 0x2f,
        B => 0x30,
        N => 0x31,
        M => 0x32,
        Comma => 0x33,
        Period => 0x34,
        Slash => 0x35,
        ShiftRight => 0x36,
        AltLeft => 0x38,
        Space => 0x39,
        CapsLock => 0x3a,
        F1 => 0x3b,
        F2 => 0x3c,
        F3 => 0x3d,
        F4 => 0x3e,
        F5 => 0x3f,
        F6 => 0x40,
        F7 => 0x41,
        F8 => 0x42,
        F9 => 0x43,
        F10 => 0x44,
        NumLock => 0x45,
        ScrollLock => 0x46,
        Plus => 0x4e, // only NumpadAdd is a physical `Plus`
        IntlBackslash => 0x56,
        F11 => 0x57,
        F12 => 0x58,
        F13 => 0x64,
        F14 => 0x65,
        F15 => 0x66,
        F16 => 0x67,
        F17 => 0x68,
        F18 => 0x69,
        F19 => 0x6a,
        F20 => 0x6b,
        F21 => 0x6c,
        F22 => 0x6d,
        F23 => 0x6e,
        F24 => 0x76,
        ControlRight => 0xe01d,
        PrintScreen => 0xe037,
        AltRight => 0xe038,
        Pause => 0xe046, // QEMU's numbering (the real key sends E1 1D 45 …)
        Home => 0xe047,
        ArrowUp => 0xe048,
        PageUp => 0xe049,
        ArrowLeft => 0xe04b,
        ArrowRight => 0xe04d,
        End => 0xe04f,
        ArrowDown => 0xe050,
        PageDown => 0xe051,
        Insert => 0xe052,
        Delete => 0xe053,
        SuperLeft => 0xe05b,
        SuperRight => 0xe05c,
        Menu => 0xe05d,
        Power => 0xe05e,
        Sleep => 0xe05f,
        AudioVolumeMute => 0xe020,
        AudioVolumeDown => 0xe02e,
        AudioVolumeUp => 0xe030,
        MediaPlayPause => 0xe022,
        MediaStop => 0xe024,
        MediaTrackPrevious => 0xe010,
        MediaTrackNext => 0xe019,
        _ => return None,
    })
}

/// The X11 keysym of logical key `key` (with Shift held or not), for the keysym field.
pub fn keysym(key: Key, shift: bool) -> Option<u32> {
    use Key::*;
    if let Some(c) = letter(key) {
        return Some(u32::from(if shift { c.to_ascii_uppercase() } else { c }));
    }
    let sym: u32 = match key {
        Enter => 0xff0d,
        Backspace => 0xff08,
        Tab => 0xff09,
        Escape => 0xff1b,
        Space => 0x20,
        Delete => 0xffff,
        Insert => 0xff63,
        Home => 0xff50,
        End => 0xff57,
        PageUp => 0xff55,
        PageDown => 0xff56,
        ArrowLeft => 0xff51,
        ArrowUp => 0xff52,
        ArrowRight => 0xff53,
        ArrowDown => 0xff54,
        ShiftLeft => 0xffe1,
        ShiftRight => 0xffe2,
        ControlLeft => 0xffe3,
        ControlRight => 0xffe4,
        AltLeft => 0xffe9,
        AltRight => 0xffea,
        SuperLeft => 0xffeb,
        SuperRight => 0xffec,
        CapsLock => 0xffe5,
        NumLock => 0xff7f,
        ScrollLock => 0xff14,
        PrintScreen => 0xff61,
        Pause => 0xff13,
        Menu => 0xff67,
        Num0 | Num1 | Num2 | Num3 | Num4 | Num5 | Num6 | Num7 | Num8 | Num9 => {
            const SHIFTED: &[u8; 10] = b")!@#$%^&*(";
            let d = key as u32 - Num0 as u32;
            if shift {
                u32::from(SHIFTED[d as usize])
            } else {
                u32::from(b'0') + d
            }
        }
        Minus => pick(shift, b'-', b'_'),
        Equals => pick(shift, b'=', b'+'),
        OpenBracket => pick(shift, b'[', b'{'),
        CloseBracket => pick(shift, b']', b'}'),
        Semicolon => pick(shift, b';', b':'),
        Quote => pick(shift, b'\'', b'"'),
        Backtick => pick(shift, b'`', b'~'),
        Backslash => pick(shift, b'\\', b'|'),
        Comma => pick(shift, b',', b'<'),
        Period => pick(shift, b'.', b'>'),
        Slash => pick(shift, b'/', b'?'),
        Colon => u32::from(b':'),
        Pipe => u32::from(b'|'),
        Questionmark => u32::from(b'?'),
        Exclamationmark => u32::from(b'!'),
        OpenCurlyBracket => u32::from(b'{'),
        CloseCurlyBracket => u32::from(b'}'),
        Plus => u32::from(b'+'),
        F1 | F2 | F3 | F4 | F5 | F6 | F7 | F8 | F9 | F10 | F11 | F12 | F13 | F14 | F15 | F16
        | F17 | F18 | F19 | F20 | F21 | F22 | F23 | F24 => 0xffbe + (key as u32 - F1 as u32),
        _ => return None,
    };
    Some(sym)
}

fn pick(shift: bool, plain: u8, shifted: u8) -> u32 {
    u32::from(if shift { shifted } else { plain })
}

fn letter(key: Key) -> Option<u8> {
    let d = (key as u32).checked_sub(Key::A as u32)?;
    (d < 26).then(|| b'a' + d as u8)
}

/// The keysym of a typed character: Latin-1 is its code point, the rest 0x0100_0000 + it.
pub fn char_keysym(c: char) -> u32 {
    let u = c as u32;
    if (0x20..=0x7e).contains(&u) || (0xa0..=0xff).contains(&u) {
        u
    } else {
        0x0100_0000 | u
    }
}

/// Watches for the grab's release chord: both Ctrl and Alt down, then both released with
/// no other key pressed in between (as virt-manager does, so Ctrl+Alt+Del still reaches
/// the guest and does not release the grab).
#[derive(Debug, Default)]
pub struct ReleaseChord {
    ctrl: [bool; 2],
    alt: [bool; 2],
    armed: bool,
}

impl ReleaseChord {
    /// Feeds one key event (repeats too); true when the chord just completed.
    pub fn feed(&mut self, key: Key, pressed: bool) -> bool {
        match key {
            Key::ControlLeft => self.ctrl[0] = pressed,
            Key::ControlRight => self.ctrl[1] = pressed,
            Key::AltLeft => self.alt[0] = pressed,
            Key::AltRight => self.alt[1] = pressed,
            _ => {
                if pressed {
                    self.armed = false;
                }
                return false;
            }
        }
        let ctrl = self.ctrl.iter().any(|d| *d);
        let alt = self.alt.iter().any(|d| *d);
        if pressed && ctrl && alt {
            self.armed = true;
        }
        if !pressed && !ctrl && !alt && self.armed {
            self.armed = false;
            return true;
        }
        false
    }

    pub fn reset(&mut self) {
        *self = ReleaseChord::default();
    }
}

/// An entry of the send-key menu: the keys, pressed in order and released in reverse.
pub struct Combo {
    pub label: &'static str,
    pub keys: &'static [(u16, u32)],
}

const DEL: (u16, u32) = (0xe053, 0xffff);
const BACKSPACE: (u16, u32) = (0x0e, 0xff08);

macro_rules! ctrl_alt_f {
    ($label:literal, $n:literal) => {
        Combo {
            label: $label,
            keys: &[CTRL, ALT, (0x3a + $n, 0xffbd + $n)],
        }
    };
}

pub const SEND_KEYS: &[Combo] = &[
    Combo {
        label: "Ctrl+Alt+Del",
        keys: &[CTRL, ALT, DEL],
    },
    Combo {
        label: "Ctrl+Alt+Backspace",
        keys: &[CTRL, ALT, BACKSPACE],
    },
    ctrl_alt_f!("Ctrl+Alt+F1", 1),
    ctrl_alt_f!("Ctrl+Alt+F2", 2),
    ctrl_alt_f!("Ctrl+Alt+F3", 3),
    ctrl_alt_f!("Ctrl+Alt+F4", 4),
    ctrl_alt_f!("Ctrl+Alt+F5", 5),
    ctrl_alt_f!("Ctrl+Alt+F6", 6),
    ctrl_alt_f!("Ctrl+Alt+F7", 7),
    Combo {
        label: "Print",
        keys: &[(0xe037, 0xff61)],
    },
];

/// A combo as (scan code, keysym, down) events: press in order, release in reverse.
pub fn combo_events(keys: &[(u16, u32)]) -> Vec<(u16, u32, bool)> {
    keys.iter()
        .map(|&(c, s)| (c, s, true))
        .chain(keys.iter().rev().map(|&(c, s)| (c, s, false)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_keys_are_us_positions() {
        assert_eq!(scancode(Key::A), Some(0x1e));
        assert_eq!(scancode(Key::Q), Some(0x10));
        assert_eq!(scancode(Key::Z), Some(0x2c));
        assert_eq!(scancode(Key::Num1), Some(0x02));
        assert_eq!(scancode(Key::Num0), Some(0x0b));
        assert_eq!(scancode(Key::F10), Some(0x44));
        assert_eq!(scancode(Key::F11), Some(0x57));
        assert_eq!(scancode(Key::ArrowUp), Some(0xe048));
        assert_eq!(scancode(Key::ControlRight), Some(0xe01d));
        assert_eq!(scancode(Key::IntlBackslash), Some(0x56));
        assert_eq!(scancode(Key::Colon), None); // a logical key only
    }

    /// Every key our physical map and display::keymap both know agrees on the code, so a
    /// key sent as a scan code and the same key sent as a keysym reach the guest alike.
    #[test]
    fn agrees_with_the_servers_keysym_map() {
        let mut checked = 0;
        for &key in Key::ALL {
            if key == Key::Plus {
                continue; // the keypad's +, where the keysym '+' means Shift+=
            }
            let (Some(code), Some(sym)) = (scancode(key), keysym(key, false)) else {
                continue;
            };
            if let Some(m) = display::keymap::keysym_to_xt(sym) {
                assert_eq!(m.code, code, "{key:?}");
                checked += 1;
            }
        }
        assert!(checked > 80, "only {checked} keys compared");
    }

    #[test]
    fn keysyms_follow_shift() {
        assert_eq!(keysym(Key::A, false), Some(u32::from(b'a')));
        assert_eq!(keysym(Key::A, true), Some(u32::from(b'A')));
        assert_eq!(keysym(Key::Num2, true), Some(u32::from(b'@')));
        assert_eq!(keysym(Key::Num7, false), Some(u32::from(b'7')));
        assert_eq!(keysym(Key::Slash, true), Some(u32::from(b'?')));
        assert_eq!(keysym(Key::F12, false), Some(0xffc9));
        assert_eq!(keysym(Key::Enter, false), Some(0xff0d));
        assert_eq!(char_keysym('é'), 0xe9);
        assert_eq!(char_keysym('€'), 0x0100_20ac);
    }

    #[test]
    fn ctrl_alt_releases_only_alone() {
        let mut c = ReleaseChord::default();
        assert!(!c.feed(Key::ControlLeft, true));
        assert!(!c.feed(Key::AltLeft, true));
        assert!(!c.feed(Key::AltLeft, false));
        assert!(c.feed(Key::ControlLeft, false));
        // Ctrl+Alt+Del: not a release.
        c.feed(Key::ControlLeft, true);
        c.feed(Key::AltRight, true);
        c.feed(Key::Delete, true);
        c.feed(Key::Delete, false);
        c.feed(Key::AltRight, false);
        assert!(!c.feed(Key::ControlLeft, false));
        // Ctrl alone, or Alt+Tab: not a release.
        c.feed(Key::ControlRight, true);
        assert!(!c.feed(Key::ControlRight, false));
        c.feed(Key::AltLeft, true);
        c.feed(Key::Tab, true);
        assert!(!c.feed(Key::AltLeft, false));
        // Auto-repeat of the held modifiers does not disarm it.
        c.feed(Key::AltLeft, true);
        c.feed(Key::ControlRight, true);
        c.feed(Key::ControlRight, true);
        c.feed(Key::ControlRight, false);
        assert!(c.feed(Key::AltLeft, false));
    }

    #[test]
    fn send_key_combos() {
        let cad = &SEND_KEYS[0];
        assert_eq!(cad.label, "Ctrl+Alt+Del");
        assert_eq!(
            combo_events(cad.keys),
            vec![
                (0x1d, 0xffe3, true),
                (0x38, 0xffe9, true),
                (0xe053, 0xffff, true),
                (0xe053, 0xffff, false),
                (0x38, 0xffe9, false),
                (0x1d, 0xffe3, false),
            ]
        );
        let f7 = SEND_KEYS.iter().find(|c| c.label == "Ctrl+Alt+F7").unwrap();
        assert_eq!(f7.keys[2], (0x41, 0xffc4));
        let f1 = SEND_KEYS.iter().find(|c| c.label == "Ctrl+Alt+F1").unwrap();
        assert_eq!(f1.keys[2], (0x3b, 0xffbe));
    }
}
