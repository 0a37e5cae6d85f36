//! The socket (`--serial-socket PATH`): a Unix stream socket where each client gets the
//! scrollback, then COM1's output as it comes, and whatever it sends goes to COM1's
//! input. Raw bytes both ways, no framing: `socat - UNIX-CONNECT:PATH` is a client.
//!
//! Each client has two threads: `serial-out` sends its queue (see [`super::fanout`]) and
//! `serial-in` feeds what it sends to the UART, one client's chunk at a time, waiting for
//! room in the FIFO. A client that stops reading is dropped once its queue is full; one
//! whose input the guest does not read just waits (its socket's buffer fills and its
//! writes block), and neither holds up the guest or the other clients' output.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

use super::fanout::{ClientQueue, Closed, SerialFanout};
use super::input::{SerialInput, feed};
use crate::control::{BindError, bind_unix};

/// The most a client is sent in one write.
const CHUNK: usize = 16 * 1024;
/// How often a client's sender, blocked on a client that does not read, looks whether the
/// client has been dropped meanwhile.
const SEND_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum SerialSocketError {
    #[error("serial socket {0} is in use by another running VM")]
    InUse(PathBuf),
    #[error("serial socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The listening socket; when dropped, it removes its file and closes every client.
pub struct SerialSocket {
    path: PathBuf,
    closing: Arc<AtomicBool>,
    fanout: Arc<SerialFanout>,
}

impl SerialSocket {
    /// Binds `path` (taking the place of a socket a dead VMM left there) and serves it on
    /// background threads.
    pub fn start(
        path: &Path,
        fanout: Arc<SerialFanout>,
        input: Arc<dyn SerialInput>,
    ) -> Result<SerialSocket, SerialSocketError> {
        let io = |source| SerialSocketError::Io {
            path: path.to_path_buf(),
            source,
        };
        let listener = bind_unix(path).map_err(|e| match e {
            BindError::InUse => SerialSocketError::InUse(path.to_path_buf()),
            BindError::Io(e) => io(e),
        })?;
        let closing = Arc::new(AtomicBool::new(false));
        let stop = closing.clone();
        let clients = fanout.clone();
        std::thread::Builder::new()
            .name("serial-socket".into())
            .spawn(move || accept_loop(listener, &stop, &clients, &input))
            .map_err(io)?;
        Ok(SerialSocket {
            path: path.to_path_buf(),
            closing,
            fanout,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SerialSocket {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
        // Wake the accept loop so it sees `closing`, then take the file away.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        self.fanout.close_all();
    }
}

fn accept_loop(
    listener: UnixListener,
    closing: &AtomicBool,
    fanout: &Arc<SerialFanout>,
    input: &Arc<dyn SerialInput>,
) {
    // Clients take turns at the FIFO a chunk at a time, so two typing at once do not
    // interleave inside a chunk.
    let input_turn = Arc::new(Mutex::new(()));
    for conn in listener.incoming() {
        if closing.load(Ordering::Acquire) {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("serial socket accept: {e}");
                continue;
            }
        };
        let queue = match fanout.subscribe() {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!("serial socket: refusing a client: {e}");
                let _ = (&stream).write_all(format!("vmdesk-vmm: {e}\r\n").as_bytes());
                continue;
            }
        };
        tracing::info!(
            "serial socket: a client connected ({} now)",
            fanout.clients()
        );
        let (fanout, input, turn) = (fanout.clone(), input.clone(), input_turn.clone());
        let started = std::thread::Builder::new()
            .name("serial-out".into())
            .spawn(move || serve(stream, &queue, &fanout, input, turn));
        if let Err(e) = started {
            tracing::warn!("serial socket: cannot start a client's thread: {e}");
        }
    }
}

/// One client: its input on a thread of its own, its output here until either ends.
fn serve(
    stream: UnixStream,
    queue: &Arc<ClientQueue>,
    fanout: &SerialFanout,
    input: Arc<dyn SerialInput>,
    input_turn: Arc<Mutex<()>>,
) {
    if let Ok(reader) = stream.try_clone() {
        let queue = queue.clone();
        let _ = std::thread::Builder::new()
            .name("serial-in".into())
            .spawn(move || receive(reader, &queue, &*input, &input_turn));
    }
    // A timeout on sends lets a sender stuck on a client that does not read notice that
    // the fan-out dropped it.
    let _ = stream.set_write_timeout(Some(SEND_CHECK));
    let mut chunk = Vec::with_capacity(CHUNK);
    let why = loop {
        if let Err(why) = queue.next(&mut chunk, CHUNK) {
            break why;
        }
        if let Err(why) = send(&stream, &chunk, queue) {
            break why;
        }
    };
    fanout.unsubscribe(queue);
    let _ = stream.shutdown(Shutdown::Both);
    match why {
        Closed::FellBehind => {
            tracing::info!("serial socket: a client was disconnected: it fell behind")
        }
        Closed::Gone => tracing::info!("serial socket: a client went away"),
        Closed::Stopped => {}
    }
}

/// Writes all of `bytes`, unless the client is dropped or its connection fails meanwhile.
fn send(mut stream: &UnixStream, mut bytes: &[u8], queue: &ClientQueue) -> Result<(), Closed> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(Closed::Gone),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if let Some(why) = queue.closed() {
                    return Err(why);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Closed::Gone),
        }
    }
    Ok(())
}

