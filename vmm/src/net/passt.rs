//! User-mode NAT through passt (<https://passt.top>, Debian package `passt`): one passt
//! process per VM, started here and connected to the VMM over a socketpair (`passt --fd`),
//! so no socket file is ever made and nothing outlives the VM: passt exits when its end of
//! the pair closes, which the kernel does when the VMM exits for any reason, SIGKILL
//! included.
//!
//! The framing on the socket is passt's (and QEMU's `-netdev stream`): each Ethernet frame
//! is preceded by its length as a 32-bit big-endian number. passt answers the guest's
//! DHCP, ARP and NDP itself, gives it the host's address and gateway, forwards DNS, and
//! maps the gateway address to the host's loopback, so a guest reaches a service on the
//! host's 127.0.0.1 at its router's address. Forwards (`-t`/`-u`) are bound by passt.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{Forward, FrameSource, NetBackend, Protocol};
use crate::disk::GuestSlice;
use crate::iov;

/// The largest frame passt sends or we accept from it (its own limit is 65535 + header).
pub const MAX_FRAME: usize = 65536;
/// How long passt gets to refuse its options before the VM starts anyway.
const START_CHECK: Duration = Duration::from_millis(300);

#[derive(Debug, Error)]
pub enum PasstError {
    #[error(
        "passt is not installed: a VM's user-mode network (NAT, vmdesk's default) needs it; install the package: sudo apt install passt (or give the VM --net none)"
    )]
    NotInstalled,
    #[error("--forward {forward}: {why}")]
    Forward { forward: Forward, why: String },
    #[error("cannot start passt ({path}): {error}")]
    Spawn { path: PathBuf, error: io::Error },
    #[error("passt refused to start: {0}")]
    Refused(String),
    #[error("cannot make the socket pair for passt: {0}")]
    Socket(io::Error),
}

/// The passt program: `$VMDESK_PASST`, else the first `passt` on PATH.
pub fn find() -> Result<PathBuf, PasstError> {
    if let Some(p) = std::env::var_os("VMDESK_PASST") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("passt"))
        .find(|p| is_executable(p))
        .ok_or(PasstError::NotInstalled)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fails when a forward's host port is taken now, so the person hears it at start and
/// not as a silently missing forward (passt only warns).
pub fn check_forwards(forwards: &[Forward]) -> Result<(), PasstError> {
    for f in forwards {
        let addr = (f.host_addr, f.host_port);
        let bound = match f.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        };
        if let Err(e) = bound {
            let why = match e.kind() {
                io::ErrorKind::AddrInUse => format!(
                    "{} port {} on {} is already in use (by another program or VM): choose another host port",
                    f.protocol, f.host_port, f.host_addr
                ),
                io::ErrorKind::AddrNotAvailable => format!(
                    "{} is not an address of this machine: give one of its addresses, or 0.0.0.0 for all",
                    f.host_addr
                ),
                io::ErrorKind::PermissionDenied => format!(
                    "not allowed to listen on {} port {} (ports below 1024 need root): choose a port from 1024",
                    f.protocol, f.host_port
                ),
                _ => format!("cannot listen on {}:{}: {e}", f.host_addr, f.host_port),
            };
            return Err(PasstError::Forward { forward: *f, why });
        }
    }
    Ok(())
}

/// passt's options for the forwards: `-t ADDR/PORT:GUESTPORT`.
fn forward_args(forwards: &[Forward]) -> Vec<String> {
    forwards
        .iter()
        .flat_map(|f| {
            let flag = match f.protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
            };
            [
                flag.to_string(),
                format!("{}/{}:{}", f.host_addr, f.host_port, f.guest_port),
            ]
        })
        .collect()
}

/// A running passt and the VMM's end of its socket.
pub struct Passt {
    pub child: Child,
    pub stream: UnixStream,
}

