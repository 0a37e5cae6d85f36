//! Framing of the server's half of an RFB connection, so that [`super::inject`] can take
//! cut text out of the stream before vnc-rs sees it.
//!
//! Why: vnc-rs 0.6 reads ServerCutText's length as a u32, so an Extended Clipboard message
//! (its length is negative) would be read as a 4 GiB string and end the connection; and it
//! decodes plain cut text as UTF-8 where RFB says Latin-1. The framer follows the server's
//! side (handshake, then every message) by counting: it reads only the headers, skips
//! bodies (pixel data above all) by their length without looking at them or copying them,
//! and removes whole ServerCutText messages (plain and extended), which it hands over as
//! [`ServerCut`]s. Everything else reaches vnc-rs byte for byte.
//!
//! It is sans-IO: [`ServerFramer::filter`] works in place on bytes just read, and
//! [`ServerFramer::client_wrote`] sees each message the client (vnc-rs) writes, which is
//! where the negotiated version, the security type, the pixel size and the encodings come
//! from. It also adds the Extended Clipboard pseudo-encoding to vnc-rs's SetEncodings.
//!
//! Sized: the handshake (RFB 3.3, 3.7, 3.8; security None and VNC authentication, failure
//! reasons), FramebufferUpdate with Raw, CopyRect, ZRLE and the pseudo-encodings DesktopSize,
//! ExtendedDesktopSize, LastRect, Cursor, XCursor, PointerTypeChange and QEMU's extended
//! key event; SetColourMapEntries, Bell, ServerCutText, EndOfContinuousUpdates, Fence and
//! QEMU's audio messages. Not sized (Hextile, Tight, TRLE, RRE… which the console does not
//! ask for, or anything unknown): the framer logs once and passes everything through from
//! there on, which is what vnc-rs would have seen without it; it then also re-sends the
//! encodings without the Extended Clipboard so the server stops sending what vnc-rs cannot
//! read.

use std::borrow::Cow;

use display::encoding::number;
use display::rfb::protocol::{msg, parse_version};

/// Longest cut text kept (plain text, or an extended message's payload); a longer one is
/// read past and dropped.
pub const MAX_CUT: usize = 1 << 20;

/// A cut text message taken out of the server's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCut {
    /// Plain ServerCutText, decoded from Latin-1 (RFC 6143).
    Text(String),
    /// An Extended Clipboard message: its flags word and the rest of its payload.
    Extended { flags: u32, payload: Vec<u8> },
}

/// Where the server's stream is: what the next header is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The server's 12-byte version.
    Version,
    /// The client's version is due; the server says nothing meanwhile.
    ClientVersion,
    /// RFB 3.3: the u32 security type the server chose.
    SecurityType33,
    /// RFB 3.7+: the count of security types, then the types.
    SecurityTypes,
    /// The client's choice of security type is due.
    ClientChoice,
    /// VNC authentication's 16-byte challenge.
    Challenge,
    /// The u32 SecurityResult.
    SecurityResult,
    /// A failure reason (u32 length and text); the server closes after it.
    Reason,
    /// ServerInit (24 bytes, then the name).
    ServerInit,
    /// The first byte of a server message.
    Message,
    /// A FramebufferUpdate's rectangle header; `left` counts this one.
    Rect { left: u16 },
    /// Not framing any more: everything passes.
    Pass,
}

/// What the bytes at a header say.
enum Step {
    /// Not enough bytes yet to decide.
    More,
    /// Pass `len` header bytes, then `skip` body bytes, then frame `next`.
    Pass { len: usize, skip: u64, next: Phase },
    /// Take a ServerCutText out: `len` header bytes and `body` bytes.
    Cut {
        len: usize,
        body: u64,
        extended: bool,
    },
    /// This cannot be sized: pass everything from here on.
    GiveUp(String),
}

/// A cut text message being taken out.
struct Collect {
    extended: bool,
    left: u64,
    /// `None` when it is too long to keep (or too short to be an extended message).
    data: Option<Vec<u8>>,
}

/// The result of [`ServerFramer::filter`] on a buffer `b`: `b[..pass]` goes to the reader,
/// `b[hold..]` is the start of a header still incomplete (offer it again, followed by what
/// comes next); `b[pass..hold]` is garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filtered {
    pub pass: usize,
    pub hold: usize,
}

