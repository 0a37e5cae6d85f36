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
//!
//! Keys also have names here, X's keysym names (`Return`, `Page_Up`, `exclam`, `a`), and
//! [`parse_chord`] reads chords of them (`ctrl-alt-Delete`): what `vmdesk send-key` and the
//! VMM's `send-key` control command take. The names live in the same tables as the scan
//! codes, so a key has a name exactly when it has a scan code.

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

/// Keys that are not characters: (X keysym name, keysym, scan code). The names are what
/// [`keysym_from_name`] knows them by.
const SPECIAL: &[(&str, u32, u16)] = &[
    ("space", 0x0020, 0x39),
    ("BackSpace", 0xff08, 0x0e),
    ("Tab", 0xff09, 0x0f),
    ("ISO_Left_Tab", 0xfe20, 0x0f), // Shift+Tab
    ("Return", 0xff0d, 0x1c),
    ("Escape", 0xff1b, 0x01),
    ("Pause", 0xff13, 0xe046), // QEMU's numbering
    ("Scroll_Lock", 0xff14, 0x46),
    ("Sys_Req", 0xff15, 0x54),
    ("Print", 0xff61, 0xe037),
    ("Insert", 0xff63, 0xe052),
    ("Delete", 0xffff, 0xe053),
    ("Home", 0xff50, 0xe047),
    ("End", 0xff57, 0xe04f),
    ("Page_Up", 0xff55, 0xe049),
    ("Page_Down", 0xff56, 0xe051),
    ("Left", 0xff51, 0xe04b),
    ("Up", 0xff52, 0xe048),
    ("Right", 0xff53, 0xe04d),
    ("Down", 0xff54, 0xe050),
    ("Menu", 0xff67, 0xe05d),
    ("Num_Lock", 0xff7f, 0x45),
    ("Caps_Lock", 0xffe5, 0x3a),
    ("Shift_L", 0xffe1, 0x2a),
    ("Shift_R", 0xffe2, 0x36),
    ("Control_L", 0xffe3, 0x1d),
    ("Control_R", 0xffe4, 0xe01d),
    ("Alt_L", 0xffe9, 0x38),
    ("Alt_R", 0xffea, 0xe038),
    ("ISO_Level3_Shift", 0xfe03, 0xe038), // AltGr
    ("Meta_L", 0xffe7, 0xe05b),
    ("Meta_R", 0xffe8, 0xe05c),
    ("Super_L", 0xffeb, 0xe05b),
    ("Super_R", 0xffec, 0xe05c),
    ("F1", 0xffbe, 0x3b),
    ("F2", 0xffbf, 0x3c),
    ("F3", 0xffc0, 0x3d),
    ("F4", 0xffc1, 0x3e),
    ("F5", 0xffc2, 0x3f),
    ("F6", 0xffc3, 0x40),
    ("F7", 0xffc4, 0x41),
    ("F8", 0xffc5, 0x42),
    ("F9", 0xffc6, 0x43),
    ("F10", 0xffc7, 0x44),
    ("F11", 0xffc8, 0x57),
    ("F12", 0xffc9, 0x58),
    ("KP_Enter", 0xff8d, 0xe01c),
    ("KP_Multiply", 0xffaa, 0x37),
    ("KP_Add", 0xffab, 0x4e),
    ("KP_Subtract", 0xffad, 0x4a),
    ("KP_Decimal", 0xffae, 0x53),
    ("KP_Divide", 0xffaf, 0xe035),
    ("KP_Equal", 0xffbd, 0x59),
    ("KP_0", 0xffb0, 0x52),
    ("KP_1", 0xffb1, 0x4f),
    ("KP_2", 0xffb2, 0x50),
    ("KP_3", 0xffb3, 0x51),
    ("KP_4", 0xffb4, 0x4b),
    ("KP_5", 0xffb5, 0x4c),
    ("KP_6", 0xffb6, 0x4d),
    ("KP_7", 0xffb7, 0x47),
    ("KP_8", 0xffb8, 0x48),
    ("KP_9", 0xffb9, 0x49),
    ("KP_Home", 0xff95, 0x47),
    ("KP_Left", 0xff96, 0x4b),
    ("KP_Up", 0xff97, 0x48),
    ("KP_Right", 0xff98, 0x4d),
    ("KP_Down", 0xff99, 0x50),
    ("KP_Page_Up", 0xff9a, 0x49),
    ("KP_Page_Down", 0xff9b, 0x51),
    ("KP_End", 0xff9c, 0x4f),
    ("KP_Begin", 0xff9d, 0x4c),
    ("KP_Insert", 0xff9e, 0x52),
    ("KP_Delete", 0xff9f, 0x53),
];

