//! RFB wire format: parsing client-to-server messages and writing server-to-client ones
//! (RFC 6143 §7.5 and §7.6, plus the community extensions in rfbproto that we serve).
//!
//! The parser reads from any `Read` and never allocates what a length field claims before
//! the bytes have arrived: variable-length parts are read in bounded chunks, and anything
//! over [`Limits`] is read and thrown away (so a 4 GiB ClientCutText costs a 4 GiB read,
//! not a 4 GiB allocation). Malformed input is an error for that one connection.

use std::io::{self, Read};

use thiserror::Error;

use crate::pixel::{PixelFormat, PixelFormatError};

/// Client-to-server message types.
pub mod msg {
    pub const SET_PIXEL_FORMAT: u8 = 0;
    pub const SET_ENCODINGS: u8 = 2;
    pub const FRAMEBUFFER_UPDATE_REQUEST: u8 = 3;
    pub const KEY_EVENT: u8 = 4;
    pub const POINTER_EVENT: u8 = 5;
    pub const CLIENT_CUT_TEXT: u8 = 6;
    pub const ENABLE_CONTINUOUS_UPDATES: u8 = 150;
    pub const FENCE: u8 = 248;
    pub const SET_DESKTOP_SIZE: u8 = 251;
    pub const QEMU: u8 = 255;
    /// Server-to-client.
    pub const FRAMEBUFFER_UPDATE: u8 = 0;
    pub const BELL: u8 = 2;
    pub const SERVER_CUT_TEXT: u8 = 3;
    pub const END_OF_CONTINUOUS_UPDATES: u8 = 150;
}

/// Fence flags (rfbproto "Fence").
pub mod fence {
    pub const BLOCK_BEFORE: u32 = 1;
    pub const BLOCK_AFTER: u32 = 2;
    pub const SYNC_NEXT: u32 = 4;
    pub const REQUEST: u32 = 1 << 31;
    pub const SUPPORTED: u32 = BLOCK_BEFORE | BLOCK_AFTER | SYNC_NEXT | REQUEST;
}

/// What the parser will hold in memory for one message.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest ClientCutText (plain Latin-1, or the extended clipboard's payload) kept.
    pub max_cut_text: usize,
    /// Most encodings kept from one SetEncodings (the rest are read and ignored).
    pub max_encodings: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cut_text: 1 << 20,
            max_encodings: 256,
        }
    }
}

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("unknown client message type {0}")]
    UnknownMessage(u8),
    #[error("unknown QEMU client message subtype {0}")]
    UnknownQemuSubtype(u8),
    #[error("bad pixel format: {0}")]
    PixelFormat(#[from] PixelFormatError),
    #[error("fence payload of {0} bytes (at most 64)")]
    FenceTooLong(u8),
    #[error("SetDesktopSize with no screens")]
    NoScreens,
    #[error("bad protocol version string {0:?}")]
    Version(String),
}

impl ProtocolError {
    /// True when the peer simply went away (not worth more than a debug line).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ProtocolError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ))
    }
}

/// One screen of an ExtendedDesktopSize layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Screen {
    pub id: u32,
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub flags: u32,
}

/// A parsed client-to-server message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    SetPixelFormat(PixelFormat),
    /// The encodings, in the client's order of preference (capped at [`Limits::max_encodings`]).
    SetEncodings(Vec<i32>),
    FramebufferUpdateRequest {
        incremental: bool,
        x: u16,
        y: u16,
        w: u16,
        h: u16,
    },
    KeyEvent {
        down: bool,
        keysym: u32,
    },
    PointerEvent {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// Plain ClientCutText, decoded from Latin-1.
    CutText(String),
    /// Extended clipboard message: flags word and the rest of the payload.
    ExtendedCutText {
        flags: u32,
        payload: Vec<u8>,
    },
    /// Cut text longer than the limit: read and discarded.
    CutTextTooLong(u64),
    EnableContinuousUpdates {
        enable: bool,
        x: u16,
        y: u16,
        w: u16,
        h: u16,
    },
    Fence {
        flags: u32,
        payload: Vec<u8>,
    },
    SetDesktopSize {
        w: u16,
        h: u16,
        screens: Vec<Screen>,
    },
    /// QEMU extended key event: keysym plus the XT scan code (0xE0 prefix in the high byte).
    QemuKeyEvent {
        down: bool,
        keysym: u32,
        keycode: u32,
    },
}

