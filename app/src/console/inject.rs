//! A stream wrapper between vnc-rs and the TCP connection that lets the console send RFB
//! messages of its own and take the server's cut text out of the stream.
//!
//! Why it exists: vnc-rs 0.6 has no QEMU extended key event (message 255/0, scan codes),
//! writes ClientCutText as UTF-8 where RFB says Latin-1, and knows nothing of the VNC
//! Extended Clipboard (it reads ServerCutText's length as a u32, so an extended message,
//! whose length is negative, would wreck its stream).
//!
//! Write side: vnc-rs writes every client message as ONE `write_all` of a complete buffer,
//! so this wrapper takes each write whole into a queue, and the console puts its own
//! complete messages into the same queue: they can only land between vnc-rs's messages,
//! never inside one. A writer task drains the queue to the socket at once, so nothing waits
//! for vnc-rs's next write. vnc-rs's SetEncodings gets the Extended Clipboard
//! pseudo-encoding added on its way through.
//!
//! Read side: a [`ServerFramer`] follows the server's messages by their headers, in place
//! in the buffer vnc-rs reads into (pixel data is counted past, never copied), and takes
//! every ServerCutText out — plain (decoded as Latin-1) and extended — handing it to the
//! console as a [`ServerCut`]; everything else reaches vnc-rs byte for byte. Only a header
//! cut in two by a read is held back (a few bytes) until the rest arrives.
//!
//! The console sends all its input (keys, pointer, cut text) this way, so input keeps its
//! order; vnc-rs is left with the handshake, update requests and decoding the framebuffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use display::rfb::protocol::{ClientMessage, write_client_message};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::server_stream::{ServerCut, ServerFramer};

/// The stream vnc-rs is given: reads come from the socket through the framer, writes go to
/// the queue.
pub struct InjectStream<S> {
    read: ReadHalf<S>,
    queue: Option<UnboundedSender<Vec<u8>>>,
    framer: ServerFramer,
    /// The start of a server header that a read cut short (offered to the framer again
    /// with what comes next).
    held: Vec<u8>,
    /// Framed bytes for vnc-rs that did not fit its last read (from `held`).
    out: Vec<u8>,
    out_at: usize,
    cuts: UnboundedSender<ServerCut>,
}

/// Sends complete client messages between vnc-rs's.
#[derive(Clone, Debug)]
pub struct Injector {
    queue: UnboundedSender<Vec<u8>>,
}

impl<S> InjectStream<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Splits `stream` and starts the writer task (needs a tokio runtime). The receiver
    /// gets the server's cut texts, which vnc-rs no longer sees.
    pub fn new(stream: S) -> (InjectStream<S>, Injector, UnboundedReceiver<ServerCut>) {
        let (read, write) = tokio::io::split(stream);
        let (tx, rx) = unbounded_channel();
        let (cuts, cuts_rx) = unbounded_channel();
        tokio::spawn(drain(write, rx));
        (
            InjectStream {
                read,
                queue: Some(tx.clone()),
                framer: ServerFramer::new(),
                held: Vec::new(),
                out: Vec::new(),
                out_at: 0,
                cuts,
            },
            Injector { queue: tx },
            cuts_rx,
        )
    }
}

impl<S> InjectStream<S> {
    /// Hands over what the framer took out or wants sent.
    fn after_filter(&mut self) {
        for c in self.framer.take_cuts() {
            // The console may have stopped listening (closing): nothing to do then.
            let _ = self.cuts.send(c);
        }
        if let Some(m) = self.framer.take_resend()
            && let Some(q) = &self.queue
        {
            // A closed queue means the connection is going: nothing to tell the server.
            let _ = q.send(m);
        }
    }

    /// Frames the held bytes again (after more arrived, or after a client write let the
    /// framer move on); what is decided goes to `out`. True if anything changed.
    fn filter_held(&mut self) -> bool {
        let mut held = std::mem::take(&mut self.held);
        let before = held.len();
        let f = self.framer.filter(&mut held);
        self.out.extend_from_slice(&held[..f.pass]);
        held.drain(..f.hold);
        let changed = f.pass > 0 || held.len() != before;
        self.held = held;
        self.after_filter();
        changed
    }
}

