//! The network card beside QEMU's, both behind the same passt: TCP throughput guest to host
//! and host to guest (iperf3 from Debian at both ends), a TCP request/response round trip
//! (one byte there and back, 1000 times, through a port forward to an echo server in the
//! guest), and what an idle VM costs: the resident memory and CPU time of the VMM and its
//! passt over 10 s, beside the same VMM idle without a network card (a boot of its own), so
//! the network's own share shows. Medians of 5 boots each, alternating, and the ratios vmdesk/QEMU (goals:
//! throughput >= 1.0, round trip <= 1.0).
//!
//! Both run the cloud kernel and `net-bench-initrd.img` (resources/scripts/test-assets.sh)
//! with `vmdesk.test=bench`, 512 MiB and one vCPU: at boot the guest takes its DHCP lease
//! from passt, starts an iperf3 server and a TCP echo server (busybox nc running cat), and
//! runs an iperf3 client against the host's iperf3 server on 127.0.0.1, which it reaches at
//! the router's address; then the host's iperf3 client measures host to guest through a
//! forward to the guest's server, and the round trip goes through another forward.
//! - vmdesk-vmm: `--net user --forward tcp:127.0.0.1:P-:5201 --forward tcp:127.0.0.1:Q-:7`
//!   (it starts its own passt).
//! - QEMU: `-netdev stream` on one end of a socketpair, `-device virtio-net-pci` at 00:03.0
//!   (its defaults otherwise: MSI-X, modern and legacy), and a passt started here with the
//!   other end (`--fd`) and the same forwards (`-t`).
//!
//! `cargo bench -p vmm --bench net_throughput [-- --runs N --secs S --only vmdesk-vmm|qemu]`. On a host whose KVM
//! is kvm_pvm (no guest kernels) the measuring runs inside the nested test host
//! (resources/scripts/nested-host.sh), where both VMMs get the same emulated SVM: TCG sets
//! the pace there, so only the ratios mean anything. Elsewhere it runs here. The nested
//! host has no network; passt needs an interface with a default route, so a veth pair with
//! one is made there first (`common::net::host_network_or_skip`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::Vmm;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::net::{self, LOOPBACK, NET_SAY};

const MEMORY_MIB: u64 = 512;
/// From the VMM's start to "bench ready" (the guest's own iperf3 run included).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// One-byte exchanges per round-trip figure (after a warm-up of 50).
const PINGS: usize = 1000;
/// The idle sample.
const IDLE: Duration = Duration::from_secs(10);
/// The guest's iperf3 server and echo server (test-assets.sh's /init).
const GUEST_IPERF: u16 = 5201;
const GUEST_ECHO: u16 = 7;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let runs = value("--runs").unwrap_or(5) as usize;
    let secs = value("--secs").unwrap_or(5);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if args.iter().any(|a| a == "--inside") || !kvm_pvm {
        inside(runs, secs, only);
    } else {
        outside(runs, secs, only);
    }
}

/// Here: the measurement in a nested host (once more if the nested host's own kernel fails).
fn outside(runs: usize, secs: u64, only: Option<&str>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scripts/nested-host.sh");
    let exe = std::env::current_exe().expect("this benchmark's path");
    for attempt in 0..2 {
        let mut child = Command::new(&script)
            .args(["--timeout", "3600", "--"])
            .arg(&exe)
            .args(["--inside", "--runs", &runs.to_string()])
            .args(["--secs", &secs.to_string()])
            .args(only.map(|o| ["--only", o]).into_iter().flatten())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the benchmark in the nested host");
        for line in BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            println!("{line}");
        }
        let status = child.wait().expect("wait for the nested host");
        if status.success() {
            return;
        }
        println!("  the nested host ended with {status}");
        if status.code() != Some(125) || attempt == 1 {
            return;
        }
        println!("  the nested host's own kernel failed; measuring once more");
    }
}

/// One boot's figures.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// iperf3's receiver figures, Mbit/s.
    guest_to_host: Option<f64>,
    host_to_guest: Option<f64>,
    /// Median of the one-byte round trips, microseconds.
    rtt_us: Option<f64>,
    /// Over the idle sample: CPU time as a share of one core, in percent, and resident
    /// memory at its end, MiB; of the VMM and of its passt.
    idle_cpu_vmm: Option<f64>,
    idle_cpu_passt: Option<f64>,
    rss_vmm: Option<f64>,
    rss_passt: Option<f64>,
    /// The same VMM idle without a network card (a boot of its own): its CPU share, RSS.
    bare_cpu: Option<f64>,
    bare_rss: Option<f64>,
}

