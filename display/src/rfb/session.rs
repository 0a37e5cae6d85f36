//! One client connection: handshake, then a reader (this thread) that parses client
//! messages and feeds input to the [`InputSink`], and a writer thread that waits on the
//! surface and sends updates when the client asked for them (or enabled continuous
//! updates), at most `max_fps` times a second on average (see [`UpdatePacer`]).
//!
//! The two threads share a small control block (`Ctl`) under a mutex; the reader kicks
//! the writer through the surface consumer's [`Waker`], so neither polls. Every byte a
//! client sends is untrusted: any malformed message ends this session alone, with a log
//! line, and reads of message bodies time out so a client stalling mid-message cannot
//! pin a thread forever. Writes time out too, so a client that stops reading is dropped
//! instead of growing a queue: updates are built from the latest pixels only when the
//! socket has taken the previous one.
//!
//! The session reads and writes through a [`Transport`]: two clones of the socket for a
//! plain client, or the WebSocket frame adapters for a browser (`websocket.rs`). The
//! timeouts are set on the socket itself, so they hold either way.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::auth;
use super::clipboard::{self, ExtClipboard};
use super::input::InputSink;
use super::protocol::{self, ClientMessage, Limits, ProtocolError, Screen, fence};
use super::websocket::{self, WsError};
use crate::encoding::{Encoder, EncoderSettings, Rect, new_encoder, number};
use crate::pixel::PixelFormat;
use crate::surface::{Consumer, Cursor, Surface, Waker};

/// Security type numbers (RFC 6143 §7.1.2).
const SEC_NONE: u8 = 1;
const SEC_VNC: u8 = 2;

/// Everything a session needs from the server.
pub(crate) struct SessionEnv {
    pub surface: Arc<Surface>,
    pub input: Arc<dyn InputSink>,
    pub password: Option<auth::Password>,
    pub name: String,
    pub limits: Limits,
    pub min_interval: Duration,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
}

/// What the client told us it understands (from SetEncodings).
#[derive(Clone, Copy, Debug, Default)]
struct Supports {
    copy_rect: bool,
    desktop_size: bool,
    ext_desktop_size: bool,
    cursor: bool,
    last_rect: bool,
    pointer_type_change: bool,
    qemu_key: bool,
    fence: bool,
    continuous: bool,
    ext_clipboard: bool,
}

/// An outstanding FramebufferUpdateRequest (requests that arrive while one is pending
/// are merged).
#[derive(Clone, Copy, Debug)]
struct Request {
    /// Region to send whether or not it changed (non-incremental requests).
    full: Option<Rect>,
}

/// Pseudo-rectangles to put in the next update.
#[derive(Clone, Copy, Debug, Default)]
struct Announce {
    qemu_key: bool,
    pointer_absolute: bool,
    desktop: bool,
    cursor: bool,
}

impl Announce {
    fn any(&self) -> bool {
        self.qemu_key || self.pointer_absolute || self.desktop || self.cursor
    }
}

/// State shared by the reader and the writer of one session.
pub(crate) struct Ctl {
    pf: PixelFormat,
    /// Pixel encodings the client accepts, best first (Raw is always acceptable).
    encodings: Vec<i32>,
    supports: Supports,
    settings: EncoderSettings,
    request: Option<Request>,
    continuous: Option<Rect>,
    announce: Announce,
    /// Complete server messages to send before the next update.
    outbox: Vec<Vec<u8>>,
    /// Text the server side offers (for extended clipboard requests).
    server_clipboard: Option<String>,
    closing: bool,
    announced_fence: bool,
    announced_continuous: bool,
    announced_clipboard: bool,
}

impl Ctl {
    fn new() -> Self {
        Ctl {
            pf: PixelFormat::NATIVE,
            encodings: vec![number::RAW],
            supports: Supports::default(),
            settings: EncoderSettings::default(),
            request: None,
            continuous: None,
            announce: Announce::default(),
            outbox: Vec::new(),
            server_clipboard: None,
            closing: false,
            announced_fence: false,
            announced_continuous: false,
            announced_clipboard: false,
        }
    }
}

/// The server's handle on a running session.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub ctl: Arc<Mutex<Ctl>>,
    pub waker: Waker,
    pub stream: Arc<TcpStream>,
}

