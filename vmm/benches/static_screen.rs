//! What a VM with a static screen costs the host: each VMM's CPU over 30 s while a VNC
//! client stays connected with an update request pending, the guest sitting in the
//! BIOS's keyboard wait (tests/guests/keyecho.S from an option ROM); vmdesk-vmm beside
//! QEMU 7.2 running the same program, with vmdesk-vmm's per-thread split (the vCPU's
//! share is the guest's own idle work).
//!
//! `cargo bench -p vmm --bench static_screen` (resources/scripts/bench.sh installs QEMU).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions};

const STATIC_SECONDS: u64 = 30;
const PROMPT: &str = "keyecho: type>";

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds per thread name (threads with the same name summed), from each thread's
/// schedstat (nanoseconds on a CPU): /proc's utime and stime count 10 ms ticks, too coarse
/// to tell 0.05% from 0 over 30 s.
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let Some(secs) = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map(|ns| ns / 1e9)
        else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += secs,
            None => out.push((name, secs)),
        }
    }
    out
}

fn wait_for(log: &Path, needle: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

fn run(
    name: &str,
    mut cmd: Command,
    log: &Path,
    addr: SocketAddr,
) -> Option<(f64, Vec<(String, f64)>)> {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let result = (|| {
        if !wait_for(log, PROMPT, Duration::from_secs(120)) {
            println!("  {name}: the program never printed its prompt");
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
        // Static screen: a client stays connected with an update request pending.
        let mut idle = Client::connect(addr, &ClientOptions::default()).ok()?;
        idle.update(false).ok()?;
        idle.request(true).ok()?;
        let before = cpu_seconds(child.id())?;
        let threads_before = thread_cpu(child.id());
        std::thread::sleep(Duration::from_secs(STATIC_SECONDS));
        let cpu = (cpu_seconds(child.id())? - before) / STATIC_SECONDS as f64 * 100.0;
        let split = thread_cpu(child.id())
            .into_iter()
            .filter_map(|(name, t)| {
                let t0 = threads_before.iter().find(|(n, _)| *n == name)?.1;
                Some((name, (t - t0) / STATIC_SECONDS as f64 * 100.0))
            })
            .filter(|(_, pct)| *pct >= 0.001)
            .collect();
        Some((cpu, split))
    })();
    if result.is_none() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = text
            .chars()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!("  {name}: the guest's log ends with {tail:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn free_display() -> u16 {
    (40..99)
        .find(|n| std::net::TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok())
        .expect("a free VNC display")
}

fn main() {
    let Some(rom) = common::guests::option_rom("static_screen", "keyecho", &[]) else {
        println!("static_screen: skipped (binutils missing)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("vmdesk-static-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "static screen: VMM CPU with a VNC client waiting, guest idle in int 16h (keyecho.S):"
    );

    let n = free_display();
    let log = dir.join("ours.log");
    let mut ours = Command::new(common::vmm_bin());
    ours.args([
        "--memory",
        "128M",
        "--serial",
        "none",
        "--vnc",
        &format!("127.0.0.1:{n}"),
    ])
    .arg("--option-rom")
    .arg(&rom)
    .arg("--debugcon")
    .arg(format!("file:{}", log.display()));
    let addr: SocketAddr = format!("127.0.0.1:{}", 5900 + n).parse().unwrap();
    let ours = run("vmdesk-vmm", ours, &log, addr);

    let n = free_display();
    let log = dir.join("qemu.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-M",
        "pc",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-m",
        "128",
        "-net",
        "none",
    ])
    .args(["-display", "none", "-vnc", &format!("127.0.0.1:{n}")])
    .arg("-option-rom")
    .arg(&rom)
    .args([
        "-debugcon",
        &format!("file:{}", log.display()),
        "-global",
        "isa-debugcon.iobase=0x402",
    ]);
    let addr: SocketAddr = format!("127.0.0.1:{}", 5900 + n).parse().unwrap();
    let qemu = run("qemu 7.2", qemu, &log, addr);

    for (name, r) in [("vmdesk-vmm", ours), ("qemu 7.2  ", qemu)] {
        if let Some((cpu, split)) = r {
            let split: Vec<String> = split.iter().map(|(n, p)| format!("{n} {p:.3}%")).collect();
            println!(
                "  {name}  {cpu:5.2}% of a core over {STATIC_SECONDS} s   ({})",
                split.join(", ")
            );
        }
    }
    println!("  (target: under 1% of a core)");
    let _ = std::fs::remove_dir_all(dir);
}
