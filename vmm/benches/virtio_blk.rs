//! virtio-blk throughput at device level: the test plays the guest driver (rings in guest
//! memory, the notify register written through the MMIO bus, completions read from the
//! used ring), no vCPU. Beside it, `qemu-img bench` on the same file when qemu-img is
//! installed: the same host file, the same page cache, one request in flight. Both a raw
//! image and a qcow2 image (`qemu-img convert` of the raw one, so every cluster is
//! allocated and writes overwrite in place on both sides).
//!
//! "vmdesk" is the VMM's own time per request: the notify register write, during which
//! the device pops the chain, does the I/O and completes it (the device runs requests
//! synchronously on the notifying thread). Building the chain and reaping the used ring
//! are the guest driver's work on the guest's CPU, and qemu-img's figure has no driver in
//! it either; the "+driver" column counts them too, for scale.
//!
//! Workloads: sequential 1 MiB reads and writes (each request 128 buffers of 8 KiB, as
//! a guest block layer hands them), and 4 KiB reads at scattered offsets (a large prime
//! stride, because `qemu-img bench` has no random mode; both sides use the same offsets).
//!
//! `cargo bench -p vmm --bench virtio_blk` (VIRTIO_BLK_BENCH_MIB sets the image size,
//! default 256; VIRTIO_BLK_BENCH_ROUNDS the rounds, default 11).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm::bus::Bus;
use vmm::disk::{BlockBackend, ImageFormat, open_image};
use vmm::irq::RecordingIrq;
use vmm::memory::GuestMem;
use vmm::pci::PciRoot;
use vmm::virtio::block::VirtioBlock;
use vmm::virtio::pci::{VirtioPci, common};
use vmm::virtio::testing::DriverRing;

const BAR: u64 = 0xfebf_0000;
const DEVFN: u8 = 4 << 3;
const HDR: u64 = 0x10_0000;
const STATUS: u64 = 0x10_1000;
const DATA: u64 = 0x20_0000;
const MIB: u64 = 1 << 20;
/// Rounds per workload (VIRTIO_BLK_BENCH_ROUNDS overrides); medians are reported.
const ROUNDS: usize = 11;
/// Each sequential pass moves this many times the image (about 1 GiB by default), so a
/// pass lasts long enough that qemu-img's millisecond timer and scheduling noise on a
/// shared machine stay small against it.
const SWEEPS: u64 = 4;
const STRIDE: u64 = 4096 * 7919;
/// Data buffer size: 1 MiB requests become 128 buffers (within SEG_MAX, as Linux splits
/// them by the limits the device advertises).
const SEG: u64 = 8192;

struct Driver {
    mmio: Arc<Bus>,
    mem: GuestMem,
    ring: DriverRing,
    kick: u64,
    _root: PciRoot,
}

impl Driver {
    fn new(backend: Box<dyn BlockBackend>) -> Driver {
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(Arc::new(Bus::new()), mmio.clone());
        let disk = VirtioBlock::new(backend, "bench");
        let f = VirtioPci::new(
            Arc::new(Mutex::new(disk)),
            mem.clone(),
            RecordingIrq::new(),
            None,
        );
        root.add(DEVFN, Arc::new(Mutex::new(f)));
        root.config_write(0, DEVFN, 0x10, &(BAR as u32).to_le_bytes());
        root.config_write(0, DEVFN, 4, &6u16.to_le_bytes());
        let w = |off: u64, v: &[u8]| assert!(mmio.write(BAR + off, v));
        w(common::DEVICE_STATUS, &[0]);
        w(common::DEVICE_STATUS, &[3]);
        w(common::DRIVER_FEATURE_SELECT, &1u32.to_le_bytes());
        w(common::DRIVER_FEATURE, &1u32.to_le_bytes());
        w(common::DEVICE_STATUS, &[0xb]);
        let ring = DriverRing::new(&mem, 0x1_0000, 256);
        w(common::QUEUE_SELECT, &0u16.to_le_bytes());
        w(common::QUEUE_DESC, &ring.desc.to_le_bytes());
        w(common::QUEUE_DRIVER, &ring.avail.to_le_bytes());
        w(common::QUEUE_DEVICE, &ring.used.to_le_bytes());
        w(common::QUEUE_ENABLE, &1u16.to_le_bytes());
        w(common::DEVICE_STATUS, &[0xf]);
        Driver {
            mmio,
            mem,
            ring,
            kick: BAR + 0x3000,
            _root: root,
        }
    }

