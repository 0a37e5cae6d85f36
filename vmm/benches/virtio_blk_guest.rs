//! virtio-blk through a Linux guest running fio, vmdesk-vmm beside QEMU/KVM (issue 17's
//! figures): the same kernel (target/assets/vmlinuz), the same initrd
//! (storage-bench-initrd.img: busybox, the storage modules and Debian's fio, built by
//! resources/scripts/test-assets.sh, whose /init has the bench mode `vmdesk.bench=1`), the
//! same image files, the same memory (512 MiB) and vCPUs (1; VIRTIO_BLK_GUEST_BENCH_CPUS=4
//! for 4). QEMU runs `-accel kvm -cpu host,-arch-capabilities` with
//! `-drive if=none,cache=writeback -device virtio-blk-pci` (and the std VGA, virtio tablet
//! and virtio-serial every vmdesk-vmm machine has).
//!
//! What the guest does: fio with `--direct=1 --ioengine=libaio` (the guest's page cache out
//! of it) on the whole /dev/vda, one job at a time, each for VIRTIO_BLK_GUEST_BENCH_SECS
//! seconds (default 5, `--time_based`): sequential 1 MiB reads, sequential 1 MiB writes and
//! random 4 KiB reads, each at queue depth 1 and 16. fio's own figures (KiB moved, its
//! runtime, IOPS; terse output) are the throughput: MiB/s for the 1 MiB jobs, IOPS for the
//! 4 KiB ones.
//!
//! What each job costs the host: the guest says "start JOB" and "end JOB" on COM1 around
//! each fio run, and the VMM's console (a pipe to this program) is read line by line; at
//! each of those lines this program reads (a) KVM's counters for the VM from debugfs,
//! `/sys/kernel/debug/kvm/PID-FD/` (`exits`, `io_exits`, `mmio_exits`, `halt_exits`: KVM
//! sums them over the VM's vCPUs), mounting debugfs first inside the nested test host, and
//! (b) the CPU time of the VMM's threads from /proc/PID/task/*/schedstat (nanoseconds on a
//! CPU; /proc's utime and stime count 10 ms ticks): the vCPU threads (ours `vcpuN`, QEMU's
//! `CPU N/KVM`) and all threads. Differences over the job, per MiB fio moved. The interval
//! also holds fio's start and exit in the guest (the same for both VMMs); the guest prints
//! fio's figures only after "end". Without debugfs (not root, elsewhere) the exits are "-".
//! A vCPU thread's time includes KVM's halt polling (the host kernel's setting, the same for
//! both VMMs), and QEMU's I/O runs on other threads (its main loop and thread pool), so the
//! all-threads figure is the one that holds the whole cost.
//!
//! Host caching: vmdesk-vmm opens images through the host page cache (no O_DIRECT), so
//! QEMU runs with `cache=writeback`, also through the page cache. The raw image is filled
//! with non-zero data first and the qcow2 image converted from it, so every cluster is
//! allocated and writes overwrite in place on both sides; reads read data.
//!
//! Rounds: VIRTIO_BLK_GUEST_BENCH_ROUNDS (default 3), each boots each VMM once per format
//! (raw, then qcow2; VIRTIO_BLK_GUEST_BENCH_FORMATS=raw for raw alone), which one first
//! alternating between rounds; medians over the rounds, ratios vmdesk/QEMU (for throughput
//! the goal is 1.0 or more; for the costs lower is better). VIRTIO_BLK_GUEST_BENCH_MIB sets
//! the image size (default 256); VIRTIO_BLK_GUEST_BENCH_VERBOSE=1 prints the guest's lines
//! and vmdesk-vmm's disk counters at its exit.
//!
//! `cargo bench -p vmm --bench virtio_blk_guest` (after resources/scripts/install-deps.sh
//! bench and test-assets.sh). On a kvm_pvm host (no guest kernels) each round and format
//! runs inside a nested test host of its own (resources/scripts/nested-host.sh, a few
//! minutes each, so the nested host's lock is not held long), images in its tmpfs; TCG sets
//! the pace there, so only the ratios mean anything. Elsewhere it runs here. Before
//! anything else it checks its parser on lines the guest printed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Vmm;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SAY: &str = "vmdesk-bench: ";
const MEMORY_MIB: u64 = 512;
/// A boot that has not powered off by then is a failure (a round of six 5 s jobs takes
/// about a minute in the nested host).
const TIMEOUT: Duration = Duration::from_secs(300);
/// What the inside run prints per job, for the outside run (and a person) to read.
const RECORD: &str = "blk-job ";
/// The jobs, in the guest's order: name, and whether its figure is IOPS (else MiB/s).
const JOBS: [(&str, bool); 6] = [
    ("seq-read-1m-qd1", false),
    ("seq-read-1m-qd16", false),
    ("seq-write-1m-qd1", false),
    ("seq-write-1m-qd16", false),
    ("rand-read-4k-qd1", true),
    ("rand-read-4k-qd16", true),
];
/// KVM's per-VM debugfs counters read around each job.
const KVM_STATS: [&str; 4] = ["exits", "io_exits", "mmio_exits", "halt_exits"];

