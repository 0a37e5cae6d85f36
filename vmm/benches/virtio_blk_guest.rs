//! virtio-blk throughput through a Linux guest, vmdesk-vmm beside QEMU/KVM: the same
//! kernel, the same storage initrd in its bench mode (`vmdesk.bench=1`, written by
//! resources/scripts/test-assets.sh) and the same image file, one VM boot per round.
//!
//! The guest times, with busybox dd and O_DIRECT (so the guest's page cache is out of it),
//! a sequential read of the whole disk in 1 MiB blocks, a sequential write of it, and 1000
//! scattered 4 KiB reads (a prime stride over the disk). Busybox has no tool that reads
//! many offsets in one process, so each 4 KiB read is one dd process; the guest also times
//! the same loop with count=0 and we subtract it. That subtraction is the method's limit:
//! the spawn cost is several times the read itself, so the IOPS figure carries its noise.
//!
//! Host caching: vmdesk-vmm opens images through the host page cache (no O_DIRECT), so
//! QEMU runs with `cache=writeback` (its default, also through the page cache) rather than
//! `cache=none`. Raw images are filled with data first and qcow2 images are converted from
//! them, so every cluster is allocated and the writes overwrite in place on both sides.
//!
//! Needs hardware-backed KVM: under kvm_pvm, without /dev/kvm or without the assets it
//! prints one line saying why and exits 0. Before anything else it checks its parser on
//! lines the guest printed under QEMU TCG.
//!
//! `cargo bench -p vmm --bench virtio_blk_guest` (VIRTIO_BLK_GUEST_BENCH_MIB sets the image
//! size, default 256; VIRTIO_BLK_GUEST_BENCH_ROUNDS the rounds, default 3).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CMDLINE: &str = "console=ttyS0 panic=-1 vmdesk.bench=1";
const SAY: &str = "vmdesk-bench: ";
/// A round that has not powered off by then is a failure (TCG took 25 s for 16 MiB).
const TIMEOUT: Duration = Duration::from_secs(300);

/// Lines the guest printed under `qemu-system-x86_64 -accel tcg` on a 16 MiB raw image
/// (spawn_us above us: under TCG the dd spawn swamps the read).
const TCG_SAMPLE: &str = "\
vmdesk-storage: modules loaded for 6.1.0-56-cloud-amd64
vmdesk-bench: method o_direct size=16777216
vmdesk-bench: seq-read-1m bytes=16777216 us=57987
vmdesk-bench: seq-write-1m bytes=16777216 us=80873
vmdesk-bench: rand-read-4k ops=1000 us=7825601 spawn_us=7985768
vmdesk-bench: done
";

/// One guest run's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// MiB/s.
    seq_read: f64,
    /// MiB/s.
    seq_write: f64,
    /// Reads per second after the spawn loop is subtracted; `None` when the subtraction
    /// left nothing (the reads drowned in the spawn cost's noise).
    rand_read: Option<f64>,
}

