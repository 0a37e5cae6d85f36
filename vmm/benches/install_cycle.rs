//! The install-to-disk cycle of app/tests/install_disk.rs, timed beside QEMU (issue 14's
//! figures): the installer CD made from Debian's isolinux, the cloud kernel and
//! install-initrd.img (test-assets.sh) boots, partitions an empty 64 MiB raw virtio disk,
//! writes an ext2 filesystem with the kernel and initrd, installs extlinux and powers off;
//! then the machine starts again from the disk alone (SeaBIOS, the MBR, extlinux, the
//! kernel) to the installed system's marker on COM1 and its power-off. vmdesk-vmm and QEMU
//! (`-accel kvm -cpu host`, the same ISO, memory, disk format and boot order: the disk
//! first, then the CD) take turns, `RUNS` cycles each; medians, and the ratio.
//!
//! Also the disk bytes the installer wrote and their throughput, from vmdesk-vmm's own
//! counters (the `vmdesk-vmm: disk 0 …` line it prints at exit): write requests, bytes,
//! and bytes per second of time spent in the backend's writes.
//!
//! `cargo bench -p vmm --bench install_cycle`. On a kvm_pvm host the measuring runs inside
//! the nested test host (resources/scripts/nested-host.sh), where TCG sets the pace: only
//! the ratio means anything there.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const MEMORY_MIB: u64 = 256;
const DISK_BYTES: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(600);
const INSTALLED: &str = "vmdesk-install: installed";
const BOOTED: &str = "vmdesk-install: booted from disk";

fn main() {
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if std::env::args().any(|a| a == "--inside") || !kvm_pvm {
        inside();
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scripts/nested-host.sh");
    let status = Command::new(&script)
        .args(["--timeout", "3000", "--"])
        .arg(std::env::current_exe().expect("this benchmark's path"))
        .arg("--inside")
        .status()
        .expect("run the benchmark in the nested host");
    if !status.success() {
        println!("  the measurement in the nested host failed ({status})");
    }
}

#[derive(Clone, Copy)]
enum Vmm {
    Ours,
    Qemu,
}

/// One VMM's command for the machine with `disk` and, when given, the CD `iso`; COM1 to
/// `serial`.
fn command(vmm: Vmm, disk: &Path, iso: Option<&Path>, serial: &Path) -> Command {
    match vmm {
        Vmm::Ours => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"));
            c.args(["--memory", &format!("{MEMORY_MIB}M"), "--vnc", "none"])
                .arg("--serial")
                .arg(format!("file:{}", serial.display()))
                .arg("--disk")
                .arg(format!("{},format=raw", disk.display()));
            if let Some(iso) = iso {
                // As vmdesk starts a VM with a CD and a disk.
                c.arg("--cdrom").arg(iso).args(["--boot", "disk,cdrom"]);
            }
            c
        }
        Vmm::Qemu => {
            let mut c = Command::new("qemu-system-x86_64");
            c.args(["-M", "pc", "-accel", "kvm", "-cpu", "host", "-nodefaults"])
                .args(["-m", &MEMORY_MIB.to_string()])
                .args(["-vga", "std", "-display", "none", "-net", "none"])
                .arg("-serial")
                .arg(format!("file:{}", serial.display()))
                .arg("-drive")
                .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
                .args(["-device", "virtio-blk-pci,drive=d0,bootindex=1"]);
            if let Some(iso) = iso {
                c.arg("-drive")
                    .arg(format!(
                        "file={},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
                        iso.display()
                    ))
                    .args(["-device", "ide-cd,drive=cd0,bus=ide.1,unit=0,bootindex=2"]);
            }
            c
        }
    }
}

/// Runs `cmd` to its exit; its wall time and stderr, or `None` (after saying why) when it
/// did not end well with `marker` on COM1.
fn timed(name: &str, mut cmd: Command, serial: &Path, marker: &str) -> Option<(f64, String)> {
    let err = serial.with_extension("err");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let status = common::wait_exit(&mut child, TIMEOUT);
    let secs = start.elapsed().as_secs_f64();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let console = std::fs::read_to_string(serial).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    if status.is_some_and(|s| s.success()) && console.contains(marker) {
        return Some((secs, stderr));
    }
    let tail: Vec<&str> = console.lines().rev().take(10).collect();
    println!(
        "  {name}: no {marker:?} ({status:?} after {secs:.1} s); COM1 ended:\n    {}\n  stderr: {stderr}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
    );
    None
}

