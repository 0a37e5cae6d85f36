//! virtio-blk (virtio 1.0, 5.2) over any [`BlockBackend`] (raw, qcow2).
//!
//! One request queue of 256 entries. Requests: IN, OUT, FLUSH, GET_ID, and DISCARD and
//! WRITE_ZEROES when offered. Features offered: SIZE_MAX and SEG_MAX (so drivers split
//! what the device would refuse), BLK_SIZE (512), FLUSH, RO for a read-only backend, and
//! DISCARD / WRITE_ZEROES on writable backends (DISCARD only when the backend says it
//! does something). Capacity is the backend length in 512-byte sectors (a partial last
//! sector is not addressable, as in QEMU).
//!
//! Requests run on the device's I/O threads ([`super::io_workers`]), several at once
//! when the driver queues several: the thread that is notified (the device's doorbell
//! thread, or the vCPU that wrote the notify register when the hypervisor has no
//! doorbells) only takes chains off the ring and hands them out, and each I/O thread
//! completes its own request in the used ring and interrupts the driver. One exception:
//! a lone request with nothing else in flight runs on the doorbell thread itself (a
//! device thread too), which saves a thread hop for guests that wait for each request.
//! Completions may come out of order, as on any real disk; a FLUSH completes once
//! [`BlockBackend::flush`] returned, which covers every write that had completed before
//! it was queued (what virtio and Linux's block layer ask of a flush). A device reset
//! waits for the requests in flight before it lets go of the ring, and every request
//! runs inside a pass of the machine's [`DeviceGate`], so a paused VM's memory stays
//! still.
//! Data moves straight between the image and the guest's buffers: the request's data
//! descriptors become [`GuestSlice`]s handed to one [`BlockBackend::read_vectored`] or
//! [`BlockBackend::write_vectored`] call (one `preadv`/`pwritev` on a raw image), with no
//! copy in the VMM and no VMM buffer whose size a guest could choose.
//!
//! Errors: a request whose buffers are outside guest memory, whose sectors are out of
//! range, whose data is not whole sectors or is larger than SEG_MAX * SIZE_MAX, or whose
//! backend call fails, completes with VIRTIO_BLK_S_IOERR; an unknown or unsupported type
//! with UNSUPP. A request without room for its header or status, or a broken descriptor
//! chain, leaves the ring inconsistent: the device sets DEVICE_NEEDS_RESET and ignores the
//! queue until the driver resets it (as QEMU's `virtio_error` does).
//!
//! GEOMETRY is QEMU's guess from the size (16 heads, 63 sectors), so SeaBIOS's CHS view
//! of a disk matches QEMU's.
//!
//! Not emulated: TOPOLOGY, CONFIG_WCE (the cache is always write-back with
//! FLUSH), multiple queues, SCSI passthrough, zoned devices, SECURE_ERASE.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_blk::*;
use virtio_queue::{Queue, QueueT};

use super::io_workers::IoWorkers;
use super::{
    Activation, Interrupt, RingError, SplitChain, TYPE_BLOCK, VirtioDevice, guest_slices,
    pending_chains, read_segments, split_chain, write_segments,
};
use crate::disk::BlockBackend;
use crate::memory::GuestMem;
use crate::pause::DeviceGate;

pub const SECTOR_SIZE: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: the queue size less the header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
pub const SIZE_MAX: u32 = 1 << 20;
/// The most data one request may move (SEG_MAX segments of SIZE_MAX bytes).
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// The largest discard / write-zeroes range, in sectors (QEMU's default is the same order).
pub const MAX_DISCARD_SECTORS: u32 = (1 << 30) / SECTOR_SIZE as u32;
pub const CONFIG_LEN: usize = 60;
/// Bytes of the request header (type, reserved/ioprio, sector).
const HEADER_LEN: u64 = 16;
/// Bytes of one discard / write-zeroes segment.
const RANGE_LEN: u64 = 16;
const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const STATUS_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// I/O threads per disk at most: twice the host's CPUs, at least 4, at most 16. Requests
/// served from the page cache are CPU work, so threads beyond the cores only contend
/// (measured on a 2-core host with benches/virtio_blk.rs at 16 requests in flight: 4 KiB
/// reads 180k IOPS with 16 threads, 279k with 4); a real disk gains from a few more
/// requests at once than there are cores, not from dozens.
pub fn io_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).clamp(4, 16)
}

/// The ring while the driver runs, shared by the notified thread (which takes requests
/// off it) and the I/O threads (which complete them).
struct Ring {
    mem: GuestMem,
    queue: Mutex<Queue>,
    interrupt: Arc<Interrupt>,
    /// The ring was found inconsistent: nothing more is done with it until a reset.
    broken: AtomicBool,
}

impl Ring {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    fn fail(&self, e: &RingError) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            tracing::warn!("virtio-blk: {e}; the device needs a reset");
            self.interrupt.set_needs_reset();
        }
    }

    /// Takes every available chain off the ring (with notifications off meanwhile, and a
    /// last look after turning them back on, so a request made in between is not missed).
    fn take_available(&self) -> Result<Vec<SplitChain>, RingError> {
        let mut q = self.queue();
        let mut chains = Vec::new();
        loop {
            q.disable_notification(&self.mem)?;
            while pending_chains(&q, &self.mem)? > 0 {
                let Some(chain) = q.pop_descriptor_chain(&self.mem) else {
                    return Err(RingError::Chain("available ring entry unreadable"));
                };
                chains.push(split_chain(chain, &self.mem, SEG_MAX as usize + 2)?);
            }
            if !q.enable_notification(&self.mem)? {
                return Ok(chains);
            }
        }
    }

    /// Puts a finished request in the used ring and interrupts the driver if it asked.
    fn complete(&self, head: u16, len: u32) {
        if self.is_broken() {
            return;
        }
        let notify = {
            let mut q = self.queue();
            q.add_used(&self.mem, head, len)
                .and_then(|()| q.needs_notification(&self.mem))
        };
        match notify {
            Ok(true) => self.interrupt.signal_used_queue(0),
            Ok(false) => {}
            Err(e) => self.fail(&RingError::Queue(e)),
        }
    }
}

