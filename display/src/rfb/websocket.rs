//! RFB over WebSocket (RFC 6455) on the VNC port itself, so a browser client (noVNC)
//! connects to 5900+N with no proxy in between.
//!
//! RFB's server speaks first and a WebSocket client speaks first (an HTTP GET), so a new
//! connection is told apart by waiting a moment for the client's first bytes
//! ([`client_began_get`]): a plain VNC client sends nothing until it has our version
//! string, a browser sends its request right after the TCP handshake. The wait is the
//! whole cost to plain clients, which is why it is short (see `DEFAULT_WAIT` in
//! `server.rs`).
//!
//! After the upgrade ([`accept`]) the RFB session runs unchanged over two adapters, as the
//! plain session runs over two clones of the socket: [`FrameReader`] (the session's reader
//! thread) takes the client's masked frames apart and hands on their payload as one byte
//! stream; [`FrameWriter`] (the writer thread) sends each `write` as one unmasked binary
//! frame. Both write through one mutex, so the reader's answers to pings and closes never
//! land inside a frame the writer is sending. Frames are parsed as they stream: a frame's
//! payload is never held whole, so a long one costs no memory here (the RFB layer bounds
//! what it keeps). Anything RFC 6455 forbids from a client, and text frames (RFB is
//! bytes), ends the session with one [`WsError`] line.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use thiserror::Error;

/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The longest request head (request line and headers) read. A browser's is under 1 KiB.
const MAX_REQUEST_HEAD: u64 = 8 * 1024;
/// The subprotocol noVNC (before 1.0) and websockify ask for: raw bytes in binary frames,
/// which is the only way this server speaks.
const BINARY_PROTOCOL: &str = "binary";
/// The longest frame payload taken. The RFB layer streams what it reads, so this is not
/// about memory: no client message is longer than a ClientCutText of u32::MAX bytes with
/// its 8-byte header, so a longer frame is garbage, not RFB.
const MAX_FRAME_PAYLOAD: u64 = u32::MAX as u64 + 8;

mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// Close status codes (RFC 6455 §7.4.1).
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// Waits up to `wait` for the client's first bytes and says whether they begin an HTTP
/// GET. No bytes in time (a plain RFB client waiting for our version string), a closed
/// connection or other bytes: false, and the caller goes on with plain RFB, which reads
/// those bytes as it always did. Only peeks: nothing is consumed.
pub(crate) fn client_began_get(socket: &TcpStream, wait: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + wait;
    let mut first = [0u8; 4];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.peek(&mut first) {
            Ok(0) => return Ok(false),
            // Even one byte decides: a plain client sends nothing first, so bytes that
            // start "GET " are a request (the request parser checks the rest).
            Ok(n) => return Ok(first[..n] == b"GET "[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Why an upgrade request was refused: the HTTP status we answer with, and why.
#[derive(Debug, Error)]
#[error("{reason}")]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            reason: reason.into(),
        }
    }
}

/// What a valid upgrade request asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// The subprotocol we take (`binary` when offered), if any.
    pub protocol: Option<&'static str>,
}

