//! virtio-blk throughput at device level: the test plays the guest driver (rings in guest
//! memory, indirect descriptor tables as Linux uses for long scatter lists), no vCPU.
//! Notifications go through the queue's doorbell eventfd, as KVM delivers a guest's
//! notify write, and the device's doorbell thread serves them as in a VM; completions come
//! back in the used ring with the queue's MSI-X message, an eventfd the driver sleeps on
//! after a short poll (as KVM wakes a halted vCPU). Beside it, `qemu-img bench` on the
//! same file when qemu-img is installed: the same host file, the same page cache, the
//! same number of requests in flight. Both a raw image and a qcow2 image (`qemu-img
//! convert` of the raw one, so every cluster is allocated and writes overwrite in place on
//! both sides).
//!
//! Each figure is requests completed per second of wall time, from the first notify to
//! the last completion: the driver's own work (building chains, reaping the used ring)
//! is in it, as qemu-img's submission and completion work is in its figure. The device
//! runs requests on its I/O threads (the notify only hands them out), so the driver keeps
//! `depth` requests outstanding: 1, as a simple guest does, and 16, as fio or a busy
//! filesystem does.
//!
//! Workloads: sequential 1 MiB reads and writes (each request 128 buffers of 8 KiB, as
//! a guest block layer hands them), and 4 KiB reads at scattered offsets (a large prime
//! stride, because `qemu-img bench` has no random mode; both sides use the same offsets).
//! qemu-img moves each request from one contiguous buffer, which the host kernel copies
//! faster than 128 small ones (setting SEG to 1 MiB here shows how much: about a third
//! more write throughput on the page cache).
//!
//! `cargo bench -p vmm --bench virtio_blk` (VIRTIO_BLK_BENCH_MIB sets the image size,
//! default 256; VIRTIO_BLK_BENCH_ROUNDS the rounds, default 5).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm::bus::Bus;
use vmm::disk::{BlockBackend, ImageFormat, open_image};
use vmm::doorbell::Doorbells;
use vmm::irq::RecordingIrq;
use vmm::memory::GuestMem;
use vmm::pci::PciRoot;
use vmm::pci::msix::{MsiMessage, MsiSink};
use vmm::virtio::VIRTIO_MSI_NO_VECTOR;
use vmm::virtio::block::VirtioBlock;
use vmm::virtio::pci::{CAP_MSIX, MSIX_TABLE_OFFSET, VirtioPci, common, notify_offset};
use vmm::virtio::testing::DriverRing;
use vmm_sys_util::eventfd::EventFd;

const BAR: u64 = 0xfebf_0000;
const DEVFN: u8 = 4 << 3;
/// Per request slot: its header, status byte and indirect table live at these bases plus
/// the slot's offset, its data at DATA plus 1 MiB per slot.
const HDR: u64 = 0x10_0000;
const STATUS: u64 = 0x10_8000;
const TABLES: u64 = 0x11_0000;
const TABLE_LEN: u64 = 4096;
const DATA: u64 = 0x20_0000;
const MIB: u64 = 1 << 20;
/// Requests in flight at most (one slot each).
const MAX_DEPTH: u64 = 16;
/// Rounds per workload (VIRTIO_BLK_BENCH_ROUNDS overrides); medians are reported.
const ROUNDS: usize = 5;
/// Each sequential pass moves this many times the image (about 1 GiB by default), so a
/// pass lasts long enough that qemu-img's millisecond timer and scheduling noise on a
/// shared machine stay small against it.
const SWEEPS: u64 = 4;
const STRIDE: u64 = 4096 * 7919;
/// Data buffer size: 1 MiB requests become 128 buffers (within SEG_MAX, as Linux splits
/// them by the limits the device advertises).
const SEG: u64 = 8192;
const VIRTIO_RING_F_INDIRECT_DESC: u32 = 1 << 28;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const DESC_F_NEXT: u16 = 1;

/// Doorbells as KVM's ioeventfds behave: a write at a registered address signals its
/// eventfd; the device's doorbell thread takes it from there.
#[derive(Default)]
struct Bells(Mutex<Vec<(u64, EventFd)>>);