/// The server stream's framing state; see the module docs.
pub struct ServerFramer {
    phase: Phase,
    /// Body bytes still to pass before `phase`'s header.
    skip: u64,
    collect: Option<Collect>,
    /// The negotiated minor version (3, 7 or 8).
    minor: u8,
    /// Bytes per pixel of Raw and Cursor data (ServerInit's, then the client's choice).
    bytes_pp: u64,
    /// The encodings vnc-rs asked for, as sent (without ours).
    encodings: Vec<i32>,
    /// Whether we added the Extended Clipboard to a SetEncodings.
    advertised: bool,
    cuts: Vec<ServerCut>,
    resend: Option<Vec<u8>>,
}

impl Default for ServerFramer {
    fn default() -> Self {
        ServerFramer {
            phase: Phase::Version,
            skip: 0,
            collect: None,
            minor: 8,
            bytes_pp: 4,
            encodings: Vec::new(),
            advertised: false,
            cuts: Vec::new(),
            resend: None,
        }
    }
}

/// Returns [`Step::More`] from the caller when `b` holds fewer than `n` bytes.
macro_rules! need {
    ($b:expr, $n:expr) => {
        if $b.len() < $n {
            return Step::More;
        }
    };
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ServerFramer {
    pub fn new() -> ServerFramer {
        ServerFramer::default()
    }

    /// Whether the framer has given up (or the connection failed): everything passes.
    pub fn passing_through(&self) -> bool {
        self.phase == Phase::Pass
    }

    /// Cut texts taken out since the last call.
    pub fn take_cuts(&mut self) -> Vec<ServerCut> {
        std::mem::take(&mut self.cuts)
    }

    /// A SetEncodings to send after giving up (vnc-rs's list without the Extended
    /// Clipboard), once.
    pub fn take_resend(&mut self) -> Option<Vec<u8>> {
        self.resend.take()
    }

    /// Sees one complete message the client writes; returns what to send instead (vnc-rs's
    /// SetEncodings with the Extended Clipboard added, else the bytes as they are).
    pub fn client_wrote<'a>(&mut self, b: &'a [u8]) -> Cow<'a, [u8]> {
        match self.phase {
            Phase::ClientVersion if b.len() == 12 => {
                match parse_version(&b.try_into().unwrap_or([0; 12])) {
                    Ok(minor) => {
                        self.minor = minor;
                        self.phase = if minor == 3 {
                            Phase::SecurityType33
                        } else {
                            Phase::SecurityTypes
                        };
                    }
                    Err(e) => self.give_up(format!("the client's version: {e}")),
                }
            }
            Phase::ClientChoice if b.len() == 1 => {
                self.phase = match b[0] {
                    1 if self.minor == 8 => Phase::SecurityResult,
                    1 => Phase::ServerInit,
                    2 => Phase::Challenge,
                    t => {
                        self.give_up(format!("security type {t}"));
                        Phase::Pass
                    }
                };
            }
            Phase::Message | Phase::Rect { .. } => return self.client_message(b),
            _ => {}
        }
        Cow::Borrowed(b)
    }

    fn client_message<'a>(&mut self, b: &'a [u8]) -> Cow<'a, [u8]> {
        match b.first().copied() {
            Some(msg::SET_PIXEL_FORMAT) if b.len() >= 20 => {
                self.bytes_pp = u64::from(b[4]).div_ceil(8).max(1);
            }
            Some(msg::SET_ENCODINGS) if b.len() >= 4 => {
                let n = usize::from(u16_at(b, 2));
                if b.len() != 4 + 4 * n {
                    return Cow::Borrowed(b);
                }
                self.encodings = (0..n).map(|i| u32_at(b, 4 + 4 * i) as i32).collect();
                if self.encodings.contains(&number::EXTENDED_CLIPBOARD)
                    || n == usize::from(u16::MAX)
                {
                    return Cow::Borrowed(b);
                }
                self.advertised = true;
                let mut out = Vec::with_capacity(b.len() + 4);
                out.extend_from_slice(&[msg::SET_ENCODINGS, 0]);
                out.extend_from_slice(&(n as u16 + 1).to_be_bytes());
                out.extend_from_slice(&b[4..]);
                out.extend_from_slice(&number::EXTENDED_CLIPBOARD.to_be_bytes());
                return Cow::Owned(out);
            }
            _ => {}
        }
        Cow::Borrowed(b)
    }

    fn give_up(&mut self, why: String) {
        tracing::warn!("console: cannot follow the VNC stream ({why}); passing it through as is");
        self.phase = Phase::Pass;
        self.skip = 0;
        self.collect = None;
        if self.advertised {
            self.advertised = false;
            let mut m = vec![msg::SET_ENCODINGS, 0];
            let keep: Vec<i32> = self
                .encodings
                .iter()
                .copied()
                .filter(|&e| e != number::EXTENDED_CLIPBOARD)
                .collect();
            m.extend_from_slice(&(keep.len() as u16).to_be_bytes());
            for e in keep {
                m.extend_from_slice(&e.to_be_bytes());
            }
            self.resend = Some(m);
        }
    }

    /// Frames `data`, bytes just read from the server (following any held bytes offered
    /// again at its start), in place: cut texts are taken out, the rest is moved up over
    /// them. See [`Filtered`].
    pub fn filter(&mut self, data: &mut [u8]) -> Filtered {
        let len = data.len();
        let (mut r, mut w) = (0usize, 0usize);
        while r < len {
            if self.phase == Phase::Pass {
                data.copy_within(r..len, w);
                w += len - r;
                break;
            }
            if self.skip > 0 {
                // Pixel data and other bodies: counted past, moved only if a cut text
                // earlier in this same buffer left a gap.
                let k = self.skip.min((len - r) as u64) as usize;
                if w != r {
                    data.copy_within(r..r + k, w);
                }
                r += k;
                w += k;
                self.skip -= k as u64;
                continue;
            }
            if let Some(c) = &mut self.collect {
                let k = c.left.min((len - r) as u64) as usize;
                if let Some(d) = &mut c.data {
                    d.extend_from_slice(&data[r..r + k]);
                }
                c.left -= k as u64;
                r += k;
                if c.left == 0 {
                    self.finish_cut();
                }
                continue;
            }
            match self.step(&data[r..]) {
                Step::More => return Filtered { pass: w, hold: r },
                Step::Pass { len: n, skip, next } => {
                    if w != r {
                        data.copy_within(r..r + n, w);
                    }
                    r += n;
                    w += n;
                    self.skip = skip;
                    self.phase = next;
                }
                Step::Cut {
                    len: n,
                    body,
                    extended,
                } => {
                    r += n;
                    let keep = body as usize <= MAX_CUT && (!extended || body >= 4);
                    self.collect = Some(Collect {
                        extended,
                        left: body,
                        data: keep.then(|| Vec::with_capacity((body as usize).min(64 * 1024))),
                    });
                    if body == 0 {
                        self.finish_cut();
                    }
                }
                Step::GiveUp(why) => self.give_up(why),
            }
        }
        Filtered { pass: w, hold: len }
    }

    fn finish_cut(&mut self) {
        let Some(c) = self.collect.take() else {
            return;
        };
        self.phase = Phase::Message;
        match c.data {
            Some(d) if c.extended => self.cuts.push(ServerCut::Extended {
                flags: u32_at(&d, 0),
                payload: d[4..].to_vec(),
            }),
            // ISO 8859-1: every byte is its code point.
            Some(d) => self
                .cuts
                .push(ServerCut::Text(d.iter().map(|&b| char::from(b)).collect())),
            None => tracing::debug!(
                "console: server cut text dropped (over {MAX_CUT} bytes or malformed)"
            ),
        }
    }

    /// Decides what the header at the start of `b` is.
    fn step(&mut self, b: &[u8]) -> Step {
        let pass = |len: usize, skip: u64, next: Phase| Step::Pass { len, skip, next };
        match self.phase {
            Phase::Version => {
                need!(b, 12);
                pass(12, 0, Phase::ClientVersion)
            }
            // The server has nothing to say until the client speaks: hold anything that
            // comes anyway until then.
            Phase::ClientVersion | Phase::ClientChoice => Step::More,
            Phase::SecurityType33 => {
                need!(b, 4);
                match u32_at(b, 0) {
                    0 => pass(4, 0, Phase::Reason),
                    1 => pass(4, 0, Phase::ServerInit),
                    2 => pass(4, 0, Phase::Challenge),
                    t => Step::GiveUp(format!("security type {t}")),
                }
            }
            Phase::SecurityTypes => {
                need!(b, 1);
                match b[0] {
                    0 => pass(1, 0, Phase::Reason),
                    n => pass(1, u64::from(n), Phase::ClientChoice),
                }
            }
            Phase::Challenge => {
                need!(b, 16);
                pass(16, 0, Phase::SecurityResult)
            }
            Phase::SecurityResult => {
                need!(b, 4);
                match u32_at(b, 0) {
                    0 => pass(4, 0, Phase::ServerInit),
                    _ if self.minor == 8 => pass(4, 0, Phase::Reason),
                    _ => pass(4, 0, Phase::Pass),
                }
            }
            Phase::Reason => {
                need!(b, 4);
                pass(4, u64::from(u32_at(b, 0)), Phase::Pass)
            }
            Phase::ServerInit => {
                need!(b, 24);
                self.bytes_pp = u64::from(b[4]).div_ceil(8).max(1);
                pass(24, u64::from(u32_at(b, 20)), Phase::Message)
            }
            Phase::Message => self.message(b),
            Phase::Rect { left } => self.rect(b, left),
            Phase::Pass => pass(b.len(), 0, Phase::Pass),
        }
    }

    fn message(&self, b: &[u8]) -> Step {
        let pass = |len: usize, skip: u64| Step::Pass {
            len,
            skip,
            next: Phase::Message,
        };
        need!(b, 1);
        match b[0] {
            msg::FRAMEBUFFER_UPDATE => {
                need!(b, 4);
                match u16_at(b, 2) {
                    0 => pass(4, 0),
                    n => Step::Pass {
                        len: 4,
                        skip: 0,
                        next: Phase::Rect { left: n },
                    },
                }
            }
            // SetColourMapEntries: 6 bytes of RGB per colour.
            1 => {
                need!(b, 6);
                pass(6, 6 * u64::from(u16_at(b, 4)))
            }
            msg::BELL | msg::END_OF_CONTINUOUS_UPDATES => pass(1, 0),
            msg::SERVER_CUT_TEXT => {
                need!(b, 8);
                let len = u32_at(b, 4) as i32;
                Step::Cut {
                    len: 8,
                    body: u64::from(len.unsigned_abs()),
                    extended: len < 0,
                }
            }
            msg::FENCE => {
                need!(b, 9);
                pass(9, u64::from(b[8]))
            }
            // QEMU server message; subtype 1 is audio (end, begin, data with a length).
            msg::QEMU => {
                need!(b, 4);
                match (b[1], u16_at(b, 2)) {
                    (1, 0 | 1) => pass(4, 0),
                    (1, 2) => {
                        need!(b, 8);
                        pass(8, u64::from(u32_at(b, 4)))
                    }
                    (sub, op) => Step::GiveUp(format!("QEMU server message {sub}/{op}")),
                }
            }
            t => Step::GiveUp(format!("server message type {t}")),
        }
    }

    fn rect(&self, b: &[u8], left: u16) -> Step {
        need!(b, 12);
        let next = if left > 1 {
            Phase::Rect { left: left - 1 }
        } else {
            Phase::Message
        };
        let (w, h) = (u64::from(u16_at(b, 4)), u64::from(u16_at(b, 6)));
        let pass = |len: usize, skip: u64| Step::Pass { len, skip, next };
        let mask = w.div_ceil(8) * h;
        match u32_at(b, 8) as i32 {
            number::RAW => pass(12, w * h * self.bytes_pp),
            number::COPY_RECT => pass(12, 4),
            number::ZRLE => {
                if b.len() < 16 {
                    return Step::More;
                }
                pass(16, u64::from(u32_at(b, 12)))
            }
            number::DESKTOP_SIZE
            | number::POINTER_TYPE_CHANGE
            | number::QEMU_EXTENDED_KEY_EVENT => pass(12, 0),
            number::LAST_RECT => Step::Pass {
                len: 12,
                skip: 0,
                next: Phase::Message,
            },
            number::CURSOR => pass(12, w * h * self.bytes_pp + mask),
            // XCursor: two RGB colours and two bitmaps, none for an empty shape.
            -240 => pass(12, if w * h == 0 { 0 } else { 6 + 2 * mask }),
            number::EXTENDED_DESKTOP_SIZE => {
                if b.len() < 16 {
                    return Step::More;
                }
                pass(16, 16 * u64::from(b[12]))
            }
            e => Step::GiveUp(format!("rectangle encoding {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The framer against byte streams recorded from our real VNC server: a scripted client
    //! (blocking std socket) drives `display::rfb::VncServer` through a handshake and a set
    //! of requests and server-side changes, and records both directions in wire order. The
    //! recording is then replayed through an [`InjectStream`] over a mock socket that hands
    //! the server's bytes over in chosen pieces, and the reader's view must be the server's
    //! bytes with exactly the cut text messages removed.

    use super::*;
    use crate::console::inject::InjectStream;

    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use display::encoding::Rect;
    use display::pixel::PixelFormat;
    use display::rfb::protocol::{
        ClientMessage, Limits, version_string, write_client_message, write_server_cut_text,
        write_server_extended_cut_text,
    };
    use display::rfb::{NullInput, Password, VncConfig, VncServer, clipboard};
    use display::surface::{Cursor, Surface};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// One stretch of the conversation.
    #[derive(Clone, Debug)]
    enum Seg {
        Client(Vec<u8>),
        /// The server's bytes between two client writes, and the wire bytes of the cut
        /// text messages among them (which must come out).
        Server {
            bytes: Vec<u8>,
            cuts: Vec<Vec<u8>>,
        },
    }

    struct Rec {
        s: TcpStream,
        log: Vec<Seg>,
        server: Vec<u8>,
        cuts: Vec<Vec<u8>>,
    }

    impl Rec {
        fn flush(&mut self) {
            if !self.server.is_empty() || !self.cuts.is_empty() {
                self.log.push(Seg::Server {
                    bytes: std::mem::take(&mut self.server),
                    cuts: std::mem::take(&mut self.cuts),
                });
            }
        }

        fn write(&mut self, b: &[u8]) {
            self.flush();
            self.s.write_all(b).unwrap();
            self.log.push(Seg::Client(b.to_vec()));
        }

        fn send(&mut self, m: &ClientMessage) {
            let mut b = Vec::new();
            write_client_message(m, &mut b);
            self.write(&b);
        }

        fn read_n(&mut self, n: usize) -> Vec<u8> {
            let mut b = vec![0u8; n];
            self.s.read_exact(&mut b).unwrap();
            self.server.extend_from_slice(&b);
            b
        }

        /// Reads whatever the server sends until it has been quiet for a while.
        fn drain(&mut self) {
            self.s
                .set_read_timeout(Some(Duration::from_millis(250)))
                .unwrap();
            let mut b = [0u8; 65536];
            loop {
                match self.s.read(&mut b) {
                    Ok(0) => break,
                    Ok(n) => self.server.extend_from_slice(&b[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            self.s
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }

        /// A cut text message the server is about to send (its exact bytes).
        fn expect_cut(&mut self, wire: Vec<u8>) {
            self.cuts.push(wire);
        }

        fn expect_ext(&mut self, (flags, payload): (u32, Vec<u8>)) {
            let mut m = Vec::new();
            write_server_extended_cut_text(flags, &payload, &mut m);
            self.expect_cut(m);
        }

        /// Connects and runs the handshake as RFB 3.`minor`; false if the server refused.
        fn connect(addr: SocketAddr, minor: u8, password: Option<&str>) -> (Rec, bool) {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = Rec {
                s,
                log: Vec::new(),
                server: Vec::new(),
                cuts: Vec::new(),
            };
            r.read_n(12);
            r.write(&version_string(minor));
            let sec = if minor == 3 {
                r.read_n(4)[3]
            } else {
                let n = r.read_n(1)[0];
                let types = r.read_n(usize::from(n));
                r.write(&types[..1]);
                types[0]
            };
            if sec == 2 {
                let mut ch = [0u8; 16];
                ch.copy_from_slice(&r.read_n(16));
                let resp = Password::new(password.unwrap_or("")).response(&ch);
                r.write(&resp);
            }
            if sec == 2 || minor == 8 {
                let res = r.read_n(4);
                if res != [0, 0, 0, 0] {
                    r.drain();
                    r.flush();
                    return (r, false);
                }
            }
            r.write(&[1]);
            let init = r.read_n(24);
            let name = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
            r.read_n(name as usize);
            (r, true)
        }

        fn request(&mut self, incremental: bool) {
            self.send(&ClientMessage::FramebufferUpdateRequest {
                incremental,
                x: 0,
                y: 0,
                w: 64,
                h: 64,
            });
            self.drain();
        }

        fn finish(mut self) -> Vec<Seg> {
            self.drain();
            self.flush();
            self.log
        }
    }

    fn server(password: Option<&str>) -> (VncServer, Arc<Surface>) {
        let surface = Surface::new(16, 8);
        surface.fill_rect(Rect::new(0, 0, 16, 8), 0x00cc_0000);
        let mut config = VncConfig::new("127.0.0.1:0".parse().unwrap());
        config.password = password.map(Password::new);
        let server = VncServer::start(config, surface.clone(), Arc::new(NullInput)).unwrap();
        (server, surface)
    }

    fn rgb565() -> PixelFormat {
        PixelFormat::from_bytes(&[16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0]).unwrap()
    }

    fn max_cut() -> usize {
        Limits::default().max_cut_text
    }

    /// Plain RFB 3.8, no password, Raw in the server's own format, plain cut text.
    fn record_plain() -> Vec<Seg> {
        let (server, surface) = server(None);
        let (mut r, ok) = Rec::connect(server.local_addr(), 8, None);
        assert!(ok);
        r.send(&ClientMessage::SetEncodings(vec![number::RAW]));
        r.request(false);
        surface.fill_rect(Rect::new(3, 2, 5, 4), 0x0000_ff00);
        r.request(true);
        r.expect_cut({
            let mut m = Vec::new();
            write_server_cut_text("héllo", &mut m);
            m
        });
        server.set_clipboard("héllo");
        r.drain();
        server.bell();
        r.finish()
    }

    /// RFB 3.8 with a password, 16 bits a pixel, every pseudo-encoding the framer sizes,
    /// and the Extended Clipboard both ways.
    fn record_extended() -> Vec<Seg> {
        let (server, surface) = server(Some("s3cret"));
        let (mut r, ok) = Rec::connect(server.local_addr(), 8, Some("s3cret"));
        assert!(ok);
        r.send(&ClientMessage::SetPixelFormat(rgb565()));
        r.send(&ClientMessage::SetEncodings(vec![
            number::COPY_RECT,
            number::RAW,
            number::DESKTOP_SIZE,
            number::EXTENDED_DESKTOP_SIZE,
            number::CURSOR,
            number::LAST_RECT,
            number::POINTER_TYPE_CHANGE,
            number::QEMU_EXTENDED_KEY_EVENT,
            number::EXTENDED_CLIPBOARD,
        ]));
        r.expect_ext(clipboard::caps(max_cut() as u32));
        r.drain();
        r.request(false);
        surface.copy_rect(Rect::new(0, 0, 8, 4), 8, 4);
        r.request(true);
        surface.set_cursor(Some(Cursor {
            width: 10,
            height: 3,
            hot_x: 1,
            hot_y: 1,
            pixels: vec![0xff00_ff00; 30],
        }));
        r.request(true);
        surface.resize(20, 10);
        r.request(true);
        r.expect_ext(clipboard::notify());
        server.set_clipboard("héllo € ünïcode");
        r.drain();
        let (f, p) = clipboard::request();
        r.send(&ClientMessage::ExtendedCutText {
            flags: f,
            payload: p,
        });
        r.expect_ext(clipboard::provide("héllo € ünïcode", max_cut()));
        r.drain();
        server.bell();
        r.finish()
    }

    /// RFB 3.7, ZRLE.
    fn record_zrle() -> Vec<Seg> {
        let (server, surface) = server(None);
        let (mut r, ok) = Rec::connect(server.local_addr(), 7, None);
        assert!(ok);
        r.send(&ClientMessage::SetEncodings(vec![number::ZRLE]));
        r.request(false);
        surface.fill_rect(Rect::new(1, 1, 9, 3), 0x0012_3456);
        r.request(true);
        r.finish()
    }

    /// RFB 3.3 with a password (the server picks the type).
    fn record_33() -> Vec<Seg> {
        let (server, _surface) = server(Some("pw"));
        let (mut r, ok) = Rec::connect(server.local_addr(), 3, Some("pw"));
        assert!(ok);
        r.send(&ClientMessage::SetEncodings(vec![number::RAW]));
        r.request(false);
        r.finish()
    }

    /// A wrong password: SecurityResult 1 and the reason.
    fn record_refused() -> Vec<Seg> {
        let (server, _surface) = server(Some("right"));
        let (r, ok) = Rec::connect(server.local_addr(), 8, Some("wrong"));
        assert!(!ok);
        r.finish()
    }

    /// Hextile, which the framer cannot size.
    fn record_hextile() -> Vec<Seg> {
        let (server, _surface) = server(None);
        let (mut r, ok) = Rec::connect(server.local_addr(), 8, None);
        assert!(ok);
        r.send(&ClientMessage::SetEncodings(vec![number::HEXTILE]));
        r.request(false);
        server.set_clipboard("after");
        r.drain();
        r.finish()
    }

    /// The server's bytes with the cut text messages taken out.
    fn expected(bytes: &[u8], cuts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for c in cuts {
            let at = out
                .windows(c.len())
                .position(|w| w == &c[..])
                .unwrap_or_else(|| panic!("cut text {c:?} not in the recording"));
            out.drain(at..at + c.len());
        }
        out
    }

    /// What a removed message becomes.
    fn as_cut(wire: &[u8]) -> ServerCut {
        let len = u32_at(wire, 4) as i32;
        if len < 0 {
            ServerCut::Extended {
                flags: u32_at(wire, 8),
                payload: wire[12..].to_vec(),
            }
        } else {
            ServerCut::Text(wire[8..].iter().map(|&b| char::from(b)).collect())
        }
    }

    /// A socket whose reads return the queued pieces one at a time (a piece cut short by
    /// a small buffer stays at the front), and whose writes go nowhere.
    #[derive(Clone, Default)]
    struct Pieces(Arc<Mutex<VecDeque<Vec<u8>>>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut q = self.0.lock().unwrap();
            let Some(mut p) = q.pop_front() else {
                // The test polls by hand: nobody needs waking.
                return Poll::Pending;
            };
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p[..n]);
            if n < p.len() {
                q.push_front(p.split_off(n));
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Replays `log` through an InjectStream, each server segment cut into pieces by
    /// `split`, read through a buffer of `bufsize`; checks every segment's output and cuts.
    fn replay(log: &[Seg], split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>, bufsize: usize, gives_up: bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _in_rt = rt.enter();
        let sock = Pieces::default();
        let (mut stream, _inj, mut cuts) = InjectStream::new(sock.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut b = vec![0u8; bufsize];
        for (i, seg) in log.iter().enumerate() {
            match seg {
                Seg::Client(m) => {
                    let r = Pin::new(&mut stream).poll_write(&mut cx, m);
                    assert!(matches!(r, Poll::Ready(Ok(n)) if n == m.len()));
                }
                Seg::Server { bytes, cuts: want } => {
                    sock.0.lock().unwrap().extend(split(bytes));
                    let mut got = Vec::new();
                    loop {
                        let mut rb = ReadBuf::new(&mut b);
                        match Pin::new(&mut stream).poll_read(&mut cx, &mut rb) {
                            Poll::Ready(Ok(())) => {
                                assert!(!rb.filled().is_empty(), "segment {i}: an empty read");
                                got.extend_from_slice(rb.filled());
                            }
                            Poll::Ready(Err(e)) => panic!("segment {i}: {e}"),
                            Poll::Pending => break,
                        }
                    }
                    let mut taken = Vec::new();
                    while let Ok(c) = cuts.try_recv() {
                        taken.push(c);
                    }
                    if gives_up {
                        assert_eq!(got, *bytes, "segment {i} passes whole");
                        assert!(taken.is_empty());
                    } else {
                        assert!(
                            got == expected(bytes, want),
                            "segment {i} (bufsize {bufsize}): {} bytes out, {} expected",
                            got.len(),
                            expected(bytes, want).len()
                        );
                        let want: Vec<ServerCut> = want.iter().map(|w| as_cut(w)).collect();
                        assert_eq!(taken, want, "segment {i}");
                    }
                }
            }
        }
    }

    /// Every way of reading a recording: whole, split in two at every offset of every
    /// segment, one byte at a time; through buffers of 1, 5 and 64 KiB bytes.
    fn check(log: &[Seg], gives_up: bool) {
        let whole = |b: &[u8]| vec![b.to_vec()];
        let bytes = |b: &[u8]| b.iter().map(|&x| vec![x]).collect();
        for bufsize in [1, 5, 65536] {
            replay(log, &whole, bufsize, gives_up);
            replay(log, &bytes, bufsize, gives_up);
        }
        let longest = log
            .iter()
            .map(|s| match s {
                Seg::Server { bytes, .. } => bytes.len(),
                Seg::Client(_) => 0,
            })
            .max()
            .unwrap();
        for k in 1..longest {
            let at = move |b: &[u8]| {
                if k < b.len() {
                    vec![b[..k].to_vec(), b[k..].to_vec()]
                } else {
                    vec![b.to_vec()]
                }
            };
            replay(log, &at, 65536, gives_up);
        }
    }

    /// The recording holds what it claims to (so the checks below check something).
    fn server_bytes(log: &[Seg]) -> Vec<u8> {
        log.iter()
            .flat_map(|s| match s {
                Seg::Server { bytes, .. } => bytes.clone(),
                Seg::Client(_) => Vec::new(),
            })
            .collect()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn plain_session_with_raw_and_latin1_cut_text() {
        let log = record_plain();
        let all = server_bytes(&log);
        // A full 16x8 Raw update at 32 bits a pixel is in there, and the bell at the end.
        assert!(all.len() > 16 * 8 * 4, "{} bytes", all.len());
        assert_eq!(all.last(), Some(&msg::BELL));
        check(&log, false);
    }

    #[test]
    fn password_rgb565_pseudo_encodings_and_extended_clipboard() {
        let log = record_extended();
        let all = server_bytes(&log);
        for enc in [
            number::COPY_RECT,
            number::CURSOR,
            number::EXTENDED_DESKTOP_SIZE,
            number::POINTER_TYPE_CHANGE,
            number::QEMU_EXTENDED_KEY_EVENT,
        ] {
            assert!(
                contains(&all, &enc.to_be_bytes()),
                "no rectangle of encoding {enc}"
            );
        }
        check(&log, false);
        // The Provide the server sent carries the text intact.
        let mut f = ServerFramer::new();
        let mut got = Vec::new();
        for s in &log {
            match s {
                Seg::Client(m) => {
                    f.client_wrote(m);
                }
                Seg::Server { bytes, .. } => {
                    let mut b = bytes.clone();
                    assert_eq!(f.filter(&mut b).hold, b.len(), "segments end whole");
                    got.extend(f.take_cuts());
                }
            }
        }
        let texts: Vec<_> = got
            .iter()
            .filter_map(|c| match c {
                ServerCut::Extended { flags, payload } => {
                    match clipboard::parse(*flags, payload, MAX_CUT) {
                        clipboard::ExtClipboard::Provide { text } => text,
                        _ => None,
                    }
                }
                ServerCut::Text(_) => None,
            })
            .collect();
        assert_eq!(texts, vec!["héllo € ünïcode".to_string()]);
    }

    #[test]
    fn rfb_37_with_zrle() {
        let log = record_zrle();
        assert!(contains(&server_bytes(&log), &number::ZRLE.to_be_bytes()));
        check(&log, false);
    }

    #[test]
    fn rfb_33_with_a_password() {
        check(&record_33(), false);
    }

    #[test]
    fn a_refused_password_passes_the_reason() {
        let log = record_refused();
        assert!(contains(&server_bytes(&log), b"authentication failed"));
        check(&log, false);
        let mut f = ServerFramer::new();
        for s in &log {
            match s {
                Seg::Client(m) => {
                    f.client_wrote(m);
                }
                Seg::Server { bytes, .. } => {
                    f.filter(&mut bytes.clone());
                }
            }
        }
        assert!(f.passing_through());
    }

    /// An encoding it cannot size: from there on everything passes as it came (the cut
    /// text too), and the encodings go again without the Extended Clipboard.
    #[test]
    fn an_unsized_encoding_turns_filtering_off() {
        let log = record_hextile();
        let Some(Seg::Server { bytes, .. }) = log.last() else {
            panic!("no server bytes at the end");
        };
        assert!(
            contains(bytes, b"after"),
            "the plain cut text came after the update"
        );
        // Up to the update the framer works as usual; the update's segment and what
        // follows pass whole.
        let split = log
            .iter()
            .position(|s| matches!(s, Seg::Client(m) if m[0] == msg::FRAMEBUFFER_UPDATE_REQUEST))
            .unwrap();
        check(&log[..split], false);
        let mut f = ServerFramer::new();
        for s in &log {
            match s {
                Seg::Client(m) => {
                    let sent = f.client_wrote(m);
                    if m[0] == msg::SET_ENCODINGS && m.len() == 8 {
                        assert_eq!(
                            &sent[..],
                            &[2, 0, 0, 2, 0, 0, 0, 5, 0xc0, 0xa1, 0xe5, 0xce],
                            "the Extended Clipboard is added"
                        );
                    }
                }
                Seg::Server { bytes, .. } => {
                    let mut b = bytes.clone();
                    let r = f.filter(&mut b);
                    if f.passing_through() {
                        assert_eq!(r.pass, bytes.len());
                        assert_eq!(b, *bytes);
                    }
                }
            }
        }
        assert!(f.passing_through());
        assert!(f.take_cuts().is_empty());
        assert_eq!(f.take_resend(), Some(vec![2, 0, 0, 1, 0, 0, 0, 5]));
    }

    /// Garbage and extremes never panic, and a huge cut text is read past, not stored.
    #[test]
    fn hostile_lengths_are_counted_not_allocated() {
        let mut f = ServerFramer::new();
        f.phase = Phase::Message;
        // A 2 GiB extended message, then a bell: only the first 100 bytes arrive.
        let mut b = vec![3, 0, 0, 0, 0x80, 0, 0, 0];
        b.extend_from_slice(&[0u8; 100]);
        let r = f.filter(&mut b);
        assert_eq!(
            r,
            Filtered {
                pass: 0,
                hold: b.len()
            }
        );
        assert!(f.collect.as_ref().is_some_and(|c| c.data.is_none()));
        // A Raw rectangle of 65535x65535 is counted past in pieces.
        let mut f = ServerFramer::new();
        f.phase = Phase::Message;
        let mut b = vec![0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        b.extend_from_slice(&[7u8; 1000]);
        let r = f.filter(&mut b);
        assert_eq!(r.pass, b.len());
        assert_eq!(f.skip, 65535u64 * 65535 * 4 - 1000);
        // Extended messages shorter than their flags are dropped, not indexed.
        let mut f = ServerFramer::new();
        f.phase = Phase::Message;
        let mut b = vec![3, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 9, 9, 2];
        let r = f.filter(&mut b);
        assert_eq!(
            r,
            Filtered {
                pass: 1,
                hold: b.len()
            }
        );
        assert_eq!(b[0], 2);
        assert!(f.take_cuts().is_empty());
    }
}