/// Writes queued messages in order; whatever is queued at once goes out in one write.
async fn drain<W: AsyncWrite + Unpin>(mut w: W, mut rx: UnboundedReceiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            // The connection is gone; the read side sees it too and ends the session.
            return;
        }
    }
    let _ = w.shutdown().await;
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the VNC connection is closed")
}

impl<S: AsyncRead> AsyncRead for InjectStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = (this.out.len() - this.out_at).min(buf.remaining());
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.held.is_empty() {
                // Rare (a header cut by a read): the held bytes and a little more go
                // through `out`, a copy of a few hundred bytes at most.
                if this.filter_held() {
                    continue;
                }
                let mut more = [0u8; 512];
                let mut rb = ReadBuf::new(&mut more);
                match Pin::new(&mut this.read).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                if rb.filled().is_empty() {
                    // The server closed in the middle of a message.
                    this.held.clear();
                    return Poll::Ready(Ok(()));
                }
                this.held.extend_from_slice(rb.filled());
                this.filter_held();
                continue;
            }
            // The common case: straight into vnc-rs's buffer, framed in place.
            let start = buf.filled().len();
            match Pin::new(&mut this.read).poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let end = buf.filled().len();
            if end == start {
                return Poll::Ready(Ok(()));
            }
            let f = this.framer.filter(&mut buf.filled_mut()[start..end]);
            this.held
                .extend_from_slice(&buf.filled()[start + f.hold..end]);
            buf.set_filled(start + f.pass);
            this.after_filter();
            if f.pass > 0 {
                return Poll::Ready(Ok(()));
            }
            // All of it was cut text or a partial header: read on (an empty read would be
            // end of stream to vnc-rs).
        }
    }
}

impl<S> AsyncWrite for InjectStream<S> {
    /// Takes the whole buffer: one vnc-rs message stays one queue entry. The framer sees it
    /// first (the handshake's choices, the pixel format, the encodings to extend).
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let m = this.framer.client_wrote(buf).into_owned();
        let sent = match &this.queue {
            Some(q) => q.send(m).is_ok(),
            None => false,
        };
        Poll::Ready(if sent { Ok(buf.len()) } else { Err(broken()) })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer task flushes after every batch.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer shuts the socket down once every injector is gone too.
        self.queue = None;
        Poll::Ready(Ok(()))
    }
}

impl Injector {
    /// Queues one complete client message.
    pub fn send(&self, m: &ClientMessage) -> io::Result<()> {
        let mut out = Vec::with_capacity(12);
        write_client_message(m, &mut out);
        self.queue.send(out).map_err(|_| broken())
    }

    /// A key as QEMU's extended key event: keysym plus the XT scan code (`0xE0xx` for
    /// extended keys), or a plain KeyEvent when the key has no scan code.
    pub fn key(&self, keysym: u32, down: bool, scancode: Option<u16>) -> io::Result<()> {
        match scancode {
            Some(code) => self.send(&ClientMessage::QemuKeyEvent {
                down,
                keysym,
                keycode: qemu_keycode(code),
            }),
            None => self.send(&ClientMessage::KeyEvent { down, keysym }),
        }
    }

    pub fn pointer(&self, x: u16, y: u16, buttons: u8) -> io::Result<()> {
        self.send(&ClientMessage::PointerEvent { buttons, x, y })
    }

    /// ClientCutText in Latin-1, as RFC 6143 has it: characters outside Latin-1 become '?'.
    pub fn cut_text(&self, text: &str) -> io::Result<()> {
        self.send(&ClientMessage::CutText(text.to_owned()))
    }

    /// An Extended Clipboard message, as `display::rfb::clipboard`'s builders make them.
    pub fn ext_clipboard(&self, (flags, payload): (u32, Vec<u8>)) -> io::Result<()> {
        self.send(&ClientMessage::ExtendedCutText { flags, payload })
    }
}