fn u8_(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}
fn u16_(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
fn u32_(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn skip(r: &mut impl Read, n: usize) -> io::Result<()> {
    let mut b = [0u8; 16];
    let mut left = n;
    while left > 0 {
        let k = left.min(b.len());
        r.read_exact(&mut b[..k])?;
        left -= k;
    }
    Ok(())
}

/// Reads and throws away `n` bytes in bounded chunks.
fn discard(r: &mut impl Read, n: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())?;
    if got < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads exactly `n` bytes, growing the buffer only as data arrives.
fn read_vec(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(n.min(64 * 1024));
    let got = r.take(n as u64).read_to_end(&mut v)?;
    if got < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(v)
}

/// Reads one whole client message.
pub fn read_client_message(
    r: &mut impl Read,
    limits: &Limits,
) -> Result<ClientMessage, ProtocolError> {
    let ty = u8_(r)?;
    read_client_message_body(ty, r, limits)
}

/// Reads the rest of a client message whose type byte `ty` was already read.
pub fn read_client_message_body(
    ty: u8,
    r: &mut impl Read,
    limits: &Limits,
) -> Result<ClientMessage, ProtocolError> {
    Ok(match ty {
        msg::SET_PIXEL_FORMAT => {
            skip(r, 3)?;
            let mut b = [0u8; 16];
            r.read_exact(&mut b)?;
            ClientMessage::SetPixelFormat(PixelFormat::from_bytes(&b)?)
        }
        msg::SET_ENCODINGS => {
            skip(r, 1)?;
            let n = usize::from(u16_(r)?);
            let mut encs = Vec::with_capacity(n.min(limits.max_encodings));
            for _ in 0..n {
                let e = u32_(r)? as i32;
                if encs.len() < limits.max_encodings {
                    encs.push(e);
                }
            }
            ClientMessage::SetEncodings(encs)
        }
        msg::FRAMEBUFFER_UPDATE_REQUEST => ClientMessage::FramebufferUpdateRequest {
            incremental: u8_(r)? != 0,
            x: u16_(r)?,
            y: u16_(r)?,
            w: u16_(r)?,
            h: u16_(r)?,
        },
        msg::KEY_EVENT => {
            let down = u8_(r)? != 0;
            skip(r, 2)?;
            ClientMessage::KeyEvent {
                down,
                keysym: u32_(r)?,
            }
        }
        msg::POINTER_EVENT => ClientMessage::PointerEvent {
            buttons: u8_(r)?,
            x: u16_(r)?,
            y: u16_(r)?,
        },
        msg::CLIENT_CUT_TEXT => {
            skip(r, 3)?;
            let len = u32_(r)? as i32;
            if len < 0 {
                // Extended clipboard: the length is negated and covers a flags word.
                let n = u64::from(len.unsigned_abs());
                if n < 4 {
                    discard(r, n)?;
                    return Ok(ClientMessage::CutTextTooLong(n));
                }
                if n as usize > limits.max_cut_text {
                    discard(r, n)?;
                    return Ok(ClientMessage::CutTextTooLong(n));
                }
                let flags = u32_(r)?;
                let payload = read_vec(r, n as usize - 4)?;
                ClientMessage::ExtendedCutText { flags, payload }
            } else {
                let n = len as u32 as usize;
                if n > limits.max_cut_text {
                    discard(r, n as u64)?;
                    return Ok(ClientMessage::CutTextTooLong(n as u64));
                }
                let bytes = read_vec(r, n)?;
                // ClientCutText is ISO 8859-1: every byte is the code point.
                ClientMessage::CutText(bytes.iter().map(|&b| char::from(b)).collect())
            }
        }
        msg::ENABLE_CONTINUOUS_UPDATES => ClientMessage::EnableContinuousUpdates {
            enable: u8_(r)? != 0,
            x: u16_(r)?,
            y: u16_(r)?,
            w: u16_(r)?,
            h: u16_(r)?,
        },
        msg::FENCE => {
            skip(r, 3)?;
            let flags = u32_(r)?;
            let len = u8_(r)?;
            if len > 64 {
                return Err(ProtocolError::FenceTooLong(len));
            }
            let payload = read_vec(r, usize::from(len))?;
            ClientMessage::Fence { flags, payload }
        }
        msg::SET_DESKTOP_SIZE => {
            skip(r, 1)?;
            let w = u16_(r)?;
            let h = u16_(r)?;
            let n = u8_(r)?;
            skip(r, 1)?;
            if n == 0 {
                return Err(ProtocolError::NoScreens);
            }
            let mut screens = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                screens.push(Screen {
                    id: u32_(r)?,
                    x: u16_(r)?,
                    y: u16_(r)?,
                    w: u16_(r)?,
                    h: u16_(r)?,
                    flags: u32_(r)?,
                });
            }
            ClientMessage::SetDesktopSize { w, h, screens }
        }
        msg::QEMU => match u8_(r)? {
            0 => ClientMessage::QemuKeyEvent {
                down: u16_(r)? != 0,
                keysym: u32_(r)?,
                keycode: u32_(r)?,
            },
            sub => return Err(ProtocolError::UnknownQemuSubtype(sub)),
        },
        other => return Err(ProtocolError::UnknownMessage(other)),
    })
}

/// Serialises a client message (for our own client and tests).
pub fn write_client_message(m: &ClientMessage, out: &mut Vec<u8>) {
    match m {
        ClientMessage::SetPixelFormat(pf) => {
            out.extend_from_slice(&[msg::SET_PIXEL_FORMAT, 0, 0, 0]);
            out.extend_from_slice(&pf.to_bytes());
        }
        ClientMessage::SetEncodings(e) => {
            out.extend_from_slice(&[msg::SET_ENCODINGS, 0]);
            out.extend_from_slice(&(e.len().min(65535) as u16).to_be_bytes());
            for x in e.iter().take(65535) {
                out.extend_from_slice(&x.to_be_bytes());
            }
        }
        ClientMessage::FramebufferUpdateRequest {
            incremental,
            x,
            y,
            w,
            h,
        } => {
            out.extend_from_slice(&[msg::FRAMEBUFFER_UPDATE_REQUEST, u8::from(*incremental)]);
            for v in [x, y, w, h] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        ClientMessage::KeyEvent { down, keysym } => {
            out.extend_from_slice(&[msg::KEY_EVENT, u8::from(*down), 0, 0]);
            out.extend_from_slice(&keysym.to_be_bytes());
        }
        ClientMessage::PointerEvent { buttons, x, y } => {
            out.extend_from_slice(&[msg::POINTER_EVENT, *buttons]);
            out.extend_from_slice(&x.to_be_bytes());
            out.extend_from_slice(&y.to_be_bytes());
        }
        ClientMessage::CutText(s) => {
            let bytes: Vec<u8> = s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect();
            out.extend_from_slice(&[msg::CLIENT_CUT_TEXT, 0, 0, 0]);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        ClientMessage::ExtendedCutText { flags, payload } => {
            out.extend_from_slice(&[msg::CLIENT_CUT_TEXT, 0, 0, 0]);
            out.extend_from_slice(&(-((payload.len() + 4) as i32)).to_be_bytes());
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(payload);
        }
        ClientMessage::CutTextTooLong(n) => {
            out.extend_from_slice(&[msg::CLIENT_CUT_TEXT, 0, 0, 0]);
            out.extend_from_slice(&(*n as u32).to_be_bytes());
        }
        ClientMessage::EnableContinuousUpdates { enable, x, y, w, h } => {
            out.extend_from_slice(&[msg::ENABLE_CONTINUOUS_UPDATES, u8::from(*enable)]);
            for v in [x, y, w, h] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        ClientMessage::Fence { flags, payload } => write_fence(*flags, payload, out),
        ClientMessage::SetDesktopSize { w, h, screens } => {
            out.extend_from_slice(&[msg::SET_DESKTOP_SIZE, 0]);
            out.extend_from_slice(&w.to_be_bytes());
            out.extend_from_slice(&h.to_be_bytes());
            out.extend_from_slice(&[screens.len().min(255) as u8, 0]);
            for s in screens.iter().take(255) {
                write_screen(s, out);
            }
        }
        ClientMessage::QemuKeyEvent {
            down,
            keysym,
            keycode,
        } => {
            out.extend_from_slice(&[msg::QEMU, 0]);
            out.extend_from_slice(&u16::from(*down).to_be_bytes());
            out.extend_from_slice(&keysym.to_be_bytes());
            out.extend_from_slice(&keycode.to_be_bytes());
        }
    }
}

/// Appends one 16-byte screen record.
pub fn write_screen(s: &Screen, out: &mut Vec<u8>) {
    out.extend_from_slice(&s.id.to_be_bytes());
    for v in [s.x, s.y, s.w, s.h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&s.flags.to_be_bytes());
}

/// Fence message (the same shape in both directions). Payload is cut at 64 bytes.
pub fn write_fence(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
    let p = &payload[..payload.len().min(64)];
    out.extend_from_slice(&[msg::FENCE, 0, 0, 0]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.push(p.len() as u8);
    out.extend_from_slice(p);
}

/// FramebufferUpdate header; returns the offset of the rectangle count to patch later.
pub fn begin_framebuffer_update(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[msg::FRAMEBUFFER_UPDATE, 0]);
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Patches the rectangle count written by [`begin_framebuffer_update`].
pub fn finish_framebuffer_update(out: &mut [u8], at: usize, count: u16) {
    out[at..at + 2].copy_from_slice(&count.to_be_bytes());
}

/// ServerCutText with Latin-1 text (characters outside it become '?').
pub fn write_server_cut_text(text: &str, out: &mut Vec<u8>) {
    let bytes: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    out.extend_from_slice(&[msg::SERVER_CUT_TEXT, 0, 0, 0]);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
}

/// ServerCutText carrying an extended clipboard message.
pub fn write_server_extended_cut_text(flags: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[msg::SERVER_CUT_TEXT, 0, 0, 0]);
    out.extend_from_slice(&(-((payload.len() + 4) as i32)).to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn write_end_of_continuous_updates(out: &mut Vec<u8>) {
    out.push(msg::END_OF_CONTINUOUS_UPDATES);
}

pub fn write_bell(out: &mut Vec<u8>) {
    out.push(msg::BELL);
}

/// The version string a server sends for (major, minor).
pub fn version_string(minor: u8) -> [u8; 12] {
    let mut b = *b"RFB 003.008\n";
    b[10] = b'0' + minor;
    b
}

/// Parses a client's `RFB xxx.yyy\n` and maps it to the minor version we speak:
/// 3.3 (also for 3.4-3.6, which UltraVNC-style clients send), 3.7, or 3.8 (also for newer
/// 3.x such as Apple's 3.889).
pub fn parse_version(b: &[u8; 12]) -> Result<u8, ProtocolError> {
    let bad = || ProtocolError::Version(String::from_utf8_lossy(b).into_owned());
    if &b[..4] != b"RFB " || b[7] != b'.' || b[11] != b'\n' {
        return Err(bad());
    }
    let num = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let major = num(&b[4..7]).ok_or_else(bad)?;
    let minor = num(&b[8..11]).ok_or_else(bad)?;
    match (major, minor) {
        (3, 0..=6) => Ok(3),
        (3, 7) => Ok(7),
        (3, _) => Ok(8),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<ClientMessage, ProtocolError> {
        read_client_message(&mut &bytes[..], &Limits::default())
    }

    fn round_trip(m: ClientMessage) {
        let mut out = Vec::new();
        write_client_message(&m, &mut out);
        let mut r = &out[..];
        assert_eq!(read_client_message(&mut r, &Limits::default()).unwrap(), m);
        assert!(r.is_empty(), "{m:?} left {} bytes", r.len());
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(ClientMessage::SetPixelFormat(PixelFormat::NATIVE));
        round_trip(ClientMessage::SetEncodings(vec![16, 5, 0, -239, -258]));
        round_trip(ClientMessage::FramebufferUpdateRequest {
            incremental: true,
            x: 1,
            y: 2,
            w: 300,
            h: 400,
        });
        round_trip(ClientMessage::KeyEvent {
            down: true,
            keysym: 0xff0d,
        });
        round_trip(ClientMessage::PointerEvent {
            buttons: 5,
            x: 640,
            y: 480,
        });
        round_trip(ClientMessage::CutText("héllo".into()));
        round_trip(ClientMessage::ExtendedCutText {
            flags: 1 << 24 | 1,
            payload: vec![0, 0, 1, 0],
        });
        round_trip(ClientMessage::EnableContinuousUpdates {
            enable: true,
            x: 0,
            y: 0,
            w: 10,
            h: 10,
        });
        round_trip(ClientMessage::Fence {
            flags: fence::REQUEST | fence::BLOCK_BEFORE,
            payload: vec![1, 2, 3],
        });
        round_trip(ClientMessage::SetDesktopSize {
            w: 1024,
            h: 768,
            screens: vec![Screen {
                id: 1,
                x: 0,
                y: 0,
                w: 1024,
                h: 768,
                flags: 0,
            }],
        });
        round_trip(ClientMessage::QemuKeyEvent {
            down: false,
            keysym: 0x61,
            keycode: 0x1e,
        });
    }

    #[test]
    fn key_event_wire_bytes() {
        assert_eq!(
            parse(&[4, 1, 0, 0, 0, 0, 0xff, 0x0d]).unwrap(),
            ClientMessage::KeyEvent {
                down: true,
                keysym: 0xff0d
            }
        );
        // QEMU extended key event: 255, subtype 0, down u16, keysym, keycode (E0 prefix).
        assert_eq!(
            parse(&[255, 0, 0, 1, 0, 0, 0xff, 0x52, 0, 0, 0xe0, 0x48]).unwrap(),
            ClientMessage::QemuKeyEvent {
                down: true,
                keysym: 0xff52,
                keycode: 0xe048
            }
        );
    }

    #[test]
    fn every_truncation_is_an_eof_error() {
        let mut all = Vec::new();
        for m in [
            ClientMessage::SetPixelFormat(PixelFormat::NATIVE),
            ClientMessage::SetEncodings(vec![1, 2]),
            ClientMessage::KeyEvent {
                down: true,
                keysym: 1,
            },
            ClientMessage::CutText("abc".into()),
            ClientMessage::Fence {
                flags: 0,
                payload: vec![9; 10],
            },
            ClientMessage::QemuKeyEvent {
                down: true,
                keysym: 1,
                keycode: 2,
            },
        ] {
            all.clear();
            write_client_message(&m, &mut all);
            for cut in 0..all.len() {
                let e = parse(&all[..cut]).unwrap_err();
                assert!(e.is_disconnect(), "{m:?} cut at {cut}: {e}");
            }
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(matches!(parse(&[7]), Err(ProtocolError::UnknownMessage(7))));
        assert!(matches!(
            parse(&[255, 9, 0, 0]),
            Err(ProtocolError::UnknownQemuSubtype(9))
        ));
        assert!(matches!(
            parse(&[248, 0, 0, 0, 0, 0, 0, 0, 65]),
            Err(ProtocolError::FenceTooLong(65))
        ));
        let mut pf = vec![0, 0, 0, 0];
        let mut b = PixelFormat::NATIVE.to_bytes();
        b[0] = 24;
        pf.extend_from_slice(&b);
        assert!(matches!(parse(&pf), Err(ProtocolError::PixelFormat(_))));
        assert!(matches!(
            parse(&[251, 0, 0, 1, 0, 1, 0, 0]),
            Err(ProtocolError::NoScreens)
        ));
    }

    #[test]
    fn oversized_cut_text_is_skipped_not_stored() {
        let limits = Limits {
            max_cut_text: 8,
            ..Limits::default()
        };
        let mut bytes = vec![6, 0, 0, 0, 0, 0, 0, 20];
        bytes.extend_from_slice(&[b'x'; 20]);
        bytes.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, 0x41]);
        let mut r = &bytes[..];
        assert_eq!(
            read_client_message(&mut r, &limits).unwrap(),
            ClientMessage::CutTextTooLong(20)
        );
        // The stream stays in step: the next message parses.
        assert_eq!(
            read_client_message(&mut r, &limits).unwrap(),
            ClientMessage::KeyEvent {
                down: true,
                keysym: 0x41
            }
        );
    }

    #[test]
    fn set_encodings_keeps_at_most_the_limit() {
        let limits = Limits {
            max_encodings: 3,
            ..Limits::default()
        };
        let mut out = Vec::new();
        write_client_message(&ClientMessage::SetEncodings((0..100).collect()), &mut out);
        assert_eq!(
            read_client_message(&mut &out[..], &limits).unwrap(),
            ClientMessage::SetEncodings(vec![0, 1, 2])
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version(b"RFB 003.008\n").unwrap(), 8);
        assert_eq!(parse_version(b"RFB 003.007\n").unwrap(), 7);
        assert_eq!(parse_version(b"RFB 003.003\n").unwrap(), 3);
        assert_eq!(parse_version(b"RFB 003.889\n").unwrap(), 8);
        assert!(parse_version(b"RFB 004.000\n").is_err());
        assert!(parse_version(b"GET / HTTP/1").is_err());
        assert_eq!(&version_string(7), b"RFB 003.007\n");
    }
}
