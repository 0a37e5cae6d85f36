//! A small, blocking RFB client: enough to drive our server in tests and benchmarks, and
//! to check what a client really receives. It keeps a framebuffer of native pixels and
//! applies Raw, CopyRect and the pseudo-encodings itself.
//!
//! Not here: Hextile, ZRLE and Tight (the `decode` module's job; see
//! [`Client::set_body_decoder`] for how they plug in), colour maps, and security types
//! other than None and VNC Authentication.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use thiserror::Error;

use crate::encoding::{Rect, number};
use crate::pixel::{Native, PixelFormat, PixelFormatError};
use crate::rfb::Password;
use crate::rfb::protocol::{self, ClientMessage};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("server refused the connection: {0}")]
    Refused(String),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("server offers no security type we speak ({0:?})")]
    NoSecurity(Vec<u8>),
    #[error("the server wants a password")]
    NeedPassword,
    #[error("bad server pixel format: {0}")]
    PixelFormat(#[from] PixelFormatError),
    #[error("unexpected server message type {0}")]
    UnknownMessage(u8),
    #[error("encoding {0} is not supported by this client")]
    Unsupported(i32),
    #[error("rectangle {0:?} lies outside the {1}x{2} framebuffer")]
    OutOfBounds(Rect, usize, usize),
    #[error("decoding: {0}")]
    Decode(String),
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// 3, 7 or 8: the RFB 3.x minor version to speak.
    pub minor: u8,
    pub password: Option<Password>,
    pub shared: bool,
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            minor: 8,
            password: None,
            shared: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Something the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A FramebufferUpdate was applied; these were its rectangles (encoding per rect).
    Update(Vec<(Rect, i32)>),
    Bell,
    CutText(String),
    ExtendedCutText {
        flags: u32,
        payload: Vec<u8>,
    },
    EndOfContinuousUpdates,
    Fence {
        flags: u32,
        payload: Vec<u8>,
    },
}

/// Decodes the body of a rectangle in an encoding the client does not know itself.
pub type BodyDecoder = Box<
    dyn FnMut(i32, Rect, &PixelFormat, &mut dyn Read, &mut Framebuffer) -> Result<(), ClientError>
        + Send,
>;

/// The client's copy of the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Native>,
}

impl Framebuffer {
    fn new(width: usize, height: usize) -> Self {
        Framebuffer {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    fn check(&self, r: Rect) -> Result<(), ClientError> {
        if usize::from(r.x) + usize::from(r.w) > self.width
            || usize::from(r.y) + usize::from(r.h) > self.height
        {
            return Err(ClientError::OutOfBounds(r, self.width, self.height));
        }
        Ok(())
    }
}

pub use crate::decode::client_to_native;

/// What a lossless encoding must deliver for native pixel `p` in format `pf`.
pub fn expected_pixel(pf: &PixelFormat, p: Native) -> Native {
    client_to_native(pf, pf.convert(p))
}

fn read_pixel(pf: &PixelFormat, b: &[u8]) -> Native {
    let v = match (pf.bits_per_pixel, pf.big_endian) {
        (8, _) => u32::from(b[0]),
        (16, false) => u32::from(u16::from_le_bytes([b[0], b[1]])),
        (16, true) => u32::from(u16::from_be_bytes([b[0], b[1]])),
        (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        (_, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
    };
    client_to_native(pf, v)
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub fb: Framebuffer,
    pub pf: PixelFormat,
    pub name: String,
    /// The server acknowledged QEMU extended key events.
    pub qemu_key_ack: bool,
    /// The server said the pointer is absolute.
    pub pointer_absolute: Option<bool>,
    /// Last cursor shape received: (hot_x, hot_y, w, h).
    pub cursor: Option<(u16, u16, u16, u16)>,
    body: Option<BodyDecoder>,
}

impl Client {
    /// Connects and runs the handshake up to ServerInit.
    pub fn connect(addr: SocketAddr, opts: &ClientOptions) -> Result<Client, ClientError> {
        let mut s = TcpStream::connect_timeout(&addr, opts.timeout)?;
        s.set_read_timeout(Some(opts.timeout))?;
        s.set_write_timeout(Some(opts.timeout))?;
        s.set_nodelay(true)?;
        let mut v = [0u8; 12];
        s.read_exact(&mut v)?;
        s.write_all(&protocol::version_string(opts.minor))?;
        let sec = if opts.minor == 3 {
            let mut t = [0u8; 4];
            s.read_exact(&mut t)?;
            let t = u32::from_be_bytes(t);
            if t == 0 {
                return Err(ClientError::Refused(read_string(&mut s)?));
            }
            t as u8
        } else {
            let mut n = [0u8; 1];
            s.read_exact(&mut n)?;
            if n[0] == 0 {
                return Err(ClientError::Refused(read_string(&mut s)?));
            }
            let mut types = vec![0u8; usize::from(n[0])];
            s.read_exact(&mut types)?;
            let pick = if opts.password.is_some() && types.contains(&2) {
                2
            } else if types.contains(&1) {
                1
            } else if types.contains(&2) {
                return Err(ClientError::NeedPassword);
            } else {
                return Err(ClientError::NoSecurity(types));
            };
            s.write_all(&[pick])?;
            pick
        };
        if sec == 2 {
            let pw = opts.password.as_ref().ok_or(ClientError::NeedPassword)?;
            let mut challenge = [0u8; 16];
            s.read_exact(&mut challenge)?;
            s.write_all(&pw.response(&challenge))?;
        }
        if sec == 2 || opts.minor == 8 {
            let mut r = [0u8; 4];
            s.read_exact(&mut r)?;
            if r != [0; 4] {
                let reason = if opts.minor == 8 {
                    read_string(&mut s)?
                } else {
                    String::new()
                };
                return Err(ClientError::AuthFailed(reason));
            }
        }
        s.write_all(&[u8::from(opts.shared)])?;
        let mut init = [0u8; 24];
        s.read_exact(&mut init)?;
        let w = usize::from(u16::from_be_bytes([init[0], init[1]]));
        let h = usize::from(u16::from_be_bytes([init[2], init[3]]));
        let mut pfb = [0u8; 16];
        pfb.copy_from_slice(&init[4..20]);
        let pf = PixelFormat::from_bytes(&pfb)?;
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        let mut name = Vec::new();
        (&mut s).take(u64::from(name_len)).read_to_end(&mut name)?;
        let writer = s.try_clone()?;
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, s),
            writer,
            fb: Framebuffer::new(w, h),
            pf,
            name: String::from_utf8_lossy(&name).into_owned(),
            qemu_key_ack: false,
            pointer_absolute: None,
            cursor: None,
            body: None,
        })
    }

    /// Plugs in a decoder for encodings other than Raw and CopyRect.
    pub fn set_body_decoder(&mut self, d: BodyDecoder) {
        self.body = Some(d);
    }

    /// The socket, for tests that misbehave on purpose.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    pub fn send(&mut self, m: &ClientMessage) -> io::Result<()> {
        let mut out = Vec::new();
        protocol::write_client_message(m, &mut out);
        self.writer.write_all(&out)
    }