/// Checks an upgrade request's head (request line and headers, without the blank line).
/// Without a VNC password, a browser page may connect only when it was itself loaded from
/// this machine (its `Origin` is a loopback host): WebSockets are not bound by the
/// same-origin policy, so otherwise any web page the user opens could type into their
/// VMs through ws://127.0.0.1:5900. Clients that send no `Origin` are not browsers.
pub fn check_request(head: &str, password_set: bool) -> Result<Accepted, Refusal> {
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if method != Some("GET") || target.is_none_or(str::is_empty) || parts.next().is_some() {
        return Err(Refusal::bad(format!(
            "not a GET request line: {:?}",
            truncated(request_line)
        )));
    }
    if !matches!(version, Some("HTTP/1.1")) {
        return Err(Refusal::bad(format!(
            "HTTP version {:?}; a WebSocket upgrade needs HTTP/1.1",
            version.unwrap_or("")
        )));
    }
    let mut upgrade = None;
    let mut connection = String::new();
    let mut key = None;
    let mut ws_version = None;
    let mut protocols = Vec::new();
    let mut origin = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Refusal::bad(format!(
                "header line without a colon: {:?}",
                truncated(line)
            )));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = Some(value.to_owned()),
            // A header may come more than once; its values then form one list.
            "connection" => {
                connection.push(',');
                connection.push_str(value);
            }
            "sec-websocket-key" => key = Some(value.to_owned()),
            "sec-websocket-version" => ws_version = Some(value.to_owned()),
            "sec-websocket-protocol" => protocols.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            ),
            "origin" => origin = Some(value.to_owned()),
            _ => {}
        }
    }
    let has_token = |list: &str, token: &str| {
        list.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !upgrade
        .as_deref()
        .is_some_and(|u| has_token(u, "websocket"))
        || !has_token(&connection, "upgrade")
    {
        return Err(Refusal::bad(
            "an HTTP request that is not a WebSocket upgrade (this port serves VNC: \
             connect with a VNC client, or noVNC over ws://)",
        ));
    }
    if ws_version.as_deref() != Some("13") {
        return Err(Refusal {
            status: 426,
            reason: format!(
                "WebSocket version {:?}; only 13 (RFC 6455) is spoken",
                ws_version.unwrap_or_default()
            ),
        });
    }
    let key = key.ok_or_else(|| Refusal::bad("no Sec-WebSocket-Key"))?;
    if BASE64.decode(&key).map(|k| k.len()) != Ok(16) {
        return Err(Refusal::bad(format!(
            "Sec-WebSocket-Key {:?} is not 16 bytes in base64",
            truncated(&key)
        )));
    }
    if let Some(origin) = &origin
        && !password_set
        && !origin_is_loopback(origin)
    {
        return Err(Refusal {
            status: 403,
            reason: format!(
                "a page from {:?} may not connect: without a VNC password only pages \
                 served from this machine may",
                truncated(origin)
            ),
        });
    }
    let protocol = if protocols.is_empty() {
        None
    } else if protocols.iter().any(|p| p == BINARY_PROTOCOL) {
        Some(BINARY_PROTOCOL)
    } else {
        return Err(Refusal::bad(format!(
            "subprotocols {protocols:?} offered; this server speaks \"binary\" (or none) only"
        )));
    };
    Ok(Accepted {
        accept_key: accept_key(&key),
        protocol,
    })
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Whether an `Origin` (scheme://host[:port]) names this machine.
fn origin_is_loopback(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// At most 80 characters of client text, for log lines.
fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A failed upgrade.
#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error("refused ({status}): {reason}", status = .0.status, reason = .0.reason)]
    Refused(Refusal),
    #[error("request head longer than {MAX_REQUEST_HEAD} bytes")]
    HeadTooLong,
    #[error("request head is not text")]
    NotText,
    #[error("the request did not come within the read timeout")]
    TimedOut,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads the upgrade request from `reader` (bounded in size; the caller set the socket's
/// read timeout), answers it on `out`, and returns the subprotocol taken. A refused
/// request gets its HTTP status and reason in a short text body, then the error.
pub(crate) fn accept(
    reader: &mut impl BufRead,
    out: &mut impl Write,
    password_set: bool,
) -> Result<Option<&'static str>, UpgradeError> {
    let head = read_head(reader)?;
    match check_request(&head, password_set) {
        Ok(a) => {
            let mut response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                a.accept_key
            );
            if let Some(p) = a.protocol {
                response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
            }
            response.push_str("\r\n");
            out.write_all(response.as_bytes())?;
            Ok(a.protocol)
        }
        Err(refusal) => {
            let text = match refusal.status {
                403 => "Forbidden",
                426 => "Upgrade Required",
                _ => "Bad Request",
            };
            let body = format!("{}\n", refusal.reason);
            let extra = if refusal.status == 426 {
                "Sec-WebSocket-Version: 13\r\n"
            } else {
                ""
            };
            let response = format!(
                "HTTP/1.1 {} {text}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                refusal.status,
                body.len()
            );
            // The refusal is what matters; the client may already be gone.
            let _ = out.write_all(response.as_bytes());
            Err(UpgradeError::Refused(refusal))
        }
    }
}

/// Reads up to the blank line that ends an HTTP request head, reading no byte past it.
fn read_head(reader: &mut impl BufRead) -> Result<String, UpgradeError> {
    let mut head = Vec::new();
    loop {
        let left = MAX_REQUEST_HEAD - head.len() as u64;
        let start = head.len();
        let n = match reader.by_ref().take(left).read_until(b'\n', &mut head) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(UpgradeError::TimedOut);
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if left == 0 {
                return Err(UpgradeError::HeadTooLong);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the upgrade request",
            )
            .into());
        }
        if !head.ends_with(b"\n") {
            // Cut by the size limit (or EOF) in the middle of a line.
            if head.len() as u64 >= MAX_REQUEST_HEAD {
                return Err(UpgradeError::HeadTooLong);
            }
            continue;
        }
        let line = &head[start..];
        if line == b"\r\n" || line == b"\n" {
            head.truncate(start);
            return String::from_utf8(head).map_err(|_| UpgradeError::NotText);
        }
    }
}