/// `key=value` from a bench line's fields.
fn field(fields: &[&str], key: &str) -> Option<u64> {
    fields
        .iter()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The guest's console text to one sample; an error says what was missing.
fn parse_console(console: &str) -> Result<Sample, String> {
    let (mut read, mut write, mut rand, mut done) = (None, None, None, false);
    for line in console.lines() {
        let Some(rest) = line.trim_end().split_once(SAY).map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let mibs = |f: &[&str]| -> Option<f64> {
            let us = field(f, "us")?;
            (us > 0).then(|| {
                field(f, "bytes").unwrap_or(0) as f64 / (1 << 20) as f64 / (us as f64 / 1e6)
            })
        };
        match fields.first().copied() {
            Some("seq-read-1m") => read = mibs(&fields),
            Some("seq-write-1m") => write = mibs(&fields),
            Some("rand-read-4k") => {
                if let (Some(ops), Some(us), Some(spawn)) = (
                    field(&fields, "ops"),
                    field(&fields, "us"),
                    field(&fields, "spawn_us"),
                ) {
                    rand = Some((us > spawn).then(|| ops as f64 / ((us - spawn) as f64 / 1e6)));
                }
            }
            Some("done") => done = true,
            _ => {}
        }
    }
    match (read, write, rand, done) {
        (Some(seq_read), Some(seq_write), Some(rand_read), true) => Ok(Sample {
            seq_read,
            seq_write,
            rand_read,
        }),
        _ => Err(format!(
            "the guest printed no complete set of \"{SAY}\" lines (read {read:?}, write {write:?}, \
             4k {rand:?}, done {done})"
        )),
    }
}

/// The parser on the recorded TCG lines, and on a run cut short.
fn check_parser() {
    let s = parse_console(TCG_SAMPLE).expect("TCG sample parses");
    assert!((s.seq_read - 16.0 / 0.057987).abs() < 1e-6, "{s:?}");
    assert!((s.seq_write - 16.0 / 0.080873).abs() < 1e-6, "{s:?}");
    assert_eq!(
        s.rand_read, None,
        "spawn loop slower than the reads: no figure"
    );
    let kvm_like = TCG_SAMPLE.replace("spawn_us=7985768", "spawn_us=7325601");
    let s = parse_console(&kvm_like).unwrap();
    assert!((s.rand_read.unwrap() - 2000.0).abs() < 1e-6, "{s:?}");
    let cut: String = TCG_SAMPLE.lines().take(4).collect::<Vec<_>>().join("\n");
    assert!(parse_console(&cut).is_err());
    assert!(parse_console("vmdesk-storage: disk written\n").is_err());
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the bench, if it cannot.
fn cannot_run(kernel: &Path, initrd: &Path) -> Option<String> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some("KVM here is kvm_pvm (software-assisted): a guest kernel cannot run; this bench needs hardware-backed KVM".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("/dev/kvm is not usable here ({e})"));
    }
    for p in [kernel, initrd] {
        if !p.is_file() {
            return Some(format!(
                "{} is missing (resources/scripts/test-assets.sh builds it)",
                p.display()
            ));
        }
    }
    // An initrd written before the bench mode existed would run the test mode (and
    // mke2fs the image): look for the mode in its /init first.
    let has_mode = Command::new("sh")
        .arg("-c")
        .arg("zcat \"$0\" | grep -a -q 'vmdesk.bench=1'")
        .arg(initrd)
        .status()
        .is_ok_and(|s| s.success());
    if !has_mode {
        return Some(format!(
            "{} has no bench mode (older than it): remove it and run resources/scripts/test-assets.sh",
            initrd.display()
        ));
    }
    for tool in ["qemu-img", "qemu-system-x86_64"] {
        if !on_path(tool) {
            return Some(format!(
                "{tool} is not installed (resources/scripts/install-deps.sh bench)"
            ));
        }
    }
    None
}

/// Waits for the VM to power off; its console text, or why not.
fn finish(mut child: Child, console: &Path, who: &str) -> Result<String, String> {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(console).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(text),
        Some(s) => Err(format!("{who} exited with {s}:\n{text}")),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{who}: the guest did not power off in {TIMEOUT:?}:\n{text}"
            ))
        }
    }
}

fn run_vmdesk(k: &Path, i: &Path, img: &Path, format: &str, dir: &Path) -> Result<Sample, String> {
    let console = dir.join("com1-vmdesk.txt");
    let _ = std::fs::remove_file(&console);
    let child = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"))
        .args(["--memory", "512M", "--vnc", "none", "--kernel"])
        .arg(k)
        .arg("--initrd")
        .arg(i)
        .args(["--cmdline", CMDLINE, "--disk"])
        .arg(format!("{},format={format}", img.display()))
        .arg("--serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start vmdesk-vmm: {e}"))?;
    parse_console(&finish(child, &console, "vmdesk-vmm")?)
}

fn run_qemu(k: &Path, i: &Path, img: &Path, format: &str, dir: &Path) -> Result<Sample, String> {
    let console = dir.join("com1-qemu.txt");
    let out = File::create(&console).map_err(|e| e.to_string())?;
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-enable-kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-m",
            "512",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(k)
        .arg("-initrd")
        .arg(i)
        .args(["-append", CMDLINE, "-drive"])
        .arg(format!(
            "file={},format={format},if=virtio,cache=writeback",
            img.display()
        ))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start qemu-system-x86_64: {e}"))?;
    parse_console(&finish(child, &console, "qemu-system-x86_64")?)
}

