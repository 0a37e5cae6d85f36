//! Virtio devices (virtio 1.0, split virtqueues) and what they share: the
//! [`VirtioDevice`] trait a device implements, the [`Interrupt`] it raises, and the queues
//! it is handed when the driver sets DRIVER_OK. The transport is modern virtio-pci
//! ([`pci::VirtioPci`]); the devices are the tablet ([`input::VirtioTablet`]), the
//! block device ([`block::VirtioBlock`]), the network card ([`net::VirtioNet`]) and the
//! multiport console with named ports ([`serial::VirtioSerial`], virtio-serial, for the
//! guest agent's channel).
//!
//! Ring handling (descriptor chains, the available and used rings, event index) is the
//! `virtio-queue` crate's; guest memory is `vm-memory`'s. Everything a guest writes into
//! a ring is untrusted: a device fails the one request (an error status) when its buffers
//! are bad, and marks itself DEVICE_NEEDS_RESET (and stops using the queue) when the ring
//! itself is inconsistent, as QEMU's `virtio_error` does. Neither ever panics.
//!
//! Not implemented: packed rings, legacy (0.9.5) interfaces, VIRTIO_F_NOTIFICATION_DATA,
//! per-queue reset.

pub mod block;
pub mod input;
mod interrupt;
pub mod io_workers;
pub mod net;
pub mod notify;
pub mod pci;
pub mod serial;

use std::sync::Arc;

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};

use crate::memory::GuestMem;

pub use interrupt::{Interrupt, VIRTIO_MSI_NO_VECTOR};
pub use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
pub use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Device status bits (virtio 1.0, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// ISR status bits (virtio 1.0, 4.1.4.5).
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// Virtio device types (virtio 1.0, 5).
pub const TYPE_NET: u16 = 1;
pub const TYPE_BLOCK: u16 = 2;
pub const TYPE_CONSOLE: u16 = 3;
pub const TYPE_INPUT: u16 = 18;

/// What a device must answer to be put behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device type (2 = block, 18 = input, ...).
    fn device_type(&self) -> u16;
    /// Maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits; the transport adds VIRTIO_F_VERSION_1 and the ring
    /// features it supports.
    fn features(&self) -> u64;
    /// The features the driver accepted (at FEATURES_OK, a subset of what was offered).
    fn ack_features(&mut self, _features: u64) {}
    /// Reads from the device-specific configuration. Bytes past its end read as zero.
    fn read_config(&mut self, offset: u64, data: &mut [u8]);
    /// Writes to the device-specific configuration; the default ignores them.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: from now on the device owns the queues.
    fn activate(&mut self, active: Activation);
    /// The driver notified queue `index` (only after [`VirtioDevice::activate`]).
    fn queue_notify(&mut self, index: u16);
    /// The driver wrote 0 to the status (or the machine reset): drop the queues and every
    /// request in flight; keep the backend.
    fn reset(&mut self);
}

/// Copies `data.len()` bytes of a device's configuration `config` from `offset`, for
/// [`VirtioDevice::read_config`]; bytes past its end read as zero.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| config.get(o.checked_add(i)?))
            .copied()
            .unwrap_or(0);
    }
}

/// What a device gets at DRIVER_OK.
pub struct Activation {
    pub mem: GuestMem,
    /// One per queue the device declared; a queue the driver did not enable has
    /// `ready() == false`.
    pub queues: Vec<Queue>,
    /// The features the driver accepted.
    pub features: u64,
    pub interrupt: Arc<Interrupt>,
}

/// Why a ring can no longer be trusted.
#[derive(Debug, Error)]
pub enum RingError {
    #[error("available index jumped by {0}, more than the queue size")]
    AvailIndex(u16),
    #[error("descriptor chain is malformed: {0}")]
    Chain(&'static str),
    #[error("ring access failed: {0}")]
    Queue(#[from] virtio_queue::Error),
}

/// The number of chains the driver made available and the device has not taken yet,
/// checked against the queue size (a larger jump means the ring is corrupt, and popping
/// would walk stale entries).
pub fn pending_chains(queue: &Queue, mem: &GuestMem) -> Result<u16, RingError> {
    let avail = queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire)?;
    let pending = avail.0.wrapping_sub(queue.next_avail());
    if pending > queue.size() {
        return Err(RingError::AvailIndex(pending));
    }
    Ok(pending)
}

/// One buffer of a descriptor chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A descriptor chain split into what the device reads and what it writes, with every
/// address checked against guest memory. Built by [`split_chain`].
#[derive(Debug, Default)]
pub struct SplitChain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
    /// A buffer points outside guest memory: the request fails, the ring is still fine.
    pub bad_buffer: bool,
}