pub struct VirtioBlock {
    requests: Arc<Requests>,
    acked: u64,
    ring: Option<Arc<Ring>>,
    workers: IoWorkers,
    gate: Arc<DeviceGate>,
}

/// What a request needs besides its ring: the backend, the disk's identity and the
/// features it offers. Shared with the I/O threads.
struct Requests {
    backend: Arc<dyn BlockBackend>,
    /// Held around each OUT request's backend call.
    writing: Mutex<()>,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    offered: u64,
}

impl VirtioBlock {
    /// `serial` is what GET_ID returns (up to 20 bytes; longer is cut, shorter is
    /// zero-padded, as the spec says).
    pub fn new(backend: Box<dyn BlockBackend>, serial: &str) -> VirtioBlock {
        let mut s = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(s.len());
        s[..n].copy_from_slice(&serial.as_bytes()[..n]);
        let mut offered: u32 = 1 << VIRTIO_BLK_F_SIZE_MAX
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_GEOMETRY
            | 1 << VIRTIO_BLK_F_FLUSH;
        if backend.read_only() {
            offered |= 1 << VIRTIO_BLK_F_RO;
        } else {
            offered |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
            if backend.supports_discard() {
                offered |= 1 << VIRTIO_BLK_F_DISCARD;
            }
        }
        VirtioBlock {
            requests: Arc::new(Requests {
                backend: Arc::from(backend),
                writing: Mutex::new(()),
                serial: s,
                offered: u64::from(offered),
            }),
            acked: 0,
            ring: None,
            workers: IoWorkers::new("virtio-blk-io", io_threads()),
            gate: Arc::default(),
        }
    }

    /// The I/O threads pass `gate` around each request (the machine's, so that pausing
    /// the VM holds them); without it they pass a gate of their own that never closes.
    pub fn with_gate(mut self, gate: Arc<DeviceGate>) -> VirtioBlock {
        self.gate = gate;
        self
    }

    /// Waits until no request is in flight.
    pub fn wait_idle(&self) {
        self.workers.wait_idle();
    }

    /// I/O threads started so far (at most [`io_threads`]).
    pub fn io_threads(&self) -> usize {
        self.workers.threads()
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.requests.capacity_sectors()
    }

    /// A BIOS-style geometry from the size alone (16 heads, 63 sectors, cylinders clamped
    /// to 2..=16383), as QEMU guesses one for a disk without a partition table to go by;
    /// SeaBIOS reads it (whether or not GEOMETRY is negotiated) for its CHS translation.
    pub fn geometry(&self) -> (u16, u8, u8) {
        let cylinders = (self.capacity_sectors() / (16 * 63)).clamp(2, 16383);
        (cylinders as u16, 16, 63)
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let mut put = |off: usize, v: &[u8]| c[off..off + v.len()].copy_from_slice(v);
        put(0, &self.capacity_sectors().to_le_bytes());
        put(8, &SIZE_MAX.to_le_bytes());
        put(12, &SEG_MAX.to_le_bytes());
        let (cylinders, heads, sectors) = self.geometry();
        put(16, &cylinders.to_le_bytes());
        put(18, &[heads, sectors]);
        put(20, &(SECTOR_SIZE as u32).to_le_bytes());
        put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(40, &1u32.to_le_bytes());
        put(44, &1u32.to_le_bytes());
        put(48, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(52, &1u32.to_le_bytes());
        put(56, &[1]);
        c
    }
}

impl Requests {
    fn capacity_sectors(&self) -> u64 {
        self.backend.len() / SECTOR_SIZE
    }

    fn offers(&self, bit: u32) -> bool {
        self.offered & (1 << bit) != 0
    }

    /// Runs one request and writes its status; returns the bytes written to the driver's
    /// buffers (data and status).
    fn execute(&self, mem: &GuestMem, c: &SplitChain) -> Result<u32, RingError> {
        if c.readable_len() < HEADER_LEN {
            return Err(RingError::Chain("request header too short"));
        }
        let Some(last) = c.writable.last().filter(|s| s.len > 0) else {
            return Err(RingError::Chain("no room for the status byte"));
        };
        let status_addr = vm_memory::GuestAddress(last.addr.0 + u64::from(last.len) - 1);
        let data_in = c.writable_len() - 1;
        let (status, written) = if c.bad_buffer {
            tracing::debug!("virtio-blk: request buffer outside guest memory");
            (STATUS_IOERR, 0)
        } else {
            let mut h = [0u8; HEADER_LEN as usize];
            match read_segments(mem, &c.readable, 0, &mut h) {
                Ok(()) => {
                    let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                    let sector = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
                    self.request(mem, c, ty, sector, data_in)
                }
                Err(_) => (STATUS_IOERR, 0),
            }
        };
        use vm_memory::Bytes;
        if mem.write_obj(status, status_addr).is_err() {
            return Err(RingError::Chain("status byte outside guest memory"));
        }
        Ok(u32::try_from(written + 1).unwrap_or(u32::MAX))
    }

