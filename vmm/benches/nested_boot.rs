//! Guest kernels on hardware-backed KVM: Debian's cloud kernel with the busybox initrd
//! (target/assets/vmlinuz, initrd.img), booted directly to its /init by vmdesk-vmm and by
//! QEMU (`-accel kvm -cpu host`, same kernel, initrd, memory and vCPUs) in turn with 1 and
//! 4 vCPUs, median of 5 each, as a ratio. Also the nested test host's own cost: its start
//! to a shell.
//!
//! `cargo bench -p vmm --bench nested_boot -- --soak N` is the soak instead: vmdesk-vmm
//! boots N times with each of 1, 2 and 4 vCPUs, and QEMU N times with 4 for comparison,
//! half of the rounds with a CPU-bound process beside the nested host; every boot must
//! end. A boot that does not reach /init and power off within two minutes prints the last
//! lines of its console and each vCPU's registers (the control socket's `query-vcpus`),
//! so a hang is found, not guessed. When the nested host's own kernel fails, its console
//! is printed, the failure is counted against the VMM whose boot it ended, and the rest
//! runs in a new nested host. `--only VMM:CPUS` (repeatable, e.g. `--only qemu:4`) soaks
//! just those of the four.
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
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse::<usize>().ok())
    };
    let soak = args
        .iter()
        .any(|a| a == "--soak")
        .then(|| value("--soak").unwrap_or(20));
    let cpus = value("--cpus").unwrap_or(1) as u32;
    let qemu = args.iter().any(|a| a == "--qemu");
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    match (args.iter().any(|a| a == "--inside") || !kvm_pvm, soak) {
        (true, Some(n)) => soak_inside(n, cpus, qemu),
        (true, None) => inside(cpus),
        (false, Some(n)) => {
            let only: Vec<&str> = args
                .windows(2)
                .filter(|w| w[0] == "--only")
                .map(|w| w[1].as_str())
                .collect();
            soak_outside(n, &only)
        }
        (false, None) => outside(),
    }
}

/// Here: the soak, vmdesk-vmm with 1, 2 and 4 vCPUs and QEMU with 4, `n` boots each, the
/// first half alone on this machine, the second beside a busy loop. When the nested
/// host's own kernel fails, the boots left run in a new one, and the failure is counted
/// against the VMM whose boot it ended.
fn soak_outside(n: usize, only: &[&str]) {
    let mut summary = Vec::new();
    for (vmm, cpus) in [
        ("vmdesk-vmm", 1),
        ("vmdesk-vmm", 2),
        ("vmdesk-vmm", 4),
        ("qemu", 4),
    ] {
        if !only.is_empty() && !only.contains(&format!("{vmm}:{cpus}").as_str()) {
            continue;
        }
        for (rounds, hog) in [(n / 2, false), (n - n / 2, true)] {
            let busy = hog.then(|| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("start the busy loop")
            });
            let (mut ended, mut hung, mut host_failed, mut times) = (0, 0, 0, Vec::new());
            while ended + hung + host_failed < rounds {
                let left = rounds - ended - hung - host_failed;
                let mut args = vec!["--inside".to_string(), "--soak".into(), left.to_string()];
                args.extend(["--cpus".into(), cpus.to_string()]);
                if vmm == "qemu" {
                    args.push("--qemu".into());
                }
                let (lines, failed) = common::in_nested_host(&args, 3600);
                for l in &lines {
                    if let Some(secs) = l.strip_prefix("soak-boot ended ") {
                        ended += 1;
                        times.extend(secs.trim().parse::<f64>().ok());
                    } else if l.starts_with("soak-boot hung") {
                        hung += 1;
                    }
                }
                if failed {
                    host_failed += 1;
                } else if lines.iter().all(|l| !l.starts_with("soak-boot")) {
                    println!("  no boot ran in the nested host; stopping this part");
                    break;
                }
            }
            if let Some(mut b) = busy {
                let _ = b.kill();
                let _ = b.wait();
            }
            let beside = if hog { "beside a busy loop" } else { "alone" };
            summary.push(format!(
                "  {vmm:10} {cpus} vCPU(s), {beside:18}: {ended:2} of {rounds} boots ended, {hung} hung, {host_failed} ended by the nested host's kernel failing; whole run median {:.2} s, slowest {:.2} s",
                common::median(times.clone()).unwrap_or(f64::NAN),
                times.iter().copied().fold(0.0, f64::max),
            ));
        }
    }
    println!("soak summary:");
    summary.iter().for_each(|l| println!("{l}"));
}

/// Here: the nested host's start to a shell, then the measurement in a nested host per
/// vCPU count (once more if the nested host's own kernel fails).
fn outside() {
    let script = common::nested_host_script();
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
    for cpus in ["1", "4"] {
        let args = ["--inside", "--cpus", cpus].map(String::from);
        if common::in_nested_host(&args, 3600).1 {
            println!("  the nested host's kernel failed; measuring {cpus} vCPU(s) once more");
            common::in_nested_host(&args, 3600);
        }
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

fn qemu_cmd(kernel: &Path, initrd: &Path, cpus: u32) -> Command {
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

/// Both VMMs in turn, `RUNS` boots each with `cpus` vCPUs; prints medians and the ratios.
fn inside(cpus: u32) {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let control = common::temp_dir("nested-boot").join("vm.sock");
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
        b.extend(boot(
            "qemu",
            qemu_cmd(&kernel, &initrd, cpus),
            TIMEOUT,
            None,
        ));
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

/// `rounds` boots of vmdesk-vmm (or QEMU) with `cpus` vCPUs, each reported as it ends:
/// "soak-boot ended SECONDS", or "soak-boot hung" after its console's tail and (ours)
/// its vCPUs' registers.
fn soak_inside(rounds: usize, cpus: u32, qemu: bool) {
    let Some((kernel, initrd)) = kernel_and_initrd() else {
        return;
    };
    let control = common::temp_dir("nested-soak").join("vm.sock");
    let name = if qemu { "qemu" } else { "vmdesk-vmm" };
    for round in 0..rounds {
        let what = format!("{name}, {cpus} vCPU(s), boot {}", round + 1);
        let (cmd, socket) = if qemu {
            (qemu_cmd(&kernel, &initrd, cpus), None)
        } else {
            (
                ours(&kernel, &initrd, cpus, &control),
                Some(control.as_path()),
            )
        };
        match boot(&what, cmd, SOAK_TIMEOUT, socket) {
            Some(b) => println!("soak-boot ended {:.2}", b.whole),
            None => println!("soak-boot hung ({what})"),
        }
    }
}