impl SplitChain {
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Walks a chain the queue handed out. The chain iterator stops quietly at a loop (after
/// queue-size descriptors), at a descriptor table outside memory, and at a nested indirect
/// table; each of those leaves the last descriptor it returned still pointing onwards, which
/// is how a broken chain is told from a finished one. Readable buffers after writable ones
/// break the layout rule of virtio 1.0, 2.4.4.2, and so does a chain with more than
/// `max_descs` buffers.
pub fn split_chain<M>(
    chain: virtio_queue::DescriptorChain<M>,
    mem: &GuestMem,
    max_descs: usize,
) -> Result<SplitChain, RingError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let mut out = SplitChain {
        head: chain.head_index(),
        ..SplitChain::default()
    };
    let mut last_has_next = true;
    let mut count = 0usize;
    for desc in chain {
        count += 1;
        if count > max_descs {
            return Err(RingError::Chain("more descriptors than the device accepts"));
        }
        last_has_next = desc.has_next();
        let seg = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        if seg.len > 0
            && !vm_memory::GuestMemoryBackend::check_range(mem, seg.addr, seg.len as usize)
        {
            out.bad_buffer = true;
        }
        if desc.is_write_only() {
            out.writable.push(seg);
        } else {
            if !out.writable.is_empty() {
                return Err(RingError::Chain("readable descriptor after a writable one"));
            }
            out.readable.push(seg);
        }
    }
    if count == 0 {
        return Err(RingError::Chain(
            "head index or descriptor table is invalid",
        ));
    }
    if last_has_next {
        return Err(RingError::Chain(
            "chain does not end (a loop, a bad next index or a bad indirect table)",
        ));
    }
    Ok(out)
}

/// The guest memory behind `len` bytes of `segs`, starting `skip` bytes in, as slices in
/// order (a buffer that spans two memory regions gives two).
pub fn guest_slices<'m>(
    mem: &'m GuestMem,
    segs: &[Segment],
    mut skip: u64,
    len: u64,
) -> std::io::Result<Vec<crate::disk::GuestSlice<'m>>> {
    let bad = |e: vm_memory::GuestMemoryError| std::io::Error::other(e.to_string());
    let mut out = Vec::with_capacity(segs.len());
    let mut left = len;
    for s in segs {
        if left == 0 {
            break;
        }
        let seg_len = u64::from(s.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(left);
        let addr = s
            .addr
            .0
            .checked_add(skip)
            .map(vm_memory::GuestAddress)
            .ok_or_else(|| std::io::Error::other("buffer address overflows"))?;
        for slice in vm_memory::GuestMemoryBackend::get_slices(mem, addr, n as usize) {
            out.push(slice.map_err(bad)?);
        }
        left -= n;
        skip = 0;
    }
    if left != 0 {
        return Err(std::io::Error::other(
            "descriptor chain shorter than the request",
        ));
    }
    Ok(out)
}

/// Copies `len` bytes starting `skip` bytes into the segments out to `buf`.
pub fn read_segments(
    mem: &GuestMem,
    segs: &[Segment],
    mut skip: u64,
    buf: &mut [u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    use vm_memory::Bytes;
    let mut done = 0usize;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(buf.len() - done);
        mem.read_slice(&mut buf[done..done + n], GuestAddress(s.addr.0 + skip))?;
        done += n;
        skip = 0;
    }
    if done == buf.len() {
        Ok(())
    } else {
        Err(vm_memory::GuestMemoryError::PartialBuffer {
            expected: buf.len(),
            completed: done,
        })
    }
}

/// Copies `buf` into the segments, starting `skip` bytes in.
pub fn write_segments(
    mem: &GuestMem,
    segs: &[Segment],
    mut skip: u64,
    buf: &[u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    use vm_memory::Bytes;
    let mut done = 0usize;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(buf.len() - done);
        mem.write_slice(&buf[done..done + n], GuestAddress(s.addr.0 + skip))?;
        done += n;
        skip = 0;
    }
    if done == buf.len() {
        Ok(())
    } else {
        Err(vm_memory::GuestMemoryError::PartialBuffer {
            expected: buf.len(),
            completed: done,
        })
    }
}