    pub fn set_pixel_format(&mut self, pf: PixelFormat) -> io::Result<()> {
        self.pf = pf;
        self.send(&ClientMessage::SetPixelFormat(pf))
    }

    pub fn set_encodings(&mut self, e: &[i32]) -> io::Result<()> {
        self.send(&ClientMessage::SetEncodings(e.to_vec()))
    }

    pub fn request(&mut self, incremental: bool) -> io::Result<()> {
        self.send(&ClientMessage::FramebufferUpdateRequest {
            incremental,
            x: 0,
            y: 0,
            w: self.fb.width as u16,
            h: self.fb.height as u16,
        })
    }

    /// Requests an update and reads messages until it arrives; returns its rectangles.
    pub fn update(&mut self, incremental: bool) -> Result<Vec<(Rect, i32)>, ClientError> {
        self.request(incremental)?;
        self.next_update()
    }

    /// Reads messages until the next FramebufferUpdate has been applied.
    pub fn next_update(&mut self) -> Result<Vec<(Rect, i32)>, ClientError> {
        loop {
            if let ServerEvent::Update(r) = self.read_event()? {
                return Ok(r);
            }
        }
    }

    /// Reads and applies one server message.
    pub fn read_event(&mut self) -> Result<ServerEvent, ClientError> {
        let mut t = [0u8; 1];
        self.reader.read_exact(&mut t)?;
        match t[0] {
            protocol::msg::FRAMEBUFFER_UPDATE => {
                let mut h = [0u8; 3];
                self.reader.read_exact(&mut h)?;
                let n = u16::from_be_bytes([h[1], h[2]]);
                let mut rects = Vec::new();
                for _ in 0..n {
                    let (r, e) = self.read_rect()?;
                    rects.push((r, e));
                    if e == number::LAST_RECT {
                        break;
                    }
                }
                Ok(ServerEvent::Update(rects))
            }
            protocol::msg::BELL => Ok(ServerEvent::Bell),
            protocol::msg::SERVER_CUT_TEXT => {
                let mut h = [0u8; 7];
                self.reader.read_exact(&mut h)?;
                let len = i32::from_be_bytes([h[3], h[4], h[5], h[6]]);
                if len < 0 {
                    let n = len.unsigned_abs() as usize;
                    let mut b = vec![0u8; n.min(1 << 24)];
                    self.reader.read_exact(&mut b)?;
                    if b.len() < 4 {
                        return Err(ClientError::Decode("short extended cut text".into()));
                    }
                    let flags = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    Ok(ServerEvent::ExtendedCutText {
                        flags,
                        payload: b[4..].to_vec(),
                    })
                } else {
                    let mut b = vec![0u8; (len as usize).min(1 << 24)];
                    self.reader.read_exact(&mut b)?;
                    Ok(ServerEvent::CutText(
                        b.iter().map(|&c| char::from(c)).collect(),
                    ))
                }
            }
            protocol::msg::END_OF_CONTINUOUS_UPDATES => Ok(ServerEvent::EndOfContinuousUpdates),
            protocol::msg::FENCE => {
                let mut h = [0u8; 8];
                self.reader.read_exact(&mut h)?;
                let flags = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
                let mut payload = vec![0u8; usize::from(h[7])];
                self.reader.read_exact(&mut payload)?;
                Ok(ServerEvent::Fence { flags, payload })
            }
            other => Err(ClientError::UnknownMessage(other)),
        }
    }

