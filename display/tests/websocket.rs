//! RFB over WebSocket on the VNC port, driven over real loopback sockets by a small
//! WebSocket client written here (the real browser client is in novnc.rs): the upgrade,
//! a session over frames (fragments, pings, close), and what bad requests and bad frames
//! get: an HTTP answer or a close frame, one warning line naming the peer, and a server
//! that goes on serving everyone else.

mod rfb_support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use display::client::Client;
use display::encoding::Rect;
use rfb_support::{Harness, Input};

/// Everything the server logged, for the tests that count its lines.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    });
}

/// The warning lines about the client whose socket is `client` (the server logs its
/// peer address, which is our local one), waiting a moment for them to be written.
fn warnings_about(client: SocketAddr, want: usize) -> Vec<String> {
    let needle = format!("peer={client}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = String::from_utf8_lossy(&LOG.lock().unwrap())
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= want || Instant::now() > deadline {
            // A moment more, so a second line (which there must not be) would show.
            std::thread::sleep(Duration::from_millis(100));
            return String::from_utf8_lossy(&LOG.lock().unwrap())
                .lines()
                .filter(|l| l.contains("WARN") && l.contains(&needle))
                .map(str::to_owned)
                .collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn request(extra: &str) -> String {
    format!(
        "GET /websockify HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {KEY}\r\nOrigin: http://localhost:8080\r\n{extra}\r\n"
    )
}

/// Reads an HTTP response head and body (up to the connection's end or Content-Length).
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "connection closed inside the head"
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A WebSocket client: masked frames out, the server's frames in.
struct Ws {
    s: TcpStream,
    /// Payload received and not yet taken.
    pending: Vec<u8>,
    /// Control frames received (opcode, payload).
    control: Vec<(u8, Vec<u8>)>,
}

impl Ws {
    fn open(addr: SocketAddr) -> Ws {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request("Sec-WebSocket-Protocol: binary\r\n").as_bytes())
            .unwrap();
        let head = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
            "{head}"
        );
        assert!(
            head.contains("Sec-WebSocket-Protocol: binary\r\n"),
            "{head}"
        );
        Ws {
            s,
            pending: Vec::new(),
            control: Vec::new(),
        }
    }

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn send(&mut self, payload: &[u8]) {
        self.s.write_all(&Self::frame(true, 2, payload)).unwrap();
    }

    /// One server frame: (opcode, payload). Server frames must be unmasked and final.
    fn read_frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h)?;
        assert_eq!(
            h[0] & 0xf0,
            0x80,
            "server frame not final or with reserved bits"
        );
        assert_eq!(h[1] & 0x80, 0, "server frame masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l)?;
                usize::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l)?;
                u64::from_be_bytes(l) as usize
            }
            n => usize::from(n),
        };
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p)?;
        Ok((h[0] & 0x0f, p))
    }

    /// `n` bytes of the RFB stream, across frames; control frames are kept aside.
    fn take(&mut self, n: usize) -> Vec<u8> {
        self.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        while self.pending.len() < n {
            let (op, p) = self.read_frame().unwrap();
            if op == 2 {
                self.pending.extend_from_slice(&p);
            } else {
                self.control.push((op, p));
            }
        }
        self.pending.drain(..n).collect()
    }

    /// The RFB 3.8 handshake with security None; returns the screen's size.
    fn handshake(&mut self) -> (u16, u16) {
        assert_eq!(self.take(12), b"RFB 003.008\n");
        self.send(b"RFB 003.008\n");
        assert_eq!(self.take(2), [1, 1]);
        self.send(&[1]);
        assert_eq!(self.take(4), [0, 0, 0, 0]);
        self.send(&[1]);
        let init = self.take(24);
        let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize;
        self.take(name_len);
        (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        )
    }

    /// Asks for the whole screen in Raw (the server's native format, 0x00RRGGBB little
    /// endian) and returns it.
    fn screen(&mut self, w: u16, h: u16) -> Vec<u32> {
        self.send(&[2, 0, 0, 1, 0, 0, 0, 0]); // SetEncodings: Raw
        let mut req = vec![3, 0, 0, 0, 0, 0];
        req.extend_from_slice(&w.to_be_bytes());
        req.extend_from_slice(&h.to_be_bytes());
        self.send(&req);
        let mut px = vec![0u32; usize::from(w) * usize::from(h)];
        let head = self.take(4);
        assert_eq!(head[0], 0, "not a FramebufferUpdate");
        for _ in 0..u16::from_be_bytes([head[2], head[3]]) {
            let r = self.take(12);
            let be = |i: usize| usize::from(u16::from_be_bytes([r[i], r[i + 1]]));
            let (x, y, rw, rh) = (be(0), be(2), be(4), be(6));
            assert_eq!(&r[8..12], &[0, 0, 0, 0], "not Raw");
            let data = self.take(rw * rh * 4);
            for (i, p) in data.chunks_exact(4).enumerate() {
                px[(y + i / rw) * usize::from(w) + x + i % rw] =
                    u32::from_le_bytes([p[0], p[1], p[2], 0]);
            }
        }
        px
    }

    /// Reads until the server closes; returns the close frame's status code, if one came.
    fn closed_with(&mut self) -> Option<u16> {
        self.s
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut code = None;
        loop {
            match self.read_frame() {
                Ok((8, p)) => code = Some(u16::from_be_bytes([p[0], p[1]])),
                Ok(_) => {}
                Err(e) => {
                    assert!(
                        !matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ),
                        "the server did not close the connection"
                    );
                    return code;
                }
            }
        }
    }
}