/// Lines the guest printed under QEMU `-accel kvm` in the nested host (a 256 MiB qcow2
/// image, 2 s jobs, 4 vCPUs), from its first line on.
const GUEST_SAMPLE: &str = "\
vmdesk-storage: modules loaded for 6.1.0-57-cloud-amd64
vmdesk-bench: fio-3.33 size=268435456 secs=2 cpus=4
vmdesk-bench: start seq-read-1m-qd1
vmdesk-bench: end seq-read-1m-qd1
vmdesk-bench: result seq-read-1m-qd1 kib=124928 ms=2012 iops=60 err=0
vmdesk-bench: start seq-read-1m-qd16
vmdesk-bench: end seq-read-1m-qd16
vmdesk-bench: result seq-read-1m-qd16 kib=947200 ms=2024 iops=457 err=0
vmdesk-bench: start seq-write-1m-qd1
vmdesk-bench: end seq-write-1m-qd1
vmdesk-bench: result seq-write-1m-qd1 kib=297984 ms=2003 iops=145 err=0
vmdesk-bench: start seq-write-1m-qd16
vmdesk-bench: end seq-write-1m-qd16
vmdesk-bench: result seq-write-1m-qd16 kib=480256 ms=2035 iops=230 err=0
vmdesk-bench: start rand-read-4k-qd1
vmdesk-bench: end rand-read-4k-qd1
vmdesk-bench: result rand-read-4k-qd1 kib=2720 ms=2002 iops=339 err=0
vmdesk-bench: start rand-read-4k-qd16
vmdesk-bench: end rand-read-4k-qd16
vmdesk-bench: result rand-read-4k-qd16 kib=16084 ms=2042 iops=1969 err=0
vmdesk-bench: done
";

/// The host's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    /// `KVM_STATS`, when debugfs could be read.
    kvm: Option<[u64; KVM_STATS.len()]>,
    vcpu_ns: u64,
    all_ns: u64,
}

/// fio's figures for one job, as the guest printed them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FioResult {
    kib: u64,
    ms: u64,
    iops: f64,
}

/// One job of one boot: fio's figures and what the host counted meanwhile.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    vmm: String,
    format: String,
    job: String,
    fio: FioResult,
    /// Differences of `KVM_STATS` over the job.
    kvm: Option<[u64; KVM_STATS.len()]>,
    vcpu_ns: u64,
    all_ns: u64,
}

impl Job {
    fn mib(&self) -> f64 {
        self.fio.kib as f64 / 1024.0
    }

    /// MiB/s (from fio's KiB and runtime).
    fn mibs(&self) -> f64 {
        self.mib() / (self.fio.ms.max(1) as f64 / 1000.0)
    }

    fn per_mib(&self, v: u64) -> Option<f64> {
        (self.fio.kib > 0).then(|| v as f64 / self.mib())
    }