/// Why a client's frames were refused. Each ends the session.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WsError {
    #[error("client frame not masked (RFC 6455 requires clients to mask every frame)")]
    Unmasked,
    #[error("reserved frame bits {0:#x} set, but no extension was agreed")]
    Reserved(u8),
    #[error("text frame: RFB travels in binary frames only")]
    Text,
    #[error("unknown frame opcode {0:#x}")]
    Opcode(u8),
    #[error("continuation frame with no message to continue")]
    StrayContinuation,
    #[error("a new message began before the last fragment of the previous one")]
    Interleaved,
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    #[error("frame of {0} bytes: longer than any RFB client message")]
    TooLong(u64),
}

impl WsError {
    fn close_code(&self) -> u16 {
        match self {
            WsError::Text => CLOSE_UNSUPPORTED_DATA,
            WsError::TooLong(_) => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

impl From<WsError> for io::Error {
    fn from(e: WsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The sending half, shared by the writer thread and the reader's control replies.
pub(crate) struct FrameWriter<W> {
    out: Arc<Mutex<W>>,
}

impl<W> Clone for FrameWriter<W> {
    fn clone(&self) -> Self {
        FrameWriter {
            out: Arc::clone(&self.out),
        }
    }
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W) -> Self {
        FrameWriter {
            out: Arc::new(Mutex::new(out)),
        }
    }

    /// Sends one whole frame (header and payload) under the lock.
    fn send(&self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut header = [0u8; 10];
        let n = frame_header(opcode, payload.len() as u64, &mut header);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // One write for both, so a small frame is one TCP segment (the socket has Nagle
        // off) and a large one is not copied.
        let mut bufs = [IoSlice::new(&header[..n]), IoSlice::new(payload)];
        let mut bufs = &mut bufs[..];
        while !bufs.is_empty() {
            match out.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => IoSlice::advance_slices(&mut bufs, k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a close frame with `code` and as much of `reason` as fits.
    fn close(&self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.send(opcode::CLOSE, &payload)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    /// Every call is one binary frame holding all of `buf`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.send(opcode::BINARY, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// Writes a server frame's header (FIN, no mask) into `out`; returns its length.
fn frame_header(opcode: u8, len: u64, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    }
}

/// The client's frames as one byte stream: the payload of its binary messages, unmasked.
/// Pings are answered, pongs dropped; a close is answered and reads as the end of the
/// stream. A frame against the rules is answered with a close frame and returned as an
/// `InvalidData` error holding the [`WsError`].
pub(crate) struct FrameReader<R, W> {
    inner: R,
    replies: FrameWriter<W>,
    /// Payload bytes left in the current data frame.
    remaining: u64,
    mask: [u8; 4],
    /// Where in the mask the next payload byte falls.
    mask_at: usize,
    /// A fragmented message is open: its next frame must be a continuation.
    in_message: bool,
    closed: bool,
}

struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
}

impl<R: Read, W: Write> FrameReader<R, W> {
    pub fn new(inner: R, replies: FrameWriter<W>) -> Self {
        FrameReader {
            inner,
            replies,
            remaining: 0,
            mask: [0; 4],
            mask_at: 0,
            in_message: false,
            closed: false,
        }
    }

    /// The next frame's header, or `None` at a clean end of the stream between frames.
    fn header(&mut self) -> io::Result<Option<Header>> {
        let mut b = [0u8; 2];
        if self.inner.read(&mut b[..1])? == 0 {
            return Ok(None);
        }
        self.inner.read_exact(&mut b[1..])?;
        let (fin, reserved, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        if reserved != 0 {
            return Err(WsError::Reserved(reserved).into());
        }
        if b[1] & 0x80 == 0 {
            return Err(WsError::Unmasked.into());
        }
        let len = match b[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.inner.read_exact(&mut l)?;
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                self.inner.read_exact(&mut l)?;
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        if opcode & 0x8 != 0 && (!fin || len > 125) {
            return Err(WsError::BadControl.into());
        }
        if len > MAX_FRAME_PAYLOAD {
            return Err(WsError::TooLong(len).into());
        }
        let mut mask = [0u8; 4];
        self.inner.read_exact(&mut mask)?;
        Ok(Some(Header {
            fin,
            opcode,
            len,
            mask,
        }))
    }

    /// Reads a control frame's payload (at most 125 bytes), unmasked.
    fn control_payload(&mut self, h: &Header) -> io::Result<Vec<u8>> {
        let mut p = vec![0u8; h.len as usize];
        self.inner.read_exact(&mut p)?;
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= h.mask[i % 4];
        }
        Ok(p)
    }

    /// Takes frame headers (and whole control frames) until a data frame with payload
    /// begins; false at the end of the stream.
    fn next_data_frame(&mut self) -> io::Result<bool> {
        loop {
            let Some(h) = self.header()? else {
                return Ok(false);
            };
            match h.opcode {
                opcode::BINARY | opcode::CONTINUATION => {
                    if h.opcode == opcode::BINARY && self.in_message {
                        return Err(WsError::Interleaved.into());
                    }
                    if h.opcode == opcode::CONTINUATION && !self.in_message {
                        return Err(WsError::StrayContinuation.into());
                    }
                    self.in_message = !h.fin;
                    self.remaining = h.len;
                    self.mask = h.mask;
                    self.mask_at = 0;
                    if h.len > 0 {
                        return Ok(true);
                    }
                }
                opcode::TEXT => return Err(WsError::Text.into()),
                opcode::PING => {
                    let p = self.control_payload(&h)?;
                    self.replies.send(opcode::PONG, &p)?;
                }
                opcode::PONG => {
                    self.control_payload(&h)?;
                }
                opcode::CLOSE => {
                    // Echo the status code, as RFC 6455 §5.5.1 asks; the client then
                    // closes the connection, and the session ends on our EOF.
                    let p = self.control_payload(&h)?;
                    let _ = self.replies.send(opcode::CLOSE, &p[..p.len().min(2)]);
                    return Ok(false);
                }
                other => return Err(WsError::Opcode(other).into()),
            }
        }
    }

    fn read_payload(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 && !self.next_data_frame()? {
            self.closed = true;
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a WebSocket frame",
            ));
        }
        for b in &mut buf[..n] {
            *b ^= self.mask[self.mask_at];
            self.mask_at = (self.mask_at + 1) & 3;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl<R: Read, W: Write> Read for FrameReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.closed || buf.is_empty() {
            return Ok(0);
        }
        let r = self.read_payload(buf);
        if let Err(e) = &r
            && let Some(ws) = ws_error(e)
        {
            // Tell the client why before the session hangs up (best effort: it may be
            // gone, or not reading).
            let _ = self.replies.close(ws.close_code(), &ws.to_string());
            self.closed = true;
        }
        r
    }
}

/// The [`WsError`] inside an error from a [`FrameReader`], if that is what it is.
pub(crate) fn ws_error(e: &io::Error) -> Option<&WsError> {
    e.get_ref().and_then(|i| i.downcast_ref::<WsError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A client frame: FIN as given, masked with `mask`.
    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | op];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// A reader over bytes in memory, its replies kept in memory.
    type MemReader = FrameReader<Cursor<Vec<u8>>, Vec<u8>>;

    /// A reader over `bytes`, and the writer its replies go to.
    fn reader(bytes: Vec<u8>) -> (MemReader, FrameWriter<Vec<u8>>) {
        let replies = FrameWriter::new(Vec::new());
        (
            FrameReader::new(Cursor::new(bytes), replies.clone()),
            replies,
        )
    }

    fn sent(w: &FrameWriter<Vec<u8>>) -> Vec<u8> {
        w.out.lock().unwrap().clone()
    }

    /// Reads everything, in small reads so frames and reads do not line up.
    fn read_all(r: &mut impl Read, chunk: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_of_every_length_form_read_back() {
        let payloads: Vec<Vec<u8>> = [0usize, 1, 125, 126, 65535, 65536, 70000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            wire.extend(client_frame(
                true,
                opcode::BINARY,
                p,
                [1, 2, 3 + i as u8, 0xff],
            ));
        }
        // Length field forms: 7-bit, 16-bit (126, 65535), 64-bit (65536 and up).
        assert_eq!(wire[1], 0x80);
        let (mut r, _) = reader(wire);
        let got = read_all(&mut r, 1000).unwrap();
        assert_eq!(got, payloads.concat());
    }

    #[test]
    fn fragments_join_and_pings_between_them_are_answered() {
        let mut wire = client_frame(false, opcode::BINARY, b"RFB 003", [9, 8, 7, 6]);
        wire.extend(client_frame(
            true,
            opcode::PING,
            b"are you there",
            [1, 1, 1, 1],
        ));
        wire.extend(client_frame(
            false,
            opcode::CONTINUATION,
            b".008",
            [0, 5, 0, 5],
        ));
        wire.extend(client_frame(true, opcode::PONG, b"x", [2, 2, 2, 2]));
        wire.extend(client_frame(
            true,
            opcode::CONTINUATION,
            b"\n",
            [3, 3, 3, 3],
        ));
        wire.extend(client_frame(true, opcode::BINARY, &[1], [4, 4, 4, 4]));
        let (mut r, replies) = reader(wire);
        assert_eq!(read_all(&mut r, 3).unwrap(), b"RFB 003.008\n\x01");
        let mut pong = vec![0x8a, 13];
        pong.extend_from_slice(b"are you there");
        assert_eq!(sent(&replies), pong);
    }

    #[test]
    fn close_is_answered_and_ends_the_stream() {
        let mut wire = client_frame(true, opcode::BINARY, b"ab", [1, 2, 3, 4]);
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        wire.extend(client_frame(true, opcode::CLOSE, &close, [5, 6, 7, 8]));
        wire.extend(client_frame(true, opcode::BINARY, b"after", [1, 2, 3, 4]));
        let (mut r, replies) = reader(wire);
        assert_eq!(read_all(&mut r, 64).unwrap(), b"ab");
        // Still the end on a later read: nothing after a close is data.
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
        assert_eq!(sent(&replies), [0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn eof_between_frames_is_the_end_and_inside_one_an_error() {
        let (mut r, _) = reader(client_frame(true, opcode::BINARY, b"xyz", [1, 2, 3, 4]));
        assert_eq!(read_all(&mut r, 8).unwrap(), b"xyz");
        let mut cut = client_frame(true, opcode::BINARY, b"xyz", [1, 2, 3, 4]);
        cut.pop();
        let (mut r, _) = reader(cut);
        let e = read_all(&mut r, 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Each broken stream gives its error, with a close frame carrying the reason.
    #[test]
    fn frames_against_the_rules_are_errors() {
        let good = client_frame(true, opcode::BINARY, b"ok", [1, 2, 3, 4]);
        let mut unmasked = vec![0x82, 2];
        unmasked.extend_from_slice(b"no");
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (unmasked, WsError::Unmasked),
            (
                client_frame(true, opcode::TEXT, b"RFB", [1, 2, 3, 4]),
                WsError::Text,
            ),
            (
                client_frame(true, 0x42, b"x", [1, 2, 3, 4]),
                WsError::Reserved(0x40),
            ),
            (
                client_frame(true, 0x3, b"x", [1, 2, 3, 4]),
                WsError::Opcode(3),
            ),
            (
                client_frame(true, opcode::CONTINUATION, b"x", [1, 2, 3, 4]),
                WsError::StrayContinuation,
            ),
            (
                [
                    client_frame(false, opcode::BINARY, b"x", [1, 2, 3, 4]),
                    client_frame(true, opcode::BINARY, b"y", [1, 2, 3, 4]),
                ]
                .concat(),
                WsError::Interleaved,
            ),
            (
                client_frame(false, opcode::PING, b"x", [1, 2, 3, 4]),
                WsError::BadControl,
            ),
            (
                client_frame(true, opcode::PING, &[0; 126], [1, 2, 3, 4]),
                WsError::BadControl,
            ),
            (huge, WsError::TooLong(u64::MAX)),
        ];
        for (bad, want) in cases {
            let (mut r, replies) = reader([good.clone(), bad].concat());
            let e = read_all(&mut r, 16).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert_eq!(ws_error(&e), Some(&want));
            let close = sent(&replies);
            assert_eq!(close[0], 0x88, "{want}: {close:?}");
            let code = u16::from_be_bytes([close[2], close[3]]);
            assert_eq!(code, want.close_code());
            assert_eq!(&close[4..], want.to_string().as_bytes());
            // The stream is over after the error.
            assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
        }
    }

    #[test]
    fn garbage_is_an_error_at_its_first_frame() {
        // Random bytes: almost any first byte breaks a rule (reserved bits, opcode, mask).
        let mut seed = 0x1234_5678u32;
        let mut errors = 0;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let (mut r, _) = reader(junk);
            // Never a panic; an error or at most the bytes that were there.
            match read_all(&mut r, 16) {
                Ok(data) => assert!(data.len() <= 64),
                Err(_) => errors += 1,
            }
        }
        assert!(errors > 150, "only {errors} of 200 junk streams refused");
    }

    #[test]
    fn writes_are_unmasked_binary_frames() {
        let mut w = FrameWriter::new(Vec::new());
        let sizes = [1usize, 125, 126, 65535, 65536];
        for &n in &sizes {
            w.write_all(&vec![0xab; n]).unwrap();
        }
        let out = sent(&w);
        let mut at = 0;
        for &n in &sizes {
            assert_eq!(out[at], 0x82);
            let (len, hdr) = match out[at + 1] {
                126 => (
                    usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]])),
                    4,
                ),
                127 => (
                    u64::from_be_bytes(out[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                l => {
                    assert!(l < 126, "mask bit set");
                    (usize::from(l), 2)
                }
            };
            assert_eq!(len, n);
            assert!(out[at + hdr..at + hdr + n].iter().all(|&b| b == 0xab));
            at += hdr + n;
        }
        assert_eq!(at, out.len());
    }

    const NOVNC_REQUEST: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1:5900\r\n\
        Connection: Upgrade\r\nPragma: no-cache\r\nUpgrade: websocket\r\n\
        Origin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn upgrade_answers_101_and_reads_nothing_past_the_request() {
        let mut wire = NOVNC_REQUEST.as_bytes().to_vec();
        wire.extend_from_slice(b"first frame bytes");
        let mut r = io::BufReader::new(Cursor::new(wire));
        let mut out = Vec::new();
        assert_eq!(accept(&mut r, &mut out, false).unwrap(), None);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!text.contains("Sec-WebSocket-Protocol"));
        assert!(text.ends_with("\r\n\r\n"));
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "first frame bytes");
    }

    #[test]
    fn binary_subprotocol_is_taken_when_offered() {
        let req = NOVNC_REQUEST.replace(
            "Pragma",
            "Sec-WebSocket-Protocol: base64\r\nSec-WebSocket-Protocol: binary, x\r\nPragma",
        );
        let head = req.trim_end();
        assert_eq!(
            check_request(head, false).unwrap().protocol,
            Some(BINARY_PROTOCOL)
        );
        let only_base64 = NOVNC_REQUEST.replace("Pragma", "Sec-WebSocket-Protocol: base64\r\nX");
        let e = check_request(only_base64.trim_end(), false).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.reason.contains("base64"), "{e}");
    }

    #[test]
    fn bad_requests_are_refused_with_a_status_and_reason() {
        let head = NOVNC_REQUEST.trim_end();
        let cases: Vec<(String, u16, &str)> = vec![
            (
                head.replace("GET / HTTP/1.1", "GET / HTTP/1.0"),
                400,
                "HTTP/1.1",
            ),
            (head.replace("GET / ", "GET  "), 400, "request line"),
            (
                head.replace("Upgrade: websocket", "Upgrade: h2c"),
                400,
                "not a WebSocket upgrade",
            ),
            (
                head.replace("Connection: Upgrade", "Connection: close"),
                400,
                "not a WebSocket",
            ),
            (head.replace("Version: 13", "Version: 8"), 426, "only 13"),
            (
                head.replace("Sec-WebSocket-Key", "X-Key"),
                400,
                "Sec-WebSocket-Key",
            ),
            (
                head.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
                400,
                "16 bytes",
            ),
            (
                head.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!"),
                400,
                "16 bytes",
            ),
            (
                head.replace("Pragma: no-cache", "no colon here"),
                400,
                "colon",
            ),
            (
                head.replace("http://127.0.0.1:8080", "https://example.com"),
                403,
                "example.com",
            ),
            (
                head.replace("http://127.0.0.1:8080", "http://127.0.0.1.example.com"),
                403,
                "may not connect",
            ),
        ];
        for (req, status, says) in cases {
            let e = check_request(&req, false).unwrap_err();
            assert_eq!(e.status, status, "{req}: {e}");
            assert!(e.reason.contains(says), "{req}: {e}");
        }
    }

    #[test]
    fn origins_from_this_machine_or_any_with_a_password() {
        let head = NOVNC_REQUEST.trim_end();
        for ok in [
            "http://localhost",
            "http://LOCALHOST:6080",
            "http://127.0.0.2:1/x",
            "http://[::1]:8080",
        ] {
            let req = head.replace("http://127.0.0.1:8080", ok);
            assert!(check_request(&req, false).is_ok(), "{ok}");
        }
        let foreign = head.replace("http://127.0.0.1:8080", "https://example.com");
        assert!(check_request(&foreign, true).is_ok());
        let no_origin = head.replace("Origin: http://127.0.0.1:8080\r\n", "");
        assert!(check_request(&no_origin, false).is_ok());
        assert!(!origin_is_loopback("null"));
    }

    #[test]
    fn refusal_is_an_http_answer() {
        let req = NOVNC_REQUEST.replace("Version: 13", "Version: 7");
        let mut r = io::BufReader::new(Cursor::new(req.into_bytes()));
        let mut out = Vec::new();
        let e = accept(&mut r, &mut out, false).unwrap_err();
        assert!(e.to_string().starts_with("refused (426): "), "{e}");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn request_heads_are_bounded() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 10_000));
        let mut r = io::BufReader::new(Cursor::new(long));
        let e = accept(&mut r, &mut Vec::new(), false).unwrap_err();
        assert!(matches!(e, UpgradeError::HeadTooLong), "{e}");
        let mut r = io::BufReader::new(Cursor::new(b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec()));
        let e = accept(&mut r, &mut Vec::new(), false).unwrap_err();
        assert!(
            matches!(&e, UpgradeError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof),
            "{e}"
        );
        let mut r = io::BufReader::new(Cursor::new(b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n".to_vec()));
        let e = accept(&mut r, &mut Vec::new(), false).unwrap_err();
        assert!(matches!(e, UpgradeError::NotText), "{e}");
    }
}
