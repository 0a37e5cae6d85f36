//! Guest kernels on hardware-backed KVM: Debian's cloud kernel with the busybox initrd
//! (target/assets/vmlinuz, initrd.img), booted directly to its /init by vmdesk-vmm and by
//! QEMU (`-accel kvm -cpu host`, same kernel, initrd, memory and vCPUs) in turn with 1 and
//! 4 vCPUs, median of 5 each, as a ratio. Also the nested test host's own cost: its start
//! to a shell.
//!
//! `cargo bench -p vmm --bench nested_boot -- --soak N` is the soak instead: vmdesk-vmm
//! alone boots N times with each of 1, 2 and 4 vCPUs, half of the rounds with a CPU-bound
//! process beside the nested host; every boot must end. A boot that does not reach /init
//! and power off within two minutes prints the last lines of its console and each vCPU's
//! registers (the control socket's `query-vcpus`), so a hang is found, not guessed.
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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const MEMORY_MIB: u64 = 512;
const TIMEOUT: Duration = Duration::from_secs(300);
/// How long a soak boot may take before it counts as hung (a boot takes seconds).
const SOAK_TIMEOUT: Duration = Duration::from_secs(120);
const INIT_LINE: &str = "vmdesk-initrd: up";
const CMDLINE: &str = "console=ttyS0 panic=-1";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let soak = args
        .iter()
        .position(|a| a == "--soak")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(20));
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    match (args.iter().any(|a| a == "--inside") || !kvm_pvm, soak) {
        (true, Some(n)) => soak_inside(n, args.iter().any(|a| a == "--hog")),
        (true, None) => inside(),
        (false, Some(n)) => soak_outside(n),
        (false, None) => outside(),
    }
}

fn nested_host_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scripts/nested-host.sh")
}

/// Here: the soak in two nested hosts, the first alone on this machine, the second with
/// a busy loop beside it (`--hog` marks its boots).
fn soak_outside(n: usize) {
    let exe = std::env::current_exe().expect("this benchmark's path");
    let quiet = n / 2;
    for (rounds, hog) in [(quiet, false), (n - quiet, true)] {
        let busy = hog.then(|| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("start the busy loop")
        });
        let mut cmd = Command::new(nested_host_script());
        cmd.args(["--timeout", "3600", "--"]).arg(&exe).args([
            "--inside",
            "--soak",
            &rounds.to_string(),
        ]);
        if hog {
            cmd.arg("--hog");
        }
        let status = cmd.status().expect("run the soak in the nested host");
        if let Some(mut b) = busy {
            let _ = b.kill();
            let _ = b.wait();
        }
        if !status.success() {
            println!("  the soak in the nested host failed ({status})");
        }
    }
}

/// Here: the nested host's start to a shell, then this program again inside it.
fn outside() {
    let script = nested_host_script();
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
/// exit, within `timeout`; `None` (after saying why, with the vCPUs' registers when
/// `control` is its control socket) when it does not get there.
fn boot(name: &str, mut cmd: Command, timeout: Duration, control: Option<&Path>) -> Option<Boot> {
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
        let Ok((at, line)) = rx.recv_timeout(timeout.saturating_sub(start.elapsed())) else {
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
    let deadline = Instant::now() + Duration::from_secs(60).min(timeout);
    let whole = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break Some(start.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            if let Some(socket) = control {
                println!("  {name}: hung; its vCPUs: {}", common::vcpu_states(socket));
            }
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

fn ours(kernel: &Path, initrd: &Path, cpus: u32, control: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"));
    c.args([
        "--memory",
        &format!("{MEMORY_MIB}M"),
        "--cpus",
        &cpus.to_string(),
    ])
    .arg("--control")
    .arg(control)
    .arg("--kernel")
    .arg(kernel)
    .arg("--initrd")
    .arg(initrd)
    .args(["--cmdline", CMDLINE, "--serial", "stdio"]);
    c
}

fn qemu(kernel: &Path, initrd: &Path, cpus: u32) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-M", "pc", "-accel", "kvm", "-cpu", "host", "-nodefaults"])
        .args(["-m", &MEMORY_MIB.to_string(), "-smp", &cpus.to_string()])
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

/// The cloud kernel and busybox initrd, or `None` after saying how to get them.
fn kernel_and_initrd() -> Option<(PathBuf, PathBuf)> {
    let assets = common::assets_dir();
    let (kernel, initrd) = (assets.join("vmlinuz"), assets.join("initrd.img"));
    if kernel.is_file() && initrd.is_file() {
        return Some((kernel, initrd));
    }
    println!(
        "  {} or {} missing: run resources/scripts/test-assets.sh",
        kernel.display(),
        initrd.display()
    );
    None
}

/// Both VMMs in turn, `RUNS` boots each with 1 and with 4 vCPUs; prints medians and the
/// ratios.
fn inside() {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let control = common::temp_dir("nested-boot").join("vm.sock");
    for cpus in [1, 4] {
        println!(
            "cloud kernel + busybox initrd, direct boot to /init, {MEMORY_MIB} MiB, {cpus} vCPU(s), median of {RUNS} (alternating):"
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            a.extend(boot(
                "vmdesk-vmm",
                ours(&kernel, &initrd, cpus, &control),
                TIMEOUT,
                Some(&control),
            ));
            b.extend(boot("qemu", qemu(&kernel, &initrd, cpus), TIMEOUT, None));
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
                "  ratio vmdesk/qemu, {cpus} vCPU(s): start -> /init {:.3}x   kernel alone {:.3}x   whole run {:.3}x",
                o.0 / q.0,
                o.1 / q.1,
                o.2 / q.2
            );
        }
    }
}

/// `rounds` boots of vmdesk-vmm with each of 1, 2 and 4 vCPUs (interleaved); prints how
/// many ended and how long they took, and every hang's console and registers.
fn soak_inside(rounds: usize, hog: bool) {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let control = common::temp_dir("nested-soak").join("vm.sock");
    let beside = if hog {
        "with a busy loop beside the nested host"
    } else {
        "alone"
    };
    println!("soak: {rounds} boots each with 1, 2 and 4 vCPUs, {beside}:");
    for cpus in [1, 2, 4] {
        let mut times = Vec::new();
        let mut hung = 0;
        for round in 0..rounds {
            let name = format!("{cpus} vCPU(s), boot {}", round + 1);
            match boot(
                &name,
                ours(&kernel, &initrd, cpus, &control),
                SOAK_TIMEOUT,
                Some(&control),
            ) {
                Some(b) => times.push(b.whole),
                None => hung += 1,
            }
        }
        let max = times.iter().copied().fold(0.0, f64::max);
        println!(
            "  {cpus} vCPU(s): {} of {rounds} boots ended, {hung} did not; whole run median {:.2} s, slowest {max:.2} s",
            times.len(),
            common::median(times).unwrap_or(f64::NAN),
        );
    }
}