impl Doorbells for Bells {
    fn register(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().push((addr, fd.try_clone()?));
        Ok(())
    }
    fn unregister(&self, _: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().retain(|(a, _)| *a != addr);
        Ok(())
    }
}

/// The queue's MSI-X message as a vCPU sees it: an eventfd the waiting driver sleeps on
/// (KVM wakes a halted vCPU so).
struct Wakeup(EventFd);

impl MsiSink for Wakeup {
    fn send(&self, _: MsiMessage) {
        let _ = self.0.write(1);
    }
}

struct Driver {
    mem: GuestMem,
    /// Signalled by the queue's MSI-X vector.
    interrupt: EventFd,
    ring: DriverRing,
    /// The queue's doorbell (the guest's notify write, as KVM delivers it).
    kick: EventFd,
    /// Slots whose request is out, by ring head (= slot number).
    busy: Vec<bool>,
    _root: PciRoot,
}

impl Driver {
    fn new(backend: Box<dyn BlockBackend>) -> Driver {
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(Arc::new(Bus::new()), mmio.clone());
        let disk = VirtioBlock::new(backend, "bench");
        let interrupt = EventFd::new(0).unwrap();
        let msi = Arc::new(Wakeup(interrupt.try_clone().unwrap()));
        let mut f = VirtioPci::new(
            Arc::new(Mutex::new(disk)),
            mem.clone(),
            RecordingIrq::new(),
            Some(msi),
        );
        let bells = Arc::new(Bells::default());
        f.add_doorbells(bells.clone(), Arc::default(), "virtio-bench");
        root.add(DEVFN, Arc::new(Mutex::new(f)));
        root.config_write(0, DEVFN, 0x10, &(BAR as u32).to_le_bytes());
        root.config_write(0, DEVFN, 4, &6u16.to_le_bytes());
        let w = |off: u64, v: &[u8]| assert!(mmio.write(BAR + off, v));
        // MSI-X as Linux sets it up: vector 0 for the request queue, none for config.
        root.config_write(0, DEVFN, CAP_MSIX + 2, &0xc000u16.to_le_bytes());
        let entry = MSIX_TABLE_OFFSET;
        w(entry, &0xfee0_0000u32.to_le_bytes());
        w(entry + 4, &0u32.to_le_bytes());
        w(entry + 8, &0x41u32.to_le_bytes());
        w(entry + 12, &0u32.to_le_bytes());
        root.config_write(0, DEVFN, CAP_MSIX + 2, &0x8000u16.to_le_bytes());
        w(common::MSIX_CONFIG, &VIRTIO_MSI_NO_VECTOR.to_le_bytes());
        w(common::DEVICE_STATUS, &[0]);
        w(common::DEVICE_STATUS, &[3]);
        w(common::DRIVER_FEATURE_SELECT, &0u32.to_le_bytes());
        w(
            common::DRIVER_FEATURE,
            &VIRTIO_RING_F_INDIRECT_DESC.to_le_bytes(),
        );
        w(common::DRIVER_FEATURE_SELECT, &1u32.to_le_bytes());
        w(common::DRIVER_FEATURE, &1u32.to_le_bytes());
        w(common::DEVICE_STATUS, &[0xb]);
        let ring = DriverRing::new(&mem, 0x1_0000, 256);
        w(common::QUEUE_SELECT, &0u16.to_le_bytes());
        w(common::QUEUE_DESC, &ring.desc.to_le_bytes());
        w(common::QUEUE_DRIVER, &ring.avail.to_le_bytes());
        w(common::QUEUE_DEVICE, &ring.used.to_le_bytes());
        w(common::QUEUE_MSIX_VECTOR, &0u16.to_le_bytes());
        w(common::QUEUE_ENABLE, &1u16.to_le_bytes());
        w(common::DEVICE_STATUS, &[0xf]);
        let kick = bells
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|(a, _)| *a == BAR + notify_offset(0))
            .map(|(_, fd)| fd.try_clone().unwrap())
            .expect("queue 0's doorbell at the BAR");
        Driver {
            mem,
            interrupt,
            ring,
            kick,
            busy: vec![false; MAX_DEPTH as usize],
            _root: root,
        }
    }

    /// Puts a request of type `ty` for `len` bytes at byte `offset` in a free slot (data
    /// split into [`SEG`]-sized buffers, all in one indirect table) and publishes it.
    fn queue(&mut self, ty: u32, offset: u64, len: u64) {
        let slot = self.busy.iter().position(|b| !b).expect("a free slot") as u64;
        self.busy[slot as usize] = true;
        let (hdr, status) = (HDR + 16 * slot, STATUS + slot);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&(offset / 512).to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        let data_flags = if ty == 0 { DESC_F_WRITE } else { 0 };
        let mut bufs = vec![(hdr, 16u32, 0u16)];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(SEG);
            bufs.push((DATA + slot * MIB + at, n as u32, data_flags));
            at += n;
        }
        bufs.push((status, 1, DESC_F_WRITE));
        let mut table = Vec::with_capacity(16 * bufs.len());
        for (i, &(addr, n, flags)) in bufs.iter().enumerate() {
            let next = if i + 1 < bufs.len() { DESC_F_NEXT } else { 0 };
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&n.to_le_bytes());
            table.extend_from_slice(&(flags | next).to_le_bytes());
            table.extend_from_slice(&(i as u16 + 1).to_le_bytes());
        }
        let at = TABLES + slot * TABLE_LEN;
        self.mem.write_slice(&table, GuestAddress(at)).unwrap();
        let head = slot as u16;
        let table_len = table.len() as u32;
        self.ring
            .write_desc(&self.mem, head, at, table_len, DESC_F_INDIRECT, 0);
        self.ring.publish(&self.mem, head);
    }

    fn notify(&self) {
        self.kick.write(1).unwrap();
    }

    /// Waits for at least one completion; frees and checks each one's slot. Returns how
    /// many completed.
    fn reap(&mut self) -> usize {
        let mut spins = 0u32;
        loop {
            let used = self.ring.take_used(&self.mem);
            if !used.is_empty() {
                for (head, _) in &used {
                    let st: u8 = self
                        .mem
                        .read_obj(GuestAddress(STATUS + u64::from(*head)))
                        .unwrap();
                    assert_eq!(st, 0, "request failed");
                    self.busy[*head as usize] = false;
                }
                return used.len();
            }
            // A guest polls briefly (KVM's halt polling does as much for a halted vCPU),
            // then sleeps until the interrupt.
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                let _ = self.interrupt.read();
            }
        }
    }

    /// `n` requests of `len` bytes, `depth` in flight, offsets from `offset` in steps
    /// of `step` wrapped by `wrap`; returns the wall time.
    fn run(
        &mut self,
        ty: u32,
        n: u64,
        depth: u64,
        len: u64,
        mut next: impl FnMut() -> u64,
    ) -> Duration {
        let t = Instant::now();
        let (mut queued, mut done) = (0u64, 0u64);
        while done < n {
            let mut batch = false;
            while queued < n && queued - done < depth {
                self.queue(ty, next(), len);
                queued += 1;
                batch = true;
            }
            if batch {
                self.notify();
            }
            done += self.reap() as u64;
        }
        t.elapsed()
    }

    /// A FLUSH request: our writes (and imago's metadata) are on disk and the page cache
    /// is clean before the other side runs.
    fn flush(&mut self) {
        self.run(4, 1, 1, 0, || 0);
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

fn qemu_img_bench(path: &Path, format: ImageFormat, depth: u64, args: &[&str]) -> Option<Duration> {
    let out = Command::new("qemu-img")
        .arg("bench")
        .args(["-f", &format.to_string(), "-t", "writeback"])
        .args(["-d", &depth.to_string()])
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

/// One workload: what it reads or writes, how much per request, in what steps.
struct Workload {
    name: &'static str,
    unit: &'static str,
    write: bool,
    len: u64,
    step: u64,
    /// Requests per pass for an image of `mib` MiB.
    count: fn(u64) -> u64,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "seq read 1 MiB",
        unit: "MiB/s",
        write: false,
        len: MIB,
        step: MIB,
        count: |mib| SWEEPS * mib,
    },
    Workload {
        name: "seq write 1 MiB",
        unit: "MiB/s",
        write: true,
        len: MIB,
        step: MIB,
        count: |mib| SWEEPS * mib,
    },
    Workload {
        name: "4 KiB scattered read",
        unit: "IOPS",
        write: false,
        len: 4096,
        step: STRIDE,
        count: |_| 40_000,
    },
];

const DEPTHS: [u64; 2] = [1, MAX_DEPTH];

/// Every workload at every depth on one image, ours and qemu-img's in alternating
/// rounds (so load from elsewhere on the machine hits both alike); medians.
fn measure(path: &Path, format: ImageFormat, mib: u64, rounds: usize, has_qemu: bool) -> Vec<Row> {
    let size = mib * MIB;
    let backend = open_image(path, Some(format), false).unwrap();
    let mut d = Driver::new(backend);
    // Offsets wrap as qemu-img bench wraps them (modulo the image size less the buffer),
    // so both sides touch the same bytes.
    let offsets = |step: u64, len: u64| {
        let mut off = 0u64;
        move || {
            let at = off;
            off = (off + step) % (size - len);
            at
        }
    };
    // Warm the page cache (and imago's metadata cache) the same way for both sides; this
    // also leaves every slot's buffer holding image data, so writes are not zeroes.
    d.run(0, mib, MAX_DEPTH, MIB, offsets(MIB, MIB));

    let cases: Vec<(&Workload, u64)> = DEPTHS
        .iter()
        .flat_map(|&depth| WORKLOADS.iter().map(move |w| (w, depth)))
        .collect();
    let mut ours = vec![Vec::new(); cases.len()];
    let mut qemu = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, &(w, depth)) in cases.iter().enumerate() {
            let n = (w.count)(mib);
            let t = d.run(u32::from(w.write), n, depth, w.len, offsets(w.step, w.len));
            ours[i].push(n as f64 / t.as_secs_f64());
            if w.write {
                // Outside the timing: qemu-img flushes when it closes the image, so each
                // side's write pass starts from a clean page cache.
                d.flush();
            }
            if !has_qemu {
                continue;
            }
            let (c, size, step) = (n.to_string(), w.len.to_string(), w.step.to_string());
            let mut args = vec!["-c", &c, "-s", &size, "-S", &step];
            if w.write {
                // A non-zero pattern: zeroes would let qcow2 leave clusters unallocated,
                // and the two sides would no longer do the same work.
                args.extend(["-w", "--pattern=90"]);
            }
            if let Some(t) = qemu_img_bench(path, format, depth, &args) {
                qemu[i].push(n as f64 / t.as_secs_f64());
            }
        }
    }
    drop(d);
    cases
        .iter()
        .enumerate()
        .map(|(i, &(w, depth))| {
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
            // Requests per second to the unit: 1 MiB requests are MiB/s as they are.
            Row {
                name: format!("{format} {} QD{depth}", w.name),
                ours: median(std::mem::take(&mut ours[i])),
                qemu: (!qemu[i].is_empty()).then(|| median(std::mem::take(&mut qemu[i]))),
                paired: (!ratios.is_empty()).then(|| median(ratios)),
                spread,
                unit: w.unit,
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
        "virtio-blk device level, {mib} MiB images, median of {rounds} rounds; requests per second of wall time, first notify to last completion"
    );
    println!(
        "{:<36} {:>14} {:>14} {:>8} {:>8} {:>13}",
        "workload", "vmdesk", "qemu-img", "ratio", "paired", "round range"
    );
    for r in rows {
        match r.qemu {
            Some(q) => println!(
                "{:<36} {:>9.0} {:<4} {:>9.0} {:<4} {:>7.2}x {:>7.2}x {:>13}",
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
            ),
            None => println!(
                "{:<36} {:>9.0} {:<4} {:>14}",
                r.name, r.ours, r.unit, "(no qemu-img)"
            ),
        }
    }
    if !converted {
        println!("qcow2: skipped (qemu-img is not installed to make the image)");
    }
}