    /// Returns the status and how many data bytes went to the driver.
    fn request(
        &self,
        mem: &GuestMem,
        c: &SplitChain,
        ty: u32,
        sector: u64,
        data_in: u64,
    ) -> (u8, u64) {
        let data_out = c.readable_len() - HEADER_LEN;
        match ty {
            VIRTIO_BLK_T_IN => match self.range(sector, data_in) {
                Some(offset) => match self.read(mem, c, offset, data_in) {
                    Ok(()) => (STATUS_OK, data_in),
                    Err(e) => {
                        tracing::warn!("virtio-blk: read at {offset:#x}: {e}");
                        (STATUS_IOERR, 0)
                    }
                },
                None => (STATUS_IOERR, 0),
            },
            VIRTIO_BLK_T_OUT => {
                if self.backend.read_only() {
                    return (STATUS_IOERR, 0);
                }
                match self.range(sector, data_out) {
                    Some(offset) => match self.write(mem, c, offset, data_out) {
                        Ok(()) => (STATUS_OK, 0),
                        Err(e) => {
                            tracing::warn!("virtio-blk: write at {offset:#x}: {e}");
                            (STATUS_IOERR, 0)
                        }
                    },
                    None => (STATUS_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_FLUSH => match self.backend.flush() {
                Ok(()) => (STATUS_OK, 0),
                Err(e) => {
                    tracing::warn!("virtio-blk: flush: {e}");
                    (STATUS_IOERR, 0)
                }
            },
            VIRTIO_BLK_T_GET_ID => {
                let n = data_in.min(self.serial.len() as u64) as usize;
                match write_segments(mem, &c.writable, 0, &self.serial[..n]) {
                    Ok(()) => (STATUS_OK, n as u64),
                    Err(_) => (STATUS_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                let zero = ty == VIRTIO_BLK_T_WRITE_ZEROES;
                let feature = if zero {
                    VIRTIO_BLK_F_WRITE_ZEROES
                } else {
                    VIRTIO_BLK_F_DISCARD
                };
                if !self.offers(feature) {
                    return (STATUS_UNSUPP, 0);
                }
                (self.ranges(mem, c, data_out, zero), 0)
            }
            _ => (STATUS_UNSUPP, 0),
        }
    }

    /// The byte offset of `sector` when `len` bytes from there are whole sectors inside
    /// the disk and within the request limit.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST_BYTES {
            return None;
        }
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len)?;
        (end <= self.capacity_sectors() * SECTOR_SIZE).then_some(offset)
    }

    fn read(&self, mem: &GuestMem, c: &SplitChain, offset: u64, len: u64) -> std::io::Result<()> {
        let bufs = guest_slices(mem, &c.writable, 0, len)?;
        self.backend.read_vectored(offset, &bufs)
    }

    fn write(&self, mem: &GuestMem, c: &SplitChain, offset: u64, len: u64) -> std::io::Result<()> {
        let bufs = guest_slices(mem, &c.readable, HEADER_LEN, len)?;
        // One write at a time per disk, reads alongside: the host kernel serialises
        // buffered writes to a file on its inode lock anyway, and several threads queued
        // there spin on it, taking the cores from the one writing (at 16 requests in
        // flight, 1 MiB sequential writes: raw 0.71x -> 0.79x and qcow2 0.73x -> 0.93x
        // of qemu-img bench with this lock, benches/virtio_blk.rs on a quiet host).
        let _one_writer = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.backend.write_vectored(offset, &bufs)
    }

    /// DISCARD and WRITE_ZEROES: one 16-byte range (sector, num_sectors, flags).
    fn ranges(&self, mem: &GuestMem, c: &SplitChain, len: u64, zero: bool) -> u8 {
        if len == 0 || !len.is_multiple_of(RANGE_LEN) {
            return STATUS_IOERR;
        }
        if len / RANGE_LEN > 1 {
            // max_discard_seg and max_write_zeroes_seg are 1.
            return STATUS_UNSUPP;
        }
        let mut r = [0u8; RANGE_LEN as usize];
        if read_segments(mem, &c.readable, HEADER_LEN, &mut r).is_err() {
            return STATUS_IOERR;
        }
        let sector = u64::from_le_bytes(r[0..8].try_into().unwrap_or([0; 8]));
        let count = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
        let flags = u32::from_le_bytes([r[12], r[13], r[14], r[15]]);
        let allowed = if zero { WRITE_ZEROES_FLAG_UNMAP } else { 0 };
        if flags & !allowed != 0 {
            return STATUS_UNSUPP;
        }
        if count > MAX_DISCARD_SECTORS {
            return STATUS_IOERR;
        }
        let bytes = u64::from(count) * SECTOR_SIZE;
        let Some(offset) = self.range(sector, bytes) else {
            return STATUS_IOERR;
        };
        let r = if zero {
            self.backend.write_zeroes(offset, bytes)
        } else {
            self.backend.discard(offset, bytes)
        };
        match r {
            Ok(()) => STATUS_OK,
            Err(e) => {
                tracing::warn!("virtio-blk: discard/write-zeroes at {offset:#x}: {e}");
                STATUS_IOERR
            }
        }
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u16 {
        TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.requests.offered
    }
    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config_bytes(), offset, data);
    }
    fn activate(&mut self, a: Activation) {
        let Some(queue) = a.queues.into_iter().next() else {
            return;
        };
        self.ring = Some(Arc::new(Ring {
            mem: a.mem,
            queue: Mutex::new(queue),
            interrupt: a.interrupt,
            broken: AtomicBool::new(false),
        }));
    }
    fn queue_notify(&mut self, index: u16) {
        let Some(ring) = self.ring.as_ref().filter(|r| index == 0 && !r.is_broken()) else {
            return;
        };
        if !ring.queue().ready() {
            return;
        }
        let chains = match ring.take_available() {
            Ok(chains) => chains,
            Err(e) => {
                ring.fail(&e);
                return;
            }
        };
        // A lone request while nothing else is in flight runs right here when this is
        // the doorbell thread (never on a vCPU): a guest that waits for each request
        // before the next saves a thread hop per request, which is most of the cost of a
        // 4 KiB read from the page cache (2x the IOPS at one request in flight, measured
        // with benches/virtio_blk.rs). The price: a notify that comes meanwhile waits for
        // this one request; requests queued together always go to the I/O threads.
        if chains.len() == 1
            && super::notify::on_doorbell_thread()
            && self.workers.outstanding() == 0
        {
            let _pass = self.gate.enter();
            let chain = &chains[0];
            match self.requests.execute(&ring.mem, chain) {
                Ok(len) => ring.complete(chain.head, len),
                Err(e) => ring.fail(&e),
            }
            return;
        }
        // Handed out with the ring unlocked: the I/O threads lock it to complete.
        for chain in chains {
            let (ring, requests, gate) = (ring.clone(), self.requests.clone(), self.gate.clone());
            self.workers.submit(move || {
                let _pass = gate.enter();
                match requests.execute(&ring.mem, &chain) {
                    Ok(len) => ring.complete(chain.head, len),
                    Err(e) => ring.fail(&e),
                }
            });
        }
    }
    fn reset(&mut self) {
        // No request may touch the ring or the driver's buffers once the reset is done.
        self.workers.wait_idle();
        self.ring = None;
        self.acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::raw::RawImage;
    use crate::virtio::pci::common;
    use crate::virtio::pci::tests::Guest;
    use crate::virtio::status;
    use crate::virtio::testing::{DESC_F_NEXT, DESC_F_WRITE, DriverRing};
    use std::path::PathBuf;
    use std::sync::Mutex;
    use vm_memory::{Bytes, GuestAddress};

    struct TempFile(PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn image(name: &str, len: usize) -> TempFile {
        let p = std::env::temp_dir().join(format!("vmdesk-vblk-{}-{name}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
        std::fs::write(&p, data).unwrap();
        TempFile(p)
    }

    /// A driver with the disk probed, queue 0 live; what Linux's virtio_blk does at probe.
    struct Disk {
        dev: Arc<Mutex<VirtioBlock>>,
        g: Guest,
        ring: DriverRing,
        common: u64,
        isr: u64,
        kick: u64,
        features: u64,
        cfg: u64,
    }

    const HDR: u64 = 0x40000;
    const DATA: u64 = 0x50000;
    const STATUS: u64 = 0x4f000;

    impl Disk {
        fn new(path: &std::path::Path, read_only: bool) -> Disk {
            let backend = RawImage::open(path, read_only).unwrap();
            Disk::with(Box::new(backend), "vmdesk-disk-0", Arc::default())
        }

        /// The same over any backend, its I/O threads passing `gate`.
        fn with(backend: Box<dyn BlockBackend>, serial: &str, gate: Arc<DeviceGate>) -> Disk {
            let dev = Arc::new(Mutex::new(
                VirtioBlock::new(backend, serial).with_gate(gate),
            ));
            let mut g = Guest::new(dev.clone());
            assert_eq!(g.cfg_read(2, 2), 0x1042);
            let (common, isr, cfg, notify, mult, features) = g.probe(!0);
            let ring = DriverRing::new(&g.mem, 0x10000, 128);
            let kick = g.setup_queue(common, notify, mult, 0, &ring);
            g.write(common + common::DEVICE_STATUS, 1, 0xf);
            Disk {
                dev,
                g,
                ring,
                common,
                isr,
                kick,
                features,
                cfg,
            }
        }

        fn header(&self, ty: u32, sector: u64) {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&ty.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            self.g.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
            self.g.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        }

        /// Notifies the queue and waits until the requests it took are done.
        fn kick(&self) {
            self.g.write(self.kick, 2, 0);
            self.dev.lock().unwrap().wait_idle();
        }

        /// Submits a chain, kicks, and returns (status byte, used len).
        fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> (u8, u32) {
            self.ring.add_chain(&self.g.mem, bufs);
            self.kick();
            let used = self.ring.take_used(&self.g.mem);
            assert_eq!(used.len(), 1, "one completion");
            (
                self.g.mem.read_obj(GuestAddress(STATUS)).unwrap(),
                used[0].1,
            )
        }

        fn status(&self) -> u8 {
            self.g.read(self.common + common::DEVICE_STATUS, 1) as u8
        }
    }

    fn file_bytes(p: &std::path::Path, off: usize, len: usize) -> Vec<u8> {
        std::fs::read(p).unwrap()[off..off + len].to_vec()
    }

    #[test]
    fn linux_driver_reads_writes_flushes_and_gets_id() {
        let f = image("linux", 1 << 20);
        let mut d = Disk::new(&f.0, false);
        for bit in [
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_FLUSH,
            VIRTIO_BLK_F_WRITE_ZEROES,
            VIRTIO_BLK_F_DISCARD,
        ] {
            assert_ne!(d.features & 1 << bit, 0, "feature {bit}");
        }
        assert_eq!(d.features & 1 << VIRTIO_BLK_F_RO, 0);
        // virtblk_probe reads the configuration.
        assert_eq!(d.g.read(d.cfg, 8), 2048, "capacity in sectors");
        assert_eq!(d.g.read(d.cfg + 8, 4), u64::from(SIZE_MAX));
        assert_eq!(d.g.read(d.cfg + 12, 4), u64::from(SEG_MAX));
        assert_eq!(d.g.read(d.cfg + 20, 4), 512);
        assert_eq!(d.g.read(d.cfg + 40, 4), 1, "max_discard_seg");
        // 2048 sectors: QEMU's guess is 2 (clamped up from 2)/16/63.
        assert_eq!(d.g.read(d.cfg + 16, 4), 2 | 16 << 16 | 63 << 24);

        // A write of two sectors in two buffers (blk-mq: header, sg list, status).
        let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        d.g.mem
            .write_slice(&payload[..512], GuestAddress(DATA))
            .unwrap();
        d.g.mem
            .write_slice(&payload[512..], GuestAddress(DATA + 0x3000))
            .unwrap();
        d.header(VIRTIO_BLK_T_OUT, 3);
        let (st, len) = d.submit(&[
            (HDR, 16, false),
            (DATA, 512, false),
            (DATA + 0x3000, 512, false),
            (STATUS, 1, true),
        ]);
        assert_eq!((st, len), (STATUS_OK, 1));
        assert_eq!(file_bytes(&f.0, 3 * 512, 1024), payload);
        assert!(d.g.irq.level());
        assert_eq!(d.g.read(d.isr, 1), 1);
        assert!(!d.g.irq.level());

        // Read it back, plus the sector before it, into one buffer.
        d.g.mem
            .write_slice(&[0u8; 1536], GuestAddress(DATA))
            .unwrap();
        d.header(VIRTIO_BLK_T_IN, 2);
        let (st, len) = d.submit(&[(HDR, 16, false), (DATA, 1536, true), (STATUS, 1, true)]);
        assert_eq!((st, len), (STATUS_OK, 1537));
        let mut back = vec![0u8; 1536];
        d.g.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back[..512], file_bytes(&f.0, 1024, 512)[..]);
        assert_eq!(back[512..], payload[..]);

        d.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (STATUS, 1, true)]).0,
            STATUS_OK
        );

        d.header(VIRTIO_BLK_T_GET_ID, 0);
        let (st, len) = d.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
        assert_eq!((st, len), (STATUS_OK, 21));
        let mut id = [0u8; 20];
        d.g.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..13], b"vmdesk-disk-0");
        assert_eq!(id[13..], [0; 7]);

