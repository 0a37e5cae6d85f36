//! `vmdesk serial NAME`: this terminal attached to a running VM's COM1, as `virsh console`.
//! The terminal goes raw (every key, Ctrl+C included, is the guest's), the VMM's recent
//! output comes first, then the guest's output as it comes; Ctrl+] detaches. The terminal
//! is restored on every way out: detach, the VM stopping, a signal, an error, a panic.
//!
//! With stdin not a terminal (a pipe, a file) its bytes are sent as they are (no escape
//! character), and once it ends the output goes on until the guest has been quiet for
//! [`QUIET_AFTER_INPUT`]: `printf 'root\r' | vmdesk serial vm` prints the answer.
//!
//! One thread, one `poll` over the socket, stdin and a signal pipe: a guest that does not
//! read its input fills the socket, and then stdin is not read either (the bytes wait in
//! the terminal rather than in this process).

use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};

use crate::service::VmService;

/// Ctrl+], virsh console's and telnet's escape character.
pub const ESCAPE: u8 = 0x1d;
/// With stdin not a terminal, how long the output is waited for once stdin has ended.
pub const QUIET_AFTER_INPUT: Duration = Duration::from_secs(1);
/// Input read ahead of the socket before stdin waits.
const MAX_PENDING: usize = 64 * 1024;

/// How an attachment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The escape character.
    Detached,
    /// Stdin (not a terminal) ended and the guest then went quiet.
    InputEnded,
    /// The VMM closed the connection (the VM stopped, or it let go of this viewer).
    Closed,
    /// SIGINT, SIGTERM, SIGHUP or SIGQUIT.
    Signal,
}

/// `vmdesk serial NAME`.
pub fn run(vms: &VmService, name: &str) -> anyhow::Result<()> {
    // A VM whose definition broke while it ran is still running: only the name must exist.
    if !vms.exists(name) {
        vms.get(name)?;
    }
    let stream = vms.serial_connect(name)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Connected to the serial console of '{name}' (COM1). Escape character is ^] (Ctrl+])."
        );
    }
    let ending = attach(stream, interactive)?;
    match ending {
        Ending::Detached => eprintln!("\nDetached from the serial console of '{name}'."),
        Ending::InputEnded => {}
        Ending::Signal => bail!("'{name}': serial console: stopped by a signal"),
        // The VMM lets its viewers go just before it exits: give it a moment to be gone.
        Ending::Closed if !vms.wait_gone(name, Duration::from_secs(2)) => bail!(
            "'{name}': the VMM closed the serial console: this viewer fell behind, or too \
             many are attached"
        ),
        Ending::Closed => eprintln!("\n'{name}' stopped: its serial console closed."),
    }
    Ok(())
}