struct Row {
    name: String,
    unit: &'static str,
    ours: Option<f64>,
    qemu: Option<f64>,
}

fn make_images(dir: &Path, mib: u64) -> Result<(PathBuf, PathBuf), String> {
    let raw = dir.join("disk.raw");
    let qcow2 = dir.join("disk.qcow2");
    let run = |c: &mut Command| -> Result<(), String> {
        let out = c.output().map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("{c:?}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg(format!("{mib}M")))?;
    // Fully allocated and non-zero, so reads are real reads.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .map_err(|e| e.to_string())?;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    for _ in 0..mib {
        f.write_all(&block).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())?;
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2))?;
    Ok((raw, qcow2))
}

fn main() {
    check_parser();
    let assets = std::env::var_os("VMDESK_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/assets"));
    let (kernel, initrd) = (assets.join("vmlinuz"), assets.join("storage-initrd.img"));
    if let Some(why) = cannot_run(&kernel, &initrd) {
        println!("virtio_blk_guest: cannot run here: {why}");
        return;
    }
    let mib = env_or("VIRTIO_BLK_GUEST_BENCH_MIB", 256).max(1);
    let rounds = env_or("VIRTIO_BLK_GUEST_BENCH_ROUNDS", 3).max(1) as usize;
    let dir = std::env::temp_dir().join(format!("vmdesk-bench-blk-guest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (raw, qcow2) = match make_images(&dir, mib) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("making the images: {e}");
        }
    };

    let mut rows = Vec::new();
    for (format, img) in [("raw", &raw), ("qcow2", &qcow2)] {
        let (mut ours, mut qemu) = (Vec::new(), Vec::new());
        // Alternating rounds, so load from elsewhere on the machine hits both alike.
        for round in 0..rounds {
            for (who, list) in [("vmdesk", &mut ours), ("qemu", &mut qemu)] {
                let r = if who == "vmdesk" {
                    run_vmdesk(&kernel, &initrd, img, format, &dir)
                } else {
                    run_qemu(&kernel, &initrd, img, format, &dir)
                };
                match r {
                    Ok(s) => list.push(s),
                    Err(e) => eprintln!("{format} round {round} {who}: {e}"),
                }
            }
        }
        type Pick = fn(&Sample) -> Option<f64>;
        let picks: [(&str, &'static str, Pick); 3] = [
            ("seq read 1M", "MiB/s", |s| Some(s.seq_read)),
            ("seq write 1M", "MiB/s", |s| Some(s.seq_write)),
            ("rand read 4k", "IOPS", |s| s.rand_read),
        ];
        for (name, unit, pick) in picks {
            rows.push(Row {
                name: format!("{format} {name}"),
                unit,
                ours: median(ours.iter().filter_map(pick).collect()),
                qemu: median(qemu.iter().filter_map(pick).collect()),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "virtio-blk through a Linux guest, {mib} MiB images, O_DIRECT in the guest, host page cache \
         on both sides (QEMU cache=writeback, as vmdesk-vmm opens images), median of {rounds} rounds"
    );
    println!(
        "4k reads: one busybox dd process per read, the spawn loop's time subtracted (noisy; \
         '-' when nothing was left)"
    );
    println!(
        "{:<20} {:>14} {:>14} {:>8}",
        "workload", "vmdesk", "qemu", "ratio"
    );
    let show = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:.1} {unit}"),
        None => "-".to_string(),
    };
    for r in &rows {
        let ratio = match (r.ours, r.qemu) {
            (Some(o), Some(q)) if q > 0.0 => format!("{:.2}", o / q),
            _ => "-".to_string(),
        };
        println!(
            "{:<20} {:>14} {:>14} {:>8}",
            r.name,
            show(r.ours, r.unit),
            show(r.qemu, r.unit),
            ratio
        );
    }
}