struct Cycle {
    install: f64,
    boot: f64,
    /// vmdesk-vmm's disk line of the install run.
    disk_line: Option<String>,
}

fn cycle(vmm: Vmm, name: &str, dir: &Path, iso: &Path, n: usize) -> Option<Cycle> {
    let disk = dir.join(format!("{name}-{n}.raw"));
    vmm::disk::create_image(&disk, "raw".parse().unwrap(), DISK_BYTES, true).unwrap();
    let serial = dir.join(format!("{name}-{n}-install.txt"));
    let (install, stderr) = timed(
        name,
        command(vmm, &disk, Some(iso), &serial),
        &serial,
        INSTALLED,
    )?;
    let serial = dir.join(format!("{name}-{n}-boot.txt"));
    let (boot, _) = timed(name, command(vmm, &disk, None, &serial), &serial, BOOTED)?;
    let _ = std::fs::remove_file(&disk);
    Some(Cycle {
        install,
        boot,
        disk_line: stderr
            .lines()
            .find(|l| l.starts_with("vmdesk-vmm: disk 0 "))
            .map(str::to_owned),
    })
}

/// "wrote N bytes in R requests (T ms in the backend, …)": (N, R, T).
fn written(line: &str) -> Option<(u64, u64, f64)> {
    let rest = line.split(", wrote ").nth(1)?;
    let mut w = rest.split_whitespace();
    let bytes = w.next()?.parse().ok()?;
    let requests = w.nth(2)?.parse().ok()?;
    let ms = w.nth(1)?.trim_start_matches('(').parse().ok()?;
    Some((bytes, requests, ms))
}

fn inside() {
    let test = "install_cycle";
    let Some((kernel, initrd)) = common::linux_assets(test, "install-initrd.img") else {
        return;
    };
    let dir: PathBuf = common::temp_dir("install-cycle");
    let append = format!("{} vmdesk.mode=install", common::LINUX_CMDLINE);
    let Some(iso) = common::isolinux_cd(test, &dir, "installer", &kernel, &initrd, &append) else {
        return;
    };
    println!(
        "install to an empty 64 MiB raw virtio disk, then boot it to the marker: {MEMORY_MIB} MiB, 1 vCPU, median of {RUNS} (alternating):"
    );
    let (mut ours, mut qemu) = (Vec::new(), Vec::new());
    for n in 0..RUNS {
        ours.extend(cycle(Vmm::Ours, "vmdesk-vmm", &dir, &iso, n));
        qemu.extend(cycle(Vmm::Qemu, "qemu", &dir, &iso, n));
    }
    let summary = |name: &str, v: &[Cycle]| {
        let m = |f: fn(&Cycle) -> f64| common::median(v.iter().map(f).collect());
        let (Some(install), Some(boot), Some(whole)) =
            (m(|c| c.install), m(|c| c.boot), m(|c| c.install + c.boot))
        else {
            println!("  {name:10}  no complete cycles");
            return None;
        };
        println!(
            "  {name:10}  install (write) {install:7.2} s   boot from disk to marker {boot:7.2} s   cycle {whole:7.2} s   ({} cycles)",
            v.len()
        );
        Some((install, boot, whole))
    };
    let a = summary("vmdesk-vmm", &ours);
    let b = summary("qemu", &qemu);
    if let (Some(o), Some(q)) = (a, b) {
        println!(
            "  ratio vmdesk/qemu: install {:.3}x   boot {:.3}x   cycle {:.3}x",
            o.0 / q.0,
            o.1 / q.1,
            o.2 / q.2
        );
    }
    // The installer's writes, from vmdesk-vmm's counters.
    let w: Vec<(u64, u64, f64)> = ours
        .iter()
        .filter_map(|c| c.disk_line.as_deref().and_then(written))
        .collect();
    let bytes = common::median(w.iter().map(|x| x.0 as f64).collect());
    let requests = common::median(w.iter().map(|x| x.1 as f64).collect());
    let ms = common::median(w.iter().map(|x| x.2).collect());
    let installs = common::median(ours.iter().map(|c| c.install).collect());
    if let (Some(bytes), Some(requests), Some(ms), Some(install)) = (bytes, requests, ms, installs)
    {
        const MIB: f64 = (1 << 20) as f64;
        println!(
            "  vmdesk-vmm's counters, install run: {:.1} MiB written in {requests:.0} requests; \
             {:.1} MiB/s while in the backend ({ms:.0} ms), {:.2} MiB/s over the install's wall time",
            bytes / MIB,
            bytes / MIB / (ms / 1e3),
            bytes / MIB / install
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