/// A plain client and a WebSocket client that must both keep getting updates.
fn assert_still_served(h: &Harness, plain: &mut Client, ws: &mut Ws, colour: u32) {
    h.surface.fill_rect(Rect::new(0, 0, 8, 8), colour);
    plain.update(true).unwrap();
    h.assert_matches(plain);
    let (w, hh, want) = h.surface.snapshot();
    assert_eq!(ws.screen(w, hh), want);
}

#[test]
fn websocket_session_shows_the_screen_and_takes_keys_in_fragments() {
    let h = Harness::new(96, 64);
    let mut ws = Ws::open(h.addr());
    assert_eq!(ws.handshake(), (96, 64));
    assert_eq!(ws.screen(96, 64), h.surface.snapshot().2);
    assert_eq!(h.server.client_count(), 1);

    // A KeyEvent in three fragments, a ping between two of them, then a PointerEvent in a
    // frame with a 16-bit length together with a long ClientCutText.
    let key = [4u8, 1, 0, 0, 0, 0, 0, 0x61];
    ws.s.write_all(&Ws::frame(false, 2, &key[..3])).unwrap();
    ws.s.write_all(&Ws::frame(true, 9, b"ping!")).unwrap();
    ws.s.write_all(&Ws::frame(false, 0, &key[3..5])).unwrap();
    ws.s.write_all(&Ws::frame(true, 0, &key[5..])).unwrap();
    let text = "x".repeat(300);
    let mut msgs = vec![5u8, 0, 0, 10, 0, 20];
    msgs.extend_from_slice(&[6, 0, 0, 0]);
    msgs.extend_from_slice(&(text.len() as u32).to_be_bytes());
    msgs.extend_from_slice(text.as_bytes());
    ws.send(&msgs);
    let got = h.input.wait_for(3);
    assert_eq!(
        got,
        vec![
            Input::Key(0x61, true, None),
            Input::Pointer(10, 20, 0),
            Input::Clipboard(text)
        ]
    );
    // The pong carries the ping's payload.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ws.control.is_empty() {
        assert!(Instant::now() < deadline, "no pong");
        let (op, p) = ws.read_frame().unwrap();
        if op != 2 {
            ws.control.push((op, p));
        }
    }
    assert_eq!(ws.control[0], (0xa, b"ping!".to_vec()));

    // The screen changes: an incremental request brings the change over frames.
    h.surface.fill_rect(Rect::new(10, 10, 30, 20), 0x0012_3456);
    assert_eq!(ws.screen(96, 64), h.surface.snapshot().2);

    // A close is answered with the same code, and the session ends.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    ws.s.write_all(&Ws::frame(true, 8, &close)).unwrap();
    assert_eq!(ws.closed_with(), Some(1000));
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.server.client_count() != 0 {
        assert!(
            Instant::now() < deadline,
            "session still counted after close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn garbage_frames_drop_only_that_client_with_one_line() {
    capture_logs();
    let h = Harness::new(64, 48);
    let mut plain = h.connect();
    plain.update(false).unwrap();
    let mut ws_bystander = Ws::open(h.addr());
    ws_bystander.handshake();

    let mut unmasked = vec![0x82, 3];
    unmasked.extend_from_slice(&[1, 2, 3]);
    let mut oversize = vec![0x82, 0xff];
    oversize.extend_from_slice(&(1u64 << 40).to_be_bytes());
    oversize.extend_from_slice(&[0; 4]);
    let mut noise = Vec::new();
    let mut seed = 0x9e37_79b9u32;
    for _ in 0..4096 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        noise.push(seed as u8);
    }
    // Random bytes from the first frame on; this seed's first byte has reserved bits set.
    assert_ne!(noise[0] & 0x70, 0);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "text frame",
            Ws::frame(true, 1, b"RFB 003.008\n"),
            1003,
            "text frame",
        ),
        ("unmasked frame", unmasked, 1002, "not masked"),
        ("oversize length", oversize, 1009, "1099511627776 bytes"),
        ("random bytes", noise, 1002, "reserved frame bits"),
        (
            "unknown opcode",
            Ws::frame(true, 0xb, b"?"),
            1002,
            "opcode 0xb",
        ),
    ];
    for (i, (name, bytes, code, says)) in cases.into_iter().enumerate() {
        let mut victim = Ws::open(h.addr());
        victim.handshake();
        let me = victim.s.local_addr().unwrap();
        victim.s.write_all(&bytes).unwrap();
        assert_eq!(victim.closed_with(), Some(code), "{name}");
        let lines = warnings_about(me, 1);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(
            lines[0].contains("vnc: dropping client: WebSocket: ") && lines[0].contains(says),
            "{name}: {}",
            lines[0]
        );
        assert_still_served(&h, &mut plain, &mut ws_bystander, 0x0001_0101 * i as u32);
    }
    assert_eq!(h.server.client_count(), 2);
}

