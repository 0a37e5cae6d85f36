//! virtio-blk throughput at device level: the test plays the guest driver (rings in guest
//! memory, the notify register written through the MMIO bus, completions read from the
//! used ring), no vCPU. Beside it, `qemu-img bench` on the same file when qemu-img is
//! installed: the same host file, the same page cache, one request in flight.
//!
//! Workloads: sequential 1 MiB reads and writes (each request 128 buffers of 8 KiB, as
//! a guest block layer hands them), and 4 KiB reads at scattered offsets (a large prime
//! stride, because `qemu-img bench` has no random mode; both sides use the same offsets).
//!
//! `cargo bench -p vmm --bench virtio_blk` (set VIRTIO_BLK_BENCH_MIB to change the image
//! size, default 256).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm::bus::Bus;
use vmm::disk::raw::RawImage;
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
const ROUNDS: usize = 7;
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
    fn new(path: &Path) -> Driver {
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(Arc::new(Bus::new()), mmio.clone());
        let disk = VirtioBlock::new(Box::new(RawImage::open(path, false).unwrap()), "bench");
        let f = VirtioPci::new(Arc::new(Mutex::new(disk)), mem.clone(), RecordingIrq::new());
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
    fn request(&mut self, write: bool, offset: u64, len: u64) {
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
        self.mmio.write(self.kick, &0u16.to_le_bytes());
        let used = self.ring.take_used(&self.mem);
        assert_eq!(used.len(), 1);
        let st: u8 = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        assert_eq!(st, 0, "request failed");
    }
}

struct Result {
    name: &'static str,
    ours: f64,
    qemu: Option<f64>,
    unit: &'static str,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn qemu_img_bench(path: &Path, args: &[&str]) -> Option<Duration> {
    let out = Command::new("qemu-img")
        .arg("bench")
        .args(["-f", "raw", "-t", "writeback", "-d", "1"])
        .args(args)
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Run completed in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(secs))
}

fn main() {
    let mib: u64 = std::env::var("VIRTIO_BLK_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib * MIB;
    let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("virtio-blk-bench-{}.raw", std::process::id()));
    {
        // Fully allocated and non-zero, so reads are real reads (from the page cache).
        let chunk: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
        let mut data = Vec::with_capacity(size as usize);
        for _ in 0..mib {
            data.extend_from_slice(&chunk);
        }
        std::fs::write(&path, data).unwrap();
    }
    let has_qemu = Command::new("qemu-img").arg("--version").output().is_ok();
    let mut d = Driver::new(&path);
    let mut results = Vec::new();
    let count = mib;

    // Warm the page cache the same way for both sides.
    for i in 0..count {
        d.request(false, i * MIB, MIB);
    }

    // Rounds alternate between the two sides so load from elsewhere on the machine hits
    // both alike; medians are reported.
    let n4k: u64 = 20_000;
    let mut ours = [Vec::new(), Vec::new(), Vec::new()];
    let mut qemu = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..count {
            d.request(false, i * MIB, MIB);
        }
        ours[0].push(count as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..count {
            d.request(true, i * MIB, MIB);
        }
        ours[1].push(count as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut off = 0u64;
        for _ in 0..n4k {
            d.request(false, off, 4096);
            // qemu-img bench wraps the same way (offset modulo size minus the buffer).
            off = (off + STRIDE) % (size - 4096);
        }
        ours[2].push(n4k as f64 / t.elapsed().as_secs_f64());
        if !has_qemu {
            continue;
        }
        let c = count.to_string();
        if let Some(t) = qemu_img_bench(&path, &["-c", &c, "-s", "1M"]) {
            qemu[0].push(count as f64 / t.as_secs_f64());
        }
        if let Some(t) = qemu_img_bench(&path, &["-w", "-c", &c, "-s", "1M"]) {
            qemu[1].push(count as f64 / t.as_secs_f64());
        }
        let stride = STRIDE.to_string();
        let n = n4k.to_string();
        if let Some(t) = qemu_img_bench(&path, &["-c", &n, "-s", "4k", "-S", &stride]) {
            qemu[2].push(n4k as f64 / t.as_secs_f64());
        }
    }
    let names = [
        ("seq read 1 MiB", "MiB/s"),
        ("seq write 1 MiB", "MiB/s"),
        ("4 KiB scattered read", "IOPS"),
    ];
    for (i, (name, unit)) in names.into_iter().enumerate() {
        results.push(Result {
            name,
            ours: median(std::mem::take(&mut ours[i])),
            qemu: (!qemu[i].is_empty()).then(|| median(std::mem::take(&mut qemu[i]))),
            unit,
        });
    }

    let _ = std::fs::remove_file(&path);
    println!(
        "virtio-blk device level, raw image of {mib} MiB, one request in flight, median of {ROUNDS}"
    );
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "workload", "vmdesk", "qemu-img", "ratio"
    );
    for r in results {
        match r.qemu {
            Some(q) => println!(
                "{:<22} {:>9.0} {:<4} {:>9.0} {:<4} {:>7.2}x",
                r.name,
                r.ours,
                r.unit,
                q,
                r.unit,
                r.ours / q
            ),
            None => println!(
                "{:<22} {:>9.0} {:<4} {:>14}",
                r.name, r.ours, r.unit, "(no qemu-img)"
            ),
        }
    }
}
