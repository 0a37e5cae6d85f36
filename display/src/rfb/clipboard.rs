//! Clipboard transfer: plain Latin-1 cut text (RFC 6143) and the Extended Clipboard
//! pseudo-encoding (rfbproto), which carries UTF-8 text in a zlib stream.
//!
//! Only the text format is offered or accepted (RTF, HTML, DIB and files are ignored):
//! the guest side of vmdesk has no richer clipboard. Sizes are capped both ways, and
//! compressed input is inflated through a bounded reader, so a small "zip bomb" cannot
//! make us allocate more than the cap.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

/// Format bit for UTF-8 text.
pub const TEXT: u32 = 1;
pub const CAPS: u32 = 1 << 24;
pub const REQUEST: u32 = 1 << 25;
pub const PEEK: u32 = 1 << 26;
pub const NOTIFY: u32 = 1 << 27;
pub const PROVIDE: u32 = 1 << 28;
const FORMAT_MASK: u32 = 0xffff;

/// An extended clipboard message, as far as text is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtClipboard {
    /// The peer's capabilities: formats and, per format, the largest size it accepts.
    Caps { formats: u32, text_max: Option<u32> },
    /// The peer wants our data in these formats.
    Request { formats: u32 },
    /// The peer asks which formats we have.
    Peek,
    /// The peer has new data in these formats.
    Notify { formats: u32 },
    /// The peer's data; `text` is `None` when it carried no (usable) text.
    Provide { text: Option<String> },
    /// Anything else (unknown action bits).
    Other { flags: u32 },
}

/// Interprets one extended clipboard message; `max_text` caps the inflated text.
pub fn parse(flags: u32, payload: &[u8], max_text: usize) -> ExtClipboard {
    let formats = flags & FORMAT_MASK;
    if flags & CAPS != 0 {
        // One u32 size per format bit set, lowest bit first; text is bit 0.
        let text_max = (formats & TEXT != 0)
            .then(|| payload.get(..4))
            .flatten()
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        return ExtClipboard::Caps { formats, text_max };
    }
    if flags & PROVIDE != 0 {
        return ExtClipboard::Provide {
            text: (formats & TEXT != 0)
                .then(|| inflate_text(payload, max_text))
                .flatten(),
        };
    }
    if flags & REQUEST != 0 {
        return ExtClipboard::Request { formats };
    }
    if flags & PEEK != 0 {
        return ExtClipboard::Peek;
    }
    if flags & NOTIFY != 0 {
        return ExtClipboard::Notify { formats };
    }
    ExtClipboard::Other { flags }
}

/// The text record of a Provide payload: zlib stream of (u32 length, bytes) per format;
/// text comes first. Longer than `max_text` is refused whole rather than cut mid-character.
fn inflate_text(payload: &[u8], max_text: usize) -> Option<String> {
    let mut z = ZlibDecoder::new(payload).take(max_text as u64 + 4 + 1);
    let mut len = [0u8; 4];
    z.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max_text {
        return None;
    }
    let mut data = Vec::with_capacity(len.min(64 * 1024));
    (&mut z).take(len as u64).read_to_end(&mut data).ok()?;
    if data.len() < len {
        return None;
    }
    // Null-terminated, CRLF line ends on the wire.
    if let Some(nul) = data.iter().position(|&b| b == 0) {
        data.truncate(nul);
    }
    let text = String::from_utf8_lossy(&data).replace("\r\n", "\n");
    Some(text)
}

/// (flags, payload) announcing that we handle text of up to `max_text` bytes and the
/// request, peek, notify and provide actions.
pub fn caps(max_text: u32) -> (u32, Vec<u8>) {
    (
        CAPS | TEXT | REQUEST | PEEK | NOTIFY | PROVIDE,
        max_text.to_be_bytes().to_vec(),
    )
}

/// (flags, payload) providing `text` (cut to `max_text` bytes at a character boundary).
pub fn provide(text: &str, max_text: usize) -> (u32, Vec<u8>) {
    let mut s = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if s.len() + 1 > max_text {
        let mut cut = max_text.saturating_sub(1);
        while cut > 0 && !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    let mut record = Vec::with_capacity(s.len() + 5);
    record.extend_from_slice(&(s.len() as u32 + 1).to_be_bytes());
    record.extend_from_slice(s.as_bytes());
    record.push(0);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(&record);
    (PROVIDE | TEXT, z.finish().unwrap_or_default())
}

/// (flags, payload) telling the peer we have new text.
pub fn notify() -> (u32, Vec<u8>) {
    (NOTIFY | TEXT, Vec::new())
}

/// (flags, payload) asking the peer for its text.
pub fn request() -> (u32, Vec<u8>) {
    (REQUEST | TEXT, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provide_round_trips_utf8_and_line_ends() {
        let (flags, payload) = provide("grüße\nzweite Zeile", 1000);
        assert_eq!(
            parse(flags, &payload, 1000),
            ExtClipboard::Provide {
                text: Some("grüße\nzweite Zeile".into())
            }
        );
    }

    #[test]
    fn provide_over_the_cap_is_refused() {
        let (flags, payload) = provide(&"x".repeat(5000), 100_000);
        assert_eq!(
            parse(flags, &payload, 100),
            ExtClipboard::Provide { text: None }
        );
    }

    #[test]
    fn zip_bomb_is_bounded() {
        // 64 MiB of zeros claimed as text compresses to ~64 KiB; inflating stops at the cap.
        let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
        z.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
        let payload = z.finish().unwrap();
        assert_eq!(
            parse(PROVIDE | TEXT, &payload, 1 << 16),
            ExtClipboard::Provide { text: None }
        );
    }

    #[test]
    fn caps_and_actions() {
        let (f, p) = caps(4096);
        assert_eq!(
            parse(f, &p, 10),
            ExtClipboard::Caps {
                formats: TEXT,
                text_max: Some(4096)
            }
        );
        let (f, p) = request();
        assert_eq!(parse(f, &p, 10), ExtClipboard::Request { formats: TEXT });
        let (f, p) = notify();
        assert_eq!(parse(f, &p, 10), ExtClipboard::Notify { formats: TEXT });
        assert_eq!(parse(PEEK, &[], 10), ExtClipboard::Peek);
        // Garbage never panics.
        assert_eq!(
            parse(PROVIDE | TEXT, &[1, 2, 3], 10),
            ExtClipboard::Provide { text: None }
        );
        assert_eq!(
            parse(CAPS | TEXT, &[], 10),
            ExtClipboard::Caps {
                formats: TEXT,
                text_max: None
            }
        );
    }
}