/// QEMU's wire numbering of a scan code: the 0xE0 prefix becomes bit 7 (Up, 0xE048, is
/// 0xC8), as QEMU's own clients send it.
pub fn qemu_keycode(code: u16) -> u32 {
    if code & 0xff00 == 0xe000 {
        0x80 | u32::from(code & 0x7f)
    } else {
        u32::from(code & 0x7f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use display::rfb::protocol::{Limits, read_client_message};
    use tokio::io::AsyncReadExt;

    #[test]
    fn keycodes_use_qemus_numbering() {
        assert_eq!(qemu_keycode(0x1e), 0x1e);
        assert_eq!(qemu_keycode(0xe048), 0xc8);
        assert_eq!(qemu_keycode(0xe01d), 0x9d);
    }

    /// vnc-rs-like writes (each message one write_all) from one task, injected key events
    /// from another, through a pipe so small that every socket write is partial: the far
    /// end must read whole messages, each writer's in its own order.
    #[test]
    fn injected_messages_never_split_a_vnc_rs_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (near, mut far) = tokio::io::duplex(7);
            let (mut stream, inj, _cuts) = InjectStream::new(near);
            const N: u16 = 300;
            let vnc_rs = tokio::spawn(async move {
                for i in 0..N {
                    let m = if i % 3 == 0 {
                        ClientMessage::SetEncodings(vec![0, 1, i32::from(i)])
                    } else {
                        ClientMessage::FramebufferUpdateRequest {
                            incremental: true,
                            x: i,
                            y: 0,
                            w: 640,
                            h: 480,
                        }
                    };
                    let mut out = Vec::new();
                    write_client_message(&m, &mut out);
                    stream.write_all(&out).await.unwrap();
                    tokio::task::yield_now().await;
                }
                stream
            });
            let keys = tokio::spawn(async move {
                for i in 0..N {
                    inj.key(u32::from(i), i % 2 == 0, Some(0xe048)).unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let mut bytes = Vec::new();
            let expected_len = N as usize * 12
                + (0..N)
                    .map(|i| if i % 3 == 0 { 4 + 12 } else { 10 })
                    .sum::<usize>();
            while bytes.len() < expected_len {
                let mut chunk = [0u8; 64];
                let n = far.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the stream ended early");
                bytes.extend_from_slice(&chunk[..n]);
            }
            keys.await.unwrap();
            drop(vnc_rs.await.unwrap());
            let mut r = &bytes[..];
            let (mut next_req, mut next_key) = (0u16, 0u32);
            while !r.is_empty() {
                match read_client_message(&mut r, &Limits::default()).unwrap() {
                    ClientMessage::QemuKeyEvent {
                        down,
                        keysym,
                        keycode,
                    } => {
                        assert_eq!((keysym, down, keycode), (next_key, next_key % 2 == 0, 0xc8));
                        next_key += 1;
                    }
                    ClientMessage::SetEncodings(e) => {
                        assert_eq!(e, vec![0, 1, i32::from(next_req)]);
                        next_req += 1;
                    }
                    ClientMessage::FramebufferUpdateRequest { x, w, h, .. } => {
                        assert_eq!((x, w, h), (next_req, 640, 480));
                        next_req += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!((next_req, next_key), (N, u32::from(N)));
        });
    }

    #[test]
    fn cut_text_is_latin1_and_a_closed_stream_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (near, mut far) = tokio::io::duplex(64);
            let (stream, inj, _cuts) = InjectStream::new(near);
            inj.cut_text("héllo €").unwrap();
            let mut b = [0u8; 15];
            far.read_exact(&mut b).await.unwrap();
            assert_eq!(&b[..8], &[6, 0, 0, 0, 0, 0, 0, 7]);
            assert_eq!(&b[8..], b"h\xe9llo ?");
            drop(far);
            drop(stream);
            // The writer notices the closed pipe on its next write and stops.
            let mut failed = false;
            for _ in 0..100 {
                if inj.pointer(1, 2, 0).is_err() {
                    failed = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert!(failed, "sending on a dead connection must fail");
        });
    }
}