    /// The record line the inside run prints.
    fn line(&self) -> String {
        let kvm = match &self.kvm {
            Some(k) => KVM_STATS
                .iter()
                .zip(k)
                .map(|(n, v)| format!(" {n}={v}"))
                .collect::<String>(),
            None => " exits=-".into(),
        };
        format!(
            "{RECORD}vmm={} format={} job={} kib={} ms={} iops={}{kvm} vcpu_ns={} all_ns={}",
            self.vmm,
            self.format,
            self.job,
            self.fio.kib,
            self.fio.ms,
            self.fio.iops,
            self.vcpu_ns,
            self.all_ns
        )
    }

    fn parse(line: &str) -> Option<Job> {
        let rest = line.trim_end().split_once(RECORD)?.1;
        let f: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let num = |k: &str| f.get(k)?.parse::<u64>().ok();
        let kvm = KVM_STATS
            .iter()
            .map(|k| num(k))
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.try_into().ok());
        Some(Job {
            vmm: f.get("vmm")?.to_string(),
            format: f.get("format")?.to_string(),
            job: f.get("job")?.to_string(),
            fio: FioResult {
                kib: num("kib")?,
                ms: num("ms")?,
                iops: f.get("iops")?.parse().ok()?,
            },
            kvm,
            vcpu_ns: num("vcpu_ns")?,
            all_ns: num("all_ns")?,
        })
    }
}

/// `key=value` fields of a guest line.
fn fields(s: &str) -> BTreeMap<&str, &str> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// One boot's console lines (each with the counters read as it arrived, for "start" and
/// "end" lines) to its jobs; an error says what was missing or failed.
fn parse_boot(
    vmm: Vmm,
    format: &str,
    lines: &[(String, Option<Counters>)],
) -> Result<Vec<Job>, String> {
    let mut starts: BTreeMap<String, Counters> = BTreeMap::new();
    let mut ends: BTreeMap<String, Counters> = BTreeMap::new();
    let mut results: BTreeMap<String, FioResult> = BTreeMap::new();
    let mut done = false;
    for (line, counters) in lines {
        let Some(said) = line.trim_end().split_once(SAY).map(|(_, r)| r) else {
            continue;
        };
        let (word, rest) = said.split_once(' ').unwrap_or((said, ""));
        match (word, counters) {
            ("start", Some(c)) => {
                starts.insert(rest.trim().to_string(), c.clone());
            }
            ("end", Some(c)) => {
                ends.insert(rest.trim().to_string(), c.clone());
            }
            ("result", _) => {
                let (job, kv) = rest.split_once(' ').unwrap_or((rest, ""));
                let f = fields(kv);
                let r = (|| {
                    if f.get("err")? != &"0" {
                        return None;
                    }
                    Some(FioResult {
                        kib: f.get("kib")?.parse().ok()?,
                        ms: f.get("ms")?.parse().ok()?,
                        iops: f.get("iops")?.parse().ok()?,
                    })
                })()
                .ok_or_else(|| format!("a result line that does not parse: {said}"))?;
                results.insert(job.to_string(), r);
            }
            ("failed", _) | ("failed:", _) => return Err(format!("the guest said: {said}")),
            ("done", _) => done = true,
            _ => {}
        }
    }
    let mut jobs = Vec::new();
    for (job, fio) in results {
        let (Some(a), Some(b)) = (starts.get(&job), ends.get(&job)) else {
            return Err(format!("{job}: no start or end line"));
        };
        let kvm = match (a.kvm, b.kvm) {
            (Some(a), Some(b)) => Some(std::array::from_fn(|i| b[i].saturating_sub(a[i]))),
            _ => None,
        };
        jobs.push(Job {
            vmm: vmm.name().into(),
            format: format.into(),
            job,
            fio,
            kvm,
            vcpu_ns: b.vcpu_ns.saturating_sub(a.vcpu_ns),
            all_ns: b.all_ns.saturating_sub(a.all_ns),
        });
    }
    if !done || jobs.is_empty() {
        return Err(format!(
            "the guest did not finish (\"done\": {done}, {} jobs)",
            jobs.len()
        ));
    }
    Ok(jobs)
}