    fn read_rect(&mut self) -> Result<(Rect, i32), ClientError> {
        let mut h = [0u8; 12];
        self.reader.read_exact(&mut h)?;
        let r = Rect::new(
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
            u16::from_be_bytes([h[4], h[5]]),
            u16::from_be_bytes([h[6], h[7]]),
        );
        let enc = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match enc {
            number::RAW => {
                self.fb.check(r)?;
                let bpp = self.pf.bytes_per_pixel();
                let mut row = vec![0u8; usize::from(r.w) * bpp];
                for y in usize::from(r.y)..usize::from(r.y) + usize::from(r.h) {
                    self.reader.read_exact(&mut row)?;
                    let start = y * self.fb.width + usize::from(r.x);
                    let dst = &mut self.fb.pixels[start..start + usize::from(r.w)];
                    if self.pf == PixelFormat::NATIVE {
                        for (d, px) in dst.iter_mut().zip(row.chunks_exact(4)) {
                            *d = u32::from_le_bytes([px[0], px[1], px[2], 0]);
                        }
                    } else {
                        for (d, px) in dst.iter_mut().zip(row.chunks_exact(bpp)) {
                            *d = read_pixel(&self.pf, px);
                        }
                    }
                }
            }
            number::COPY_RECT => {
                let mut s = [0u8; 4];
                self.reader.read_exact(&mut s)?;
                let sx = usize::from(u16::from_be_bytes([s[0], s[1]]));
                let sy = usize::from(u16::from_be_bytes([s[2], s[3]]));
                self.fb.check(r)?;
                self.fb.check(Rect::new(sx as u16, sy as u16, r.w, r.h))?;
                let (w, hh) = (usize::from(r.w), usize::from(r.h));
                let fw = self.fb.width;
                let rows: Vec<usize> = if usize::from(r.y) > sy {
                    (0..hh).rev().collect()
                } else {
                    (0..hh).collect()
                };
                for row in rows {
                    let from = (sy + row) * fw + sx;
                    let to = (usize::from(r.y) + row) * fw + usize::from(r.x);
                    self.fb.pixels.copy_within(from..from + w, to);
                }
            }
            number::DESKTOP_SIZE => {
                self.fb = Framebuffer::new(r.w.into(), r.h.into());
            }
            number::EXTENDED_DESKTOP_SIZE => {
                let mut n = [0u8; 4];
                self.reader.read_exact(&mut n)?;
                let mut screens = vec![0u8; 16 * usize::from(n[0])];
                self.reader.read_exact(&mut screens)?;
                // y is the status; only a successful change resizes.
                if r.y == 0
                    && (usize::from(r.w) != self.fb.width || usize::from(r.h) != self.fb.height)
                {
                    self.fb = Framebuffer::new(r.w.into(), r.h.into());
                }
            }
            number::CURSOR => {
                let n = usize::from(r.w) * usize::from(r.h) * self.pf.bytes_per_pixel()
                    + usize::from(r.w).div_ceil(8) * usize::from(r.h);
                let mut b = vec![0u8; n];
                self.reader.read_exact(&mut b)?;
                self.cursor = Some((r.x, r.y, r.w, r.h));
            }
            number::QEMU_EXTENDED_KEY_EVENT => self.qemu_key_ack = true,
            number::POINTER_TYPE_CHANGE => self.pointer_absolute = Some(r.x != 0),
            number::LAST_RECT => {}
            other => {
                self.fb.check(r)?;
                let Some(body) = self.body.as_mut() else {
                    return Err(ClientError::Unsupported(other));
                };
                body(other, r, &self.pf, &mut self.reader, &mut self.fb)?;
            }
        }
        Ok((r, enc))
    }
}

fn read_string(s: &mut TcpStream) -> io::Result<String> {
    let mut n = [0u8; 4];
    s.read_exact(&mut n)?;
    let mut b = Vec::new();
    s.take(u64::from(u32::from_be_bytes(n)).min(4096))
        .read_to_end(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}