    /// One request of `len` bytes at byte `offset`, split into [`SEG`]-sized buffers.
    /// Returns the VMM's time for it: the notify write, during which the device takes the
    /// chain, does the I/O and completes it (building the chain and reaping the used ring
    /// are the guest driver's work, which qemu-img's figure does not include either).
    fn request(&mut self, write: bool, offset: u64, len: u64) -> Duration {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&u32::from(write).to_le_bytes());
        h[8..16].copy_from_slice(&(offset / 512).to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        let mut bufs = vec![(HDR, 16, false)];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(SEG);
            bufs.push((DATA + at, n as u32, !write));
            at += n;
        }
        bufs.push((STATUS, 1, true));
        self.ring.add_chain(&self.mem, &bufs);
        let t = Instant::now();
        self.mmio.write(self.kick, &0u16.to_le_bytes());
        let device = t.elapsed();
        let used = self.ring.take_used(&self.mem);
        assert_eq!(used.len(), 1);
        let st: u8 = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        assert_eq!(st, 0, "request failed");
        device
    }
}

impl Driver {
    /// A FLUSH request: our writes (and imago's metadata) are on disk and the page cache
    /// is clean before the other side runs.
    fn flush(&mut self) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&4u32.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        self.ring
            .add_chain(&self.mem, &[(HDR, 16, false), (STATUS, 1, true)]);
        self.mmio.write(self.kick, &0u16.to_le_bytes());
        assert_eq!(self.ring.take_used(&self.mem).len(), 1);
        let st: u8 = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        assert_eq!(st, 0, "flush failed");
    }
}

struct Row {
    name: String,
    ours: f64,
    qemu: Option<f64>,
    /// The median of each round's ours/qemu: the two sides of a round run back to back,
    /// so this follows the machine's load better than the ratio of the medians.
    paired: Option<f64>,
    /// The spread of those per-round ratios (lowest, highest).
    spread: Option<(f64, f64)>,
    /// Ours with the guest driver's share (building chains, reaping completions) counted.
    with_driver: f64,
    unit: &'static str,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn qemu_img_bench(path: &Path, format: ImageFormat, args: &[&str]) -> Option<Duration> {
    let out = Command::new("qemu-img")
        .arg("bench")
        .args(["-f", &format.to_string(), "-t", "writeback", "-d", "1"])
        .args(args)
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "qemu-img bench {args:?} failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let secs: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Run completed in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(secs))
}

/// The three workloads on one image, ours and qemu-img's in alternating rounds (so load
/// from elsewhere on the machine hits both alike); medians.
fn measure(path: &Path, format: ImageFormat, mib: u64, rounds: usize, has_qemu: bool) -> Vec<Row> {
    let size = mib * MIB;
    let backend = open_image(path, Some(format), false).unwrap();
    let mut d = Driver::new(backend);
    // Requests per sequential pass; offsets wrap as qemu-img bench wraps them (modulo the
    // image size less the buffer), so both sides touch the same bytes.
    let count = SWEEPS * mib;
    let wrap = |off: u64, step: u64, len: u64| (off + step) % (size - len);

    // Warm the page cache (and imago's metadata cache) the same way for both sides.
    for i in 0..mib {
        d.request(false, i * MIB, MIB);
    }

    let n4k: u64 = 40_000;
    let mut ours = [Vec::new(), Vec::new(), Vec::new()];
    let mut with_driver = [Vec::new(), Vec::new(), Vec::new()];
    let mut qemu = [Vec::new(), Vec::new(), Vec::new()];
    // One pass: (requests per second of VMM time, requests per second with the driver's
    // share too).
    let pass = |d: &mut Driver, write: bool, n: u64, step: u64, len: u64| {
        let t = Instant::now();
        let mut device = Duration::ZERO;
        let mut off = 0;
        for _ in 0..n {
            device += d.request(write, off, len);
            off = wrap(off, step, len);
        }
        (
            n as f64 / device.as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64(),
        )
    };
    for _ in 0..rounds {
        let (dev, all) = pass(&mut d, false, count, MIB, MIB);
        ours[0].push(dev);
        with_driver[0].push(all);
        let (dev, all) = pass(&mut d, true, count, MIB, MIB);
        ours[1].push(dev);
        with_driver[1].push(all);
        // Outside the timing: qemu-img flushes when it closes the image, so each side's
        // write pass starts from a clean page cache.
        d.flush();
        let (dev, all) = pass(&mut d, false, n4k, STRIDE, 4096);
        ours[2].push(dev);
        with_driver[2].push(all);
        if !has_qemu {
            continue;
        }
        let c = count.to_string();
        if let Some(t) = qemu_img_bench(path, format, &["-c", &c, "-s", "1M"]) {
            qemu[0].push(count as f64 / t.as_secs_f64());
        }
        // A non-zero pattern: zeroes would let `qemu-img convert` (and qcow2) leave
        // clusters unallocated, and the two sides would no longer do the same work.
        let w = ["-w", "--pattern=90", "-c", &c, "-s", "1M"];
        if let Some(t) = qemu_img_bench(path, format, &w) {
            qemu[1].push(count as f64 / t.as_secs_f64());
        }
        let stride = STRIDE.to_string();
        let n = n4k.to_string();
        if let Some(t) = qemu_img_bench(path, format, &["-c", &n, "-s", "4k", "-S", &stride]) {
            qemu[2].push(n4k as f64 / t.as_secs_f64());
        }
    }
    drop(d);
    let names = [
        ("seq read 1 MiB", "MiB/s"),
        ("seq write 1 MiB", "MiB/s"),
        ("4 KiB scattered read", "IOPS"),
    ];
    names
        .into_iter()
        .enumerate()
        .map(|(i, (name, unit))| {
            // Rounds where qemu-img failed have no pair.
            let ratios: Vec<f64> = if qemu[i].len() == ours[i].len() {
                ours[i].iter().zip(&qemu[i]).map(|(o, q)| o / q).collect()
            } else {
                Vec::new()
            };
            let spread = (!ratios.is_empty()).then(|| {
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                (lo, hi)
            });
            Row {
                name: format!("{format} {name}"),
                ours: median(std::mem::take(&mut ours[i])),
                qemu: (!qemu[i].is_empty()).then(|| median(std::mem::take(&mut qemu[i]))),
                paired: (!ratios.is_empty()).then(|| median(ratios)),
                spread,
                with_driver: median(std::mem::take(&mut with_driver[i])),
                unit,
            }
        })
        .collect()
}