/// The parser on the recorded guest lines, as they would arrive with counters, and on a
/// run cut short; the record lines round trip.
fn check_parser() {
    let mut t = 0;
    let lines: Vec<(String, Option<Counters>)> = GUEST_SAMPLE
        .lines()
        .map(|l| {
            t += 1;
            let c = (l.contains("start ") || l.contains("end ")).then(|| Counters {
                kvm: Some([100 * t, 10 * t, 20 * t, 30 * t]),
                vcpu_ns: 1_000_000 * t,
                all_ns: 3_000_000 * t,
            });
            (l.to_string(), c)
        })
        .collect();
    let jobs = parse_boot(Vmm::Qemu, "qcow2", &lines).expect("the guest sample parses");
    assert_eq!(jobs.len(), JOBS.len(), "{jobs:?}");
    let r = jobs.iter().find(|j| j.job == "seq-read-1m-qd1").unwrap();
    assert!((r.mibs() - 122.0 / 2.012).abs() < 1e-9, "{r:?}");
    // Each end line comes one line after its start.
    assert_eq!(r.kvm, Some([100, 10, 20, 30]), "{r:?}");
    assert_eq!((r.vcpu_ns, r.all_ns), (1_000_000, 3_000_000));
    let k = jobs.iter().find(|j| j.job == "rand-read-4k-qd16").unwrap();
    assert!((k.fio.iops - 1969.0).abs() < 1e-9);
    assert!((k.per_mib(100).unwrap() - 100.0 / (16084.0 / 1024.0)).abs() < 1e-9);
    for j in &jobs {
        assert_eq!(Job::parse(&j.line()).as_ref(), Some(j), "{}", j.line());
    }
    let no_kvm = Job {
        kvm: None,
        ..r.clone()
    };
    assert_eq!(Job::parse(&no_kvm.line()), Some(no_kvm));
    let cut = &lines[..lines.len() - 1];
    assert!(parse_boot(Vmm::Ours, "raw", cut).is_err(), "no done line");
    let mut failed = lines.clone();
    failed.insert(
        5,
        (
            "vmdesk-bench: failed seq-read-1m-qd16: fio exit 1".into(),
            None,
        ),
    );
    assert!(parse_boot(Vmm::Ours, "raw", &failed).is_err());
    let mut broken = lines.clone();
    broken[4].0 = broken[4].0.replace("err=0", "err=5");
    assert_ne!(broken, lines);
    assert!(parse_boot(Vmm::Ours, "raw", &broken).is_err());
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Config {
    mib: u64,
    secs: u64,
    cpus: u64,
    rounds: usize,
    formats: Vec<String>,
}

impl Config {
    fn from_env() -> Config {
        let formats: Vec<String> = std::env::var("VIRTIO_BLK_GUEST_BENCH_FORMATS")
            .unwrap_or_else(|_| "raw,qcow2".into())
            .split(',')
            .filter(|f| matches!(*f, "raw" | "qcow2"))
            .map(String::from)
            .collect();
        Config {
            mib: env_or("VIRTIO_BLK_GUEST_BENCH_MIB", 256).max(16),
            secs: env_or("VIRTIO_BLK_GUEST_BENCH_SECS", 5).max(1),
            cpus: env_or("VIRTIO_BLK_GUEST_BENCH_CPUS", 1).clamp(1, 4),
            rounds: env_or("VIRTIO_BLK_GUEST_BENCH_ROUNDS", 3).max(1) as usize,
            formats: if formats.is_empty() {
                vec!["raw".into(), "qcow2".into()]
            } else {
                formats
            },
        }
    }

    fn cmdline(&self) -> String {
        format!(
            "console=ttyS0 panic=-1 vmdesk.bench=1 vmdesk.bench_secs={}",
            self.secs
        )
    }
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The kernel and initrd, or why this bench cannot run here (`nested`: for the nested
/// host, whose own assets are needed too).
fn prerequisites(nested: bool) -> Result<(PathBuf, PathBuf), String> {
    let assets = common::assets_dir();
    let (kernel, initrd) = (
        assets.join("vmlinuz"),
        assets.join("storage-bench-initrd.img"),
    );
    let mut need = vec![&kernel, &initrd];
    let nested_assets = [
        assets.join("vmlinuz-generic"),
        assets.join("nested-initrd.img"),
    ];
    if nested {
        need.extend(&nested_assets);
    }
    for p in need {
        if !p.is_file() {
            return Err(format!(
                "{} is missing (resources/scripts/test-assets.sh builds it)",
                p.display()
            ));
        }
    }
    for tool in ["qemu-img", "qemu-system-x86_64"] {
        if !on_path(tool) {
            return Err(format!(
                "{tool} is not installed (resources/scripts/install-deps.sh bench)"
            ));
        }
    }
    Ok((kernel, initrd))
}

/// Nanoseconds on a CPU of `pid`'s vCPU threads and of all its threads.
fn thread_ns(pid: u32) -> (u64, u64) {
    let (mut vcpu, mut all) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for t in tasks.flatten() {
        let Some(ns) = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name = name.trim();
        // Ours: vcpu0, vcpu1...; QEMU's: "CPU 0/KVM".
        if name.starts_with("vcpu") || (name.starts_with("CPU ") && name.ends_with("/KVM")) {
            vcpu += ns;
        }
        all += ns;
    }
    (vcpu, all)
}

/// KVM's debugfs directory, mounting debugfs first inside the nested test host (where
/// this runs as root in a throwaway system); `None` when it cannot be read.
fn kvm_debugfs() -> Option<PathBuf> {
    let dir = Path::new("/sys/kernel/debug/kvm");
    if !dir.is_dir() && std::env::var("VMDESK_NESTED").as_deref() == Ok("1") {
        let _ = Command::new("mount")
            .args(["-t", "debugfs", "none", "/sys/kernel/debug"])
            .status();
    }
    std::fs::read_dir(dir).ok().map(|_| dir.to_path_buf())
}

/// `KVM_STATS` of `pid`'s VM (its directory `PID-FD`; of several, the one that ran most).
fn kvm_stats(kvm: &Path, pid: u32) -> Option<[u64; KVM_STATS.len()]> {
    let prefix = format!("{pid}-");
    std::fs::read_dir(kvm)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let v = KVM_STATS
                .iter()
                .map(|s| {
                    std::fs::read_to_string(e.path().join(s))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()
                })
                .collect::<Option<Vec<u64>>>()?;
            v.try_into().ok()
        })
        .max_by_key(|v: &[u64; KVM_STATS.len()]| v[0])
}

fn counters(pid: u32, kvm: Option<&Path>) -> Counters {
    let kvm = kvm.and_then(|d| kvm_stats(d, pid));
    let (vcpu_ns, all_ns) = thread_ns(pid);
    Counters {
        kvm,
        vcpu_ns,
        all_ns,
    }
}

fn command(vmm: Vmm, cfg: &Config, k: &Path, i: &Path, img: &Path, format: &str) -> Command {
    let cpus = cfg.cpus.to_string();
    match vmm {
        Vmm::Ours => {
            let mut c = Command::new(common::vmm_bin());
            c.args(["--memory", &format!("{MEMORY_MIB}M"), "--cpus", &cpus])
                .args(["--vnc", "none", "--serial", "stdio", "--kernel"])
                .arg(k)
                .arg("--initrd")
                .arg(i)
                .args(["--cmdline", &cfg.cmdline(), "--disk"])
                .arg(format!("{},format={format}", img.display()));
            c
        }
        Vmm::Qemu => {
            let mut c = Command::new("qemu-system-x86_64");
            c.args([
                "-M",
                "pc",
                "-accel",
                "kvm",
                "-cpu",
                "host,-arch-capabilities",
            ])
            // Threads named ("CPU 0/KVM"), so the vCPU threads can be told apart.
            .args(["-name", "blk-guest,debug-threads=on"])
            .args(["-m", &MEMORY_MIB.to_string(), "-smp", &cpus])
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-vga",
                "std",
                "-net",
                "none",
            ])
            .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
            // The two PCI devices every vmdesk-vmm machine has, as common::qemu_reference.
            .args(["-device", "virtio-tablet-pci,addr=04.0"])
            .args(["-device", "virtio-serial-pci,addr=05.0,disable-legacy=on"])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=d0,format={format},cache=writeback",
                img.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=d0", "-kernel"])
            .arg(k)
            .arg("-initrd")
            .arg(i)
            .args(["-append", &cfg.cmdline()]);
            c
        }
    }
}