/// A tool or asset the measurement needs, or `None` after saying how to get it.
fn need(what: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_none() {
        println!("  {what} is missing: resources/scripts/install-deps.sh bench and test-assets.sh");
    }
    found
}

fn inside(runs: usize, secs: u64, only: Option<&str>) {
    let assets = common::assets_dir();
    let (Some(kernel), Some(initrd)) = (
        need(
            "vmlinuz",
            Some(assets.join("vmlinuz")).filter(|p| p.is_file()),
        ),
        need(
            "net-bench-initrd.img",
            Some(assets.join("net-bench-initrd.img")).filter(|p| p.is_file()),
        ),
    ) else {
        return;
    };
    let test = "net_throughput";
    let (Some(iperf3), Some(passt), Some(_qemu)) = (
        common::tool_or_skip(test, "iperf3"),
        common::tool_or_skip(test, "passt"),
        common::tool_or_skip(test, "qemu-system-x86_64"),
    ) else {
        return;
    };
    let Some(route) = net::host_network_or_skip(test) else {
        return;
    };
    let dir = common::temp_dir("net-bench");
    // The host's iperf3 server for the guest's client, on the host's loopback.
    let host_port = net::free_port(LOOPBACK);
    let mut server = Command::new(&iperf3)
        .args(["-s", "-B", "127.0.0.1", "-p", &host_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the host's iperf3 server");
    println!(
        "virtio-net through passt ({} via {}), cloud kernel + net-bench-initrd, {MEMORY_MIB} MiB, 1 vCPU; iperf3 {secs} s each way, {PINGS} one-byte round trips, {} s idle; median of {runs} boots each (alternating):",
        route.address,
        route.gateway,
        IDLE.as_secs()
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..runs {
        for vmm in [Vmm::Ours, Vmm::Qemu] {
            if only.is_some_and(|o| o != vmm.name()) {
                continue;
            }
            let assets = (kernel.as_path(), initrd.as_path());
            let mut f = boot(vmm, round, &dir, assets, (&iperf3, &passt), host_port, secs);
            (f.bare_cpu, f.bare_rss) = boot_without_network(vmm, round, &dir, assets, &passt);
            println!(
                "  {:10} boot {}: guest->host {} Mbit/s, host->guest {} Mbit/s, round trip {} us, idle CPU {} % + passt {} %, RSS {} MiB + passt {} MiB; without a network: idle CPU {} %, RSS {} MiB",
                vmm.name(),
                round + 1,
                show(f.guest_to_host),
                show(f.host_to_guest),
                show(f.rtt_us),
                show(f.idle_cpu_vmm),
                show(f.idle_cpu_passt),
                show(f.rss_vmm),
                show(f.rss_passt),
                show(f.bare_cpu),
                show(f.bare_rss),
            );
            match vmm {
                Vmm::Ours => ours.push(f),
                Vmm::Qemu => theirs.push(f),
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    summary(&ours, &theirs);
}

fn show(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1}"))
}

/// Medians per VMM and the ratios.
fn summary(ours: &[Figures], theirs: &[Figures]) {
    type Pick = fn(&Figures) -> Option<f64>;
    let rows: [(&str, Pick, bool); 4] = [
        ("TCP guest -> host, Mbit/s", |f| f.guest_to_host, true),
        ("TCP host -> guest, Mbit/s", |f| f.host_to_guest, true),
        ("TCP round trip, us", |f| f.rtt_us, false),
        (
            "idle CPU, VMM + passt, % of a core",
            |f| Some(f.idle_cpu_vmm? + f.idle_cpu_passt?),
            false,
        ),
    ];
    let median = |v: &[Figures], pick: Pick| common::median(v.iter().filter_map(pick).collect());
    println!("  medians:                               vmdesk-vmm        qemu   vmdesk/qemu  goal");
    for (name, pick, higher_better) in rows {
        let (o, q) = (median(ours, pick), median(theirs, pick));
        let ratio = match (o, q) {
            (Some(o), Some(q)) if q > 0.0 => format!("{:9.3}x", o / q),
            _ => "        -".to_string(),
        };
        let goal = if name.starts_with("idle") {
            ""
        } else if higher_better {
            ">= 1.0"
        } else {
            "<= 1.0"
        };
        println!(
            "  {name:38} {:>10} {:>11}   {ratio}  {goal}",
            show(o),
            show(q)
        );
    }
    // What an idle VM costs, with its network and without one, and so the network's share.
    let cost = |v: &[Figures]| {
        [
            median(v, |f| f.rss_vmm),
            median(v, |f| f.rss_passt),
            median(v, |f| Some(f.rss_vmm? + f.rss_passt?)),
            median(v, |f| f.bare_rss),
            median(v, |f| Some(f.rss_vmm? + f.rss_passt? - f.bare_rss?)),
            median(v, |f| f.idle_cpu_vmm),
            median(v, |f| f.idle_cpu_passt),
            median(v, |f| f.bare_cpu),
            median(v, |f| {
                Some(f.idle_cpu_vmm? + f.idle_cpu_passt? - f.bare_cpu?)
            }),
        ]
    };
    for (name, c) in [("vmdesk-vmm", cost(ours)), ("qemu", cost(theirs))] {
        println!(
            "  idle {name:10}: RSS {} MiB + passt {} MiB = {} MiB (without a network {} MiB: the network's share {} MiB); CPU {} % + passt {} % of a core (without a network {} %: the network's share {} %)",
            show(c[0]),
            show(c[1]),
            show(c[2]),
            show(c[3]),
            show(c[4]),
            show(c[5]),
            show(c[6]),
            show(c[7]),
            show(c[8]),
        );
    }
}

/// A running VM and its passt, killed when dropped.
struct Running {
    name: String,
    vm: Child,
    passt: Option<Child>,
    serial: PathBuf,
    log: PathBuf,
}

impl Running {
    /// The VMM's pid and its passt's (ours: the VMM's passt child).
    fn pids(&self) -> (u32, Option<u32>) {
        let vm = self.vm.id();
        let passt = match &self.passt {
            Some(p) => Some(p.id()),
            None => net::children_named(vm, "passt").first().map(|p| p.pid),
        };
        (vm, passt)
    }

    /// The console's last lines and the VMM's log, for a failure.
    fn context(&self) -> String {
        let console = std::fs::read_to_string(&self.serial).unwrap_or_default();
        let lines: Vec<&str> = console.lines().collect();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "console ends:\n    {}\n  its log:\n    {}",
            lines[lines.len().saturating_sub(15)..].join("\n    "),
            log.lines().collect::<Vec<_>>().join("\n    ")
        )
    }

    /// Waits for the guest to say `line`; what it said by then, or `None` after saying why.
    fn wait_for(&mut self, line: &str) -> Option<Vec<String>> {
        let end = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < end {
            let said = common::guest_said(&self.serial, NET_SAY);
            if said.iter().any(|l| l == line) {
                return Some(said);
            }
            if let Some(l) = said.iter().find(|l| l.starts_with("failed: ")) {
                println!("  {}: the guest {l}; {}", self.name, self.context());
                return None;
            }
            if let Ok(Some(status)) = self.vm.try_wait() {
                println!("  {}: ended ({status}); {}", self.name, self.context());
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("  {}: no {line:?}; {}", self.name, self.context());
        None
    }

    /// The end: SIGTERM, as a person's "stop" does (QEMU quits on it too).
    fn stop(mut self) {
        // SAFETY: kill(2) on the VMM we started and have not reaped.
        unsafe { libc::kill(self.vm.id() as i32, libc::SIGTERM) };
        let _ = common::wait_exit(&mut self.vm, Duration::from_secs(30));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.vm.kill();
        let _ = self.vm.wait();
        if let Some(p) = &mut self.passt {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// A connected pair of stream sockets, both close-on-exec: the QEMU side and the passt
/// side of one link ([`spawn_with_fd`] lets one end through one exec).
fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array it is given.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just made and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Spawns `cmd` with `fd` inherited (its close-on-exec flag cleared for the spawn only):
/// each child gets its own end of the link and not the other's, so either sees the other
/// go. This program spawns from one thread, so no other child can catch the fd meanwhile.
fn spawn_with_fd(cmd: &mut Command, fd: &OwnedFd, what: &str) -> Child {
    let set = |flags: libc::c_int| {
        // SAFETY: F_SETFD on an fd we own.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags) };
        assert_eq!(rc, 0, "fcntl: {}", std::io::Error::last_os_error());
    };
    set(0);
    let child = cmd.spawn();
    set(libc::FD_CLOEXEC);
    child.unwrap_or_else(|e| panic!("start {what}: {e}"))
}

/// Boots `vmm` with `vmdesk.test=TEST`, with user-mode networking through passt and TCP
/// forwards `(host port, guest port)` when `forwards` is `Some`, without any network card
/// when it is `None`.
fn start(
    vmm: Vmm,
    name: String,
    dir: &Path,
    (kernel, initrd): (&Path, &Path),
    passt: &Path,
    test: &str,
    forwards: Option<&[(u16, u16)]>,
) -> Running {
    let serial = dir.join(format!("{name}.com1").replace(' ', "-"));
    let log = dir.join(format!("{name}.log").replace(' ', "-"));
    let cmdline = format!("{} vmdesk.test={test}", common::LINUX_CMDLINE);
    let (vm, passt) = match vmm {
        Vmm::Ours => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"));
            c.args(["--memory", &format!("{MEMORY_MIB}M"), "--cpus", "1"])
                .args(["--vnc", "none"])
                .arg("--serial")
                .arg(format!("file:{}", serial.display()))
                .arg("--kernel")
                .arg(kernel)
                .arg("--initrd")
                .arg(initrd)
                .args(["--cmdline", &cmdline]);
            match forwards {
                Some(forwards) => {
                    c.args(["--net", "user"]);
                    for (host, guest) in forwards {
                        c.args(["--forward", &format!("tcp:127.0.0.1:{host}-:{guest}")]);
                    }
                }
                None => {
                    c.args(["--net", "none"]);
                }
            }
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            (c.spawn().expect("start vmdesk-vmm"), None)
        }
        Vmm::Qemu => {
            let mut c = Command::new("qemu-system-x86_64");
            c.args(["-M", "pc", "-accel", "kvm", "-cpu", "host", "-nodefaults"])
                .args(["-m", &MEMORY_MIB.to_string(), "-smp", "1"])
                .args(["-vga", "std", "-display", "none", "-no-reboot"])
                .arg("-serial")
                .arg(format!("file:{}", serial.display()))
                .arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .args(["-append", &cmdline])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            match forwards {
                Some(forwards) => {
                    let (qemu_end, passt_end) = socketpair();
                    let mut p = Command::new(passt);
                    // vmdesk-vmm's own passt options (net/passt.rs), and the same forwards.
                    p.args(["--foreground", "--stderr", "--quiet", "--fd"])
                        .arg(passt_end.as_raw_fd().to_string());
                    for (host, guest) in forwards {
                        p.args(["-t", &format!("127.0.0.1/{host}:{guest}")]);
                    }
                    p.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
                        std::fs::File::create(
                            dir.join(format!("{name}.passt.log").replace(' ', "-")),
                        )
                        .unwrap(),
                    );
                    let passt = spawn_with_fd(&mut p, &passt_end, "passt");
                    c.args([
                        "-netdev",
                        &format!(
                            "stream,id=n0,server=off,addr.type=fd,addr.str={}",
                            qemu_end.as_raw_fd()
                        ),
                    ])
                    .args([
                        "-device",
                        "virtio-net-pci,netdev=n0,addr=03.0,mac=52:54:00:12:34:56",
                    ]);
                    let vm = spawn_with_fd(&mut c, &qemu_end, "qemu");
                    // Our copies close here: each end now lives only in its process.
                    drop((qemu_end, passt_end));
                    (vm, Some(passt))
                }
                None => (c.spawn().expect("start qemu"), None),
            }
        }
    };
    Running {
        name,
        vm,
        passt,
        serial,
        log,
    }
}

/// CPU time as a share of one core (percent) and resident memory at the end (MiB) of each
/// of `pids` over [`IDLE`], after 2 s for the guest to settle.
fn sample_idle(pids: &[Option<u32>]) -> Vec<(Option<f64>, Option<f64>)> {
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(cpu_ticks)).collect();
    let t0 = Instant::now();
    std::thread::sleep(IDLE);
    let wall = t0.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(pid, before)| {
            let after = pid.and_then(cpu_ticks);
            let cpu = before
                .zip(after)
                .map(|(b, a)| 100.0 * a.saturating_sub(b) as f64 / ticks_per_s() / wall);
            (cpu, pid.and_then(rss_mib))
        })
        .collect()
}

/// One boot with the network: the figures of [`Figures`].
fn boot(
    vmm: Vmm,
    round: usize,
    dir: &Path,
    assets: (&Path, &Path),
    (iperf3, passt): (&Path, &Path),
    host_port: u16,
    secs: u64,
) -> Figures {
    let mut f = Figures::default();
    let (iperf_fwd, echo_fwd) = (net::free_port(LOOPBACK), net::free_port(LOOPBACK));
    let mut running = start(
        vmm,
        format!("{} boot {}", vmm.name(), round + 1),
        dir,
        assets,
        passt,
        &format!("bench:{host_port}:{secs}"),
        Some(&[(iperf_fwd, GUEST_IPERF), (echo_fwd, GUEST_ECHO)]),
    );

    // Guest to host: the guest's own iperf3 client, at boot.
    let Some(said) = running.wait_for("bench ready") else {
        return f;
    };
    f.guest_to_host = said
        .iter()
        .find_map(|l| l.strip_prefix("iperf guest-to-host kbits "))
        .and_then(|k| k.trim().parse::<f64>().ok())
        .map(|k| k / 1000.0);

    // Host to guest: the host's iperf3 client through the forward to the guest's server.
    let out = Command::new(iperf3)
        .args(["-c", "127.0.0.1", "-p", &iperf_fwd.to_string()])
        .args(["-t", &secs.to_string(), "-f", "k"])
        .output()
        .expect("run iperf3 -c");
    let text = String::from_utf8_lossy(&out.stdout);
    f.host_to_guest = receiver_kbits(&text).map(|k| k / 1000.0);
    if f.host_to_guest.is_none() {
        println!(
            "  {}: iperf3 host->guest said:\n{text}{}",
            running.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The round trip, through the other forward.
    match ping_pong(SocketAddr::from((LOOPBACK, echo_fwd))) {
        Ok(us) => f.rtt_us = Some(us),
        Err(e) => println!("  {}: round trips: {e}", running.name),
    }

    // Idle: the guest waits in its shell.
    let (vm, passt) = running.pids();
    let idle = sample_idle(&[Some(vm), passt]);
    (f.idle_cpu_vmm, f.rss_vmm) = idle[0];
    (f.idle_cpu_passt, f.rss_passt) = idle[1];
    running.stop();
    f
}

/// One boot without a network card (`--net none`; QEMU with no NIC), idle: the VMM's CPU
/// share and RSS, what the network's figures are held against.
fn boot_without_network(
    vmm: Vmm,
    round: usize,
    dir: &Path,
    assets: (&Path, &Path),
    passt: &Path,
) -> (Option<f64>, Option<f64>) {
    let mut running = start(
        vmm,
        format!("{} boot {} without a network", vmm.name(), round + 1),
        dir,
        assets,
        passt,
        "idle",
        None,
    );
    if running.wait_for("no card; idle").is_none() {
        return (None, None);
    }
    let idle = sample_idle(&[Some(running.vm.id())]);
    running.stop();
    idle[0]
}

/// iperf3's receiver line's figure from `-f k` output, Kbit/s.
fn receiver_kbits(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.contains("receiver"))
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "Kbits/sec")?;
            w.get(i.checked_sub(1)?)?.parse().ok()
        })
}

/// The median of `PINGS` one-byte round trips to the echo server at `addr`, microseconds.
fn ping_pong(addr: SocketAddr) -> std::io::Result<f64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut byte = [0u8; 1];
    let mut times = Vec::with_capacity(PINGS);
    for i in 0..50 + PINGS {
        let t = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut byte)?;
        if i >= 50 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    common::median(times).ok_or_else(|| std::io::Error::other("no round trips"))
}

/// User plus system CPU time of a process and all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are rest[11] and rest[12].
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// VmRSS of a process, MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
