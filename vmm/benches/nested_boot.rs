//! Guest kernels on hardware-backed KVM: Debian's cloud kernel with the busybox initrd
//! (target/assets/vmlinuz, initrd.img), booted directly to its /init by vmdesk-vmm and by
//! QEMU (`-accel kvm -cpu host`, same kernel, initrd, memory and vCPUs) in turn, median of
//! 5 each, as a ratio. Also the nested test host's own cost: its start to a shell.
//!
//! `cargo bench -p vmm --bench nested_boot`. On a host whose KVM is kvm_pvm (no guest
//! kernels) the measuring half runs inside the nested test host
//! (resources/scripts/nested-host.sh), where both VMMs get the same emulated SVM: TCG sets
//! the pace there, so only the ratio means anything. Elsewhere it runs here.
//!
//! Figures per VMM: wall time from the VMM's start to /init's first line on the serial
//! console (the boot a person waits for), the kernel's own timestamp of "Run /init as init
//! process" (the kernel alone: QEMU's -kernel path runs SeaBIOS and its linuxboot ROM
//! first, ours loads the kernel itself), and the whole run to the VMM's exit after
//! /init's poweroff.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const MEMORY_MIB: u64 = 512;
const TIMEOUT: Duration = Duration::from_secs(300);
const INIT_LINE: &str = "vmdesk-initrd: up";
const CMDLINE: &str = "console=ttyS0 panic=-1";

fn main() {
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if std::env::args().any(|a| a == "--inside") || !kvm_pvm {
        inside();
    } else {
        outside();
    }
}

/// Here: the nested host's start to a shell, then this program again inside it.
fn outside() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("resources/scripts/nested-host.sh");
    println!("nested test host (QEMU TCG -cpu max, kvm_amd inside), median of 3:");
    let mut to_shell = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut child = Command::new(&script)
            .args(["--timeout", "300", "--", "echo", "shell"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the nested host");
        let mut first = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut first);
        if first.trim() == "shell" {
            to_shell.push(start.elapsed().as_secs_f64());
        }
        let ok = child.wait().is_ok_and(|s| s.success());
        if ok {
            whole.push(start.elapsed().as_secs_f64());
        }
    }
    match (common::median(to_shell), common::median(whole)) {
        (Some(shell), Some(all)) => {
            println!("  start -> a shell running the command {shell:7.2} s   whole run {all:7.2} s")
        }
        _ => {
            println!("  the nested host did not start (see tests/run.sh's output for why)");
            return;
        }
    }
    let exe = std::env::current_exe().expect("this benchmark's path");
    let status = Command::new(&script)
        .args(["--timeout", "1800", "--"])
        .arg(exe)
        .arg("--inside")
        .status()
        .expect("run the benchmark in the nested host");
    if !status.success() {
        println!("  the measurement in the nested host failed ({status})");
    }
}

struct Boot {
    to_init: f64,
    kernel_init: f64,
    whole: f64,
}

/// Starts `cmd` (its serial console on stdout) and times it to /init's line and to its
/// exit; `None` (after saying why) when it does not get there.
fn boot(name: &str, mut cmd: Command) -> Option<Boot> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let mut to_init = None;
    let mut kernel_init = None;
    let mut transcript = Vec::new();
    while to_init.is_none() {
        let Ok((at, line)) = rx.recv_timeout(TIMEOUT.saturating_sub(start.elapsed())) else {
            break;
        };
        if line.contains("Run /init as init process") {
            kernel_init = kernel_timestamp(&line);
        }
        if line.contains(INIT_LINE) {
            to_init = Some(at.duration_since(start).as_secs_f64());
        }
        transcript.push(line);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let whole = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break Some(start.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    match (to_init, kernel_init, whole) {
        (Some(to_init), Some(kernel_init), Some(whole)) => Some(Boot {
            to_init,
            kernel_init,
            whole,
        }),
        _ => {
            let tail = transcript.len().saturating_sub(15);
            println!(
                "  {name}: no complete boot (to /init {to_init:?}, kernel {kernel_init:?}, exit {whole:?}); its console ended:\n    {}",
                transcript[tail..].join("\n    ")
            );
            None
        }
    }
}

/// The seconds in a kernel log line's "[   1.234567]" prefix.
fn kernel_timestamp(line: &str) -> Option<f64> {
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    line[open + 1..close].trim().parse().ok()
}

fn ours(kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"));
    c.args(["--memory", &format!("{MEMORY_MIB}M"), "--cpus", "1"])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--cmdline", CMDLINE, "--serial", "stdio"]);
    c
}

fn qemu(kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-M", "pc", "-accel", "kvm", "-cpu", "host", "-nodefaults"])
        .args(["-m", &MEMORY_MIB.to_string(), "-smp", "1"])
        // The devices ours has: std VGA with a VNC server, no NIC.
        .args([
            "-vga",
            "std",
            "-display",
            "none",
            "-vnc",
            "127.0.0.1:50,to=99",
        ])
        .args(["-net", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", CMDLINE]);
    c
}

/// Both VMMs in turn, `RUNS` boots each; prints medians and the ratios.
fn inside() {
    let assets = common::assets_dir();
    let (kernel, initrd) = (assets.join("vmlinuz"), assets.join("initrd.img"));
    if !kernel.is_file() || !initrd.is_file() {
        println!(
            "  {} or {} missing: run resources/scripts/test-assets.sh",
            kernel.display(),
            initrd.display()
        );
        return;
    }
    println!(
        "cloud kernel + busybox initrd, direct boot to /init, {MEMORY_MIB} MiB, 1 vCPU, median of {RUNS} (alternating):"
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        a.extend(boot("vmdesk-vmm", ours(&kernel, &initrd)));
        b.extend(boot("qemu", qemu(&kernel, &initrd)));
    }
    let summary = |name: &str, v: &[Boot]| {
        let m = |f: fn(&Boot) -> f64| common::median(v.iter().map(f).collect());
        let (Some(to_init), Some(kernel_init), Some(whole)) =
            (m(|b| b.to_init), m(|b| b.kernel_init), m(|b| b.whole))
        else {
            println!("  {name:10}  no complete boots");
            return None;
        };
        println!(
            "  {name:10}  start -> /init {to_init:7.3} s   kernel's 'Run /init' at {kernel_init:7.3} s   whole run {whole:7.3} s   ({} boots)",
            v.len()
        );
        Some((to_init, kernel_init, whole))
    };
    let ours = summary("vmdesk-vmm", &a);
    let theirs = summary("qemu", &b);
    if let (Some(o), Some(q)) = (ours, theirs) {
        println!(
            "  ratio vmdesk/qemu: start -> /init {:.3}x   kernel alone {:.3}x   whole run {:.3}x",
            o.0 / q.0,
            o.1 / q.1,
            o.2 / q.2
        );
    }
}
