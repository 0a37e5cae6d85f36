//! Keys as the bytes a VT100 (xterm) terminal sends, which is what a Linux getty, a shell
//! and a text installer (newt, dialog) on the other side of COM1 expect.

use eframe::egui::{Key, Modifiers};

/// The bytes for a key press that egui gives as a key rather than as text (text comes as
/// [`eframe::egui::Event::Text`] and goes as its UTF-8). `application_cursor` is the
/// screen's DECCKM mode, in which the arrows send `ESC O x` instead of `ESC [ x`.
pub fn key_bytes(key: Key, mods: Modifiers, application_cursor: bool) -> Option<Vec<u8>> {
    if mods.ctrl
        && !mods.alt
        && let Some(b) = ctrl_byte(key)
    {
        return Some(vec![b]);
    }
    let csi = |s: &str| format!("\x1b[{s}").into_bytes();
    let arrow = |c: char| {
        if application_cursor {
            format!("\x1bO{c}").into_bytes()
        } else {
            format!("\x1b[{c}").into_bytes()
        }
    };
    Some(match key {
        // A terminal's Enter is a carriage return; the guest's tty turns it into a newline.
        Key::Enter => b"\r".to_vec(),
        // DEL, Linux's default erase character (^?).
        Key::Backspace => vec![0x7f],
        Key::Tab if mods.shift => csi("Z"),
        Key::Tab => b"\t".to_vec(),
        Key::Escape => vec![0x1b],
        Key::ArrowUp => arrow('A'),
        Key::ArrowDown => arrow('B'),
        Key::ArrowRight => arrow('C'),
        Key::ArrowLeft => arrow('D'),
        Key::Home => arrow('H'),
        Key::End => arrow('F'),
        Key::Insert => csi("2~"),
        Key::Delete => csi("3~"),
        Key::PageUp => csi("5~"),
        Key::PageDown => csi("6~"),
        Key::F1 => b"\x1bOP".to_vec(),
        Key::F2 => b"\x1bOQ".to_vec(),
        Key::F3 => b"\x1bOR".to_vec(),
        Key::F4 => b"\x1bOS".to_vec(),
        Key::F5 => csi("15~"),
        Key::F6 => csi("17~"),
        Key::F7 => csi("18~"),
        Key::F8 => csi("19~"),
        Key::F9 => csi("20~"),
        Key::F10 => csi("21~"),
        Key::F11 => csi("23~"),
        Key::F12 => csi("24~"),
        _ => return None,
    })
}

/// Ctrl with a letter or one of `@[\]^_` (and Space, as Ctrl+@): the C0 control code.
fn ctrl_byte(key: Key) -> Option<u8> {
    let name = key.name();
    if name.len() == 1 {
        let c = name.as_bytes()[0].to_ascii_uppercase();
        if c.is_ascii_uppercase() {
            return Some(c & 0x1f);
        }
    }
    Some(match key {
        Key::Space => 0,
        Key::OpenBracket => 0x1b,
        Key::Backslash => 0x1c,
        Key::CloseBracket => 0x1d,
        Key::Minus => 0x1f,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Modifiers = Modifiers::NONE;

    fn ctrl() -> Modifiers {
        Modifiers {
            ctrl: true,
            ..Modifiers::NONE
        }
    }

    #[test]
    fn editing_keys_send_what_a_vt100_sends() {
        assert_eq!(key_bytes(Key::Enter, NONE, false).unwrap(), b"\r");
        assert_eq!(key_bytes(Key::Backspace, NONE, false).unwrap(), b"\x7f");
        assert_eq!(key_bytes(Key::Tab, NONE, false).unwrap(), b"\t");
        assert_eq!(key_bytes(Key::Escape, NONE, false).unwrap(), b"\x1b");
        assert_eq!(key_bytes(Key::Delete, NONE, false).unwrap(), b"\x1b[3~");
        assert_eq!(key_bytes(Key::PageDown, NONE, false).unwrap(), b"\x1b[6~");
        assert_eq!(key_bytes(Key::F1, NONE, false).unwrap(), b"\x1bOP");
        assert_eq!(key_bytes(Key::F10, NONE, false).unwrap(), b"\x1b[21~");
        // Letters come as text, not as keys.
        assert_eq!(key_bytes(Key::A, NONE, false), None);
    }

    #[test]
    fn arrows_follow_the_cursor_key_mode() {
        assert_eq!(key_bytes(Key::ArrowUp, NONE, false).unwrap(), b"\x1b[A");
        assert_eq!(key_bytes(Key::ArrowLeft, NONE, false).unwrap(), b"\x1b[D");
        assert_eq!(key_bytes(Key::ArrowUp, NONE, true).unwrap(), b"\x1bOA");
        assert_eq!(key_bytes(Key::End, NONE, true).unwrap(), b"\x1bOF");
    }

    #[test]
    fn ctrl_letters_are_control_codes() {
        assert_eq!(key_bytes(Key::C, ctrl(), false).unwrap(), [0x03]);
        assert_eq!(key_bytes(Key::D, ctrl(), false).unwrap(), [0x04]);
        assert_eq!(key_bytes(Key::Z, ctrl(), false).unwrap(), [0x1a]);
        assert_eq!(key_bytes(Key::OpenBracket, ctrl(), false).unwrap(), [0x1b]);
        assert_eq!(key_bytes(Key::Space, ctrl(), false).unwrap(), [0x00]);
        // Ctrl with an arrow is still the arrow.
        assert_eq!(key_bytes(Key::ArrowUp, ctrl(), false).unwrap(), b"\x1b[A");
    }
}