impl Passt {
    /// Starts `program` for one VM with these forwards (checked with [`check_forwards`]
    /// first). Its messages go to the VMM's log (warnings and errors; passt's own syslog
    /// complaints are dropped).
    pub fn start(program: &Path, forwards: &[Forward]) -> Result<Passt, PasstError> {
        check_forwards(forwards)?;
        let (ours, theirs) = UnixStream::pair().map_err(PasstError::Socket)?;
        // Our end must not leak into other children; theirs is inherited on purpose, as
        // its number on passt's command line.
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args([
            "--foreground",
            "--stderr",
            "--quiet",
            "--fd",
            &fd.to_string(),
        ])
        .args(forward_args(forwards))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl+C (or `timeout`) signals the VMM's
        // group, and passt should go when the VMM does, not before it.
        .process_group(0);
        clear_cloexec(theirs.as_fd());
        let spawned = cmd.spawn();
        drop(theirs);
        let mut child = spawned.map_err(|error| PasstError::Spawn {
            path: program.to_path_buf(),
            error,
        })?;
        let stderr = child.stderr.take();
        let started = Instant::now();
        while started.elapsed() < START_CHECK {
            if let Ok(Some(status)) = child.try_wait() {
                let mut said = String::new();
                if let Some(mut e) = stderr {
                    let _ = e.read_to_string(&mut said);
                }
                let said = messages(&said).join("; ");
                return Err(PasstError::Refused(if said.is_empty() {
                    format!("it exited ({status}) without saying why")
                } else {
                    said
                }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(e) = stderr {
            std::thread::Builder::new()
                .name("passt-log".into())
                .spawn(move || {
                    for line in BufReader::new(e).lines().map_while(Result::ok) {
                        if let Some(m) = messages(&line).first() {
                            tracing::warn!("passt: {m}");
                        }
                    }
                })
                .ok();
        }
        Ok(Passt {
            child,
            stream: ours,
        })
    }
}

/// passt's lines worth repeating: not its failures to reach a syslog, nor its notice that
/// it drops root for `nobody`.
fn messages(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            let syslog = l.starts_with("Failed to send") && l.ends_with("to syslog");
            !(l.is_empty() || syslog || l.starts_with("Don't run as root"))
        })
        .collect()
}

fn clear_cloexec(fd: BorrowedFd) {
    // SAFETY: F_GETFD/F_SETFD on a descriptor we own (borrowed for the call); no memory is
    // passed to the kernel.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        }
    }
}

/// The guest's frames to passt, length first.
pub struct PasstSender(pub UnixStream);

impl NetBackend for PasstSender {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
        // One write per frame: header and frame together keep the stream's framing whole
        // even if a write fails midway less often, and halve the system calls.
        let mut buf = Vec::with_capacity(4 + frame.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(frame);
        self.0.write_all(&buf)
    }

    fn send_guest(&mut self, frame: &[GuestSlice<'_>]) -> io::Result<()> {
        self.write_guest(frame)
    }
}

impl PasstSender {
    /// The frame's length, then the frame from guest memory, in one `writev` (more only if
    /// passt's socket takes it in parts).
    fn write_guest(&self, frame: &[GuestSlice<'_>]) -> io::Result<()> {
        let len = u32::try_from(crate::disk::slices_len(frame))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?
            .to_be_bytes();
        // The guards keep the mappings valid while the kernel uses the pointers.
        let guards = iov::guards(frame);
        let mut vecs = Vec::with_capacity(1 + guards.len());
        vecs.push(iov::bytes_iovec(&len));
        vecs.extend(guards.iter().map(iov::guest_iovec));
        let fd = self.0.as_raw_fd();
        iov::transfer_all(&mut vecs, io::ErrorKind::WriteZero, |batch| {
            // SAFETY: each iovec points at `len` (alive for this call) or into guest memory
            // that `guards` keeps mapped, with vm-memory's checked length; writev only
            // reads those bytes.
            let r = unsafe { libc::writev(fd, batch.as_ptr(), batch.len() as libc::c_int) };
            iov::syscall_result(r)
        })
    }
}

/// passt's frames for the guest, length first.
pub struct PasstReceiver(pub BufReader<UnixStream>);

impl PasstReceiver {
    pub fn new(stream: UnixStream) -> PasstReceiver {
        PasstReceiver(BufReader::with_capacity(4 * MAX_FRAME, stream))
    }
}

impl FrameSource for PasstReceiver {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }

    fn buffered(&self) -> bool {
        !self.0.buffer().is_empty()
    }

    fn recv(&mut self, frame: &mut Vec<u8>) -> io::Result<bool> {
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("passt sent a {len}-byte frame: the stream's framing is lost"),
            ));
        }
        frame.resize(len, 0);
        self.0.read_exact(frame)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_the_stream_length_first() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut tx = PasstSender(a);
        tx.send(b"hello").unwrap();
        tx.send(&[7u8; 1500]).unwrap();
        let mut raw = [0u8; 9];
        let mut b2 = b.try_clone().unwrap();
        b2.read_exact(&mut raw).unwrap();
        assert_eq!(&raw, b"\0\0\0\x05hello");
        let mut rx = PasstReceiver::new(b);
        let mut f = Vec::new();
        assert!(rx.recv(&mut f).unwrap());
        assert_eq!(f, vec![7u8; 1500]);
        drop(tx);
        assert!(!rx.recv(&mut f).unwrap(), "end of stream");
    }

    /// A frame in guest memory, in pieces across two memory regions, goes out with its
    /// length first; one bigger than the socket's buffer goes out whole (the writev is
    /// resumed where the socket stopped taking bytes).
    #[test]
    fn frames_from_guest_memory_go_out_whole() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = crate::memory::GuestMem::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x10_0000), 0x10_0000),
        ])
        .unwrap();
        let data: Vec<u8> = (0..0x10_0000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        mem.write_slice(&data[..0x8_0000], GuestAddress(0x8_0000))
            .unwrap();
        mem.write_slice(&data[0x8_0000..], GuestAddress(0x10_0000))
            .unwrap();
        let segs = [crate::virtio::Segment {
            addr: GuestAddress(0x8_0000),
            len: 0x10_0000,
        }];
        let (a, b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut b = b;
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut tx = PasstSender(a);
        let small = crate::virtio::guest_slices(&mem, &segs, 0x7_fff0, 0x20).unwrap();
        assert_eq!(small.len(), 2, "across the regions' boundary");
        tx.send_guest(&small).unwrap();
        let whole = crate::virtio::guest_slices(&mem, &segs, 0, 0x10_0000).unwrap();
        tx.send_guest(&whole).unwrap();
        drop(tx);
        let got = reader.join().unwrap();
        let mut want = 0x20u32.to_be_bytes().to_vec();
        want.extend_from_slice(&data[0x7_fff0..0x8_0010]);
        want.extend_from_slice(&0x10_0000u32.to_be_bytes());
        want.extend_from_slice(&data);
        assert!(
            got == want,
            "{} bytes arrived, {} sent",
            got.len(),
            want.len()
        );
    }

    #[test]
    fn a_broken_length_is_an_error_not_an_allocation() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut rx = PasstReceiver::new(b);
        let e = rx.recv(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn forwards_become_passts_options() {
        let f: Vec<Forward> = ["tcp::2222-:22", "udp:0.0.0.0:5353-:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            forward_args(&f),
            ["-t", "127.0.0.1/2222:22", "-u", "0.0.0.0/5353:53"]
        );
    }

    #[test]
    fn a_taken_port_is_refused_with_a_reason() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let f: Forward = format!("tcp::{port}-:22").parse().unwrap();
        let e = check_forwards(&[f]).unwrap_err().to_string();
        assert!(
            e.contains("already in use") && e.contains(&port.to_string()),
            "{e}"
        );
        drop(held);
        check_forwards(&[f]).unwrap();
    }

    #[test]
    fn passts_syslog_noise_is_dropped() {
        let said = "Failed to send 47 bytes to syslog\nDon't run as root. Changing to nobody...\nNo routable interface\n";
        assert_eq!(messages(said), ["No routable interface"]);
    }
}
