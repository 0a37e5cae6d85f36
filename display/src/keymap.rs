//! X11 keysyms (what RFB KeyEvents carry) to PC scan codes for a US keyboard layout. A
//! client that sends QEMU's extended key event gives us the scan code itself and this
//! map is not used; plain keysyms go through it.
//!
//! Scan codes are XT "set 1" codes with an 0xE0 prefix in the high byte (0xE048 is the
//! Up arrow), the numbering QEMU's extended key event uses and our i8042 takes.
//!
//! A keysym names a character, not a key: `A` and `a` are the same key, one with Shift.
//! [`KeyMapping::shift`] says which Shift state the character needs, so the input side
//! can press or release Shift around the key when the client did not (some clients send
//! `A` without a Shift event).

/// The Shift state a keysym's character needs on a US layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    /// The key means the same with or without Shift (Enter, arrows, modifiers).
    Any,
    /// The character is on the shifted level (`A`, `!`, `{`).
    Shifted,
    /// The character is on the unshifted level (`a`, `1`, `[`).
    Unshifted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMapping {
    pub code: u16,
    pub shift: Shift,
}

/// Left Shift's scan code, for the input side's synthetic Shift.
pub const LEFT_SHIFT: u16 = 0x2a;
pub const RIGHT_SHIFT: u16 = 0x36;

/// The printable ASCII characters: (unshifted, shifted, scan code) per key.
const PRINTABLE: &[(u8, u8, u16)] = &[
    (b'1', b'!', 0x02),
    (b'2', b'@', 0x03),
    (b'3', b'#', 0x04),
    (b'4', b'$', 0x05),
    (b'5', b'%', 0x06),
    (b'6', b'^', 0x07),
    (b'7', b'&', 0x08),
    (b'8', b'*', 0x09),
    (b'9', b'(', 0x0a),
    (b'0', b')', 0x0b),
    (b'-', b'_', 0x0c),
    (b'=', b'+', 0x0d),
    (b'q', b'Q', 0x10),
    (b'w', b'W', 0x11),
    (b'e', b'E', 0x12),
    (b'r', b'R', 0x13),
    (b't', b'T', 0x14),
    (b'y', b'Y', 0x15),
    (b'u', b'U', 0x16),
    (b'i', b'I', 0x17),
    (b'o', b'O', 0x18),
    (b'p', b'P', 0x19),
    (b'[', b'{', 0x1a),
    (b']', b'}', 0x1b),
    (b'a', b'A', 0x1e),
    (b's', b'S', 0x1f),
    (b'd', b'D', 0x20),
    (b'f', b'F', 0x21),
    (b'g', b'G', 0x22),
    (b'h', b'H', 0x23),
    (b'j', b'J', 0x24),
    (b'k', b'K', 0x25),
    (b'l', b'L', 0x26),
    (b';', b':', 0x27),
    (b'\'', b'"', 0x28),
    (b'`', b'~', 0x29),
    (b'\\', b'|', 0x2b),
    (b'z', b'Z', 0x2c),
    (b'x', b'X', 0x2d),
    (b'c', b'C', 0x2e),
    (b'v', b'V', 0x2f),
    (b'b', b'B', 0x30),
    (b'n', b'N', 0x31),
    (b'm', b'M', 0x32),
    (b',', b'<', 0x33),
    (b'.', b'>', 0x34),
    (b'/', b'?', 0x35),
];

