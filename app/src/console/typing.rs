//! "Type clipboard": host text as key presses on a US keyboard, for places no clipboard
//! agent reaches (firmware, installers, password prompts).
//!
//! Each character becomes its US-layout key (display::keymap) as a scan code with its
//! keysym, wrapped in Left Shift when the character is on the shifted level. Newline is
//! Enter, tab is Tab; a character with no key on a US keyboard (é, €, control codes) is
//! skipped and counted so the console can say how many were left out. The guest must use a
//! US layout for the characters to come out as typed.

use std::time::Duration;

use display::keymap::{Shift, keysym_to_xt};

use super::keys::{SHIFT, char_keysym};

/// Time between two key events while typing. A PC BIOS keeps 15 keys in its buffer and a
/// program at a boot prompt may read them slowly; one event per 10 ms (a character with
/// Shift is four events, 40 ms) is about 25-50 characters a second, slow enough that a
/// reader polling int 16h does not fall 15 keys behind, and fast enough for a password or
/// a command line.
pub const TYPE_INTERVAL: Duration = Duration::from_millis(10);

/// One key event: scan code, keysym, down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stroke {
    pub code: u16,
    pub keysym: u32,
    pub down: bool,
}

/// The key events that type `text`, and how many characters had no key.
pub fn strokes(text: &str) -> (Vec<Stroke>, usize) {
    let mut out = Vec::with_capacity(text.len() * 2);
    let mut skipped = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let (keysym, mapping) = match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    continue; // CR LF is one Enter
                }
                (0xff0d, keysym_to_xt(0xff0d))
            }
            '\n' => (0xff0d, keysym_to_xt(0xff0d)),
            '\t' => (0xff09, keysym_to_xt(0xff09)),
            c if c.is_ascii_graphic() || c == ' ' => {
                let sym = char_keysym(c);
                (sym, keysym_to_xt(sym))
            }
            _ => (0, None),
        };
        let Some(m) = mapping else {
            skipped += 1;
            continue;
        };
        let shifted = m.shift == Shift::Shifted;
        let key = |down| Stroke {
            code: m.code,
            keysym,
            down,
        };
        let shift = |down| Stroke {
            code: SHIFT.0,
            keysym: SHIFT.1,
            down,
        };
        if shifted {
            out.push(shift(true));
        }
        out.push(key(true));
        out.push(key(false));
        if shifted {
            out.push(shift(false));
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(code: u16, keysym: u32, down: bool) -> Stroke {
        Stroke { code, keysym, down }
    }

    #[test]
    fn shift_wraps_shifted_characters_and_newline_is_enter() {
        let (k, skipped) = strokes("aB\r\n!");
        assert_eq!(skipped, 0);
        assert_eq!(
            k,
            vec![
                s(0x1e, 0x61, true),
                s(0x1e, 0x61, false),
                s(0x2a, 0xffe1, true),
                s(0x30, 0x42, true),
                s(0x30, 0x42, false),
                s(0x2a, 0xffe1, false),
                s(0x1c, 0xff0d, true),
                s(0x1c, 0xff0d, false),
                s(0x2a, 0xffe1, true),
                s(0x02, 0x21, true),
                s(0x02, 0x21, false),
                s(0x2a, 0xffe1, false),
            ]
        );
    }

    #[test]
    fn characters_without_a_key_are_counted() {
        let (k, skipped) = strokes("é€\u{7}x");
        assert_eq!(skipped, 3);
        assert_eq!(k, vec![s(0x2d, 0x78, true), s(0x2d, 0x78, false)]);
    }

    #[test]
    fn every_printable_ascii_character_types() {
        let all: String = (0x20u8..0x7f).map(char::from).collect();
        let (k, skipped) = strokes(&all);
        assert_eq!(skipped, 0);
        assert!(k.len() >= 95 * 2);
    }
}