/// What the client sends, to COM1, until it closes its side or is dropped.
fn receive(
    mut stream: UnixStream,
    queue: &ClientQueue,
    input: &dyn SerialInput,
    input_turn: &Mutex<()>,
) {
    let mut buf = [0u8; 256];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let _turn = input_turn.lock().unwrap_or_else(|e| e.into_inner());
        if !feed(input, &buf[..n], || queue.closed().is_some()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial_console::input::tests::FakeUart;
    use std::time::Instant;

    fn temp_path(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-serial-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("com1.sock")
    }

    fn connect(path: &Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Reads until `want` has arrived (or panics after the read timeout).
    fn read_until(s: &mut UnixStream, want: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(want.len()).any(|w| w == want) {
            let n = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {want:?}, got {got:?}: {e}"));
            assert!(n > 0, "closed while waiting for {want:?}; got {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn two_clients_see_the_output_and_a_late_one_the_scrollback() {
        let path = temp_path("fanout");
        let fanout = SerialFanout::new(1024, 4096, 4);
        let uart = FakeUart::new(64);
        let server = SerialSocket::start(&path, fanout.clone(), uart).unwrap();
        let mut a = connect(&path);
        let mut b = connect(&path);
        wait_for("two clients", || fanout.clients() == 2);
        fanout.output(b"SeaBIOS\r\nlogin: ");
        assert!(read_until(&mut a, b"login: ").starts_with(b"SeaBIOS"));
        assert!(read_until(&mut b, b"login: ").starts_with(b"SeaBIOS"));
        let mut late = connect(&path);
        assert_eq!(read_until(&mut late, b"login: "), b"SeaBIOS\r\nlogin: ");
        fanout.output(b"root");
        for s in [&mut a, &mut b, &mut late] {
            assert_eq!(read_until(s, b"root"), b"root");
        }
        drop(server);
        assert!(!path.exists(), "the socket file goes with the server");
        // Every client sees the end.
        let mut buf = [0u8; 16];
        assert_eq!(a.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn what_clients_send_reaches_the_uart_in_order() {
        let path = temp_path("input");
        let fanout = SerialFanout::new(64, 4096, 4);
        // A FIFO of 4 that the guest empties slowly: the feeders must wait, not drop.
        let uart = FakeUart::new(4);
        let _server = SerialSocket::start(&path, fanout.clone(), uart.clone()).unwrap();
        let mut a = connect(&path);
        let text: Vec<u8> = (0..200).map(|i| b'a' + (i % 26) as u8).collect();
        a.write_all(&text).unwrap();
        let guest = uart.clone();
        wait_for("all input", move || {
            guest.drain();
            guest.received().len() >= 200
        });
        assert_eq!(uart.received(), text);
        // A second client's input arrives too.
        let mut b = connect(&path);
        b.write_all(b"\r").unwrap();
        wait_for("the second client's byte", || {
            uart.drain();
            uart.received().len() == 201
        });
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_and_blocks_no_one() {
        let path = temp_path("slow");
        let fanout = SerialFanout::new(1024, 64 * 1024, 4);
        let _server = SerialSocket::start(&path, fanout.clone(), FakeUart::new(64)).unwrap();
        let stuck = connect(&path);
        let mut reader = connect(&path);
        wait_for("two clients", || fanout.clients() == 2);
        // Far more than the socket buffers and the queue hold. The "guest" never waits,
        // and the client that reads gets every byte.
        let line = [b'x'; 1024];
        let mut in_output = Duration::ZERO;
        let mut seen = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        for i in 1..=4096 {
            let t = Instant::now();
            fanout.output(&line);
            in_output += t.elapsed();
            while seen < i * line.len() {
                let n = reader.read(&mut buf).expect("the reading client is served");
                assert!(n > 0, "the reading client was disconnected");
                seen += n;
            }
        }
        assert!(
            in_output < Duration::from_secs(2),
            "4 MiB of output took {in_output:?}"
        );
        wait_for("the stuck client dropped", || fanout.clients() == 1);
        fanout.output(b"END");
        assert_eq!(read_until(&mut reader, b"END"), b"END");
        // The stuck client's connection is closed: after what was buffered, the end.
        let mut stuck = stuck;
        stuck
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut total = 0;
        loop {
            match stuck.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("the dropped client's socket is not closed: {e}"),
            }
        }
        assert!(total < 4096 * 1024, "it was not sent everything");
    }

    #[test]
    fn a_second_vmm_is_refused_and_a_stale_socket_is_replaced() {
        let path = temp_path("inuse");
        let fanout = SerialFanout::new(64, 64, 4);
        let first = SerialSocket::start(&path, fanout.clone(), FakeUart::new(4)).unwrap();
        let e = SerialSocket::start(&path, fanout.clone(), FakeUart::new(4))
            .err()
            .unwrap();
        assert!(matches!(e, SerialSocketError::InUse(_)), "{e}");
        drop(first);
        // A file left behind by a VMM that was killed: taken over.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _again = SerialSocket::start(&path, fanout, FakeUart::new(4)).unwrap();
        connect(&path);
    }
}