/// The terminal on stdin in raw mode for as long as this lives.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Signals that end the attachment, as bytes on a pipe `poll` watches; unregistered when
/// dropped.
struct SignalPipe {
    read: UnixStream,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    fn new() -> anyhow::Result<SignalPipe> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let (read, write) = UnixStream::pair().context("a signal pipe")?;
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
            let w = write.try_clone().context("a signal pipe")?;
            ids.push(signal_hook::low_level::pipe::register(sig, w).context("signal handlers")?);
        }
        Ok(SignalPipe { read, ids })
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Stdin to the socket and the socket to stdout until one of the [`Ending`]s.
pub fn attach(stream: UnixStream, interactive: bool) -> anyhow::Result<Ending> {
    let signals = SignalPipe::new()?;
    // Declared after the pipe, so dropped before it: the terminal is back to normal
    // before the signals' usual handling is.
    let _raw = if interactive {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let stdin = std::io::stdin();
    pump(&stream, stdin.as_fd(), &signals.read, interactive)
}

fn pump(
    stream: &UnixStream,
    stdin: BorrowedFd<'_>,
    signals: &UnixStream,
    interactive: bool,
) -> anyhow::Result<Ending> {
    stream
        .set_nonblocking(true)
        .context("serial console socket")?;
    let mut stdout = std::io::stdout().lock();
    let mut pending: Vec<u8> = Vec::new();
    let mut stdin_open = true;
    // Once stdin (not a terminal) has ended: when to stop if the guest stays quiet.
    let mut quiet_until: Option<Instant> = None;
    let mut buf = [0u8; 8192];
    loop {
        let take_stdin = stdin_open && pending.len() < MAX_PENDING;
        let mut socket_events = PollFlags::POLLIN;
        if !pending.is_empty() {
            socket_events |= PollFlags::POLLOUT;
        }
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(stream.as_fd(), socket_events),
        ];
        if take_stdin {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        // Whole milliseconds, rounded up: poll must not wake before the quiet time is up.
        let timeout = match quiet_until {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(Duration::from_millis(ms as u64)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            // A wake-up before the deadline (a coarse clock) goes round again.
            Ok(0) if quiet_until.is_some_and(|t| Instant::now() < t) => continue,
            Ok(0) => return Ok(Ending::InputEnded),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let ready = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let (signalled, socket) = (ready(0), ready(1));
        let from_stdin = if take_stdin {
            ready(2)
        } else {
            PollFlags::empty()
        };
        drop(fds);
        if signalled.contains(PollFlags::POLLIN) {
            return Ok(Ending::Signal);
        }
        let any = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        if socket.intersects(any) {
            match (&*stream).read(&mut buf) {
                Ok(0) => return Ok(Ending::Closed),
                Ok(n) => {
                    stdout.write_all(&buf[..n]).context("stdout")?;
                    stdout.flush().context("stdout")?;
                    if let Some(t) = &mut quiet_until {
                        *t = Instant::now() + QUIET_AFTER_INPUT;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return Ok(Ending::Closed),
            }
        }
        if from_stdin.intersects(any) {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(0) => {
                    stdin_open = false;
                    quiet_until = Some(Instant::now() + QUIET_AFTER_INPUT);
                }
                Ok(n) => {
                    let data = &buf[..n];
                    let escape = interactive
                        .then(|| data.iter().position(|&b| b == ESCAPE))
                        .flatten();
                    if let Some(at) = escape {
                        pending.extend_from_slice(&data[..at]);
                        send_the_rest(stream, &pending);
                        return Ok(Ending::Detached);
                    }
                    pending.extend_from_slice(data);
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(e).context("stdin"),
            }
        }
        if !pending.is_empty() {
            match (&*stream).write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return Ok(Ending::Closed),
            }
        }
    }
}

/// What was typed before the escape character, given a moment to go.
fn send_the_rest(stream: &UnixStream, pending: &[u8]) {
    if pending.is_empty() {
        return;
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = (&*stream).write_all(pending);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_socket_ends_the_attachment() {
        // Stdin not a terminal and at its end at once (/dev/null): the output is waited
        // for, and the VMM's close ends it before the quiet time is up.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let signals = UnixStream::pair().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(theirs);
        });
        let ending = pump(&ours, devnull.as_fd(), &signals.0, false).unwrap();
        t.join().unwrap();
        // Not InputEnded: the close came within the quiet time and ended it.
        assert_eq!(ending, Ending::Closed);
    }

    #[test]
    fn input_that_ended_stops_once_the_guest_is_quiet() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let signals = UnixStream::pair().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let started = Instant::now();
        let ending = pump(&ours, devnull.as_fd(), &signals.0, false).unwrap();
        assert_eq!(ending, Ending::InputEnded);
        assert!(started.elapsed() >= QUIET_AFTER_INPUT);
    }

    #[test]
    fn a_signal_ends_the_attachment() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (sig_read, mut sig_write) = UnixStream::pair().unwrap();
        let (stdin_r, _stdin_w) = UnixStream::pair().unwrap();
        sig_write.write_all(b"x").unwrap();
        let ending = pump(&ours, stdin_r.as_fd(), &sig_read, true).unwrap();
        assert_eq!(ending, Ending::Signal);
    }

    #[test]
    fn the_escape_character_detaches_after_sending_what_came_before() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (sig_read, _sig_write) = UnixStream::pair().unwrap();
        let (stdin_r, mut stdin_w) = UnixStream::pair().unwrap();
        stdin_w.write_all(b"ls\r\x1dmore").unwrap();
        let ending = pump(&ours, stdin_r.as_fd(), &sig_read, true).unwrap();
        assert_eq!(ending, Ending::Detached);
        drop(ours);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ls\r");
    }
}