/// The key for `keysym` on a US keyboard, or `None` for keysyms it has no key for.
pub fn keysym_to_xt(keysym: u32) -> Option<KeyMapping> {
    if let Some(&(_, _, code)) = SPECIAL.iter().find(|(_, k, _)| *k == keysym) {
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

/// The X keysym names of the printable characters that are not letters or digits
/// (letters and digits are named by themselves; space is in [`SPECIAL`]).
const CHARACTER_NAMES: &[(&str, u8)] = &[
    ("exclam", b'!'),
    ("quotedbl", b'"'),
    ("numbersign", b'#'),
    ("dollar", b'$'),
    ("percent", b'%'),
    ("ampersand", b'&'),
    ("apostrophe", b'\''),
    ("parenleft", b'('),
    ("parenright", b')'),
    ("asterisk", b'*'),
    ("plus", b'+'),
    ("comma", b','),
    ("minus", b'-'),
    ("period", b'.'),
    ("slash", b'/'),
    ("colon", b':'),
    ("semicolon", b';'),
    ("less", b'<'),
    ("equal", b'='),
    ("greater", b'>'),
    ("question", b'?'),
    ("at", b'@'),
    ("bracketleft", b'['),
    ("backslash", b'\\'),
    ("bracketright", b']'),
    ("asciicircum", b'^'),
    ("underscore", b'_'),
    ("grave", b'`'),
    ("braceleft", b'{'),
    ("bar", b'|'),
    ("braceright", b'}'),
    ("asciitilde", b'~'),
];

/// Short names people write for keys (QEMU's and virsh's habits), and X's own aliases:
/// (alias, the X keysym name it stands for).
const ALIASES: &[(&str, &str)] = &[
    ("ctrl", "Control_L"),
    ("control", "Control_L"),
    ("alt", "Alt_L"),
    ("altgr", "ISO_Level3_Shift"),
    ("shift", "Shift_L"),
    ("super", "Super_L"),
    ("meta", "Meta_L"),
    ("enter", "Return"),
    ("esc", "Escape"),
    ("Prior", "Page_Up"),
    ("Next", "Page_Down"),
];

/// The keysym an X keysym name (or one of the [`ALIASES`]) stands for.
///
/// A single printable character is its own keysym (`a`, `A`, `1`, `!`); other names are
/// X's (`Return`, `Page_Up`, `exclam`), matched exactly first and then ignoring case, so
/// `return` and `CTRL` work while `a` and `A` stay two characters.
pub fn keysym_from_name(name: &str) -> Option<u32> {
    if let [c @ 0x20..=0x7e] = name.as_bytes() {
        return Some(u32::from(*c));
    }
    lookup(name, |a, b| a == b).or_else(|| lookup(name, str::eq_ignore_ascii_case))
}

/// [`keysym_from_name`] for names other than single characters, with `same` telling
/// which names are the same.
fn lookup(name: &str, same: fn(&str, &str) -> bool) -> Option<u32> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| same(alias, name))
        .map_or(name, |&(_, x)| x);
    SPECIAL
        .iter()
        .find(|(n, _, _)| same(n, name))
        .map(|&(_, keysym, _)| keysym)
        .or_else(|| {
            CHARACTER_NAMES
                .iter()
                .find(|(n, _)| same(n, name))
                .map(|&(_, c)| u32::from(c))
        })
}

/// One key of a chord: the keysym it was named by and its key's scan code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChordKey {
    pub keysym: u32,
    pub code: u16,
}

/// The most keys one chord may hold: their presses must fit the PS/2 keyboard's 16-byte
/// buffer (two bytes for an extended key) before the guest reads any.
pub const MAX_CHORD_KEYS: usize = 8;

/// Why a chord does not parse; the message names the chord and the bad part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChordError {
    #[error(
        "unknown key '{name}'{}: key names are X keysyms, such as Return, Escape, Tab, \
         BackSpace, space, Delete, Up, Page_Down, F1, a, A, 1, exclam (or !), with ctrl, \
         alt, shift and super for the modifiers",
        in_chord(chord, name)
    )]
    Unknown { name: String, chord: String },
    #[error("'{0}': an empty key name (keys in a chord are joined by '-'; the '-' key is minus)")]
    Empty(String),
    #[error("'{chord}': the {name} key twice")]
    Twice { name: String, chord: String },
    #[error("'{0}': more than {MAX_CHORD_KEYS} keys in one chord")]
    TooMany(String),
    #[error("no keys to send")]
    Nothing,
}