#[test]
fn bad_upgrades_get_an_http_answer_and_one_line() {
    capture_logs();
    let h = Harness::with(64, 48, |c| c.read_timeout = Duration::from_millis(500));
    let mut plain = h.connect();
    plain.update(false).unwrap();
    let mut ws_bystander = Ws::open(h.addr());
    ws_bystander.handshake();

    let cases: Vec<(String, &str, &str)> = vec![
        (
            // A browser pointed at http://127.0.0.1:5900.
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:5900\r\nAccept: text/html\r\n\r\n".into(),
            "HTTP/1.1 400 ",
            "not a WebSocket upgrade",
        ),
        (
            request("").replace("Version: 13", "Version: 8"),
            "HTTP/1.1 426 ",
            "only 13",
        ),
        (
            request("").replace("http://localhost:8080", "https://example.com"),
            "HTTP/1.1 403 ",
            "may not connect",
        ),
        (
            request("").replace(KEY, "short"),
            "HTTP/1.1 400 ",
            "Sec-WebSocket-Key",
        ),
        (
            request("Sec-WebSocket-Protocol: base64\r\n"),
            "HTTP/1.1 400 ",
            "base64",
        ),
    ];
    for (i, (req, status, says)) in cases.into_iter().enumerate() {
        let mut s = TcpStream::connect(h.addr()).unwrap();
        let me = s.local_addr().unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let head = read_response(&mut s);
        assert!(head.starts_with(status), "{req}: {head}");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        assert!(body.contains(says), "{req}: body {body:?}");
        let lines = warnings_about(me, 1);
        assert_eq!(lines.len(), 1, "{req}: {lines:?}");
        assert!(
            lines[0].contains("vnc: WebSocket upgrade failed: refused") && lines[0].contains(says),
            "{}",
            lines[0]
        );
        assert_still_served(&h, &mut plain, &mut ws_bystander, 0x0001_0000 * i as u32);
    }

    // A request that stops half way is given up after the read timeout.
    let mut stalled = TcpStream::connect(h.addr()).unwrap();
    let me = stalled.local_addr().unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    assert!(matches!(stalled.read_to_end(&mut rest), Ok(0)), "{rest:?}");
    assert!(t.elapsed() < Duration::from_secs(4));
    let lines = warnings_about(me, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("did not come within the read timeout"),
        "{}",
        lines[0]
    );

    // A head with no end is cut at 8 KiB.
    let mut endless = TcpStream::connect(h.addr()).unwrap();
    let me = endless.local_addr().unwrap();
    let mut long = b"GET / HTTP/1.1\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9000));
    let _ = endless.write_all(&long);
    let lines = warnings_about(me, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("longer than 8192 bytes"), "{}", lines[0]);

    assert_still_served(&h, &mut plain, &mut ws_bystander, 0x0000_00ff);
    assert_eq!(h.server.client_count(), 2);
}

#[test]
fn a_request_after_the_wait_is_named_in_the_log() {
    capture_logs();
    let h = Harness::with(32, 32, |c| {
        c.websocket_wait = Some(Duration::from_millis(20))
    });
    let mut s = TcpStream::connect(h.addr()).unwrap();
    let me = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server took us for a plain client and greeted us.
    let mut greeting = [0u8; 12];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    s.write_all(request("").as_bytes()).unwrap();
    let lines = warnings_about(me, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("HTTP request came after our RFB greeting"),
        "{}",
        lines[0]
    );
}

#[test]
fn plain_clients_wait_the_detection_window_and_no_longer_without_it() {
    let wait = Duration::from_millis(300);
    let h = Harness::with(32, 32, |c| c.websocket_wait = Some(wait));
    let t = Instant::now();
    let mut c = h.connect();
    assert!(t.elapsed() >= wait, "connected after {:?}", t.elapsed());
    c.update(false).unwrap();
    h.assert_matches(&c);
    // A client that speaks first with anything but "GET " is not kept waiting: its bytes
    // go to the RFB handshake at once (here a bad version string, which ends it).
    let mut early = TcpStream::connect(h.addr()).unwrap();
    early.write_all(b"XYZ 003.008\n").unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut greeting = [0u8; 12];
    early.read_exact(&mut greeting).unwrap();
    assert!(t.elapsed() < wait, "greeted after {:?}", t.elapsed());
}
