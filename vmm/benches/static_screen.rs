//! What a VM with a static screen costs the host: each VMM's CPU over 30 s while a VNC
//! client stays connected with an update request pending; vmdesk-vmm beside QEMU 7.2
//! running the same program, alternating, medians of a few rounds, with vmdesk-vmm's
//! per-thread split. Two guests (tests/guests/keyecho.S from an option ROM):
//! - idle in the BIOS's keyboard wait (int 16h): the guest still serves the BIOS timer's
//!   18.2 Hz interrupt, which is the vCPU thread's share and the guest's own work (on
//!   kvm_pvm it runs through KVM's instruction emulator and costs about 1% of a core in
//!   either VMM);
//! - halted after its prompt with every interrupt masked: nothing left for the guest to do, so
//!   what remains is the VMM's own cost of a static screen.
//!
//! `cargo bench -p vmm --bench static_screen` (resources/scripts/bench.sh installs QEMU);
//! `VMDESK_BENCH_ROUNDS=N` changes the number of rounds (3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions};

const STATIC_SECONDS: u64 = 30;
const PROMPT: &str = "keyecho: type>";

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
        let threads_before = thread_cpu(child.id());
        std::thread::sleep(Duration::from_secs(STATIC_SECONDS));
        let split: Vec<(String, f64)> = thread_cpu(child.id())
            .into_iter()
            .map(|(name, t)| {
                // A thread started during the window counts from zero.
                let t0 = threads_before
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |e| e.1);
                (name, (t - t0) / STATIC_SECONDS as f64 * 100.0)
            })
            .collect();
        let cpu = split.iter().map(|(_, pct)| pct).sum();
        let split = split.into_iter().filter(|(_, pct)| *pct >= 0.001).collect();
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

/// The median of `v` (the lower middle for an even count); NaN when empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

fn ours(rom: &Path, log: &Path) -> (Command, SocketAddr) {
    let n = common::free_vnc_display();
    let mut cmd = Command::new(common::vmm_bin());
    cmd.args([
        "--memory",
        "128M",
        "--serial",
        "none",
        "--vnc",
        &format!("127.0.0.1:{n}"),
    ])
    .arg("--option-rom")
    .arg(rom)
    .arg("--debugcon")
    .arg(format!("file:{}", log.display()));
    (cmd, format!("127.0.0.1:{}", 5900 + n).parse().unwrap())
}

fn qemu(rom: &Path, log: &Path) -> (Command, SocketAddr) {
    let n = common::free_vnc_display();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
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
    .arg(rom)
    .args([
        "-debugcon",
        &format!("file:{}", log.display()),
        "-global",
        "isa-debugcon.iobase=0x402",
    ]);
    (cmd, format!("127.0.0.1:{}", 5900 + n).parse().unwrap())
}

fn main() {
    let rounds: usize = std::env::var("VMDESK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("vmdesk-static-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "static screen: VMM CPU over {STATIC_SECONDS} s with a VNC client waiting; \
         median of {rounds} rounds (target: under 1% of a core)"
    );
    let guests: [(&str, &[(&str, i64)]); 2] = [
        ("guest idle in int 16h (its BIOS timer ticking)", &[]),
        ("guest halted, every interrupt masked", &[("HALTED", 1)]),
    ];
    for (g, (what, defsyms)) in guests.into_iter().enumerate() {
        let Some(rom) = common::guests::option_rom("static_screen", "keyecho", defsyms) else {
            println!("static_screen: skipped (binutils missing)");
            return;
        };
        println!("{what}:");
        type Launch = fn(&Path, &Path) -> (Command, SocketAddr);
        let vmms: [(&str, Launch); 2] = [("vmdesk-vmm", ours), ("qemu 7.2  ", qemu)];
        let mut totals: [Vec<f64>; 2] = Default::default();
        let mut splits: Vec<Vec<(String, f64)>> = Vec::new();
        for round in 0..rounds {
            for (i, (name, launch)) in vmms.iter().enumerate() {
                // A log of its own: an old one would show the prompt before this VM has
                // booted.
                let log = dir.join(format!("{g}-{i}-{round}.log"));
                let (cmd, addr) = launch(&rom, &log);
                if let Some((cpu, split)) = run(name, cmd, &log, addr) {
                    totals[i].push(cpu);
                    if i == 0 {
                        splits.push(split);
                    }
                }
            }
        }
        let mut names: Vec<String> = splits.iter().flatten().map(|(n, _)| n.clone()).collect();
        names.sort();
        names.dedup();
        let split: Vec<String> = names
            .iter()
            .map(|n| {
                let per_round = splits
                    .iter()
                    .map(|s| s.iter().find(|(m, _)| m == n).map_or(0.0, |e| e.1))
                    .collect();
                format!("{n} {:.3}%", median(per_round))
            })
            .collect();
        for (i, (name, _)) in vmms.iter().enumerate() {
            let rounds: Vec<String> = totals[i].iter().map(|c| format!("{c:.2}")).collect();
            println!(
                "  {name}  {:5.2}% of a core   (rounds: {})",
                median(totals[i].clone()),
                rounds.join(", ")
            );
        }
        println!("    vmdesk-vmm by thread (medians): {}", split.join(", "));
        println!(
            "    ratio vmdesk/qemu: {:.2}",
            median(totals[0].clone()) / median(totals[1].clone())
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