/// One boot: the guest's jobs with the host's counters around each.
fn boot(
    vmm: Vmm,
    cfg: &Config,
    (k, i): (&Path, &Path),
    img: &Path,
    format: &str,
    kvm: Option<&Path>,
    dir: &Path,
) -> Result<Vec<Job>, String> {
    let log = dir.join(format!("{}-{format}.log", vmm.name()));
    let mut child = command(vmm, cfg, k, i, img, format)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start {}: {e}", vmm.name()))?;
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let kvm_dir = kvm.map(Path::to_path_buf);
    let (tx, rx) = mpsc::channel();
    // The counters are read as the line arrives, in the reader itself.
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let c = (line.contains("vmdesk-bench: start ") || line.contains("vmdesk-bench: end "))
                .then(|| counters(pid, kvm_dir.as_deref()));
            if tx.send((line, c)).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(TIMEOUT.saturating_sub(start.elapsed())) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    let status = common::wait_exit(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let tail = || {
        let text: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        let from = text.len().saturating_sub(30);
        format!(
            "{}\n  its log: {}",
            text[from..].join("\n"),
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        )
    };
    if timed_out {
        return Err(format!(
            "did not power off in {TIMEOUT:?}; console:\n{}",
            tail()
        ));
    }
    match status {
        Some(s) if s.success() => {}
        s => return Err(format!("ended with {s:?}; console:\n{}", tail())),
    }
    if std::env::var("VIRTIO_BLK_GUEST_BENCH_VERBOSE").as_deref() == Ok("1") {
        for (l, _) in lines.iter().filter(|(l, _)| l.contains(SAY)) {
            println!("  guest: {l}");
        }
        // vmdesk-vmm's own account of the disk at exit (its counters).
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for l in text.lines().filter(|l| l.contains(": disk ")) {
            println!("  {}: {l}", vmm.name());
        }
    }
    parse_boot(vmm, format, &lines).map_err(|e| format!("{e}; console:\n{}", tail()))
}

/// A raw image of `mib` MiB filled with non-zero data, and a qcow2 image converted from it
/// when `qcow2`; returns the one asked for.
fn make_image(dir: &Path, mib: u64, qcow2: bool) -> Result<PathBuf, String> {
    let raw = dir.join("disk.raw");
    let run = |c: &mut Command| -> Result<(), String> {
        let out = c.output().map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("{c:?}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    if !raw.exists() {
        let mut f = std::fs::File::create(&raw).map_err(|e| e.to_string())?;
        let block: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect();
        for _ in 0..mib {
            f.write_all(&block).map_err(|e| e.to_string())?;
        }
        f.sync_all().map_err(|e| e.to_string())?;
    }
    if !qcow2 {
        return Ok(raw);
    }
    let q = dir.join("disk.qcow2");
    let _ = std::fs::remove_file(&q);
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q))?;
    Ok(q)
}