/// A driver's view of guest memory and split rings, for the device tests and the
/// benchmarks (which play the guest without a vCPU). Rings are laid out the way Linux's
/// vring_create_virtqueue does (descriptor table, then the available ring, then the used
/// ring page-aligned). Not used by the VMM itself; it panics on bad input, as tests should.
#[doc(hidden)]
pub mod testing {
    use super::*;
    use vm_memory::Bytes;

    pub const DESC_F_NEXT: u16 = 1;
    pub const DESC_F_WRITE: u16 = 2;
    pub const DESC_F_INDIRECT: u16 = 4;

    pub fn mem(size: u64) -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    /// A split ring the test plays the driver of.
    pub struct DriverRing {
        pub size: u16,
        pub desc: u64,
        pub avail: u64,
        pub used: u64,
        pub next_desc: u16,
        pub avail_idx: u16,
        pub used_seen: u16,
    }

    impl DriverRing {
        pub fn new(mem: &GuestMem, base: u64, size: u16) -> DriverRing {
            let desc = base;
            let avail = desc + 16 * u64::from(size);
            let used = (avail + 6 + 2 * u64::from(size) + 4095) & !4095;
            let r = DriverRing {
                size,
                desc,
                avail,
                used,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            let zero = vec![0u8; (used + 6 + 8 * u64::from(size) - base) as usize];
            mem.write_slice(&zero, GuestAddress(base)).unwrap();
            r
        }

        pub fn write_desc(
            &self,
            mem: &GuestMem,
            i: u16,
            addr: u64,
            len: u32,
            flags: u16,
            next: u16,
        ) {
            let a = GuestAddress(self.desc + 16 * u64::from(i));
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&d, a).unwrap();
        }

        /// Adds a chain of `(addr, len, writable)` buffers and publishes it; returns the head.
        pub fn add_chain(&mut self, mem: &GuestMem, bufs: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc;
            for (k, &(addr, len, w)) in bufs.iter().enumerate() {
                let i = (self.next_desc + k as u16) % self.size;
                let last = k + 1 == bufs.len();
                let flags = if w { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
                self.write_desc(mem, i, addr, len, flags, (i + 1) % self.size);
            }
            self.next_desc = (self.next_desc + bufs.len() as u16) % self.size;
            self.publish(mem, head);
            head
        }

        /// Puts `head` in the available ring and bumps the index.
        pub fn publish(&mut self, mem: &GuestMem, head: u16) {
            let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
                .unwrap();
        }

        pub fn set_avail_idx(&mut self, mem: &GuestMem, idx: u16) {
            self.avail_idx = idx;
            mem.write_obj(idx, GuestAddress(self.avail + 2)).unwrap();
        }

        pub fn used_idx(&self, mem: &GuestMem) -> u16 {
            mem.read_obj(GuestAddress(self.used + 2)).unwrap()
        }

        /// The used elements the device added since the last call: `(id, len)`.
        pub fn take_used(&mut self, mem: &GuestMem) -> Vec<(u32, u32)> {
            let idx = self.used_idx(mem);
            let mut out = Vec::new();
            while self.used_seen != idx {
                let e = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
                let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
                out.push((id, len));
                self.used_seen = self.used_seen.wrapping_add(1);
            }
            out
        }

        /// A `virtio_queue::Queue` configured as the transport would after the driver
        /// programmed and enabled it.
        pub fn queue(&self, max: u16) -> Queue {
            let mut q = Queue::new(max).unwrap();
            q.set_size(self.size);
            q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
            q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
            q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
            q.set_ready(true);
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use virtio_queue::QueueOwnedT;
    use vm_memory::Bytes;

    /// A buffer across two memory regions becomes two slices; the header is skipped; a
    /// chain shorter than the request is an error, not a short transfer.
    #[test]
    fn guest_slices_follow_the_chain() {
        let mem =
            GuestMem::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000)])
                .unwrap();
        let segs = [
            Segment {
                addr: GuestAddress(0xfe00),
                len: 0x400,
            },
            Segment {
                addr: GuestAddress(0x18000),
                len: 0x200,
            },
        ];
        let slices = guest_slices(&mem, &segs, 16, 0x400 - 16 + 0x100).unwrap();
        let lens: Vec<usize> = slices.iter().map(|s| s.len()).collect();
        assert_eq!(lens, [0x200 - 16, 0x200, 0x100]);
        mem.write_slice(&[7u8; 0x100], GuestAddress(0x18000))
            .unwrap();
        let mut last = [0u8; 0x100];
        slices[2].copy_to(&mut last[..]);
        assert_eq!(last, [7u8; 0x100]);
        assert!(guest_slices(&mem, &segs, 0, 0x601).is_err());
        assert_eq!(guest_slices(&mem, &segs, 0, 0).unwrap().len(), 0);
    }

