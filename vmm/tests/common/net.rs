//! The host side of the network tests and benchmark: a host network for passt (it takes the
//! guest's address and router from the interface with the default route; the nested test
//! host has no network, so one is made there), an HTTP server of one file, random payloads
//! and their sha256, free ports, and the passt processes a VMM started.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{run, tally};

/// What the network guest (net-initrd.img's /init) puts before every line it says.
pub const NET_SAY: &str = "vmdesk-net: ";

/// The veth pair made in the nested test host: its host end's address and the default
/// route's gateway (QEMU's user-mode numbers, which a passt guest then gets too).
pub const NESTED_HOST_IF: &str = "vmdesk0";
pub const NESTED_HOST_ADDR: &str = "10.0.2.15/24";
pub const NESTED_GATEWAY: &str = "10.0.2.2";

/// The host's IPv4 default route as passt reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    /// The interface the default route leaves by.
    pub dev: String,
    /// Its first IPv4 address with the prefix length, e.g. "10.0.2.15/24".
    pub address: String,
    /// The default route's gateway.
    pub gateway: String,
}

/// The first IPv4 default route with a gateway, and its interface's address (`ip`).
pub fn default_route() -> Option<HostRoute> {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .ok()?;
    let routes = String::from_utf8_lossy(&routes.stdout);
    let (dev, gateway) = routes.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let after = |key: &str| {
            w.iter()
                .position(|x| *x == key)
                .and_then(|i| w.get(i + 1))
                .map(|s| s.to_string())
        };
        Some((after("dev")?, after("via")?))
    })?;
    let addrs = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &dev])
        .output()
        .ok()?;
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    let address = addrs.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.iter()
            .position(|x| *x == "inet")
            .and_then(|i| w.get(i + 1))
            .map(|s| s.to_string())
    })?;
    Some(HostRoute {
        dev,
        address,
        gateway,
    })
}

/// A host network passt can work with: the host's default route, or in the nested test
/// host (which has none: QEMU runs it with `-nic none`) a veth pair made now, its host end
/// 10.0.2.15/24 with a default route through 10.0.2.2 (nobody answers there; passt only
/// reads the addresses, and maps the gateway's address to the host's loopback). `None`
/// after one SKIP line elsewhere without a default route.
pub fn host_network_or_skip(test: &str) -> Option<HostRoute> {
    if let Some(route) = default_route() {
        return Some(route);
    }
    if std::env::var("VMDESK_NESTED").as_deref() == Ok("1") {
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&[
            "link",
            "add",
            NESTED_HOST_IF,
            "type",
            "veth",
            "peer",
            "name",
            "vmdesk1",
        ]);
        ip(&["addr", "add", NESTED_HOST_ADDR, "dev", NESTED_HOST_IF]);
        ip(&["link", "set", NESTED_HOST_IF, "up"]);
        ip(&["link", "set", "vmdesk1", "up"]);
        ip(&["route", "add", "default", "via", NESTED_GATEWAY]);
        let route = default_route().expect("a default route after making one");
        assert_eq!(route.address, NESTED_HOST_ADDR, "{route:?}");
        return Some(route);
    }
    let why = "this host has no IPv4 default route: passt takes the guest's address and router \
               from the interface that has it";
    eprintln!("SKIP {test}: {why}");
    tally(&format!("skipped {test}: {why}"));
    None
}

/// `len` pseudo-random bytes (splitmix64, seeded from the clock and the pid): a payload no
/// compressor or zero-page shortcut can make light of, different on every run.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 32);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The sha256 of `bytes` in hex, by coreutils' sha256sum (the guest's busybox prints the
/// same form).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || stdin.write_all(bytes).expect("feed sha256sum"));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "sha256sum failed");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("a sum")
            .to_string()
    })
}