/// One round here: each format, both VMMs (`round` odd: ours first); prints a record line
/// per job and returns the jobs.
fn run_round(cfg: &Config, round: usize, formats: &[String]) -> Vec<Job> {
    let (k, i) = match prerequisites(false) {
        Ok(p) => p,
        Err(why) => {
            println!("virtio_blk_guest: cannot run here: {why}");
            return Vec::new();
        }
    };
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("virtio_blk_guest: cannot run here: /dev/kvm is not usable");
        return Vec::new();
    }
    let kvm = kvm_debugfs();
    if kvm.is_none() {
        println!(
            "  (KVM's debugfs counters are not readable here: no exit counts; run as root with debugfs mounted)"
        );
    }
    let dir = common::temp_dir("blk-guest");
    let order = if round % 2 == 1 {
        [Vmm::Ours, Vmm::Qemu]
    } else {
        [Vmm::Qemu, Vmm::Ours]
    };
    let mut jobs = Vec::new();
    for format in formats {
        let img = match make_image(&dir, cfg.mib, format == "qcow2") {
            Ok(p) => p,
            Err(e) => {
                println!("  round {round} {format}: making the image failed: {e}");
                continue;
            }
        };
        for vmm in order {
            let t = Instant::now();
            match boot(vmm, cfg, (&k, &i), &img, format, kvm.as_deref(), &dir) {
                Ok(js) => {
                    println!(
                        "  round {round} {format} {}: {} jobs in {:.0} s",
                        vmm.name(),
                        js.len(),
                        t.elapsed().as_secs_f64()
                    );
                    for j in &js {
                        println!("{}", j.line());
                    }
                    jobs.extend(js);
                }
                Err(e) => println!("  round {round} {format} {}: {e}", vmm.name()),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    jobs
}

fn main() {
    check_parser();
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cfg = Config::from_env();
    if args.iter().any(|a| a == "--inside") {
        let round = value("--round").and_then(|r| r.parse().ok()).unwrap_or(1);
        let formats = value("--format").map_or_else(|| cfg.formats.clone(), |f| vec![f]);
        run_round(&cfg, round, &formats);
        return;
    }
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if let Err(why) = prerequisites(kvm_pvm) {
        println!("virtio_blk_guest: cannot run here: {why}");
        return;
    }
    let started = Instant::now();
    let mut jobs = Vec::new();
    for round in 1..=cfg.rounds {
        if !kvm_pvm {
            jobs.extend(run_round(&cfg, round, &cfg.formats));
            continue;
        }
        // A nested host per round and format: each holds the machine's nested-host lock
        // for a few minutes only.
        for format in &cfg.formats {
            let args = [
                "--inside",
                "--round",
                &round.to_string(),
                "--format",
                format,
            ]
            .map(String::from);
            let (mut lines, mut failed) = common::in_nested_host(&args, 900);
            if failed {
                println!("  the nested host's own kernel failed; round {round} {format} once more");
                (lines, failed) = common::in_nested_host(&args, 900);
            }
            if failed {
                println!(
                    "  the nested host's own kernel failed again; round {round} {format} left out"
                );
            }
            jobs.extend(lines.iter().filter_map(|l| Job::parse(l)));
        }
    }
    report(&cfg, &jobs, kvm_pvm, started.elapsed());
}

fn median_of(
    jobs: &[Job],
    vmm: Vmm,
    format: &str,
    job: &str,
    f: impl Fn(&Job) -> Option<f64>,
) -> Option<f64> {
    common::median(
        jobs.iter()
            .filter(|j| j.vmm == vmm.name() && j.format == format && j.job == job)
            .filter_map(f)
            .collect(),
    )
}

fn report(cfg: &Config, jobs: &[Job], nested: bool, took: Duration) {
    let count = |vmm: Vmm| jobs.iter().filter(|j| j.vmm == vmm.name()).count();
    println!();
    println!(
        "virtio-blk through a Linux guest: fio {} s per job, O_DIRECT + libaio on /dev/vda, {} MiB images, \
         {MEMORY_MIB} MiB, {} vCPU(s), host page cache on both sides (QEMU cache=writeback); \
         median of {} rounds ({} vmdesk and {} qemu jobs){}; {:.0} s",
        cfg.secs,
        cfg.mib,
        cfg.cpus,
        cfg.rounds,
        count(Vmm::Ours),
        count(Vmm::Qemu),
        if nested {
            ", in the nested test host (TCG: only ratios mean anything)"
        } else {
            ""
        },
        took.as_secs_f64()
    );
    let show = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "-".into(),
    };
    let ratio = |o: Option<f64>, q: Option<f64>| match (o, q) {
        (Some(o), Some(q)) if q > 0.0 => format!("{:.2}", o / q),
        _ => "-".into(),
    };
    println!(
        "{:<27} {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
        "", "", "", "", "exits/MiB", "", "", "vCPU-thr", "ms/MiB", "", "all-thr", "ms/MiB", ""
    );
    println!(
        "{:<27} {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
        "workload",
        "vmdesk",
        "qemu",
        "ratio",
        "vmdesk",
        "qemu",
        "ratio",
        "vmdesk",
        "qemu",
        "ratio",
        "vmdesk",
        "qemu",
        "ratio"
    );
    for format in &cfg.formats {
        for (job, iops) in JOBS {
            let unit = if iops { "IOPS" } else { "MiB/s" };
            let m =
                |vmm: Vmm, f: &dyn Fn(&Job) -> Option<f64>| median_of(jobs, vmm, format, job, f);
            let speed = |j: &Job| Some(if iops { j.fio.iops } else { j.mibs() });
            let exits = |j: &Job| j.per_mib(j.kvm?[0]);
            let vcpu = |j: &Job| j.per_mib(j.vcpu_ns).map(|v| v / 1e6);
            let all = |j: &Job| j.per_mib(j.all_ns).map(|v| v / 1e6);
            let (so, sq) = (m(Vmm::Ours, &speed), m(Vmm::Qemu, &speed));
            let (eo, eq) = (m(Vmm::Ours, &exits), m(Vmm::Qemu, &exits));
            let (vo, vq) = (m(Vmm::Ours, &vcpu), m(Vmm::Qemu, &vcpu));
            let (ao, aq) = (m(Vmm::Ours, &all), m(Vmm::Qemu, &all));
            println!(
                "{:<27} {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
                format!("{format} {job} {unit}"),
                show(so, 1),
                show(sq, 1),
                ratio(so, sq),
                show(eo, 0),
                show(eq, 0),
                ratio(eo, eq),
                show(vo, 2),
                show(vq, 2),
                ratio(vo, vq),
                show(ao, 2),
                show(aq, 2),
                ratio(ao, aq),
            );
        }
    }
    println!(
        "ratios: vmdesk/qemu (throughput: >= 1.0 is the goal; costs per MiB: lower is better). \
         Exits: KVM's debugfs `exits` (all VM exits, in-kernel ones too) over the job, per MiB fio moved; \
         CPU: schedstat of the vCPU threads and of all the VMM's threads over the job"
    );
    // What the exits were, for reading the figures: those to user space and the halts.
    println!(
        "{:<27} {:>12} {:>12} {:>12} {:>12}",
        "exits/MiB by kind", "io+mmio vmd", "io+mmio qemu", "halt vmdesk", "halt qemu"
    );
    for format in &cfg.formats {
        for (job, _) in JOBS {
            let m =
                |vmm: Vmm, f: &dyn Fn(&Job) -> Option<f64>| median_of(jobs, vmm, format, job, f);
            let user = |j: &Job| j.per_mib(j.kvm?[1] + j.kvm?[2]);
            let halt = |j: &Job| j.per_mib(j.kvm?[3]);
            println!(
                "{:<27} {:>12} {:>12} {:>12} {:>12}",
                format!("{format} {job}"),
                show(m(Vmm::Ours, &user), 1),
                show(m(Vmm::Qemu, &user), 1),
                show(m(Vmm::Ours, &halt), 1),
                show(m(Vmm::Qemu, &halt), 1),
            );
        }
    }
}
