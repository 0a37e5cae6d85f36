//! Process start → SeaBIOS reaching its boot phase ("enter handle_19:" in its debug
//! log), vmdesk-vmm beside QEMU in the same run, median of 10 each; and the memory each
//! VMM uses beyond guest RAM (resident set of every mapping but the guest's RAM, peak
//! over the run, from /proc/PID/smaps).
//!
//! `cargo bench -p vmm --bench boot` (resources/scripts/bench.sh installs QEMU first).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 10;
const MEMORY_MIB: u64 = 512;
const NEEDLE: &str = "enter handle_19:";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Resident KiB of every mapping except guest RAM (anonymous mappings of 64 MiB or more:
/// both VMMs map guest RAM in large blocks and nothing else that large).
fn non_guest_rss_kib(pid: u32) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0;
    let mut size = 0;
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("Size:") => size = parts.next()?.parse::<u64>().ok()?,
            Some("Rss:") => {
                let rss: u64 = parts.next()?.parse().ok()?;
                if size < 64 * 1024 {
                    total += rss;
                }
            }
            _ => {}
        }
    }
    Some(total)
}

/// Starts a VMM, waits for the needle in the log; returns (seconds, peak non-guest KiB).
fn one_run(mut cmd: Command, log: &Path) -> Option<(f64, u64)> {
    let _ = std::fs::remove_file(log);
    let start = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut peak = 0;
    let result = loop {
        if let Some(kib) = non_guest_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(NEEDLE)) {
            break Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > TIMEOUT || matches!(child.try_wait(), Ok(Some(_))) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if let Some(kib) = non_guest_rss_kib(child.id()) {
        peak = peak.max(kib);
    }
    let _ = child.kill();
    let _ = child.wait();
    result.map(|t| (t, peak))
}

fn ours(log: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"));
    c.args([
        "--memory",
        &format!("{MEMORY_MIB}M"),
        "--cpus",
        "1",
        "--serial",
        "none",
    ])
    .arg("--debugcon")
    .arg(format!("file:{}", log.display()));
    c
}

fn qemu(log: &Path) -> Command {
    let mut c = common::qemu_reference(MEMORY_MIB, 1, log);
    // A VNC server too, as ours has.
    c.args(["-vnc", "127.0.0.1:50,to=99"]);
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(name: &str, make: fn(&Path) -> Command, log: &Path) -> Option<(f64, f64)> {
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        match one_run(make(log), log) {
            Some((t, kib)) => {
                times.push(t);
                rss.push(kib as f64);
            }
            None => {
                println!("  {name}: did not reach '{NEEDLE}' within {TIMEOUT:?}");
                return None;
            }
        }
    }
    Some((median(times), median(rss)))
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vmdesk-boot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "start -> SeaBIOS boot phase ('{NEEDLE}'), {MEMORY_MIB} MiB, 1 vCPU, median of {RUNS}:"
    );
    let ours = measure("vmdesk-vmm", ours, &dir.join("ours.log"));
    let qemu = measure("qemu", qemu, &dir.join("qemu.log"));
    if let Some((t, kib)) = ours {
        println!(
            "  vmdesk-vmm  {:7.3} s   memory beyond guest RAM {:6.1} MiB",
            t,
            kib / 1024.0
        );
    }
    if let Some((t, kib)) = qemu {
        println!(
            "  qemu 7.2    {:7.3} s   memory beyond guest RAM {:6.1} MiB",
            t,
            kib / 1024.0
        );
    }
    if let (Some((a, ma)), Some((b, mb))) = (ours, qemu) {
        println!(
            "  ratio vmdesk/qemu: time {:.3}x, memory {:.3}x",
            a / b,
            ma / mb
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