/// Keys that are not characters: (keysym, scan code).
const SPECIAL: &[(u32, u16)] = &[
    (0x0020, 0x39),   // space
    (0xff08, 0x0e),   // BackSpace
    (0xff09, 0x0f),   // Tab
    (0xfe20, 0x0f),   // ISO_Left_Tab (Shift+Tab)
    (0xff0d, 0x1c),   // Return
    (0xff1b, 0x01),   // Escape
    (0xff13, 0xe046), // Pause (QEMU's numbering)
    (0xff14, 0x46),   // Scroll_Lock
    (0xff15, 0x54),   // Sys_Req
    (0xff61, 0xe037), // Print
    (0xff63, 0xe052), // Insert
    (0xffff, 0xe053), // Delete
    (0xff50, 0xe047), // Home
    (0xff57, 0xe04f), // End
    (0xff55, 0xe049), // Page_Up
    (0xff56, 0xe051), // Page_Down
    (0xff51, 0xe04b), // Left
    (0xff52, 0xe048), // Up
    (0xff53, 0xe04d), // Right
    (0xff54, 0xe050), // Down
    (0xff67, 0xe05d), // Menu
    (0xff7f, 0x45),   // Num_Lock
    (0xffe5, 0x3a),   // Caps_Lock
    (0xffe1, 0x2a),   // Shift_L
    (0xffe2, 0x36),   // Shift_R
    (0xffe3, 0x1d),   // Control_L
    (0xffe4, 0xe01d), // Control_R
    (0xffe9, 0x38),   // Alt_L
    (0xffea, 0xe038), // Alt_R
    (0xfe03, 0xe038), // ISO_Level3_Shift (AltGr)
    (0xffe7, 0xe05b), // Meta_L
    (0xffe8, 0xe05c), // Meta_R
    (0xffeb, 0xe05b), // Super_L
    (0xffec, 0xe05c), // Super_R
    (0xffbe, 0x3b),   // F1
    (0xffbf, 0x3c),   // F2
    (0xffc0, 0x3d),   // F3
    (0xffc1, 0x3e),   // F4
    (0xffc2, 0x3f),   // F5
    (0xffc3, 0x40),   // F6
    (0xffc4, 0x41),   // F7
    (0xffc5, 0x42),   // F8
    (0xffc6, 0x43),   // F9
    (0xffc7, 0x44),   // F10
    (0xffc8, 0x57),   // F11
    (0xffc9, 0x58),   // F12
    (0xff8d, 0xe01c), // KP_Enter
    (0xffaa, 0x37),   // KP_Multiply
    (0xffab, 0x4e),   // KP_Add
    (0xffad, 0x4a),   // KP_Subtract
    (0xffae, 0x53),   // KP_Decimal
    (0xffaf, 0xe035), // KP_Divide
    (0xffbd, 0x59),   // KP_Equal
    (0xffb0, 0x52),   // KP_0
    (0xffb1, 0x4f),   // KP_1
    (0xffb2, 0x50),   // KP_2
    (0xffb3, 0x51),   // KP_3
    (0xffb4, 0x4b),   // KP_4
    (0xffb5, 0x4c),   // KP_5
    (0xffb6, 0x4d),   // KP_6
    (0xffb7, 0x47),   // KP_7
    (0xffb8, 0x48),   // KP_8
    (0xffb9, 0x49),   // KP_9
    (0xff95, 0x47),   // KP_Home
    (0xff96, 0x4b),   // KP_Left
    (0xff97, 0x48),   // KP_Up
    (0xff98, 0x4d),   // KP_Right
    (0xff99, 0x50),   // KP_Down
    (0xff9a, 0x49),   // KP_Page_Up
    (0xff9b, 0x51),   // KP_Page_Down
    (0xff9c, 0x4f),   // KP_End
    (0xff9d, 0x4c),   // KP_Begin
    (0xff9e, 0x52),   // KP_Insert
    (0xff9f, 0x53),   // KP_Delete
];

/// The key for `keysym` on a US keyboard, or `None` for keysyms it has no key for.
pub fn keysym_to_xt(keysym: u32) -> Option<KeyMapping> {
    if let Some(&(_, code)) = SPECIAL.iter().find(|(k, _)| *k == keysym) {
        return Some(KeyMapping {
            code,
            shift: Shift::Any,
        });
    }
    let c = u8::try_from(keysym).ok()?;
    PRINTABLE.iter().find_map(|&(lower, upper, code)| {
        if c == lower {
            Some(KeyMapping {
                code,
                shift: Shift::Unshifted,
            })
        } else if c == upper {
            Some(KeyMapping {
                code,
                shift: Shift::Shifted,
            })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_punctuation() {
        assert_eq!(
            keysym_to_xt('a' as u32),
            Some(KeyMapping {
                code: 0x1e,
                shift: Shift::Unshifted
            })
        );
        assert_eq!(
            keysym_to_xt('A' as u32),
            Some(KeyMapping {
                code: 0x1e,
                shift: Shift::Shifted
            })
        );
        assert_eq!(keysym_to_xt('1' as u32).unwrap().code, 0x02);
        assert_eq!(keysym_to_xt('!' as u32).unwrap().code, 0x02);
        assert_eq!(
            keysym_to_xt('?' as u32),
            Some(KeyMapping {
                code: 0x35,
                shift: Shift::Shifted
            })
        );
        assert_eq!(keysym_to_xt(' ' as u32).unwrap().code, 0x39);
    }

    #[test]
    fn every_printable_ascii_character_has_a_key() {
        for c in 0x20u32..0x7f {
            assert!(keysym_to_xt(c).is_some(), "{:?}", char::from_u32(c));
        }
    }

    #[test]
    fn keys_that_are_not_characters() {
        assert_eq!(keysym_to_xt(0xff52).unwrap().code, 0xe048); // Up
        assert_eq!(keysym_to_xt(0xff8d).unwrap().code, 0xe01c); // KP_Enter
        assert_eq!(keysym_to_xt(0xffc9).unwrap().code, 0x58); // F12
        assert_eq!(keysym_to_xt(0xffe4).unwrap().code, 0xe01d); // Control_R
        assert_eq!(
            keysym_to_xt(0xff1b).unwrap(),
            KeyMapping {
                code: 0x01,
                shift: Shift::Any
            }
        );
        assert_eq!(keysym_to_xt(0x20ac), None); // € has no key on a US layout
    }

    #[test]
    fn no_two_special_keysyms_repeat() {
        for (i, (k, _)) in SPECIAL.iter().enumerate() {
            assert!(SPECIAL[i + 1..].iter().all(|(o, _)| o != k), "{k:#x} twice");
        }
    }
}