fn main() {
    let mib = env_or("VIRTIO_BLK_BENCH_MIB", 256);
    let rounds = env_or("VIRTIO_BLK_BENCH_ROUNDS", ROUNDS as u64).max(1) as usize;
    let size = mib * MIB;
    let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let raw = dir.join(format!("virtio-blk-bench-{}.raw", std::process::id()));
    let qcow2 = raw.with_extension("qcow2");
    {
        // Fully allocated and non-zero, so reads are real reads (from the page cache).
        let chunk: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
        let mut data = Vec::with_capacity(size as usize);
        for _ in 0..mib {
            data.extend_from_slice(&chunk);
        }
        std::fs::write(&raw, data).unwrap();
    }
    let has_qemu = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // The qcow2 image is made before anything writes to the raw one: every cluster holds
    // data, so both sides overwrite allocated clusters in place.
    let converted = has_qemu
        && Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2)
            .status()
            .is_ok_and(|s| s.success());
    let mut rows = measure(&raw, ImageFormat::Raw, mib, rounds, has_qemu);
    if converted {
        rows.extend(measure(&qcow2, ImageFormat::Qcow2, mib, rounds, has_qemu));
        let check = Command::new("qemu-img").arg("check").arg(&qcow2).output();
        let clean = check.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("No errors"));
        assert!(clean, "the qcow2 image is not clean after the benchmark");
    }
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&qcow2);

    println!(
        "virtio-blk device level, {mib} MiB images, one request in flight, median of {rounds} rounds"
    );
    println!(
        "vmdesk: the VMM's time (notify to completion); +driver: with the guest driver's share"
    );
    println!(
        "{:<28} {:>14} {:>14} {:>8} {:>8} {:>13} {:>14}",
        "workload", "vmdesk", "qemu-img", "ratio", "paired", "round range", "+driver"
    );
    for r in rows {
        match r.qemu {
            Some(q) => println!(
                "{:<28} {:>9.0} {:<4} {:>9.0} {:<4} {:>7.2}x {:>7.2}x {:>13} {:>9.0} {:<4}",
                r.name,
                r.ours,
                r.unit,
                q,
                r.unit,
                r.ours / q,
                r.paired.unwrap_or(f64::NAN),
                r.spread
                    .map(|(lo, hi)| format!("{lo:.2}-{hi:.2}x"))
                    .unwrap_or_default(),
                r.with_driver,
                r.unit
            ),
            None => println!(
                "{:<28} {:>9.0} {:<4} {:>14}",
                r.name, r.ours, r.unit, "(no qemu-img)"
            ),
        }
    }
    if !converted {
        println!("qcow2: skipped (qemu-img is not installed to make the image)");
    }
}