/// A TCP port on `addr` that nothing listens on now (the kernel's pick; free until someone
/// else takes it).
pub fn free_port(addr: IpAddr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// An HTTP/1.0 server of one file, `GET /blob`, on its own threads; stopped when dropped.
pub struct BlobServer {
    pub addr: SocketAddr,
    /// Responses sent whole.
    pub served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlobServer {
    /// Listens on `ip` (port 0: any free one) and serves `blob`.
    pub fn start(ip: IpAddr, blob: Arc<Vec<u8>>) -> BlobServer {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (blob, served) = (blob.clone(), served2.clone());
                std::thread::spawn(move || {
                    if serve_one(conn, &blob).is_ok() {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        BlobServer {
            addr,
            served,
            stop,
            thread: Some(thread),
        }
    }
}

/// Answers one request on `conn`: the blob for `GET /blob`, 404 for anything else.
fn serve_one(mut conn: TcpStream, blob: &[u8]) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if conn.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if head.starts_with("GET /blob ") {
        write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            blob.len()
        )?;
        conn.write_all(blob)?;
        conn.flush()
    } else {
        conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        Err(std::io::Error::other("not /blob"))
    }
}

impl Drop for BlobServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A process as seen once: its pid and its start time (field 22 of /proc/PID/stat), so a
/// reused pid is not taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

/// The fields of /proc/PID/stat after the command name: (state, ppid, start time).
fn stat_of(pid: u32) -> Option<(char, u32, u64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // rest[0] is field 3 (state), rest[1] field 4 (ppid), rest[19] field 22 (starttime).
    Some((
        rest.first()?.chars().next()?,
        rest.get(1)?.parse().ok()?,
        rest.get(19)?.parse().ok()?,
        comm,
    ))
}

/// The live children of `parent` whose command name starts with `name` (passt runs as
/// "passt" or, on CPUs with AVX2, re-executes itself as "passt.avx2").
pub fn children_named(parent: u32, name: &str) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<Proc> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid, start, comm) = stat_of(pid)?;
            (ppid == parent && state != 'Z' && comm.starts_with(name))
                .then_some(Proc { pid, start })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// Waits up to `timeout` for `parent` to have exactly one child named `name`.
pub fn wait_one_child(parent: u32, name: &str, timeout: Duration) -> Result<Proc, Vec<Proc>> {
    let end = Instant::now() + timeout;
    loop {
        let kids = children_named(parent, name);
        if kids.len() == 1 {
            return Ok(kids[0]);
        }
        if Instant::now() > end {
            return Err(kids);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `p` has ended: no such pid, a zombie, or the pid taken by another process.
pub fn gone(p: Proc) -> bool {
    match stat_of(p.pid) {
        None => true,
        Some((state, _, start, _)) => state == 'Z' || start != p.start,
    }
}

/// Waits up to `timeout` for `p` to end; whether it did.
pub fn wait_gone(p: Proc, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while !gone(p) {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The sockets directly in `dir` and the files there whose names start with "passt"
/// (passt's own default socket path is /tmp/passt_N.socket).
pub fn sockets_in(dir: &Path) -> BTreeSet<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_socket())
                || e.file_name().to_string_lossy().starts_with("passt")
        })
        .map(|e| e.path())
        .collect()
}

/// A TAP device made for a test with `ip tuntap add` (root only), up, with `host`/24 on
/// the host's side when given; deleted when dropped.
pub struct TapDevice(pub String);

impl TapDevice {
    pub fn make(name: &str, host: Option<Ipv4Addr>) -> TapDevice {
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["tuntap", "add", name, "mode", "tap"]);
        let tap = TapDevice(name.to_string());
        if let Some(host) = host {
            ip(&["addr", "add", &format!("{host}/24"), "dev", name]);
            ip(&["link", "set", name, "up"]);
        }
        tap
    }
}

impl Drop for TapDevice {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether a TCP socket of this network namespace listens on `port` (/proc/net/tcp and
/// tcp6: state 0A).
pub fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 3
                    && w[3] == "0A"
                    && w[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
    })
}

/// The host's loopback address, where the tests' own servers listen.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