fn lock(ctl: &Mutex<Ctl>) -> MutexGuard<'_, Ctl> {
    ctl.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionHandle {
    /// Offers `text` as the server's clipboard to this client.
    pub fn set_clipboard(&self, text: &str, max: usize) {
        let mut c = lock(&self.ctl);
        c.server_clipboard = Some(text.to_owned());
        let mut m = Vec::new();
        if c.supports.ext_clipboard {
            let (flags, payload) = clipboard::notify();
            protocol::write_server_extended_cut_text(flags, &payload, &mut m);
        } else {
            let cut: String = text.chars().take(max).collect();
            protocol::write_server_cut_text(&cut, &mut m);
        }
        c.outbox.push(m);
        drop(c);
        self.waker.wake();
    }

    /// The server's clipboard when the session starts: announced to an Extended
    /// Clipboard client right after our capabilities (a plain client hears of changes only).
    pub fn preset_clipboard(&self, text: String) {
        lock(&self.ctl).server_clipboard = Some(text);
    }

    pub fn bell(&self) {
        let mut m = Vec::new();
        protocol::write_bell(&mut m);
        lock(&self.ctl).outbox.push(m);
        self.waker.wake();
    }

    /// Ends the session from outside (server shutdown, or a non-shared client).
    pub fn close(&self) {
        lock(&self.ctl).closing = true;
        self.waker.wake();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// How a client's bytes travel: `reader` and `writer` are the session's two directions
/// (used by the reader and the writer thread), `socket` is the connection under them, for
/// timeouts and shutdown.
pub(crate) struct Transport {
    pub socket: TcpStream,
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
}

impl Transport {
    /// RFB straight on the socket.
    pub fn plain(socket: TcpStream) -> io::Result<Transport> {
        Ok(Transport {
            reader: Box::new(socket.try_clone()?),
            writer: Box::new(socket.try_clone()?),
            socket,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("connection: {0}")]
    Io(io::Error),
    #[error("WebSocket: {0}")]
    WebSocket(WsError),
    #[error("client chose security type {0}, which was not offered")]
    SecurityType(u8),
    #[error("authentication failed")]
    AuthFailed,
    #[error(
        "an HTTP request came after our RFB greeting: a WebSocket client that spoke later \
         than the server waits for one"
    )]
    LateHttp,
}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> SessionError {
        match websocket::ws_error(&e) {
            Some(ws) => SessionError::WebSocket(ws.clone()),
            None => SessionError::Io(e),
        }
    }
}

impl SessionError {
    fn is_disconnect(&self) -> bool {
        match self {
            SessionError::Protocol(p) => p.is_disconnect(),
            SessionError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// The result of a successful handshake.
pub(crate) struct Handshaken {
    pub shared: bool,
    pub consumer: Consumer,
}

/// Runs the handshake (version, security, ClientInit, ServerInit).
pub(crate) fn handshake(
    transport: &mut Transport,
    env: &SessionEnv,
    peer: SocketAddr,
) -> Result<Handshaken, SessionError> {
    transport
        .socket
        .set_read_timeout(Some(env.handshake_timeout))?;
    transport
        .socket
        .set_write_timeout(Some(env.write_timeout))?;
    let mut stream = Duplex {
        reader: &mut transport.reader,
        writer: &mut transport.writer,
    };
    let stream = &mut stream;
    stream.write_all(&protocol::version_string(8))?;
    let mut v = [0u8; 12];
    stream.read_exact(&mut v)?;
    if v.starts_with(b"GET ") {
        return Err(SessionError::LateHttp);
    }
    let minor = protocol::parse_version(&v)?;
    debug!(%peer, minor, "vnc: client speaks RFB 3.{minor}");

    let sec = if env.password.is_some() {
        SEC_VNC
    } else {
        SEC_NONE
    };
    if minor == 3 {
        // 3.3: the server decides.
        stream.write_all(&u32::from(sec).to_be_bytes())?;
    } else {
        stream.write_all(&[1, sec])?;
        let mut chosen = [0u8; 1];
        stream.read_exact(&mut chosen)?;
        if chosen[0] != sec {
            fail_security(stream, minor, "security type not offered")?;
            return Err(SessionError::SecurityType(chosen[0]));
        }
    }
    if let Some(pw) = &env.password {
        let challenge = auth::new_challenge()?;
        stream.write_all(&challenge)?;
        let mut resp = [0u8; 16];
        stream.read_exact(&mut resp)?;
        if !pw.verify(&challenge, &resp) {
            // A short pause makes guessing slower without holding anything.
            std::thread::sleep(Duration::from_millis(200));
            fail_security(stream, minor, "authentication failed")?;
            return Err(SessionError::AuthFailed);
        }
        stream.write_all(&0u32.to_be_bytes())?;
    } else if minor == 8 {
        stream.write_all(&0u32.to_be_bytes())?;
    }

    let mut shared = [0u8; 1];
    stream.read_exact(&mut shared)?;
    let consumer = env.surface.subscribe();
    let (w, h) = consumer.size();
    let mut init = Vec::with_capacity(24 + env.name.len());
    init.extend_from_slice(&w.to_be_bytes());
    init.extend_from_slice(&h.to_be_bytes());
    init.extend_from_slice(&PixelFormat::NATIVE.to_bytes());
    init.extend_from_slice(&(env.name.len() as u32).to_be_bytes());
    init.extend_from_slice(env.name.as_bytes());
    stream.write_all(&init)?;
    Ok(Handshaken {
        shared: shared[0] != 0,
        consumer,
    })
}

/// The transport's two directions as one stream, for the handshake's turns.
struct Duplex<'a> {
    reader: &'a mut Box<dyn Read + Send>,
    writer: &'a mut Box<dyn Write + Send>,
}

impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

fn fail_security(stream: &mut Duplex<'_>, minor: u8, reason: &str) -> io::Result<()> {
    stream.write_all(&1u32.to_be_bytes())?;
    if minor == 8 {
        stream.write_all(&(reason.len() as u32).to_be_bytes())?;
        stream.write_all(reason.as_bytes())?;
    }
    Ok(())
}

pub(crate) fn new_handle(stream: &TcpStream, consumer: &Consumer) -> io::Result<SessionHandle> {
    Ok(SessionHandle {
        ctl: Arc::new(Mutex::new(Ctl::new())),
        waker: consumer.waker(),
        stream: Arc::new(stream.try_clone()?),
    })
}

/// Runs a handshaken session to its end: spawns the writer, reads until the client goes.
pub(crate) fn run(
    transport: Transport,
    env: Arc<SessionEnv>,
    handle: SessionHandle,
    consumer: Consumer,
    peer: SocketAddr,
) {
    let Transport {
        socket,
        reader,
        writer: writer_stream,
    } = transport;
    let writer = {
        let env = Arc::clone(&env);
        let handle = handle.clone();
        std::thread::Builder::new()
            .name(format!("vnc-tx-{peer}"))
            .spawn(move || write_loop(writer_stream, env, handle, consumer, peer))
    };
    let result = read_loop(&socket, reader, &env, &handle);
    match &result {
        Ok(()) => info!(%peer, "vnc: client disconnected"),
        Err(e) if e.is_disconnect() => info!(%peer, "vnc: client disconnected ({e})"),
        Err(e) => warn!(%peer, "vnc: dropping client: {e}"),
    }
    handle.close();
    if let Ok(w) = writer {
        let _ = w.join();
    }
}

fn read_loop(
    socket: &TcpStream,
    source: Box<dyn Read + Send>,
    env: &SessionEnv,
    handle: &SessionHandle,
) -> Result<(), SessionError> {
    let mut reader = BufReader::with_capacity(16 * 1024, source);
    let (mut width, mut height) = env.surface.size();
    loop {
        // Waiting for the next message may take forever (an idle viewer); its body may not.
        socket.set_read_timeout(None)?;
        if reader.fill_buf()?.is_empty() {
            return Ok(());
        }
        if lock(&handle.ctl).closing {
            return Ok(());
        }
        socket.set_read_timeout(Some(env.handshake_timeout))?;
        let m = protocol::read_client_message(&mut reader, &env.limits)?;
        handle_message(m, env, handle, &mut width, &mut height);
    }
}

fn handle_message(
    m: ClientMessage,
    env: &SessionEnv,
    handle: &SessionHandle,
    width: &mut u16,
    height: &mut u16,
) {
    let kick = |c: MutexGuard<'_, Ctl>| {
        drop(c);
        handle.waker.wake();
    };
    match m {
        ClientMessage::SetPixelFormat(pf) => {
            lock(&handle.ctl).pf = pf;
        }
        ClientMessage::SetEncodings(list) => {
            let mut c = lock(&handle.ctl);
            set_encodings(&mut c, &list, env.limits.max_cut_text);
            kick(c);
        }
        ClientMessage::FramebufferUpdateRequest {
            incremental,
            x,
            y,
            w,
            h,
        } => {
            let mut c = lock(&handle.ctl);
            let full = (!incremental).then(|| Rect::new(x, y, w, h));
            c.request = Some(match (c.request, full) {
                (None, full) => Request { full },
                (Some(r), None) => r,
                (Some(Request { full: None }), Some(f)) => Request { full: Some(f) },
                (Some(Request { full: Some(a) }), Some(b)) => Request {
                    full: Some(union(a, b)),
                },
            });
            kick(c);
        }
        ClientMessage::KeyEvent { down, keysym } => env.input.key(keysym, down, None),
        ClientMessage::QemuKeyEvent {
            down,
            keysym,
            keycode,
        } => env.input.key(keysym, down, xt_scancode(keycode)),
        ClientMessage::PointerEvent { buttons, x, y } => {
            // The surface may have been resized since; refresh the clamp bounds cheaply.
            (*width, *height) = env.surface.size();
            env.input.pointer(
                x.min(width.saturating_sub(1)),
                y.min(height.saturating_sub(1)),
                buttons,
            );
        }
        ClientMessage::CutText(text) => env.input.clipboard(text),
        ClientMessage::CutTextTooLong(n) => {
            warn!(
                "vnc: ignoring client cut text of {n} bytes (limit {})",
                env.limits.max_cut_text
            )
        }
        ClientMessage::ExtendedCutText { flags, payload } => {
            match clipboard::parse(flags, &payload, env.limits.max_cut_text) {
                ExtClipboard::Provide { text: Some(t) } => env.input.clipboard(t),
                ExtClipboard::Provide { text: None } => {
                    debug!("vnc: extended clipboard provide without usable text")
                }
                ExtClipboard::Notify { formats } if formats & clipboard::TEXT != 0 => {
                    let (f, p) = clipboard::request();
                    let mut m = Vec::new();
                    protocol::write_server_extended_cut_text(f, &p, &mut m);
                    let mut c = lock(&handle.ctl);
                    c.outbox.push(m);
                    kick(c);
                }
                ExtClipboard::Request { formats } if formats & clipboard::TEXT != 0 => {
                    let mut c = lock(&handle.ctl);
                    if let Some(t) = c.server_clipboard.clone() {
                        let (f, p) = clipboard::provide(&t, env.limits.max_cut_text);
                        let mut m = Vec::new();
                        protocol::write_server_extended_cut_text(f, &p, &mut m);
                        c.outbox.push(m);
                    }
                    kick(c);
                }
                ExtClipboard::Peek => {
                    let mut c = lock(&handle.ctl);
                    if c.server_clipboard.is_some() {
                        let (f, p) = clipboard::notify();
                        let mut m = Vec::new();
                        protocol::write_server_extended_cut_text(f, &p, &mut m);
                        c.outbox.push(m);
                    }
                    kick(c);
                }
                other => debug!("vnc: extended clipboard message ignored: {other:?}"),
            }
        }
        ClientMessage::EnableContinuousUpdates { enable, x, y, w, h } => {
            let mut c = lock(&handle.ctl);
            if !c.supports.continuous {
                // Only legal after the client announced the pseudo-encoding.
                debug!("vnc: EnableContinuousUpdates without -313; ignored");
                return;
            }
            if enable {
                c.continuous = Some(Rect::new(x, y, w, h));
            } else {
                c.continuous = None;
                let mut m = Vec::new();
                protocol::write_end_of_continuous_updates(&mut m);
                c.outbox.push(m);
            }
            kick(c);
        }
        ClientMessage::Fence { flags, payload } => {
            if flags & fence::REQUEST != 0 {
                // We handle messages strictly in order, so every flag is already honoured;
                // reply with the ones we know.
                let mut m = Vec::new();
                protocol::write_fence(flags & fence::SUPPORTED & !fence::REQUEST, &payload, &mut m);
                let mut c = lock(&handle.ctl);
                c.outbox.push(m);
                kick(c);
            }
        }
        ClientMessage::SetDesktopSize { .. } => {
            // The guest decides its resolution: answer "prohibited" with the current layout.
            let mut c = lock(&handle.ctl);
            if c.supports.ext_desktop_size {
                let (w, h) = env.surface.size();
                let mut m = Vec::new();
                let at = protocol::begin_framebuffer_update(&mut m);
                write_ext_desktop_size(1, 1, w, h, &mut m);
                protocol::finish_framebuffer_update(&mut m, at, 1);
                c.outbox.push(m);
            }
            kick(c);
        }
    }
}

/// Maps the QEMU extended key event's keycode to an XT scan code with the 0xE0 prefix in
/// the high byte. On the wire, extended keys come as 0x80 | code (noVNC, TigerVNC, QEMU);
/// some clients send 0xE0xx directly.
fn xt_scancode(keycode: u32) -> Option<u16> {
    match keycode {
        0 => None,
        1..=0x7f => Some(keycode as u16),
        0x80..=0xff => Some(0xe000 | (keycode as u16 & 0x7f)),
        0xe000..=0xe0ff => Some(keycode as u16),
        _ => None,
    }
}

fn union(a: Rect, b: Rect) -> Rect {
    let x0 = a.x.min(b.x);
    let y0 = a.y.min(b.y);
    let x1 = (u32::from(a.x) + u32::from(a.w)).max(u32::from(b.x) + u32::from(b.w));
    let y1 = (u32::from(a.y) + u32::from(a.h)).max(u32::from(b.y) + u32::from(b.h));
    Rect::new(
        x0,
        y0,
        (x1 - u32::from(x0)).min(65535) as u16,
        (y1 - u32::from(y0)).min(65535) as u16,
    )
}

fn set_encodings(c: &mut Ctl, list: &[i32], max_cut: usize) {
    let mut s = Supports::default();
    let mut encodings = Vec::new();
    let mut settings = EncoderSettings::default();
    for &e in list {
        match e {
            number::COPY_RECT => s.copy_rect = true,
            number::DESKTOP_SIZE => s.desktop_size = true,
            number::EXTENDED_DESKTOP_SIZE => s.ext_desktop_size = true,
            number::CURSOR => s.cursor = true,
            number::LAST_RECT => s.last_rect = true,
            number::POINTER_TYPE_CHANGE => s.pointer_type_change = true,
            number::QEMU_EXTENDED_KEY_EVENT => s.qemu_key = true,
            number::FENCE => s.fence = true,
            number::CONTINUOUS_UPDATES => s.continuous = true,
            number::EXTENDED_CLIPBOARD => s.ext_clipboard = true,
            number::JPEG_QUALITY_0..=number::JPEG_QUALITY_9 => {
                settings
                    .jpeg_quality
                    .get_or_insert((e - number::JPEG_QUALITY_0) as u8);
            }
            number::COMPRESS_LEVEL_0..=number::COMPRESS_LEVEL_9 => {
                settings
                    .compress_level
                    .get_or_insert((e - number::COMPRESS_LEVEL_0) as u8);
            }
            e if !encodings.contains(&e) && new_encoder(e).is_some() => encodings.push(e),
            _ => {}
        }
    }
    if !encodings.contains(&number::RAW) {
        encodings.push(number::RAW);
    }
    let old = c.supports;
    c.announce.qemu_key |= s.qemu_key && !old.qemu_key;
    c.announce.pointer_absolute |= s.pointer_type_change && !old.pointer_type_change;
    c.announce.desktop |= s.ext_desktop_size && !old.ext_desktop_size;
    c.announce.cursor |= s.cursor && !old.cursor;
    if s.continuous && !c.announced_continuous {
        // Tells the client we support continuous updates.
        c.announced_continuous = true;
        let mut m = Vec::new();
        protocol::write_end_of_continuous_updates(&mut m);
        c.outbox.push(m);
    }
    if s.fence && !c.announced_fence {
        // Any fence from the server tells the client we support fences.
        c.announced_fence = true;
        let mut m = Vec::new();
        protocol::write_fence(fence::REQUEST, &[], &mut m);
        c.outbox.push(m);
    }
    if s.ext_clipboard && !c.announced_clipboard {
        c.announced_clipboard = true;
        let (f, p) = clipboard::caps(max_cut.min(u32::MAX as usize) as u32);
        let mut m = Vec::new();
        protocol::write_server_extended_cut_text(f, &p, &mut m);
        c.outbox.push(m);
        if c.server_clipboard.is_some() {
            let (f, p) = clipboard::notify();
            let mut m = Vec::new();
            protocol::write_server_extended_cut_text(f, &p, &mut m);
            c.outbox.push(m);
        }
    }
    c.supports = s;
    c.encodings = encodings;
    c.settings = settings;
}

fn write_ext_desktop_size(reason: u16, status: u16, w: u16, h: u16, out: &mut Vec<u8>) {
    Rect::new(reason, status, w, h).write_header(number::EXTENDED_DESKTOP_SIZE, out);
    out.extend_from_slice(&[1, 0, 0, 0]);
    protocol::write_screen(
        &Screen {
            id: 0,
            x: 0,
            y: 0,
            w,
            h,
            flags: 0,
        },
        out,
    );
}

fn write_cursor(cursor: Option<&Cursor>, pf: &PixelFormat, out: &mut Vec<u8>) {
    let Some(c) = cursor else {
        // An empty shape: the client draws no local cursor.
        Rect::new(0, 0, 0, 0).write_header(number::CURSOR, out);
        return;
    };
    Rect::new(c.hot_x, c.hot_y, c.width, c.height).write_header(number::CURSOR, out);
    for &p in &c.pixels {
        pf.write_pixel(p & 0x00ff_ffff, out);
    }
    let row_bytes = usize::from(c.width).div_ceil(8);
    for row in c.pixels.chunks(usize::from(c.width).max(1)) {
        let mut mask = vec![0u8; row_bytes];
        for (i, &p) in row.iter().enumerate() {
            if p >> 24 >= 0x80 {
                mask[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out.extend_from_slice(&mask);
    }
}

fn clip(r: Rect, w: u16, h: u16) -> Option<Rect> {
    let x1 = (u32::from(r.x) + u32::from(r.w)).min(u32::from(w));
    let y1 = (u32::from(r.y) + u32::from(r.h)).min(u32::from(h));
    if x1 <= u32::from(r.x) || y1 <= u32::from(r.y) {
        return None;
    }
    Some(Rect::new(
        r.x,
        r.y,
        (x1 - u32::from(r.x)) as u16,
        (y1 - u32::from(r.y)) as u16,
    ))
}

struct Writer {
    stream: Box<dyn Write + Send>,
    consumer: Consumer,
    encoders: HashMap<i32, Box<dyn Encoder>>,
    /// The framebuffer size the client believes in.
    client_size: (u16, u16),
    buf: Vec<u8>,
    surface: Arc<Surface>,
    /// Whether the client has a shape from us (so removing it must be said).
    sent_cursor: bool,
}

fn write_loop(
    stream: Box<dyn Write + Send>,
    env: Arc<SessionEnv>,
    handle: SessionHandle,
    consumer: Consumer,
    peer: SocketAddr,
) {
    let client_size = consumer.size();
    let mut w = Writer {
        stream,
        consumer,
        encoders: HashMap::new(),
        client_size,
        buf: Vec::with_capacity(64 * 1024),
        surface: Arc::clone(&env.surface),
        sent_cursor: false,
    };
    if let Err(e) = w.run(&env, &handle) {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            warn!(%peer, "vnc: dropping client: it stopped reading (write timed out)");
        } else {
            debug!(%peer, "vnc: writer ends: {e}");
        }
    }
    // Whatever ended the writer ends the session.
    handle.close();
}

/// Updates one after another may come [`UpdatePacer::BURST`] at once, then one per
/// interval: the rule of a token bucket, kept as the time the next update would be due if
/// all came at the full rate (the generic cell rate algorithm). The burst is for a small
/// update that just went out (a cursor blink) followed by the one a client waits for (a
/// key's echo): with a plain minimum gap that one waited a whole frame interval (11 ms
/// more in 6% of the key-echo benchmark's keys). A screen that changes all the time still
/// gets one update per interval.
struct UpdatePacer {
    interval: Duration,
    /// When the next update would be due at the full rate.
    due: Instant,
}

impl UpdatePacer {
    const BURST: u32 = 2;

    fn new(interval: Duration, now: Instant) -> UpdatePacer {
        UpdatePacer { interval, due: now }
    }

    /// The earliest the next update may go.
    fn next_allowed(&self) -> Instant {
        let tolerance = self.interval * (Self::BURST - 1);
        self.due.checked_sub(tolerance).unwrap_or(self.due)
    }

    /// An update went out at `at`.
    fn sent(&mut self, at: Instant) {
        self.due = self.due.max(at) + self.interval;
    }
}

impl Writer {
    fn run(&mut self, env: &SessionEnv, handle: &SessionHandle) -> io::Result<()> {
        let mut pacer = UpdatePacer::new(env.min_interval, Instant::now());
        loop {
            let wants = {
                let c = lock(&handle.ctl);
                if c.closing {
                    return Ok(());
                }
                c.request.is_some() || c.continuous.is_some()
            };
            let now = Instant::now();
            let next_allowed = pacer.next_allowed();
            if wants && now < next_allowed {
                // Rate cap: only kicks (new requests, outgoing messages) wake us early.
                self.consumer.wait(false, next_allowed - now);
            } else {
                self.consumer.wait(wants, Duration::from_secs(5));
            }
            let mut c = lock(&handle.ctl);
            if c.closing {
                return Ok(());
            }
            let outbox = std::mem::take(&mut c.outbox);
            let now = Instant::now();
            let mut send = None;
            if now >= pacer.next_allowed() {
                if let Some(req) = c.request {
                    if req.full.is_some() || c.announce.any() || self.consumer.has_changes() {
                        send = Some(req);
                        c.request = None;
                    }
                } else if c.continuous.is_some() && self.consumer.has_changes() {
                    send = Some(Request { full: None });
                }
            }
            let snapshot = send.map(|req| {
                (
                    req,
                    c.pf,
                    c.encodings.first().copied().unwrap_or(number::RAW),
                    c.supports,
                    c.settings,
                    std::mem::take(&mut c.announce),
                )
            });
            drop(c);
            for m in &outbox {
                self.stream.write_all(m)?;
            }
            if let Some((req, pf, enc, sup, settings, announce)) = snapshot {
                pacer.sent(Instant::now());
                self.send_update(req, &pf, enc, sup, &settings, announce)?;
            }
        }
    }

    fn send_update(
        &mut self,
        req: Request,
        pf: &PixelFormat,
        enc: i32,
        sup: Supports,
        settings: &EncoderSettings,
        announce: Announce,
    ) -> io::Result<()> {
        let update = self.consumer.take(sup.copy_rect, req.full);
        let out = &mut self.buf;
        out.clear();
        let at = protocol::begin_framebuffer_update(out);
        let mut count: u32 = 0;
        if let Some((w, h)) = update.resized {
            if sup.ext_desktop_size {
                write_ext_desktop_size(0, 0, w, h, out);
                self.client_size = (w, h);
                count += 1;
            } else if sup.desktop_size {
                Rect::new(0, 0, w, h).write_header(number::DESKTOP_SIZE, out);
                self.client_size = (w, h);
                count += 1;
            }
            // Otherwise the client keeps its size and gets what fits.
        } else if announce.desktop {
            let (w, h) = self.client_size;
            write_ext_desktop_size(0, 0, w, h, out);
            count += 1;
        }
        if announce.qemu_key {
            Rect::new(0, 0, 0, 0).write_header(number::QEMU_EXTENDED_KEY_EVENT, out);
            count += 1;
        }
        if announce.pointer_absolute {
            // x = 1: the pointer is absolute (a tablet), so the client need not grab it.
            Rect::new(1, 0, 0, 0).write_header(number::POINTER_TYPE_CHANGE, out);
            count += 1;
        }
        let (cw, ch) = self.client_size;
        for op in &update.copies {
            let (Some(dst), Some(_)) = (clip(op.dst(), cw, ch), clip(op.src, cw, ch)) else {
                continue;
            };
            if dst.w != op.src.w || dst.h != op.src.h {
                continue;
            }
            dst.write_header(number::COPY_RECT, out);
            out.extend_from_slice(&op.src.x.to_be_bytes());
            out.extend_from_slice(&op.src.y.to_be_bytes());
            count += 1;
        }
        let view = self.consumer.view();
        let encoder = self.encoders.entry(enc).or_insert_with(|| {
            new_encoder(enc).unwrap_or_else(|| Box::new(crate::encoding::RawEncoder))
        });
        for r in &update.rects {
            if let Some(r) = clip(*r, cw, ch) {
                count += u32::from(encoder.encode(&view, r, pf, settings, out));
            }
        }
        let cursor_news = match update.cursor {
            Some(c) => Some(c),
            None if announce.cursor => Some(self.surface.cursor()),
            None => None,
        };
        if sup.cursor
            && let Some(c) = cursor_news
            && (c.is_some() || self.sent_cursor)
        {
            self.sent_cursor = c.is_some();
            write_cursor(c.as_deref(), pf, out);
            count += 1;
        }
        let count = if count > 0xfffe && sup.last_rect {
            Rect::new(0, 0, 0, 0).write_header(number::LAST_RECT, out);
            0xffff
        } else {
            count.min(0xfffe) as u16
        };
        protocol::finish_framebuffer_update(out, at, count);
        self.stream.write_all(out)?;
        // Don't keep a huge buffer around after a full-screen Raw update.
        if out.capacity() > 4 << 20 {
            *out = Vec::with_capacity(64 * 1024);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_come_two_at_once_then_one_per_interval() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut p = UpdatePacer::new(ms(16), t0);
        assert!(p.next_allowed() <= t0);
        // After a quiet spell: a blink update, and the echo 3 ms later goes at once.
        p.sent(t0);
        assert!(p.next_allowed() <= t0 + ms(3));
        p.sent(t0 + ms(3));
        // The burst is spent: the third waits for the rate.
        assert_eq!(p.next_allowed(), t0 + ms(16));
        // A screen that changes all the time: one update per interval from here on.
        let mut at = p.next_allowed();
        for _ in 0..100 {
            p.sent(at);
            let next = p.next_allowed();
            assert_eq!(next - at, ms(16));
            at = next;
        }
        // Quiet again for a while: the burst is back, but no more than it.
        let later = at + ms(1000);
        assert!(p.next_allowed() <= later);
        p.sent(later);
        assert!(p.next_allowed() <= later);
        p.sent(later);
        assert_eq!(p.next_allowed(), later + ms(16));
    }

    #[test]
    fn xt_scancodes() {
        assert_eq!(xt_scancode(0x1e), Some(0x1e));
        assert_eq!(xt_scancode(0xc8), Some(0xe048));
        assert_eq!(xt_scancode(0xe048), Some(0xe048));
        assert_eq!(xt_scancode(0), None);
        assert_eq!(xt_scancode(0x12345), None);
    }

    #[test]
    fn encodings_set_support_and_order() {
        let mut c = Ctl::new();
        set_encodings(
            &mut c,
            &[
                number::COPY_RECT,
                12345,
                number::RAW,
                number::QEMU_EXTENDED_KEY_EVENT,
                number::CONTINUOUS_UPDATES,
                number::FENCE,
                number::JPEG_QUALITY_0 + 6,
                number::COMPRESS_LEVEL_0 + 2,
            ],
            1000,
        );
        assert!(c.supports.copy_rect && c.supports.qemu_key && c.supports.fence);
        assert_eq!(c.encodings, vec![number::RAW]);
        assert_eq!(c.settings.jpeg_quality, Some(6));
        assert_eq!(c.settings.compress_level, Some(2));
        assert!(c.announce.qemu_key);
        // EndOfContinuousUpdates and a fence request go out once.
        assert_eq!(c.outbox.len(), 2);
        set_encodings(&mut c, &[number::CONTINUOUS_UPDATES, number::FENCE], 1000);
        assert_eq!(c.outbox.len(), 2);
    }

    #[test]
    fn union_and_clip() {
        assert_eq!(
            union(Rect::new(0, 0, 10, 10), Rect::new(20, 20, 5, 5)),
            Rect::new(0, 0, 25, 25)
        );
        assert_eq!(clip(Rect::new(60000, 0, 65535, 10), 100, 100), None);
        assert_eq!(
            clip(Rect::new(90, 90, 65535, 65535), 100, 100),
            Some(Rect::new(90, 90, 10, 10))
        );
    }
}