        // Write-zeroes and discard of sectors 3..5.
        let range = |sector: u64, n: u32, flags: u32| {
            let mut r = [0u8; 16];
            r[0..8].copy_from_slice(&sector.to_le_bytes());
            r[8..12].copy_from_slice(&n.to_le_bytes());
            r[12..16].copy_from_slice(&flags.to_le_bytes());
            r
        };
        d.g.mem
            .write_slice(&range(3, 2, 0), GuestAddress(DATA))
            .unwrap();
        d.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
                .0,
            STATUS_OK
        );
        assert_eq!(file_bytes(&f.0, 3 * 512, 1024), vec![0u8; 1024]);
        d.header(VIRTIO_BLK_T_DISCARD, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
                .0,
            STATUS_OK
        );
        // Discard with the unmap flag, two ranges, or past the end: refused.
        d.g.mem
            .write_slice(&range(3, 2, 1), GuestAddress(DATA))
            .unwrap();
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
                .0,
            STATUS_UNSUPP
        );
        d.g.mem
            .write_slice(&range(2047, 2, 0), GuestAddress(DATA))
            .unwrap();
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
                .0,
            STATUS_IOERR
        );
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 32, false), (STATUS, 1, true)])
                .0,
            STATUS_UNSUPP
        );
        assert_eq!(d.status(), 0xf);
    }

    #[test]
    fn seabios_driver_sequence() {
        // src/hw/virtio-blk.c init_virtio_blk and virtio_blk_op, step by step.
        let f = image("seabios", 64 << 10);
        let backend = RawImage::open(&f.0, false).unwrap();
        let dev = Arc::new(Mutex::new(VirtioBlock::new(Box::new(backend), "")));
        let mut g = Guest::new(dev.clone());
        // vp_init_simple: caps, vp_reset (status 0, ISR read), ACKNOWLEDGE|DRIVER.
        let (common, isr, cfg, notify, mult, _) = g.probe(0);
        g.write(common + common::DEVICE_STATUS, 1, 0);
        g.read(isr, 1);
        g.write(common + common::DEVICE_STATUS, 1, 3);
        let lo = g.read(common + common::DEVICE_FEATURE, 4);
        g.write(common + common::DEVICE_FEATURE_SELECT, 4, 1);
        let hi = g.read(common + common::DEVICE_FEATURE, 4);
        let wanted = 1u64 << 32 | 1 << 33 | 1 << 6 | 1 << 2 | 1 << 1;
        let features = (hi << 32 | lo) & wanted;
        g.write(common + common::DRIVER_FEATURE_SELECT, 4, 0);
        g.write(common + common::DRIVER_FEATURE, 4, features & 0xffff_ffff);
        g.write(common + common::DRIVER_FEATURE_SELECT, 4, 1);
        g.write(common + common::DRIVER_FEATURE, 4, features >> 32);
        g.write(common + common::DEVICE_STATUS, 1, 0xb);
        assert_ne!(
            g.read(common + common::DEVICE_STATUS, 1) & 8,
            0,
            "features accepted"
        );
        assert_eq!(g.read(cfg + 8, 4), u64::from(SIZE_MAX));
        assert_eq!(g.read(cfg + 12, 4), u64::from(SEG_MAX));
        let sectors = g.read(cfg, 4) | g.read(cfg + 4, 4) << 32;
        assert_eq!(sectors, 128);
        assert_eq!(g.read(cfg + 20, 4), 512);
        // vp_find_vq: MAX_QUEUE_NUM is 128, so the size is written down.
        g.write(common + common::QUEUE_SELECT, 2, 0);
        assert_eq!(g.read(common + common::QUEUE_SIZE, 2), 256);
        g.write(common + common::QUEUE_SIZE, 2, 128);
        assert_eq!(g.read(common + common::QUEUE_SIZE, 2), 128);
        let mut ring = DriverRing::new(&g.mem, 0x7000, 128);
        let kick = g.setup_queue(common, notify, mult, 0, &ring);
        g.write(common + common::DEVICE_STATUS, 1, 0xf);

        // A one-sector read of LBA 5: header, buffer, status; kick; poll used; read ISR.
        let mut h = [0u8; 16];
        h[8..16].copy_from_slice(&5u64.to_le_bytes());
        g.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        ring.add_chain(
            &g.mem,
            &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
        );
        g.write(kick, 2, 0);
        dev.lock().unwrap().wait_idle();
        assert_eq!(ring.take_used(&g.mem).len(), 1);
        g.read(isr, 1);
        assert_eq!(
            g.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            STATUS_OK
        );
        let mut b = vec![0u8; 512];
        g.mem.read_slice(&mut b, GuestAddress(DATA)).unwrap();
        assert_eq!(b, file_bytes(&f.0, 5 * 512, 512));
        assert!(!g.irq.level());
    }

    #[test]
    fn read_only_disk() {
        let f = image("ro", 4096);
        let mut d = Disk::new(&f.0, true);
        assert_ne!(d.features & 1 << VIRTIO_BLK_F_RO, 0);
        assert_eq!(
            d.features & (1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES),
            0
        );
        let before = std::fs::read(&f.0).unwrap();
        d.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)])
                .0,
            STATUS_IOERR
        );
        d.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
                .0,
            STATUS_UNSUPP
        );
        assert_eq!(std::fs::read(&f.0).unwrap(), before);
    }

    #[test]
    fn bad_requests_fail_alone() {
        let f = image("bad", 8192);
        let mut d = Disk::new(&f.0, false);
        let before = std::fs::read(&f.0).unwrap();
        // Past the end, straddling the end, a huge sector, part of a sector.
        for (ty, sector, len) in [
            (VIRTIO_BLK_T_IN, 16, 512),
            (VIRTIO_BLK_T_IN, 15, 1024),
            (VIRTIO_BLK_T_OUT, u64::MAX / 256, 512),
            (VIRTIO_BLK_T_OUT, 0, 100),
            (VIRTIO_BLK_T_IN, 0, 513),
        ] {
            d.header(ty, sector);
            let w = ty == VIRTIO_BLK_T_IN;
            assert_eq!(
                d.submit(&[(HDR, 16, false), (DATA, len, w), (STATUS, 1, true)])
                    .0,
                STATUS_IOERR,
                "type {ty} sector {sector} len {len}"
            );
        }
        // A data buffer outside guest memory.
        d.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (1 << 40, 512, true), (STATUS, 1, true)])
                .0,
            STATUS_IOERR
        );
        d.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            d.submit(&[
                (HDR, 16, false),
                (u64::MAX - 100, 512, false),
                (STATUS, 1, true)
            ])
            .0,
            STATUS_IOERR
        );
        // Unknown and SCSI requests.
        d.header(2, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (STATUS, 1, true)]).0,
            STATUS_UNSUPP
        );
        d.header(0xdead, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (STATUS, 1, true)]).0,
            STATUS_UNSUPP
        );
        // More than SEG_MAX * SIZE_MAX of data is refused before anything is touched.
        {
            let dev = VirtioBlock::new(Box::new(RawImage::open(&f.0, false).unwrap()), "");
            assert_eq!(dev.requests.range(0, 4096), Some(0));
            assert_eq!(dev.requests.range(0, MAX_REQUEST_BYTES + 512), None);
        }
        assert_eq!(std::fs::read(&f.0).unwrap(), before);
        assert_eq!(d.status(), 0xf, "the ring is still fine");
        // And the device still works.
        d.header(VIRTIO_BLK_T_IN, 1);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)])
                .0,
            STATUS_OK
        );
    }

    /// Each malformed chain sets DEVICE_NEEDS_RESET; the queue is then ignored until the
    /// driver resets and sets the device up again.
    #[test]
    fn malformed_chains_need_reset() {
        type Build = fn(&mut Disk);
        let cases: [(&str, Build); 10] = [
            ("chain longer than 4 GiB", |d| {
                d.ring.add_chain(
                    &d.g.mem,
                    &[
                        (HDR, 16, false),
                        (DATA, u32::MAX, true),
                        (DATA, u32::MAX, true),
                        (STATUS, 1, true),
                    ],
                );
            }),
            ("more descriptors than SEG_MAX + 2", |d| {
                // An indirect table of 300 entries, all chained.
                let table = 0x100000u64;
                for i in 0..300u64 {
                    let mut e = [0u8; 16];
                    e[0..8].copy_from_slice(&DATA.to_le_bytes());
                    e[8..12].copy_from_slice(&512u32.to_le_bytes());
                    let flags = if i == 299 {
                        DESC_F_WRITE
                    } else {
                        DESC_F_WRITE | DESC_F_NEXT
                    };
                    e[12..14].copy_from_slice(&flags.to_le_bytes());
                    e[14..16].copy_from_slice(&(i as u16 + 1).to_le_bytes());
                    d.g.mem
                        .write_slice(&e, GuestAddress(table + 16 * i))
                        .unwrap();
                }
                d.ring.write_desc(
                    &d.g.mem,
                    0,
                    table,
                    300 * 16,
                    crate::virtio::testing::DESC_F_INDIRECT,
                    0,
                );
                d.ring.publish(&d.g.mem, 0);
            }),
            ("header too short", |d| {
                d.ring
                    .add_chain(&d.g.mem, &[(HDR, 8, false), (STATUS, 1, true)]);
            }),
            ("no status", |d| {
                d.ring
                    .add_chain(&d.g.mem, &[(HDR, 16, false), (DATA, 512, false)]);
            }),
            ("zero-length status", |d| {
                d.ring
                    .add_chain(&d.g.mem, &[(HDR, 16, false), (STATUS, 0, true)]);
            }),
            ("status outside memory", |d| {
                d.ring
                    .add_chain(&d.g.mem, &[(HDR, 16, false), (1 << 40, 1, true)]);
            }),
            ("loop", |d| {
                d.ring.write_desc(&d.g.mem, 0, HDR, 16, DESC_F_NEXT, 1);
                d.ring
                    .write_desc(&d.g.mem, 1, STATUS, 1, DESC_F_NEXT | DESC_F_WRITE, 0);
                d.ring.publish(&d.g.mem, 0);
            }),
            ("next out of the table", |d| {
                d.ring.write_desc(&d.g.mem, 0, HDR, 16, DESC_F_NEXT, 999);
                d.ring.publish(&d.g.mem, 0);
            }),
            ("head out of the table", |d| {
                d.ring.publish(&d.g.mem, 4000);
            }),
            ("avail index far ahead", |d| {
                let idx = d.ring.avail_idx.wrapping_add(1000);
                d.ring.set_avail_idx(&d.g.mem, idx);
            }),
        ];
        for (what, build) in cases {
            let f = image("malformed", 4096);
            let mut d = Disk::new(&f.0, false);
            build(&mut d);
            d.kick();
            assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0, "{what}");
            assert!(d.g.irq.level(), "{what}: config interrupt");
            assert_eq!(d.g.read(d.isr, 1) & 2, 2, "{what}");
            // Later requests are ignored until a reset.
            d.ring = DriverRing::new(&d.g.mem, 0x10000, 128);
            d.header(VIRTIO_BLK_T_IN, 0);
            d.ring.add_chain(
                &d.g.mem,
                &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
            );
            d.kick();
            assert!(d.ring.take_used(&d.g.mem).is_empty(), "{what}");
            // Reset and set up again: it works.
            d.g.write(d.common + common::DEVICE_STATUS, 1, 0);
            assert_eq!(d.status(), 0, "{what}");
            let (common, _, _, notify, mult, _) = d.g.probe(!0);
            d.ring = DriverRing::new(&d.g.mem, 0x10000, 128);
            d.kick = d.g.setup_queue(common, notify, mult, 0, &d.ring);
            d.g.write(common + common::DEVICE_STATUS, 1, 0xf);
            d.header(VIRTIO_BLK_T_IN, 0);
            assert_eq!(
                d.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)])
                    .0,
                STATUS_OK,
                "{what}"
            );
        }
    }

    #[test]
    fn indirect_descriptors_and_event_idx() {
        let f = image("indirect", 4096);
        let mut d = Disk::new(&f.0, false);
        assert_ne!(
            d.features & 1 << crate::virtio::VIRTIO_RING_F_INDIRECT_DESC,
            0
        );
        d.header(VIRTIO_BLK_T_IN, 2);
        // An indirect table at 0x60000 with header, data, status.
        let table = 0x60000u64;
        let mut t = Vec::new();
        for (i, (addr, len, flags)) in [
            (HDR, 16u32, DESC_F_NEXT),
            (DATA, 512, DESC_F_NEXT | DESC_F_WRITE),
            (STATUS, 1, DESC_F_WRITE),
        ]
        .into_iter()
        .enumerate()
        {
            t.extend_from_slice(&addr.to_le_bytes());
            t.extend_from_slice(&len.to_le_bytes());
            t.extend_from_slice(&flags.to_le_bytes());
            t.extend_from_slice(&(i as u16 + 1).to_le_bytes());
        }
        d.g.mem.write_slice(&t, GuestAddress(table)).unwrap();
        d.ring.write_desc(
            &d.g.mem,
            0,
            table,
            48,
            crate::virtio::testing::DESC_F_INDIRECT,
            0,
        );
        d.ring.publish(&d.g.mem, 0);
        d.kick();
        assert_eq!(d.ring.take_used(&d.g.mem), vec![(0, 513)]);
        assert_eq!(
            d.g.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            STATUS_OK
        );
        let mut b = vec![0u8; 512];
        d.g.mem.read_slice(&mut b, GuestAddress(DATA)).unwrap();
        assert_eq!(b, file_bytes(&f.0, 1024, 512));
    }

    /// Records what the device asks of the backend, and fails on demand.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    struct MockBackend {
        log: Log,
        fail: bool,
    }

    impl BlockBackend for MockBackend {
        fn len(&self) -> u64 {
            16 << 20
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.log
                .0
                .lock()
                .unwrap()
                .push(format!("read {offset} {}", buf.len()));
            buf.fill(0x5a);
            if self.fail {
                Err(std::io::Error::other("injected"))
            } else {
                Ok(())
            }
        }
        fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
            self.log
                .0
                .lock()
                .unwrap()
                .push(format!("write {offset} {}", buf.len()));
            if self.fail {
                Err(std::io::Error::other("injected"))
            } else {
                Ok(())
            }
        }
        fn read_vectored(
            &self,
            offset: u64,
            bufs: &[crate::disk::GuestSlice<'_>],
        ) -> std::io::Result<()> {
            self.log.0.lock().unwrap().push(format!(
                "readv {offset} {} in {}",
                crate::disk::slices_len(bufs),
                bufs.len()
            ));
            for b in bufs {
                b.copy_from(&vec![0x5au8; b.len()]);
            }
            if self.fail {
                Err(std::io::Error::other("injected"))
            } else {
                Ok(())
            }
        }
        fn write_vectored(
            &self,
            offset: u64,
            bufs: &[crate::disk::GuestSlice<'_>],
        ) -> std::io::Result<()> {
            self.log.0.lock().unwrap().push(format!(
                "writev {offset} {} in {}",
                crate::disk::slices_len(bufs),
                bufs.len()
            ));
            if self.fail {
                Err(std::io::Error::other("injected"))
            } else {
                Ok(())
            }
        }
        fn flush(&self) -> std::io::Result<()> {
            self.log.0.lock().unwrap().push("flush".into());
            if self.fail {
                Err(std::io::Error::other("injected"))
            } else {
                Ok(())
            }
        }
        fn discard(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn mock_disk(fail: bool) -> (Disk, Log) {
        let log = Log::default();
        let backend = MockBackend {
            log: log.clone(),
            fail,
        };
        (Disk::with(Box::new(backend), "m", Arc::default()), log)
    }

    #[test]
    fn flush_completes_after_the_backend_flushed_and_requests_are_one_vectored_call() {
        let (mut d, log) = mock_disk(false);
        assert_eq!(
            d.features & 1 << VIRTIO_BLK_F_DISCARD,
            0,
            "backend does not discard"
        );
        // A 3 MiB write in 3 buffers of 1 MiB: one vectored call over the guest's buffers.
        d.header(VIRTIO_BLK_T_OUT, 8);
        let (st, _) = d.submit(&[
            (HDR, 16, false),
            (0x100000, 1 << 20, false),
            (0x200000, 1 << 20, false),
            (0x300000, 1 << 20, false),
            (STATUS, 1, true),
        ]);
        assert_eq!(st, STATUS_OK);
        d.header(VIRTIO_BLK_T_FLUSH, 0);
        // Before the kick nothing was flushed; at completion the flush has returned.
        assert!(!log.0.lock().unwrap().contains(&"flush".to_string()));
        assert_eq!(
            d.submit(&[(HDR, 16, false), (STATUS, 1, true)]).0,
            STATUS_OK
        );
        // A read whose last buffer also holds the status byte: the data part only, and the
        // backend's bytes land in guest memory.
        d.header(VIRTIO_BLK_T_IN, 2);
        d.g.mem
            .write_slice(&[0u8; 1024], GuestAddress(DATA))
            .unwrap();
        let head = d.ring.add_chain(
            &d.g.mem,
            &[(HDR, 16, false), (DATA, 512, true), (DATA + 512, 513, true)],
        );
        d.kick();
        assert_eq!(d.ring.take_used(&d.g.mem), vec![(u32::from(head), 1025)]);
        let mut b = vec![0u8; 1025];
        d.g.mem.read_slice(&mut b, GuestAddress(DATA)).unwrap();
        assert!(b[..1024].iter().all(|&x| x == 0x5a));
        assert_eq!(b[1024], STATUS_OK);
        let ops = log.0.lock().unwrap().clone();
        assert_eq!(
            ops,
            [
                format!("writev 4096 {} in 3", 3 << 20),
                "flush".to_string(),
                "readv 1024 1024 in 2".to_string()
            ]
        );
    }

    #[test]
    fn backend_errors_are_ioerr() {
        let (mut d, _log) = mock_disk(true);
        for (ty, w) in [(VIRTIO_BLK_T_IN, true), (VIRTIO_BLK_T_OUT, false)] {
            d.header(ty, 0);
            assert_eq!(
                d.submit(&[(HDR, 16, false), (DATA, 512, w), (STATUS, 1, true)])
                    .0,
                STATUS_IOERR
            );
        }
        d.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            d.submit(&[(HDR, 16, false), (STATUS, 1, true)]).0,
            STATUS_IOERR
        );
        assert_eq!(d.status(), 0xf);
    }

    /// Reads that wait inside the backend until the test lets them go, counting how many
    /// are inside at once.
    #[derive(Default)]
    struct Hold {
        state: Mutex<HoldState>,
        changed: std::sync::Condvar,
    }

    #[derive(Default)]
    struct HoldState {
        inside: usize,
        most: usize,
        open: bool,
    }

    impl Hold {
        fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
            self.state.lock().unwrap()
        }
        /// Waits (up to 10 s) until `n` reads are inside.
        fn wait_inside(&self, n: usize) -> usize {
            let st = self.lock();
            let (st, _) = self
                .changed
                .wait_timeout_while(st, std::time::Duration::from_secs(10), |s| s.inside < n)
                .unwrap();
            st.inside
        }
        fn open(&self) {
            self.lock().open = true;
            self.changed.notify_all();
        }
    }

    struct HeldReads(Arc<Hold>);

    impl BlockBackend for HeldReads {
        fn len(&self) -> u64 {
            16 << 20
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn read_vectored(
            &self,
            offset: u64,
            bufs: &[crate::disk::GuestSlice<'_>],
        ) -> std::io::Result<()> {
            let hold = &self.0;
            {
                let mut st = hold.lock();
                st.inside += 1;
                st.most = st.most.max(st.inside);
                hold.changed.notify_all();
                let (mut st, _) = hold
                    .changed
                    .wait_timeout_while(st, std::time::Duration::from_secs(10), |s| !s.open)
                    .unwrap();
                st.inside -= 1;
            }
            // Each request's data says which sector it read.
            for b in bufs {
                b.copy_from(&vec![(offset / 512) as u8; b.len()]);
            }
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Queues `n` one-sector reads of sectors 1..=n, each with its own header, buffer
    /// and status byte (status 0xff until the device writes it); returns their heads.
    fn queue_reads(d: &mut Disk, n: u64) -> Vec<u16> {
        (0..n)
            .map(|i| {
                let (hdr, data, st) = (HDR + 32 * i, 0x100000 + 512 * i, STATUS + i);
                let mut h = [0u8; 16];
                h[8..16].copy_from_slice(&(i + 1).to_le_bytes());
                d.g.mem.write_slice(&h, GuestAddress(hdr)).unwrap();
                d.g.mem.write_obj(0xffu8, GuestAddress(st)).unwrap();
                d.ring.add_chain(
                    &d.g.mem,
                    &[(hdr, 16, false), (data, 512, true), (st, 1, true)],
                )
            })
            .collect()
    }

    fn statuses(d: &Disk, n: u64) -> Vec<u8> {
        (0..n)
            .map(|i| d.g.mem.read_obj(GuestAddress(STATUS + i)).unwrap())
            .collect()
    }

    #[test]
    fn requests_queued_together_are_in_flight_together() {
        let hold = Arc::new(Hold::default());
        let counters = Arc::new(crate::disk::IoCounters::default());
        let backend =
            crate::disk::Counted::new(Box::new(HeldReads(hold.clone())), counters.clone());
        let mut d = Disk::with(Box::new(backend), "h", Arc::default());
        // As many as the disk has I/O threads (at least 4).
        let n = io_threads();
        let heads = queue_reads(&mut d, n as u64);
        // The notify returns at once: the vCPU (or doorbell thread) does not wait for I/O.
        d.g.write(d.kick, 2, 0);
        assert_eq!(
            hold.wait_inside(n),
            n,
            "all the reads inside the backend at once"
        );
        assert!(
            d.ring.take_used(&d.g.mem).is_empty(),
            "none done while held"
        );
        assert_eq!(statuses(&d, n as u64), vec![0xff; n]);
        hold.open();
        d.dev.lock().unwrap().wait_idle();
        let mut used: Vec<u32> = d.ring.take_used(&d.g.mem).iter().map(|u| u.0).collect();
        used.sort_unstable();
        assert_eq!(
            used,
            heads.iter().map(|&h| u32::from(h)).collect::<Vec<_>>()
        );
        assert_eq!(statuses(&d, n as u64), vec![STATUS_OK; n]);
        for i in 0..n as u64 {
            let b: u8 =
                d.g.mem
                    .read_obj(GuestAddress(0x100000 + 512 * i + 511))
                    .unwrap();
            assert_eq!(b, i as u8 + 1, "request {i}'s own data");
        }
        assert_eq!(hold.lock().most, n);
        assert_eq!(
            counters.counts().most_in_flight,
            n as u64,
            "the disk's counters saw it too"
        );
        assert_eq!(d.dev.lock().unwrap().io_threads(), n);
    }

    #[test]
    fn a_reset_waits_for_the_requests_in_flight() {
        let hold = Arc::new(Hold::default());
        let mut d = Disk::with(Box::new(HeldReads(hold.clone())), "h", Arc::default());
        queue_reads(&mut d, 3);
        d.g.write(d.kick, 2, 0);
        assert_eq!(hold.wait_inside(3), 3);
        let opener = {
            let hold = hold.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                hold.open();
            })
        };
        // The driver resets the device while its reads are in the backend.
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0);
        // By the time the reset is done, every request has finished and written its
        // status; none will touch guest memory afterwards.
        assert!(hold.lock().open);
        assert_eq!(hold.lock().inside, 0);
        assert_eq!(statuses(&d, 3), [STATUS_OK; 3]);
        assert_eq!(d.dev.lock().unwrap().workers.outstanding(), 0);
        opener.join().unwrap();
    }

    #[test]
    fn while_paused_requests_wait_before_touching_guest_memory() {
        let gate = Arc::new(DeviceGate::default());
        let log = Log::default();
        let backend = MockBackend {
            log: log.clone(),
            fail: false,
        };
        let mut d = Disk::with(Box::new(backend), "m", gate.clone());
        gate.pause();
        queue_reads(&mut d, 2);
        d.g.write(d.kick, 2, 0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            log.0.lock().unwrap().is_empty(),
            "no backend call while paused"
        );
        assert_eq!(statuses(&d, 2), [0xff; 2]);
        assert!(d.ring.take_used(&d.g.mem).is_empty());
        gate.resume();
        d.dev.lock().unwrap().wait_idle();
        assert_eq!(statuses(&d, 2), [STATUS_OK; 2]);
        assert_eq!(d.ring.take_used(&d.g.mem).len(), 2);
    }
}