fn in_chord(chord: &str, name: &str) -> String {
    if chord == name {
        String::new()
    } else {
        format!(" in '{chord}'")
    }
}

/// Parses a chord: key names joined by '-' (`ctrl-alt-Delete`, `shift-a`, `Return`),
/// pressed in this order and released in reverse. A lone `-` is the minus key.
///
/// The names name keys, as on a keyboard: `shift-a` is Shift and the A key, which types
/// `A`. A character that is on the shifted level (`A`, `!`, `exclam`) gets Left Shift
/// pressed just before it, unless the chord holds a Shift already, so `A` alone types `A`
/// too and `H i exclam` types `Hi!`.
pub fn parse_chord(chord: &str) -> Result<Vec<ChordKey>, ChordError> {
    let names: Vec<&str> = if chord == "-" {
        vec!["-"]
    } else {
        chord.split('-').collect()
    };
    let mut keys: Vec<(ChordKey, Shift)> = Vec::with_capacity(names.len() + 1);
    for name in names {
        if name.is_empty() {
            return Err(ChordError::Empty(chord.to_string()));
        }
        let unknown = || ChordError::Unknown {
            name: name.to_string(),
            chord: chord.to_string(),
        };
        let keysym = keysym_from_name(name).ok_or_else(unknown)?;
        let m = keysym_to_xt(keysym).ok_or_else(unknown)?;
        if keys.iter().any(|(k, _)| k.code == m.code) {
            return Err(ChordError::Twice {
                name: name.to_string(),
                chord: chord.to_string(),
            });
        }
        keys.push((
            ChordKey {
                keysym,
                code: m.code,
            },
            m.shift,
        ));
    }
    let has_shift = keys
        .iter()
        .any(|(k, _)| k.code == LEFT_SHIFT || k.code == RIGHT_SHIFT);
    if !has_shift && let Some(i) = keys.iter().position(|(_, s)| *s == Shift::Shifted) {
        let shift = ChordKey {
            keysym: SHIFT_L_KEYSYM,
            code: LEFT_SHIFT,
        };
        keys.insert(i, (shift, Shift::Any));
    }
    if keys.len() > MAX_CHORD_KEYS {
        return Err(ChordError::TooMany(chord.to_string()));
    }
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

/// Parses every chord of a request; an error in any of them fails the whole list.
pub fn parse_chords<S: AsRef<str>>(chords: &[S]) -> Result<Vec<Vec<ChordKey>>, ChordError> {
    if chords.is_empty() {
        return Err(ChordError::Nothing);
    }
    chords.iter().map(|c| parse_chord(c.as_ref())).collect()
}

/// Left Shift's keysym (`Shift_L`).
const SHIFT_L_KEYSYM: u32 = 0xffe1;

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
        for (i, (_, k, _)) in SPECIAL.iter().enumerate() {
            assert!(
                SPECIAL[i + 1..].iter().all(|(_, o, _)| o != k),
                "{k:#x} twice"
            );
        }
    }

    #[test]
    fn names_find_their_keysyms() {
        for (name, keysym) in [
            ("Return", 0xff0d),
            ("return", 0xff0d),
            ("RETURN", 0xff0d),
            ("enter", 0xff0d),
            ("Escape", 0xff1b),
            ("esc", 0xff1b),
            ("Page_Up", 0xff55),
            ("Prior", 0xff55),
            ("page_down", 0xff56),
            ("F12", 0xffc9),
            ("f1", 0xffbe),
            ("ctrl", 0xffe3),
            ("Ctrl", 0xffe3),
            ("Control_R", 0xffe4),
            ("alt", 0xffe9),
            ("shift", 0xffe1),
            ("super", 0xffeb),
            ("meta", 0xffe7),
            ("space", 0x20),
            ("a", 'a' as u32),
            ("A", 'A' as u32),
            ("1", '1' as u32),
            ("!", '!' as u32),
            ("exclam", '!' as u32),
            ("minus", '-' as u32),
            ("-", '-' as u32),
        ] {
            assert_eq!(keysym_from_name(name), Some(keysym), "{name}");
        }
        for bad in ["", "Retrun", "ab", "€", "F13", "KP_", "control_l_"] {
            assert_eq!(keysym_from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_name_has_a_key_and_folds_to_one_keysym() {
        let names = SPECIAL
            .iter()
            .map(|(n, _, _)| *n)
            .chain(CHARACTER_NAMES.iter().map(|(n, _)| *n))
            .chain(ALIASES.iter().map(|(n, _)| *n));
        let mut seen: Vec<(String, u32)> = vec![];
        for name in names {
            let keysym = keysym_from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert!(keysym_to_xt(keysym).is_some(), "{name} has no key");
            let folded = name.to_ascii_lowercase();
            if let Some((_, other)) = seen.iter().find(|(n, _)| *n == folded) {
                assert_eq!(*other, keysym, "{name} means two keys when case is ignored");
            }
            seen.push((folded, keysym));
        }
        for (name, c) in CHARACTER_NAMES {
            assert!(c.is_ascii_punctuation(), "{name}");
        }
        assert_eq!(
            CHARACTER_NAMES.len(),
            32,
            "every ASCII punctuation character"
        );
    }

    fn codes(chord: &str) -> Vec<u16> {
        parse_chord(chord)
            .unwrap_or_else(|e| panic!("{chord}: {e}"))
            .iter()
            .map(|k| k.code)
            .collect()
    }

    #[test]
    fn chords_name_keys_in_press_order() {
        assert_eq!(codes("ctrl-alt-Delete"), [0x1d, 0x38, 0xe053]);
        assert_eq!(codes("Return"), [0x1c]);
        assert_eq!(codes("a"), [0x1e]);
        // Shift and the A key: 'A'. A shifted character brings its own Shift.
        assert_eq!(codes("shift-a"), [0x2a, 0x1e]);
        assert_eq!(codes("A"), [0x2a, 0x1e]);
        assert_eq!(codes("ctrl-A"), [0x1d, 0x2a, 0x1e]);
        assert_eq!(codes("Shift_R-A"), [0x36, 0x1e], "a Shift already there");
        assert_eq!(codes("exclam"), [0x2a, 0x02]);
        assert_eq!(codes("-"), [0x0c]);
        assert_eq!(codes("ctrl-minus"), [0x1d, 0x0c]);
        let k = parse_chord("super-Up").unwrap();
        assert_eq!(
            k[0],
            ChordKey {
                keysym: 0xffeb,
                code: 0xe05b
            }
        );
        assert_eq!(
            k[1],
            ChordKey {
                keysym: 0xff52,
                code: 0xe048
            }
        );
    }

    #[test]
    fn bad_chords_say_what_is_wrong() {
        let e = parse_chord("ctrl-alt-Delet").unwrap_err();
        assert_eq!(
            e,
            ChordError::Unknown {
                name: "Delet".into(),
                chord: "ctrl-alt-Delet".into()
            }
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("unknown key 'Delet' in 'ctrl-alt-Delet': "),
            "{msg}"
        );
        assert!(msg.contains("Return") && msg.contains("ctrl"), "{msg}");
        assert!(
            parse_chord("Retrun")
                .unwrap_err()
                .to_string()
                .starts_with("unknown key 'Retrun':")
        );
        assert_eq!(parse_chord("ctrl-"), Err(ChordError::Empty("ctrl-".into())));
        assert_eq!(parse_chord(""), Err(ChordError::Empty("".into())));
        assert!(matches!(parse_chord("a-a"), Err(ChordError::Twice { .. })));
        // The same key under two names.
        assert!(matches!(parse_chord("a-A"), Err(ChordError::Twice { .. })));
        assert!(matches!(
            parse_chord("ctrl-Control_L"),
            Err(ChordError::Twice { .. })
        ));
        assert!(parse_chord("ctrl-alt-shift-super-F1-F2-F3-F4").is_ok());
        assert_eq!(
            parse_chord("ctrl-alt-shift-super-F1-F2-F3-F4-F5"),
            Err(ChordError::TooMany(
                "ctrl-alt-shift-super-F1-F2-F3-F4-F5".into()
            ))
        );
        assert_eq!(parse_chords::<&str>(&[]), Err(ChordError::Nothing));
        // One bad chord fails them all.
        assert!(parse_chords(&["a", "b", "nope"]).is_err());
        assert_eq!(parse_chords(&["a", "Return"]).unwrap().len(), 2);
    }
}