    fn pop_split(ring: &DriverRing, q: &mut Queue, m: &GuestMem) -> Result<SplitChain, RingError> {
        let _ = ring;
        let chain = q.iter(m).unwrap().next().expect("a chain");
        split_chain(chain, m, 64)
    }

    #[test]
    fn split_chain_accepts_good_and_refuses_broken_chains() {
        let m = mem(1 << 20);
        let mut ring = DriverRing::new(&m, 0x1000, 8);
        let mut q = ring.queue(8);
        ring.add_chain(
            &m,
            &[(0x8000, 16, false), (0x9000, 512, true), (0xa000, 1, true)],
        );
        let c = pop_split(&ring, &mut q, &m).unwrap();
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 513);
        assert!(!c.bad_buffer);

        // A loop: 0 -> 1 -> 0.
        ring.write_desc(&m, 0, 0x8000, 16, DESC_F_NEXT, 1);
        ring.write_desc(&m, 1, 0x9000, 16, DESC_F_NEXT, 0);
        ring.publish(&m, 0);
        assert!(matches!(
            pop_split(&ring, &mut q, &m),
            Err(RingError::Chain(_))
        ));

        // A next index past the table.
        ring.write_desc(&m, 0, 0x8000, 16, DESC_F_NEXT, 200);
        ring.publish(&m, 0);
        assert!(matches!(
            pop_split(&ring, &mut q, &m),
            Err(RingError::Chain(_))
        ));

        // A head index past the table.
        ring.publish(&m, 9);
        assert!(matches!(
            pop_split(&ring, &mut q, &m),
            Err(RingError::Chain(_))
        ));

        // Readable after writable.
        ring.write_desc(&m, 0, 0x8000, 16, DESC_F_WRITE | DESC_F_NEXT, 1);
        ring.write_desc(&m, 1, 0x9000, 16, 0, 0);
        ring.publish(&m, 0);
        assert!(matches!(
            pop_split(&ring, &mut q, &m),
            Err(RingError::Chain(_))
        ));

        // A buffer outside guest memory is a bad request, not a bad ring.
        ring.write_desc(&m, 0, 0x8000, 16, DESC_F_NEXT, 1);
        ring.write_desc(&m, 1, 1 << 40, 16, DESC_F_WRITE, 0);
        ring.publish(&m, 0);
        assert!(pop_split(&ring, &mut q, &m).unwrap().bad_buffer);

        // An indirect table inside an indirect table.
        ring.write_desc(&m, 0, 0x20000, 32, DESC_F_INDIRECT, 0);
        let mut ind = [0u8; 32];
        ind[0..8].copy_from_slice(&0x21000u64.to_le_bytes());
        ind[8..12].copy_from_slice(&16u32.to_le_bytes());
        ind[12..14].copy_from_slice(&DESC_F_INDIRECT.to_le_bytes());
        m.write_slice(&ind, GuestAddress(0x20000)).unwrap();
        ring.publish(&m, 0);
        assert!(matches!(
            pop_split(&ring, &mut q, &m),
            Err(RingError::Chain(_))
        ));

        // An available index that runs ahead by more than the queue size.
        ring.set_avail_idx(&m, ring.avail_idx.wrapping_add(9));
        assert!(matches!(
            pending_chains(&q, &m),
            Err(RingError::AvailIndex(_))
        ));
    }

    #[test]
    fn segments_copy_across_buffers() {
        let m = mem(1 << 16);
        let segs = [
            Segment {
                addr: GuestAddress(0x100),
                len: 3,
            },
            Segment {
                addr: GuestAddress(0x200),
                len: 5,
            },
        ];
        write_segments(&m, &segs, 1, &[1, 2, 3, 4, 5]).unwrap();
        let mut b = [0u8; 7];
        read_segments(&m, &segs, 1, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 0, 0]);
        assert!(read_segments(&m, &segs, 2, &mut b).is_err());
    }
}
