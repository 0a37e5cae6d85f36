//! virtio-net (virtio 1.0, 5.1): the VM's network card, one receive and one transmit queue
//! over any [`NetBackend`] (passt, a TAP device).
//!
//! Queues: 0 receiveq, 1 transmitq, 256 entries each (QEMU's default). Configuration: `mac`,
//! `status` (VIRTIO_NET_S_LINK_UP, see [`VirtioNet::set_link`]) and `max_virtqueue_pairs`
//! (1); writes to it are ignored. Features offered: MAC, STATUS and MRG_RXBUF; when the
//! backend's frames carry a virtio header ([`NetBackend::vnet_hdr`], a TAP device with
//! IFF_VNET_HDR) also CSUM, GUEST_CSUM, HOST_TSO4/6 and GUEST_TSO4/6, and the features the
//! driver accepted are handed to [`NetBackend::set_offloads`] at DRIVER_OK.
//!
//! Every frame in the rings starts with virtio 1.0's 12-byte header (`virtio_net_hdr_v1`,
//! `num_buffers` included whether or not MRG_RXBUF is negotiated). With a vnet-header
//! backend the header travels through untouched both ways, but for `num_buffers`, which
//! the device sets on receive. Without one, the header is stripped on transmit (a header
//! asking for checksum or segmentation work, which was never offered, drops the frame) and
//! on receive it is written with no flags, GSO_NONE and `num_buffers`.
//!
//! Transmit runs on the card's doorbell thread (the notifying vCPU's, without doorbells):
//! each chain's readable buffers (header and frame split across descriptors any way) are
//! handed to [`NetBackend::send_guest`] where they are, without a copy (passt's and the
//! TAP device's backends `writev` them); the chain goes back used with length 0 and the
//! driver is interrupted once per batch. A chain with writable buffers, buffers outside guest
//! memory, no room for the header and an Ethernet header, or a frame over
//! [`MAX_FRAME_LEN`], is dropped and counted, as is a frame the backend fails to send or
//! one sent while the link is down; the chain still goes back.
//!
//! Receive: the backend's reader thread calls [`VirtioNet::receive`] (the device lock
//! orders it against the vCPU's notifications; the interrupt is raised from that thread,
//! and a frame delivered at once is copied straight from the caller's slice into the
//! guest's buffers). With MRG_RXBUF a frame fills as many receive chains as it needs
//! (`num_buffers` says how many, each used length is what was written into that chain);
//! without it a frame goes into one chain and is dropped when it does not fit (with
//! MRG_RXBUF, when a whole ring of the driver's chains would not hold it). Chains are taken
//! from the ring only as a frame needs them; the ones a frame could not fill yet are held
//! for the next one. When the driver has posted too little room, frames wait in a queue of
//! at most [`PENDING_FRAMES`]; once that is full `receive` refuses the frame (the backend
//! keeps it). The device writes the `rx_space` event when a receive notification from the
//! driver let waiting frames in or made room after a refusal, and when a refused frame
//! would now be dropped anyway (reset, link down, broken ring). Frames arriving while the
//! driver is not running (before DRIVER_OK, after a reset, with the device broken) or while
//! the link is down are dropped and counted. A receive chain the device cannot write into
//! (readable buffers, a buffer outside guest memory, less room than the header) goes back
//! empty and is counted.
//!
//! Notifications follow the driver's wishes (VIRTIO_RING_F_EVENT_IDX as in `block.rs`);
//! receive notifications are asked for only while frames wait for buffers, as QEMU does.
//! A ring that cannot be trusted (RingError) marks the device DEVICE_NEEDS_RESET; the queues
//! are left alone and waiting frames dropped until the driver resets it.
//!
//! Not emulated: the control queue (no receive filtering, so every frame the backend
//! delivers reaches the guest; no VLAN filter, no GUEST_ANNOUNCE, no MAC change by the
//! driver), multiqueue, the MTU and SPEED_DUPLEX features, offloads without a vnet-header
//! backend, UFO/USO/ECN, RSS and hash reports, notification coalescing, packed rings, and
//! legacy (pre-1.0) header layouts.

use std::collections::VecDeque;
use std::mem::{offset_of, size_of};
use std::sync::Arc;

use nix::sys::eventfd::EventFd;
use serde::Serialize;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_S_LINK_UP, virtio_net_config, virtio_net_hdr, virtio_net_hdr_mrg_rxbuf,
};
use virtio_queue::{Queue, QueueT};

use super::{
    Activation, Interrupt, RingError, SplitChain, TYPE_NET, VirtioDevice, guest_slices,
    pending_chains, read_segments, split_chain, write_segments,
};
use crate::memory::GuestMem;
use crate::net::NetBackend;

/// Size of each queue (QEMU's default).
pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
/// Bytes of the header before every frame in the rings (virtio 1.0 uses the mergeable
/// layout whatever was negotiated).
pub const HDR_LEN: usize = size_of::<virtio_net_hdr_mrg_rxbuf>();
/// The longest frame (without the header) either way: what a segmentation offload frame
/// can hold, an IP packet of up to 65535 bytes (its length field's limit) behind an
/// Ethernet header and a VLAN tag. 64 KiB flat was 17 bytes short, and a TAP device's
/// largest TSO frames were dropped (the TCP stream crawled on retransmissions).
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 4;
/// Frames kept for the guest while it posts too few receive buffers.
pub const PENDING_FRAMES: usize = 256;
/// The shortest frame worth sending: an Ethernet header.
const ETH_HLEN: usize = 14;
/// The most descriptors one chain may have (an indirect table may be longer than the ring).
const MAX_DESCS: usize = 1024;
/// Bytes of the configuration the device has: mac, status, max_virtqueue_pairs.
const CONFIG_LEN: usize = offset_of!(virtio_net_config, mtu);
const NUM_BUFFERS_OFFSET: usize = offset_of!(virtio_net_hdr_mrg_rxbuf, num_buffers);
const FLAGS_OFFSET: usize = offset_of!(virtio_net_hdr, flags);
const GSO_TYPE_OFFSET: usize = offset_of!(virtio_net_hdr, gso_type);

/// The offloads that need a vnet-header backend to carry them.
const OFFLOAD_FEATURES: u64 = 1 << VIRTIO_NET_F_CSUM
    | 1 << VIRTIO_NET_F_GUEST_CSUM
    | 1 << VIRTIO_NET_F_HOST_TSO4
    | 1 << VIRTIO_NET_F_HOST_TSO6
    | 1 << VIRTIO_NET_F_GUEST_TSO4
    | 1 << VIRTIO_NET_F_GUEST_TSO6;

/// What the device did, for `status` and logs. Drops are counted by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetCounters {
    /// Frames from the guest the backend took, and their bytes (without the virtio header).
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames put into the guest's receive buffers, and their bytes (without the header).
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Transmit chains with writable buffers, buffers outside guest memory, too short for
    /// the header and an Ethernet header, longer than [`MAX_FRAME_LEN`], or asking for an
    /// offload that was not negotiated.
    pub tx_dropped_bad_chain: u64,
    /// Frames the backend failed to send.
    pub tx_dropped_backend_error: u64,
    /// Frames the guest sent while the link was down.
    pub tx_dropped_link_down: u64,
    /// Frames for the guest while the driver was not running (before DRIVER_OK, after a
    /// reset, with the device broken), including those waiting when it stopped.
    pub rx_dropped_not_running: u64,
    /// Frames for the guest while the link was down, including those waiting when it went.
    pub rx_dropped_link_down: u64,
    /// Frames from the backend shorter than their header or longer than [`MAX_FRAME_LEN`].
    pub rx_dropped_malformed: u64,
    /// Frames larger than the driver's receive room: without MRG_RXBUF, than the chain
    /// they were due to fill; with it, than a whole ring of its chains.
    pub rx_dropped_no_fit: u64,
    /// Receive chains given back empty: readable buffers, a buffer outside guest memory,
    /// or less room than the header.
    pub rx_bad_buffers: u64,
    /// Times [`VirtioNet::receive`] refused a frame because the waiting queue was full.
    pub rx_refused: u64,
}

/// Debug logs of guest- or backend-caused drops: the 1st, 2nd, 4th, 8th ... of each kind.
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

struct Active {
    mem: GuestMem,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<Interrupt>,
    /// The driver accepted MRG_RXBUF: a frame may span chains.
    mergeable: bool,
    /// Receive chains taken from the ring that no frame has filled yet, oldest first.
    held: VecDeque<SplitChain>,
    /// Their writable bytes together.
    held_room: u64,
    /// Receive chains went back since the last interrupt decision.
    rx_used: bool,
}

/// What happened to one frame offered to the receive ring.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Delivered,
    /// Not enough posted room: the frame waits.
    NoRoom,
    /// Larger than the room the driver can give (see [`NetCounters::rx_dropped_no_fit`]):
    /// dropped.
    NoFit,
}

impl Active {
    /// Takes one receive chain into `held`; false when the ring has none. Chains the
    /// device cannot write into go back empty on the way.
    fn take_rx_chain(&mut self, c: &mut NetCounters) -> Result<bool, RingError> {
        loop {
            if pending_chains(&self.rx, &self.mem)? == 0 {
                return Ok(false);
            }
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                return Err(RingError::Chain("available ring entry unreadable"));
            };
            let chain = split_chain(chain, &self.mem, MAX_DESCS)?;
            if chain.bad_buffer
                || !chain.readable.is_empty()
                || chain.writable_len() < HDR_LEN as u64
            {
                c.rx_bad_buffers += 1;
                if worth_logging(c.rx_bad_buffers) {
                    tracing::debug!(
                        "virtio-net: receive chain without room for a header given back empty ({} so far)",
                        c.rx_bad_buffers
                    );
                }
                self.rx.add_used(&self.mem, chain.head, 0)?;
                self.rx_used = true;
                continue;
            }
            self.held_room += chain.writable_len();
            self.held.push_back(chain);
            return Ok(true);
        }
    }

    /// Puts `header` (its `num_buffers` set here) and `payload` into the held chains,
    /// taking more from the ring as needed.
    fn deliver(
        &mut self,
        mut header: [u8; HDR_LEN],
        payload: &[u8],
        c: &mut NetCounters,
    ) -> Result<Delivery, RingError> {
        let needed = (HDR_LEN + payload.len()) as u64;
        if self.mergeable {
            while self.held_room < needed {
                if !self.take_rx_chain(c)? {
                    // Every entry of the ring held and still too little room: no more
                    // buffers can come, so the frame would never go in.
                    if self.held.len() >= usize::from(self.rx.size()) {
                        return Ok(Delivery::NoFit);
                    }
                    return Ok(Delivery::NoRoom);
                }
            }
        } else {
            if self.held.is_empty() && !self.take_rx_chain(c)? {
                return Ok(Delivery::NoRoom);
            }
            if self.held.front().map_or(0, |h| h.writable_len()) < needed {
                // The chain stays for the next frame, which may be smaller.
                return Ok(Delivery::NoFit);
            }
        }
        let mut chains = 0usize;
        let mut room = 0u64;
        while room < needed {
            let Some(chain) = self.held.get(chains) else {
                return Err(RingError::Chain("receive chains lost their room"));
            };
            room += chain.writable_len();
            chains += 1;
        }
        let num_buffers = u16::try_from(chains)
            .map_err(|_| RingError::Chain("a frame needed more chains than a ring holds"))?;
        header[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2]
            .copy_from_slice(&num_buffers.to_le_bytes());
        // The first chain holds the whole header (every held chain has room for one); the
        // payload runs on through the others.
        let mut sent = 0usize;
        for (k, chain) in self.held.drain(..chains).enumerate() {
            let room = chain.writable_len();
            self.held_room -= room;
            let skip = if k == 0 {
                write_segments(&self.mem, &chain.writable, 0, &header)
                    .map_err(|_| RingError::Chain("receive buffer not writable"))?;
                HDR_LEN
            } else {
                0
            };
            let n = ((room - skip as u64).min((payload.len() - sent) as u64)) as usize;
            write_segments(
                &self.mem,
                &chain.writable,
                skip as u64,
                &payload[sent..sent + n],
            )
            .map_err(|_| RingError::Chain("receive buffer not writable"))?;
            sent += n;
            // At most HDR_LEN + MAX_FRAME_LEN bytes: fits.
            self.rx.add_used(&self.mem, chain.head, (skip + n) as u32)?;
        }
        self.rx_used = true;
        Ok(Delivery::Delivered)
    }

    /// Raises the queue interrupt if receive chains went back and the driver wants to know.
    fn rx_interrupt(&mut self) -> Result<(), RingError> {
        if std::mem::take(&mut self.rx_used) && self.rx.needs_notification(&self.mem)? {
            self.interrupt.signal_used_queue(RX_QUEUE);
        }
        Ok(())
    }
}

/// The virtio network card (see the module doc).
pub struct VirtioNet {
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    /// Frames to and from the backend carry the virtio header.
    vnet_hdr: bool,
    rx_space: Arc<EventFd>,
    offered: u64,
    link_up: bool,
    active: Option<Active>,
    /// A ring was found inconsistent: nothing more is done until a reset.
    broken: bool,
    /// Frames for the guest waiting for receive buffers, as the backend gave them.
    pending: VecDeque<Vec<u8>>,
    /// `receive` refused a frame and the backend's reader waits for `rx_space`.
    refused: bool,
    counters: NetCounters,
    /// Backend send failures since the last success (for one log line per streak).
    tx_fail_streak: u64,
}

impl VirtioNet {
    /// `mac` the card's address; `backend` where guest frames go; `rx_space` is written
    /// (`EventFd::write(1)`) whenever a frame refused by [`VirtioNet::receive`] could now be
    /// taken (the driver posted receive buffers), so the backend's reader thread can poll
    /// on it.
    pub fn new(mac: [u8; 6], backend: Box<dyn NetBackend>, rx_space: Arc<EventFd>) -> VirtioNet {
        let vnet_hdr = backend.vnet_hdr();
        let mut offered =
            1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS | 1 << VIRTIO_NET_F_MRG_RXBUF;
        if vnet_hdr {
            offered |= OFFLOAD_FEATURES;
        }
        VirtioNet {
            mac,
            backend,
            vnet_hdr,
            rx_space,
            offered,
            link_up: true,
            active: None,
            broken: false,
            pending: VecDeque::new(),
            refused: false,
            counters: NetCounters::default(),
            tx_fail_streak: 0,
        }
    }

    /// A frame for the guest (with the 12-byte virtio header first iff the backend's
    /// `vnet_hdr()`). True when taken: delivered into receive buffers now, queued until the
    /// driver posts some, or dropped (driver not running, link down, malformed; counted).
    /// False when the waiting queue is full: the caller keeps the frame and waits for
    /// `rx_space`.
    pub fn receive(&mut self, frame: &[u8]) -> bool {
        if !self.rx_running() {
            self.counters.rx_dropped_not_running += 1;
            return true;
        }
        if !self.link_up {
            self.counters.rx_dropped_link_down += 1;
            return true;
        }
        let hdr = if self.vnet_hdr { HDR_LEN } else { 0 };
        if frame.len() < hdr || frame.len() - hdr > MAX_FRAME_LEN {
            self.counters.rx_dropped_malformed += 1;
            if worth_logging(self.counters.rx_dropped_malformed) {
                tracing::debug!(
                    "virtio-net: a {}-byte frame from the backend dropped (header {hdr}, limit {MAX_FRAME_LEN}; {} so far)",
                    frame.len(),
                    self.counters.rx_dropped_malformed
                );
            }
            return true;
        }
        match self.rx_run(Some(frame)) {
            Some(Delivery::NoRoom) => {
                if self.pending.len() < PENDING_FRAMES {
                    self.pending.push_back(frame.to_vec());
                    true
                } else {
                    self.refused = true;
                    self.counters.rx_refused += 1;
                    false
                }
            }
            Some(Delivery::Delivered | Delivery::NoFit) => true,
            // The ring broke, and the frame went with it.
            None => {
                self.counters.rx_dropped_not_running += 1;
                true
            }
        }
    }

    /// Link status (VIRTIO_NET_S_LINK_UP in the configuration); a change raises a
    /// configuration interrupt once the driver runs. While the link is down frames either
    /// way are dropped.
    pub fn set_link(&mut self, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        tracing::debug!("virtio-net: link {}", if up { "up" } else { "down" });
        if !up {
            let n = self.pending.len() as u64;
            self.pending.clear();
            self.counters.rx_dropped_link_down += n;
            // A refused frame can now be taken (and dropped).
            self.wake_reader();
        }
        if !self.broken
            && let Some(a) = &self.active
        {
            a.interrupt.signal_config();
        }
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Frames and bytes either way, and drops by reason.
    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    /// The driver runs and its receive queue is enabled.
    fn rx_running(&self) -> bool {
        !self.broken && self.active.as_ref().is_some_and(|a| a.rx.ready())
    }

    /// Tells the backend's reader it may offer frames again, if it was refused one.
    fn wake_reader(&mut self) {
        if std::mem::take(&mut self.refused) {
            self.signal_rx_space();
        }
    }

    fn signal_rx_space(&self) {
        if let Err(e) = self.rx_space.write(1) {
            tracing::warn!("virtio-net: cannot wake the backend's reader: {e}");
        }
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let status: u16 = if self.link_up {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        let mut put = |off: usize, v: &[u8]| c[off..off + v.len()].copy_from_slice(v);
        put(offset_of!(virtio_net_config, mac), &self.mac);
        put(offset_of!(virtio_net_config, status), &status.to_le_bytes());
        put(
            offset_of!(virtio_net_config, max_virtqueue_pairs),
            &1u16.to_le_bytes(),
        );
        c
    }

    /// The ring broke: DEVICE_NEEDS_RESET, waiting frames dropped, the reader woken (its
    /// frame will be dropped too).
    fn mark_broken(&mut self, a: &Active, e: RingError) {
        tracing::warn!("virtio-net: {e}; the device needs a reset");
        self.broken = true;
        a.interrupt.set_needs_reset();
        self.counters.rx_dropped_not_running += self.pending.len() as u64;
        self.pending.clear();
        self.wake_reader();
    }

    /// Moves waiting frames, then `new`, into the receive ring. Returns what became of
    /// `new` (None when there was none, or the device is not running or broke).
    fn rx_run(&mut self, new: Option<&[u8]>) -> Option<Delivery> {
        if !self.rx_running() {
            return None;
        }
        let mut a = self.active.take()?;
        let r = self.fill_rx(&mut a, new);
        let r = r.and_then(|d| a.rx_interrupt().map(|()| d));
        let out = match r {
            Ok(d) => d,
            Err(e) => {
                self.mark_broken(&a, e);
                None
            }
        };
        self.active = Some(a);
        out
    }

    fn fill_rx(
        &mut self,
        a: &mut Active,
        mut new: Option<&[u8]>,
    ) -> Result<Option<Delivery>, RingError> {
        // `new` waits behind the frames already waiting.
        let mut outcome = new.map(|_| Delivery::NoRoom);
        loop {
            let mut starved = false;
            while let Some(frame) = self.pending.front() {
                let d = offer(self.vnet_hdr, &mut self.counters, a, frame)?;
                if d == Delivery::NoRoom {
                    starved = true;
                    break;
                }
                self.pending.pop_front();
            }
            if !starved && let Some(frame) = new {
                let d = offer(self.vnet_hdr, &mut self.counters, a, frame)?;
                starved = d == Delivery::NoRoom;
                if !starved {
                    new = None;
                }
                outcome = Some(d);
            }
            if !starved {
                // Chains in hand: no kicks needed until the device runs short again.
                a.rx.disable_notification(&a.mem)?;
                return Ok(outcome);
            }
            // Ask for a kick when the driver posts more; buffers posted meanwhile are
            // used at once.
            if !a.rx.enable_notification(&a.mem)? {
                return Ok(outcome);
            }
        }
    }

    /// The driver posted receive buffers: waiting frames go in, and the backend's reader
    /// hears of the room.
    fn rx_notified(&mut self) {
        let before = self.pending.len();
        self.rx_run(None);
        let delivered = self.pending.len() < before;
        if (self.refused || delivered) && self.pending.len() < PENDING_FRAMES {
            self.refused = false;
            self.signal_rx_space();
        }
    }

    fn tx_notified(&mut self) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        if a.tx.ready() {
            match self.transmit_all(&mut a) {
                Ok(true) => a.interrupt.signal_used_queue(TX_QUEUE),
                Ok(false) => {}
                Err(e) => self.mark_broken(&a, e),
            }
        }
        self.active = Some(a);
    }

    /// Sends every available transmit chain; returns whether the driver must be interrupted.
    fn transmit_all(&mut self, a: &mut Active) -> Result<bool, RingError> {
        let mut used = false;
        loop {
            a.tx.disable_notification(&a.mem)?;
            while pending_chains(&a.tx, &a.mem)? > 0 {
                let Some(chain) = a.tx.pop_descriptor_chain(&a.mem) else {
                    return Err(RingError::Chain("available ring entry unreadable"));
                };
                let chain = split_chain(chain, &a.mem, MAX_DESCS)?;
                // Read before the chain goes back: the driver may reuse it at once.
                self.transmit(&a.mem, &chain);
                a.tx.add_used(&a.mem, chain.head, 0)?;
                used = true;
            }
            if !a.tx.enable_notification(&a.mem)? {
                break;
            }
        }
        Ok(used && a.tx.needs_notification(&a.mem)?)
    }

    fn transmit(&mut self, mem: &GuestMem, chain: &SplitChain) {
        let len = chain.readable_len();
        let bad = if !chain.writable.is_empty() {
            Some("writable buffers")
        } else if chain.bad_buffer {
            Some("a buffer outside guest memory")
        } else if len < (HDR_LEN + ETH_HLEN) as u64 {
            Some("too short")
        } else if len > (HDR_LEN + MAX_FRAME_LEN) as u64 {
            Some("too long")
        } else {
            None
        };
        if let Some(why) = bad {
            self.drop_bad_tx(why, len);
            return;
        }
        let mut hdr = [0u8; HDR_LEN];
        if read_segments(mem, &chain.readable, 0, &mut hdr).is_err() {
            self.drop_bad_tx("unreadable", len);
            return;
        }
        if !self.vnet_hdr
            && (hdr[FLAGS_OFFSET] & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0
                || hdr[GSO_TYPE_OFFSET] != VIRTIO_NET_HDR_GSO_NONE as u8)
        {
            self.drop_bad_tx("an offload that was not offered", len);
            return;
        }
        if !self.link_up {
            self.counters.tx_dropped_link_down += 1;
            return;
        }
        // The frame stays in the guest's buffers: the backend writes it from there.
        let skip = if self.vnet_hdr { 0 } else { HDR_LEN as u64 };
        let Ok(frame) = guest_slices(mem, &chain.readable, skip, len - skip) else {
            self.drop_bad_tx("unreadable", len);
            return;
        };
        match self.backend.send_guest(&frame) {
            Ok(()) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += len - HDR_LEN as u64;
                if self.tx_fail_streak > 0 {
                    tracing::debug!(
                        "virtio-net: the backend sends again after {} failures",
                        self.tx_fail_streak
                    );
                    self.tx_fail_streak = 0;
                }
            }
            Err(e) => {
                self.counters.tx_dropped_backend_error += 1;
                self.tx_fail_streak += 1;
                if self.tx_fail_streak == 1 {
                    tracing::debug!("virtio-net: the backend failed to send a frame: {e}");
                }
            }
        }
    }

    fn drop_bad_tx(&mut self, why: &str, len: u64) {
        self.counters.tx_dropped_bad_chain += 1;
        if worth_logging(self.counters.tx_dropped_bad_chain) {
            tracing::debug!(
                "virtio-net: transmit chain of {len} bytes dropped: {why} ({} so far)",
                self.counters.tx_dropped_bad_chain
            );
        }
    }
}

/// One frame as the backend gave it: its header split off (or made), then delivered.
/// Counts it when it reached the guest or was dropped for size.
fn offer(
    vnet_hdr: bool,
    counters: &mut NetCounters,
    a: &mut Active,
    frame: &[u8],
) -> Result<Delivery, RingError> {
    let mut header = [0u8; HDR_LEN];
    let payload = if vnet_hdr {
        header.copy_from_slice(&frame[..HDR_LEN]);
        &frame[HDR_LEN..]
    } else {
        header[GSO_TYPE_OFFSET] = VIRTIO_NET_HDR_GSO_NONE as u8;
        frame
    };
    let d = a.deliver(header, payload, counters)?;
    match d {
        Delivery::Delivered => {
            counters.rx_frames += 1;
            counters.rx_bytes += payload.len() as u64;
        }
        Delivery::NoFit => {
            counters.rx_dropped_no_fit += 1;
            if worth_logging(counters.rx_dropped_no_fit) {
                tracing::debug!(
                    "virtio-net: a {}-byte frame does not fit the driver's receive buffer ({} so far)",
                    payload.len(),
                    counters.rx_dropped_no_fit
                );
            }
        }
        Delivery::NoRoom => {}
    }
    Ok(d)
}

impl crate::net::FrameReceiver for VirtioNet {
    fn receive(&mut self, frame: &[u8]) -> bool {
        VirtioNet::receive(self, frame)
    }
    fn set_link(&mut self, up: bool) {
        VirtioNet::set_link(self, up)
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u16 {
        TYPE_NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.offered
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config(), offset, data);
    }
    // write_config: the default ignores it (the MAC is not the driver's to change).
    fn activate(&mut self, a: Activation) {
        let mut queues = a.queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return;
        };
        self.backend.set_offloads(a.features);
        self.active = Some(Active {
            mem: a.mem,
            rx,
            tx,
            interrupt: a.interrupt,
            mergeable: a.features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            held: VecDeque::new(),
            held_room: 0,
            rx_used: false,
        });
    }
    fn queue_notify(&mut self, index: u16) {
        if self.broken {
            return;
        }
        match index {
            RX_QUEUE => self.rx_notified(),
            TX_QUEUE => self.tx_notified(),
            _ => {}
        }
    }
    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.counters.rx_dropped_not_running += self.pending.len() as u64;
        self.pending.clear();
        // Frames are dropped until the next DRIVER_OK: a waiting reader may go on.
        self.wake_reader();
        if self.vnet_hdr {
            // The next driver may accept fewer offloads; none until it says.
            self.backend.set_offloads(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::pci::common;
    use crate::virtio::pci::tests::Guest;
    use crate::virtio::testing::{DESC_F_NEXT, DriverRing};
    use crate::virtio::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, status};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use virtio_bindings::virtio_net::{
        VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU, VIRTIO_NET_HDR_F_DATA_VALID,
        VIRTIO_NET_HDR_GSO_TCPV4,
    };
    use vm_memory::{Bytes, GuestAddress};

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    /// What Linux's virtio_net posts per mergeable receive buffer at MTU 1500 is about this.
    const SMALL: u32 = 1024;
    const RX: usize = 0;
    const TX: usize = 1;

    /// What the backend was told.
    #[derive(Default)]
    struct Wire {
        sent: Vec<Vec<u8>>,
        offloads: Vec<u64>,
    }

    struct Recorder {
        vnet_hdr: bool,
        wire: Arc<Mutex<Wire>>,
        fail: Arc<AtomicBool>,
    }

    impl NetBackend for Recorder {
        fn vnet_hdr(&self) -> bool {
            self.vnet_hdr
        }
        fn set_offloads(&mut self, features: u64) {
            self.wire.lock().unwrap().offloads.push(features);
        }
        fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected"));
            }
            self.wire.lock().unwrap().sent.push(frame.to_vec());
            Ok(())
        }
    }

    /// An Ethernet frame of `len` bytes to our MAC whose bytes follow from `seed`.
    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        let n = len.min(14);
        f[..n].copy_from_slice(&[MAC.as_slice(), &[2, 0, 0, 0, 0, 1], &[8, 0]].concat()[..n]);
        f
    }

    /// A header as a TAP device with IFF_VNET_HDR or Linux's virtio_net writes one.
    fn offload_header(num_buffers: u16) -> [u8; HDR_LEN] {
        let mut h = [0u8; HDR_LEN];
        h[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 | VIRTIO_NET_HDR_F_DATA_VALID as u8;
        h[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
        h[2..4].copy_from_slice(&66u16.to_le_bytes());
        h[4..6].copy_from_slice(&1448u16.to_le_bytes());
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        h[10..12].copy_from_slice(&num_buffers.to_le_bytes());
        h
    }

    /// One received frame as the driver puts it together.
    #[derive(Debug)]
    struct Received {
        header: [u8; HDR_LEN],
        payload: Vec<u8>,
        /// The used length of each chain it took.
        lens: Vec<u32>,
    }

    impl Received {
        fn num_buffers(&self) -> u16 {
            u16::from_le_bytes([self.header[10], self.header[11]])
        }
    }

    /// Linux's virtio_net driver played against the device through virtio-pci.
    struct Nic {
        g: Guest,
        dev: Arc<Mutex<VirtioNet>>,
        wire: Arc<Mutex<Wire>>,
        fail: Arc<AtomicBool>,
        /// The reader thread's end of `rx_space`.
        rx_space: Arc<EventFd>,
        common: u64,
        isr: u64,
        cfg: u64,
        /// The features the driver would take; `features` what it got.
        want: u64,
        features: u64,
        rings: [DriverRing; 2],
        kicks: [u64; 2],
        /// The writable buffers of each posted receive chain, by head.
        rx_bufs: HashMap<u16, Vec<(u64, u32)>>,
        next_buf: u64,
    }

    impl Nic {
        /// virtnet_probe up to init_vqs: features negotiated (those offered and in `want`),
        /// both queues set up, DRIVER_OK not yet written.
        fn new(vnet_hdr: bool, want: u64) -> Nic {
            let wire = Arc::new(Mutex::new(Wire::default()));
            let fail = Arc::new(AtomicBool::new(false));
            let rx_space =
                Arc::new(EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_NONBLOCK).unwrap());
            let dev = Arc::new(Mutex::new(VirtioNet::new(
                MAC,
                Box::new(Recorder {
                    vnet_hdr,
                    wire: wire.clone(),
                    fail: fail.clone(),
                }),
                rx_space.clone(),
            )));
            let mut g = Guest::new(dev.clone());
            assert_eq!(g.cfg_read(2, 2), 0x1041, "modern virtio-net");
            assert_eq!(g.cfg_read(8, 4) >> 8, 0x02_00_00, "Ethernet controller");
            let (common, isr, cfg, notify, mult, features) = g.probe(want);
            assert_eq!(g.read(common + common::DEVICE_STATUS, 1), 0xb);
            assert_eq!(g.read(common + common::NUM_QUEUES, 2), 2);
            let rings = [
                DriverRing::new(&g.mem, 0x10000, QUEUE_SIZE),
                DriverRing::new(&g.mem, 0x20000, QUEUE_SIZE),
            ];
            let kicks = [
                g.setup_queue(common, notify, mult, 0, &rings[RX]),
                g.setup_queue(common, notify, mult, 1, &rings[TX]),
            ];
            Nic {
                g,
                dev,
                wire,
                fail,
                rx_space,
                common,
                isr,
                cfg,
                want,
                features,
                rings,
                kicks,
                rx_bufs: HashMap::new(),
                next_buf: 0x100000,
            }
        }

        /// The whole probe and virtnet_open: DRIVER_OK, interrupts wanted on both queues.
        fn up(vnet_hdr: bool) -> Nic {
            let mut n = Nic::new(vnet_hdr, !0);
            n.driver_ok();
            n
        }

        fn driver_ok(&mut self) {
            self.g.write(self.common + common::DEVICE_STATUS, 1, 0xf);
            assert_eq!(self.status(), 0xf);
            self.arm(RX);
            self.arm(TX);
        }

        fn dev(&self) -> std::sync::MutexGuard<'_, VirtioNet> {
            self.dev.lock().unwrap()
        }

        fn counters(&self) -> NetCounters {
            self.dev().counters()
        }

        fn status(&self) -> u8 {
            self.g.read(self.common + common::DEVICE_STATUS, 1) as u8
        }

        /// virtqueue_enable_cb under EVENT_IDX: an interrupt at the next used entry.
        fn arm(&self, q: usize) {
            let r = &self.rings[q];
            let used_event = r.avail + 4 + 2 * u64::from(r.size);
            self.g
                .mem
                .write_obj(r.used_seen, GuestAddress(used_event))
                .unwrap();
        }

        /// vp_interrupt: reads (and so clears) the ISR.
        fn isr(&self) -> u8 {
            self.g.read(self.isr, 1) as u8
        }

        fn alloc(&mut self, len: u32) -> u64 {
            let a = self.next_buf;
            self.next_buf += u64::from(len.max(1)).next_multiple_of(0x1000);
            assert!(self.next_buf < 16 << 20, "test memory used up");
            a
        }

        /// add_recvbuf_mergeable: one writable buffer per chain, no kick.
        fn post(&mut self, lens: &[u32]) -> Vec<u16> {
            lens.iter().map(|&len| self.post_chain(&[len])).collect()
        }

        /// One receive chain of several writable buffers (add_recvbuf_big, or Windows'
        /// header-then-data layout).
        fn post_chain(&mut self, lens: &[u32]) -> u16 {
            let bufs: Vec<(u64, u32)> = lens.iter().map(|&l| (self.alloc(l), l)).collect();
            let descs: Vec<(u64, u32, bool)> = bufs.iter().map(|&(a, l)| (a, l, true)).collect();
            let head = self.rings[RX].add_chain(&self.g.mem, &descs);
            self.rx_bufs.insert(head, bufs);
            head
        }

        fn kick(&self, q: usize) {
            self.g.write(self.kicks[q], 2, q as u64);
        }

        /// start_xmit: a chain of readable buffers holding `parts`, then a kick; returns the head.
        fn transmit(&mut self, parts: &[&[u8]]) -> u16 {
            let head = self.queue_tx(parts);
            self.kick(TX);
            head
        }

        fn queue_tx(&mut self, parts: &[&[u8]]) -> u16 {
            let mut bufs = Vec::new();
            for p in parts {
                let addr = self.alloc(p.len() as u32);
                self.g.mem.write_slice(p, GuestAddress(addr)).unwrap();
                bufs.push((addr, p.len() as u32, false));
            }
            self.rings[TX].add_chain(&self.g.mem, &bufs)
        }

        fn sent(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut self.wire.lock().unwrap().sent)
        }

        fn offloads(&self) -> Vec<u64> {
            std::mem::take(&mut self.wire.lock().unwrap().offloads)
        }

        /// The bytes the device wrote into receive chain `head`.
        fn rx_data(&self, head: u16, len: u32) -> Vec<u8> {
            let mut out = Vec::new();
            let mut left = len as usize;
            for &(addr, cap) in &self.rx_bufs[&head] {
                let n = left.min(cap as usize);
                let mut b = vec![0u8; n];
                self.g.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
                out.extend_from_slice(&b);
                left -= n;
            }
            assert_eq!(left, 0, "used length {len} past the chain");
            out
        }

        /// receive_mergeable / receive_small: every frame the device completed since the
        /// last call; chains given back empty are left out and counted in the second value.
        fn received(&mut self) -> (Vec<Received>, usize) {
            let used = self.rings[RX].take_used(&self.g.mem);
            let mut frames = Vec::new();
            let mut empty = 0;
            let mut i = 0;
            while i < used.len() {
                let (head, len) = used[i];
                if len == 0 {
                    empty += 1;
                    i += 1;
                    continue;
                }
                assert!(len as usize >= HDR_LEN, "a used length of {len}");
                let data = self.rx_data(head as u16, len);
                let mut header = [0u8; HDR_LEN];
                header.copy_from_slice(&data[..HDR_LEN]);
                let mut r = Received {
                    header,
                    payload: data[HDR_LEN..].to_vec(),
                    lens: vec![len],
                };
                for _ in 1..r.num_buffers() {
                    i += 1;
                    let (head, len) = used[i];
                    r.payload.extend(self.rx_data(head as u16, len));
                    r.lens.push(len);
                }
                frames.push(r);
                i += 1;
            }
            (frames, empty)
        }

        fn receive(&self, frame: &[u8]) -> bool {
            self.dev().receive(frame)
        }

        /// Whether the device wrote `rx_space` since the last look.
        fn rx_space_written(&self) -> bool {
            self.rx_space.read().is_ok()
        }

        /// The avail_event the device last wrote in the used ring (EVENT_IDX).
        fn avail_event(&self, q: usize) -> u16 {
            let r = &self.rings[q];
            self.g
                .mem
                .read_obj(GuestAddress(r.used + 4 + 8 * u64::from(r.size)))
                .unwrap()
        }

        /// The used ring's flags (VRING_USED_F_NO_NOTIFY without EVENT_IDX).
        fn used_flags(&self, q: usize) -> u16 {
            self.g
                .mem
                .read_obj(GuestAddress(self.rings[q].used))
                .unwrap()
        }

        /// virtnet_config_changed_work: the link status bit.
        fn link_status(&self) -> u16 {
            self.g.read(self.cfg + 6, 2) as u16
        }

        /// Reset by the driver (remove, kexec) and the same probe again.
        fn restart(&mut self) {
            self.g.write(self.common + common::DEVICE_STATUS, 1, 0);
            assert_eq!(self.status(), 0);
            let (common, _, _, notify, mult, features) = self.g.probe(self.want);
            assert_eq!(features, self.features);
            self.rings = [
                DriverRing::new(&self.g.mem, 0x10000, QUEUE_SIZE),
                DriverRing::new(&self.g.mem, 0x20000, QUEUE_SIZE),
            ];
            self.kicks = [
                self.g.setup_queue(common, notify, mult, 0, &self.rings[RX]),
                self.g.setup_queue(common, notify, mult, 1, &self.rings[TX]),
            ];
            self.rx_bufs.clear();
            self.driver_ok();
        }

        /// The device still moves frames both ways.
        fn check_works(&mut self, seed: u8) {
            let f = frame(200, seed);
            self.post(&[SMALL]);
            self.kick(RX);
            assert!(self.receive(&f));
            let (got, _) = self.received();
            assert_eq!(got.len(), 1, "a frame arrived");
            assert_eq!(got[0].payload, f);
            let head = self.transmit(&[&[0u8; HDR_LEN], &f]);
            assert_eq!(
                self.rings[TX].take_used(&self.g.mem),
                vec![(u32::from(head), 0)]
            );
            assert_eq!(self.sent(), vec![f]);
        }
    }

    #[test]
    fn probe_sees_the_mac_the_link_and_the_features() {
        let mut n = Nic::new(false, !0);
        for bit in [
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
        ] {
            assert_ne!(n.features & 1 << bit, 0, "feature {bit}");
        }
        assert_eq!(
            n.features & OFFLOAD_FEATURES,
            0,
            "no offloads without vnet headers"
        );
        for bit in [VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU] {
            assert_eq!(n.features & 1 << bit, 0, "feature {bit}");
        }
        // virtnet_probe: virtio_cread_bytes of the MAC, the status, max_virtqueue_pairs.
        let mac: Vec<u8> = (0..6).map(|i| n.g.read(n.cfg + i, 1) as u8).collect();
        assert_eq!(mac, MAC);
        assert_eq!(n.link_status(), VIRTIO_NET_S_LINK_UP as u16);
        assert_eq!(n.g.read(n.cfg + 8, 2), 1);
        assert_eq!(
            n.g.read(n.cfg + 10, 4),
            0,
            "nothing past max_virtqueue_pairs"
        );
        // Writes to the configuration change nothing.
        n.g.write(n.cfg, 4, 0xdead_beef);
        n.g.write(n.cfg + 6, 2, 0);
        assert_eq!(n.g.read(n.cfg, 4), 0x1200_5452);
        assert_eq!(n.link_status(), 1);
        // Both queues hold 256 entries.
        for q in 0..2 {
            n.g.write(n.common + common::QUEUE_SELECT, 2, q);
            assert_eq!(n.g.read(n.common + common::QUEUE_SIZE, 2), 256);
        }
        // The backend hears the accepted features at DRIVER_OK.
        assert!(n.offloads().is_empty());
        n.driver_ok();
        assert_eq!(n.offloads(), vec![n.features]);

        // With a vnet-header backend the offloads are offered too; the backend gets what
        // the driver took (here all but GUEST_TSO6), and none after a reset.
        let want = !(1u64 << VIRTIO_NET_F_GUEST_TSO6);
        let mut n = Nic::new(true, want);
        assert_eq!(n.features & OFFLOAD_FEATURES, OFFLOAD_FEATURES & want);
        n.driver_ok();
        let got = n.offloads();
        assert_eq!(got, vec![n.features]);
        assert_ne!(got[0] & 1 << VIRTIO_NET_F_GUEST_TSO4, 0);
        assert_eq!(got[0] & 1 << VIRTIO_NET_F_GUEST_TSO6, 0);
        n.g.write(n.common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(n.offloads(), vec![0]);
    }

    #[test]
    fn transmit_gathers_a_frame_split_any_way() {
        let mut n = Nic::up(false);
        let f = frame(1514, 1);
        // Header alone, then the frame in two pieces (virtio_net's sg layout without
        // any_header_sg).
        let a = n.transmit(&[&[0u8; HDR_LEN], &f[..20], &f[20..]]);
        // The header split and sharing a buffer with the frame's start.
        let mut mid = vec![0u8; HDR_LEN - 5];
        mid.extend_from_slice(&f[..30]);
        let b = n.transmit(&[&[0u8; 5], &mid, &f[30..]]);
        // Header and frame in one buffer.
        let mut one = vec![0u8; HDR_LEN];
        one.extend_from_slice(&f);
        let c = n.transmit(&[&one]);
        assert_eq!(n.sent(), vec![f.clone(), f.clone(), f.clone()]);
        assert_eq!(
            n.rings[TX].take_used(&n.g.mem),
            vec![(u32::from(a), 0), (u32::from(b), 0), (u32::from(c), 0)]
        );
        assert!(n.g.irq.level());
        assert_eq!(n.isr(), 1);

        // A batch: three chains, one kick, all sent and given back in order.
        n.arm(TX);
        let heads: Vec<u16> = (0..3)
            .map(|i| n.queue_tx(&[&[0u8; HDR_LEN], &frame(60 + i, 9)]))
            .collect();
        assert!(!n.g.irq.level(), "nothing before the kick");
        n.kick(TX);
        assert_eq!(n.sent().len(), 3);
        let used = n.rings[TX].take_used(&n.g.mem);
        assert_eq!(
            used,
            heads.iter().map(|&h| (u32::from(h), 0)).collect::<Vec<_>>()
        );
        assert_eq!(n.isr(), 1);
        let c = n.counters();
        assert_eq!((c.tx_frames, c.tx_bytes), (6, 3 * 1514 + 60 + 61 + 62));

        // A vnet-header backend gets the header as the guest wrote it.
        let mut n = Nic::up(true);
        let h = offload_header(0);
        let big = frame(30000, 2);
        n.transmit(&[&h[..3], &h[3..], &big[..100], &big[100..]]);
        assert_eq!(n.sent(), vec![[h.as_slice(), &big].concat()]);
        assert_eq!(n.counters().tx_bytes, 30000);
    }

    #[test]
    fn mergeable_receive_spans_small_buffers() {
        let mut n = Nic::up(false);
        let heads = n.post(&[SMALL, SMALL, SMALL, SMALL]);
        n.kick(RX);
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        let f = frame(2500, 3);
        assert!(n.receive(&f));
        assert!(n.g.irq.level());
        assert_eq!(n.isr(), 1);
        let used: Vec<(u32, u32)> = {
            let r = &n.rings[RX];
            (0..3)
                .map(|i| {
                    let e = r.used + 4 + 8 * i;
                    (
                        n.g.mem.read_obj(GuestAddress(e)).unwrap(),
                        n.g.mem.read_obj(GuestAddress(e + 4)).unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(
            used,
            vec![
                (u32::from(heads[0]), SMALL),
                (u32::from(heads[1]), SMALL),
                (u32::from(heads[2]), 2500 + HDR_LEN as u32 - 2 * SMALL)
            ]
        );
        let (got, empty) = n.received();
        assert_eq!(empty, 0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].num_buffers(), 3);
        assert_eq!(got[0].header[..10], [0u8; 10], "no flags, GSO_NONE");
        assert_eq!(got[0].payload, f);
        // The fourth buffer takes the next frame alone.
        n.arm(RX);
        let g = frame(60, 4);
        assert!(n.receive(&g));
        let (got, _) = n.received();
        assert_eq!(got[0].num_buffers(), 1);
        assert_eq!(got[0].lens, vec![60 + HDR_LEN as u32]);
        assert_eq!(got[0].payload, g);
        let c = n.counters();
        assert_eq!((c.rx_frames, c.rx_bytes), (2, 2560));

        // A vnet-header backend's header reaches the guest as it was, num_buffers set.
        let mut n = Nic::up(true);
        n.post(&[SMALL; 3]);
        n.kick(RX);
        let f = frame(2500, 5);
        assert!(n.receive(&[offload_header(0xffff).as_slice(), &f].concat()));
        let (got, _) = n.received();
        assert_eq!(got[0].header, offload_header(3));
        assert_eq!(got[0].payload, f);
        assert_eq!(n.counters().rx_bytes, 2500);
    }

    #[test]
    fn without_mrg_rxbuf_a_frame_takes_one_chain_or_is_dropped() {
        let mut n = Nic::new(false, !(1 << VIRTIO_NET_F_MRG_RXBUF));
        assert_eq!(n.features & 1 << VIRTIO_NET_F_MRG_RXBUF, 0);
        n.driver_ok();
        // Windows' layout: the header in one buffer, the frame in the next.
        let a = n.post_chain(&[HDR_LEN as u32, 1514]);
        n.kick(RX);
        let f = frame(1000, 6);
        assert!(n.receive(&f));
        let (got, _) = n.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].num_buffers(), 1, "1 when MRG_RXBUF is off");
        assert_eq!(got[0].lens, vec![1000 + HDR_LEN as u32]);
        assert_eq!(got[0].payload, f);
        let (hdr_buf, data_buf) = (n.rx_bufs[&a][0].0, n.rx_bufs[&a][1].0);
        let mut h = [0u8; HDR_LEN];
        n.g.mem.read_slice(&mut h, GuestAddress(hdr_buf)).unwrap();
        assert_eq!(h, got[0].header, "the header alone in the first buffer");
        let mut d = [0u8; 14];
        n.g.mem.read_slice(&mut d, GuestAddress(data_buf)).unwrap();
        assert_eq!(d, f[..14], "the frame from the second buffer on");
        // A frame larger than the next chain is dropped; the chain waits for one that fits.
        let b = n.post(&[100])[0];
        n.kick(RX);
        assert!(n.receive(&frame(1000, 7)));
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        assert_eq!(n.counters().rx_dropped_no_fit, 1);
        let g = frame(88, 8);
        assert!(n.receive(&g));
        assert_eq!(n.rings[RX].used_idx(&n.g.mem), 2);
        let used_b: u32 =
            n.g.mem
                .read_obj(GuestAddress(n.rings[RX].used + 4 + 8))
                .unwrap();
        assert_eq!(used_b, u32::from(b), "the small chain took the small frame");
        let (got, _) = n.received();
        assert_eq!(got[0].lens, vec![100]);
        assert_eq!(got[0].payload, g);
        // Two small frames and two page-sized chains: one chain each.
        n.post(&[4096, 4096]);
        n.kick(RX);
        assert!(n.receive(&frame(60, 1)));
        assert!(n.receive(&frame(61, 2)));
        let (got, _) = n.received();
        assert_eq!(
            got.iter().map(|r| r.lens.clone()).collect::<Vec<_>>(),
            vec![vec![72], vec![73]]
        );
    }

    /// A ring whose every entry is too small to hold a frame together drops the frame
    /// instead of waiting for buffers that cannot come.
    #[test]
    fn a_ring_too_small_for_a_frame_drops_it_instead_of_stalling() {
        let mut n = Nic::up(false);
        n.post(&[16; QUEUE_SIZE as usize]);
        n.kick(RX);
        assert!(n.receive(&frame(5000, 1)));
        assert_eq!(n.counters().rx_dropped_no_fit, 1);
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        let f = frame(100, 2);
        assert!(n.receive(&f));
        let (got, _) = n.received();
        assert_eq!(got[0].num_buffers(), 7, "112 bytes in 16-byte buffers");
        assert_eq!(got[0].payload, f);
    }

    #[test]
    fn frames_wait_for_buffers_then_the_reader_is_woken() {
        let mut n = Nic::up(false);
        n.post(&[SMALL]);
        n.kick(RX);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(1500, i)).collect();
        // The first frame needs two buffers and finds one: it waits, and so does the next.
        assert!(n.receive(&frames[0]));
        assert!(n.receive(&frames[1]));
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        assert!(!n.rx_space_written(), "nothing was refused");
        // The device asked to be kicked at the next buffer the driver posts.
        assert_eq!(n.avail_event(RX), n.rings[RX].avail_idx);
        n.post(&[SMALL]);
        n.kick(RX);
        assert!(
            n.rx_space_written(),
            "frames went in: the reader hears of the room"
        );
        let (got, _) = n.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, frames[0]);
        assert_eq!(got[0].num_buffers(), 2);
        assert_eq!(n.isr(), 1, "the late delivery interrupts");
        // A new frame goes behind the one still waiting.
        n.arm(RX);
        assert!(n.receive(&frames[2]));
        n.post(&[4096, 4096]);
        n.kick(RX);
        let (got, _) = n.received();
        assert_eq!(
            got.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
            vec![frames[1].clone(), frames[2].clone()]
        );
        assert_eq!(n.counters().rx_frames, 3);
    }

    #[test]
    fn a_full_queue_refuses_frames_until_the_driver_posts_buffers() {
        let mut n = Nic::up(false);
        for i in 0..PENDING_FRAMES {
            assert!(n.receive(&frame(100, i as u8)), "frame {i}");
        }
        assert!(!n.receive(&frame(100, 0xff)));
        assert!(!n.receive(&frame(100, 0xff)));
        assert_eq!(n.counters().rx_refused, 2);
        assert!(!n.rx_space_written());
        // One buffer: one frame out, the reader is told there is room, and the refused frame
        // is taken.
        n.post(&[SMALL]);
        n.kick(RX);
        assert!(n.rx_space_written());
        assert!(!n.rx_space_written(), "once");
        let (got, _) = n.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, frame(100, 0));
        assert!(n.receive(&frame(100, 0xff)));
        assert!(!n.receive(&frame(100, 0xfe)), "full again");
        // Room for everything: all arrive in order.
        n.arm(RX);
        n.post(&[SMALL; QUEUE_SIZE as usize]);
        n.kick(RX);
        assert!(n.rx_space_written());
        let (got, _) = n.received();
        assert_eq!(got.len(), PENDING_FRAMES);
        for (i, r) in got.iter().enumerate() {
            let seed = if i + 1 == PENDING_FRAMES {
                0xff
            } else {
                i as u8 + 1
            };
            assert_eq!(r.payload, frame(100, seed), "frame {i}");
        }
        let c = n.counters();
        assert_eq!((c.rx_frames, c.rx_refused), (PENDING_FRAMES as u64 + 1, 3));
    }

    #[test]
    fn link_changes_interrupt_a_running_driver_and_drop_frames() {
        let mut n = Nic::new(false, !0);
        // Before DRIVER_OK the status changes quietly (the driver reads it at probe).
        n.dev().set_link(false);
        assert!(!n.dev().link_up());
        assert_eq!(n.link_status(), 0);
        assert!(!n.g.irq.level());
        n.dev().set_link(true);
        n.driver_ok();
        assert!(!n.g.irq.level());

        // Frames wait, the queue fills and the reader is refused.
        for i in 0..=PENDING_FRAMES {
            n.receive(&frame(100, i as u8));
        }
        n.dev().set_link(false);
        assert!(n.g.irq.level());
        assert_eq!(n.isr(), 2, "a configuration change");
        assert_eq!(n.link_status(), 0);
        assert!(n.rx_space_written(), "the refused reader may go on");
        assert_eq!(n.counters().rx_dropped_link_down, PENDING_FRAMES as u64);
        // The same status again: no interrupt.
        n.dev().set_link(false);
        assert!(!n.g.irq.level());

        // Frames either way are dropped while the link is down.
        n.post(&[SMALL]);
        n.kick(RX);
        assert!(n.receive(&frame(100, 1)));
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        let head = n.transmit(&[&[0u8; HDR_LEN], &frame(100, 2)]);
        assert_eq!(n.rings[TX].take_used(&n.g.mem), vec![(u32::from(head), 0)]);
        assert!(n.sent().is_empty());
        let c = n.counters();
        assert_eq!(
            (c.rx_dropped_link_down, c.tx_dropped_link_down),
            (PENDING_FRAMES as u64 + 1, 1)
        );
        n.isr();

        n.dev().set_link(true);
        assert_eq!(n.isr(), 2);
        assert_eq!(n.link_status(), 1);
        let f = frame(100, 3);
        assert!(n.receive(&f));
        assert_eq!(
            n.received().0[0].payload,
            f,
            "the posted buffer is used now"
        );
    }

    #[test]
    fn frames_before_driver_ok_are_dropped() {
        let mut n = Nic::new(false, !0);
        assert!(n.receive(&frame(100, 1)));
        // Older Linux posts receive buffers before DRIVER_OK: still not running.
        n.post(&[SMALL]);
        assert!(n.receive(&frame(100, 2)));
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        assert_eq!(n.counters().rx_dropped_not_running, 2);
        n.driver_ok();
        let f = frame(100, 3);
        assert!(n.receive(&f));
        let (got, _) = n.received();
        assert_eq!(got[0].payload, f, "the early buffer is used now");
        assert_eq!(n.counters().rx_frames, 1);
    }

    #[test]
    fn bad_transmit_chains_are_dropped_counted_and_given_back() {
        let mut n = Nic::up(false);
        let h = [0u8; HDR_LEN];
        let f = frame(100, 1);
        let mut csum = h;
        csum[FLAGS_OFFSET] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        let mut gso = h;
        gso[GSO_TYPE_OFFSET] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
        let too_long = frame(MAX_FRAME_LEN + 1, 2);
        let mut heads = vec![
            n.transmit(&[&h]),
            n.transmit(&[&h, &f[..13]]),
            n.transmit(&[&h, &too_long[..40000], &too_long[40000..]]),
            n.transmit(&[&csum, &f]),
            n.transmit(&[&gso, &f]),
        ];
        // A writable buffer in a transmit chain, and a buffer outside guest memory.
        let addr = n.alloc(256);
        heads.push(n.rings[TX].add_chain(
            &n.g.mem,
            &[(addr, HDR_LEN as u32, false), (addr + 64, 100, true)],
        ));
        heads.push(n.rings[TX].add_chain(
            &n.g.mem,
            &[(addr, HDR_LEN as u32, false), (1 << 40, 100, false)],
        ));
        n.kick(TX);
        assert_eq!(
            n.rings[TX].take_used(&n.g.mem),
            heads.iter().map(|&h| (u32::from(h), 0)).collect::<Vec<_>>()
        );
        assert!(n.sent().is_empty());
        assert_eq!(n.counters().tx_dropped_bad_chain, 7);
        assert_eq!(n.status() & status::DEVICE_NEEDS_RESET, 0);

        // The largest frame goes; a backend error drops one frame and nothing else.
        let max = frame(MAX_FRAME_LEN, 3);
        n.transmit(&[&h, &max]);
        assert_eq!(n.sent(), vec![max]);
        n.fail.store(true, Ordering::SeqCst);
        let head = n.transmit(&[&h, &f]);
        assert_eq!(
            n.rings[TX].take_used(&n.g.mem).last(),
            Some(&(u32::from(head), 0))
        );
        assert_eq!(n.counters().tx_dropped_backend_error, 1);
        n.fail.store(false, Ordering::SeqCst);
        n.check_works(4);
        assert_eq!(n.counters().tx_frames, 2);
    }

    #[test]
    fn bad_receive_chains_go_back_empty() {
        let mut n = Nic::up(false);
        let addr = n.alloc(256);
        let bad = [
            // A readable buffer first.
            n.rings[RX].add_chain(&n.g.mem, &[(addr, 16, false), (addr + 64, 100, true)]),
            // No room for a header.
            n.rings[RX].add_chain(&n.g.mem, &[(addr, 8, true)]),
            // Outside guest memory.
            n.rings[RX].add_chain(&n.g.mem, &[(1 << 40, 4096, true)]),
        ];
        let good = n.post(&[SMALL])[0];
        n.kick(RX);
        let f = frame(500, 1);
        assert!(n.receive(&f));
        let used = n.rings[RX].take_used(&n.g.mem);
        let mut want: Vec<(u32, u32)> = bad.iter().map(|&h| (u32::from(h), 0)).collect();
        want.push((u32::from(good), 512));
        assert_eq!(used, want);
        assert_eq!(n.rx_data(good, 512)[HDR_LEN..], f[..]);
        assert_eq!(n.counters().rx_bad_buffers, 3);
        assert_eq!(n.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn malformed_frames_from_the_backend_are_dropped() {
        let mut n = Nic::up(true);
        n.post(&[4096; 20]);
        n.kick(RX);
        assert!(n.receive(&[0u8; HDR_LEN - 1]), "shorter than its header");
        let h = offload_header(0);
        assert!(n.receive(&[h.as_slice(), &frame(MAX_FRAME_LEN + 1, 1)].concat()));
        assert_eq!(n.counters().rx_dropped_malformed, 2);
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        // The largest frame fits in 17 pages.
        let f = frame(MAX_FRAME_LEN, 2);
        assert!(n.receive(&[h.as_slice(), &f].concat()));
        let (got, _) = n.received();
        assert_eq!(got[0].num_buffers(), 17);
        assert_eq!(got[0].payload, f);
    }

    /// What breaks a ring, and what the driver then sees.
    #[test]
    fn corrupt_rings_need_reset_and_never_panic() {
        type Break = fn(&mut Nic);
        let cases: [(&str, Break); 5] = [
            ("receive avail index far ahead", |n| {
                let idx = n.rings[RX].avail_idx.wrapping_add(1000);
                n.rings[RX].set_avail_idx(&n.g.mem, idx);
                n.receive(&frame(100, 1));
            }),
            ("receive head out of the table", |n| {
                n.rings[RX].publish(&n.g.mem, 4000);
                n.kick(RX);
                n.receive(&frame(100, 1));
            }),
            ("transmit avail index far ahead", |n| {
                let idx = n.rings[TX].avail_idx.wrapping_add(300);
                n.rings[TX].set_avail_idx(&n.g.mem, idx);
                n.kick(TX);
            }),
            ("transmit chain loops", |n| {
                let i = n.rings[TX].next_desc;
                n.rings[TX].write_desc(&n.g.mem, i, 0x100000, 64, DESC_F_NEXT, i);
                n.rings[TX].publish(&n.g.mem, i);
                n.kick(TX);
            }),
            ("receive chain loops", |n| {
                let i = n.rings[RX].next_desc;
                n.rings[RX].write_desc(
                    &n.g.mem,
                    i,
                    0x100000,
                    64,
                    DESC_F_NEXT | crate::virtio::testing::DESC_F_WRITE,
                    i,
                );
                n.rings[RX].publish(&n.g.mem, i);
                n.receive(&frame(100, 1));
            }),
        ];
        for (what, build) in cases {
            let mut n = Nic::up(false);
            // Frames waiting and the reader refused when it breaks.
            for i in 0..=PENDING_FRAMES {
                n.receive(&frame(3000, i as u8));
            }
            let before = n.counters().rx_dropped_not_running;
            build(&mut n);
            assert_ne!(n.status() & status::DEVICE_NEEDS_RESET, 0, "{what}");
            assert_eq!(n.isr() & 2, 2, "{what}: configuration interrupt");
            assert!(n.rx_space_written(), "{what}: the reader is let go");
            assert!(
                n.counters().rx_dropped_not_running >= before + PENDING_FRAMES as u64,
                "{what}: waiting frames dropped"
            );
            // Nothing is done until a reset: frames dropped, kicks ignored.
            assert!(n.receive(&frame(100, 2)), "{what}");
            n.rings[TX].used_seen = n.rings[TX].used_idx(&n.g.mem);
            n.sent();
            n.queue_tx(&[&[0u8; HDR_LEN], &frame(100, 3)]);
            n.kick(TX);
            assert_eq!(
                n.rings[TX].used_idx(&n.g.mem),
                n.rings[TX].used_seen,
                "{what}"
            );
            assert!(n.sent().is_empty(), "{what}");
            n.restart();
            assert_eq!(n.status(), 0xf, "{what}");
            n.check_works(5);
        }
    }

    #[test]
    fn reset_drops_waiting_frames_and_keeps_mac_link_and_backend() {
        let mut n = Nic::up(false);
        for i in 0..=PENDING_FRAMES {
            n.receive(&frame(100, i as u8));
        }
        n.dev().set_link(false);
        assert!(n.rx_space_written());
        n.dev().set_link(true);
        for i in 0..=PENDING_FRAMES {
            n.receive(&frame(100, i as u8));
        }
        let before = n.counters();
        n.g.write(n.common + common::DEVICE_STATUS, 1, 0);
        assert!(n.rx_space_written(), "the refused reader may go on");
        let c = n.counters();
        assert_eq!(
            c.rx_dropped_not_running,
            before.rx_dropped_not_running + PENDING_FRAMES as u64
        );
        assert!(n.receive(&frame(100, 1)), "not running: dropped");
        n.dev().set_link(false);
        n.restart();
        assert!(
            !n.dev().link_up(),
            "the link is the host's, not the driver's"
        );
        assert_eq!(n.link_status(), 0);
        assert_eq!(n.g.read(n.cfg, 4), 0x1200_5452);
        n.dev().set_link(true);
        n.isr();
        // Nothing stale arrives; the device works.
        n.post(&[SMALL; 4]);
        n.kick(RX);
        assert!(n.rings[RX].take_used(&n.g.mem).is_empty());
        n.check_works(9);
    }

    #[test]
    fn interrupts_and_kicks_follow_event_idx() {
        let mut n = Nic::up(false);
        // The driver wants no interrupt until its used_event: none comes.
        let far = n.rings[RX].used_seen.wrapping_add(5);
        let used_event = n.rings[RX].avail + 4 + 2 * u64::from(QUEUE_SIZE);
        n.g.mem.write_obj(far, GuestAddress(used_event)).unwrap();
        n.post(&[SMALL; 8]);
        n.kick(RX);
        for i in 0..5 {
            n.receive(&frame(100, i));
        }
        assert!(!n.g.irq.level(), "used_event not reached");
        n.receive(&frame(100, 5));
        assert!(n.g.irq.level(), "used_event passed");
        assert_eq!(n.received().0.len(), 6);
        n.isr();
        // Transmit likewise.
        let far = n.rings[TX].used_seen.wrapping_add(2);
        let used_event = n.rings[TX].avail + 4 + 2 * u64::from(QUEUE_SIZE);
        n.g.mem.write_obj(far, GuestAddress(used_event)).unwrap();
        n.transmit(&[&[0u8; HDR_LEN], &frame(60, 1)]);
        n.transmit(&[&[0u8; HDR_LEN], &frame(60, 2)]);
        assert!(!n.g.irq.level());
        n.transmit(&[&[0u8; HDR_LEN], &frame(60, 3)]);
        assert!(n.g.irq.level());

        // Without EVENT_IDX the used ring's NO_NOTIFY flag does the same for kicks: set
        // while the device holds receive buffers, clear once it runs short.
        let mut n = Nic::new(false, !(1 << VIRTIO_RING_F_EVENT_IDX));
        n.driver_ok();
        n.post(&[SMALL; 2]);
        n.kick(RX);
        assert!(n.receive(&frame(100, 1)));
        assert_eq!(n.used_flags(RX), 1, "no kicks wanted while buffers remain");
        assert!(n.receive(&frame(2000, 2)));
        assert_eq!(n.used_flags(RX), 0, "short of buffers: kick me");
        n.post(&[SMALL]);
        n.kick(RX);
        assert_eq!(n.received().0.len(), 2);
        // Every used buffer interrupts without EVENT_IDX.
        n.isr();
        n.post(&[SMALL]);
        n.kick(RX);
        assert!(n.receive(&frame(100, 3)));
        assert!(n.g.irq.level());
    }

    /// xorshift64*: deterministic noise without a dependency.
    use crate::noise::Noise;

    /// A driver that posts chains of any shape, scribbles over its rings now and then and
    /// resets at random, with frames of any size arriving: the device never panics, and
    /// frames still get through.
    #[test]
    fn random_drivers_never_panic_the_device() {
        let variants = [
            (false, !0),
            (true, !0),
            (false, !(1u64 << VIRTIO_NET_F_MRG_RXBUF)),
        ];
        for (k, (vnet_hdr, want)) in variants.into_iter().enumerate() {
            let mut noise = Noise::new(0x5eed_0000_0000_0001 + k as u64);
            let mut n = Nic::new(vnet_hdr, want);
            n.driver_ok();
            for _ in 0..2400 {
                let any_buf = |noise: &mut Noise, writable: bool| {
                    let addr = 0x100000 + (noise.next() % 64) * 0x1000;
                    let len = [0u32, 4, 12, 60, 1500, 4096, 70000][(noise.next() % 7) as usize];
                    (addr, len, writable != noise.next().is_multiple_of(8))
                };
                match noise.next() % 16 {
                    0..=3 => {
                        let bufs: Vec<_> = (0..1 + noise.next() % 3)
                            .map(|_| any_buf(&mut noise, true))
                            .collect();
                        n.rings[RX].add_chain(&n.g.mem, &bufs);
                        n.kick(RX);
                    }
                    4..=7 => {
                        // Mostly a header, then pieces of a frame.
                        let mut bufs = vec![(0x80000, HDR_LEN as u32, false)];
                        if noise.next().is_multiple_of(4) {
                            bufs.clear();
                        }
                        bufs.extend((0..1 + noise.next() % 3).map(|_| any_buf(&mut noise, false)));
                        n.rings[TX].add_chain(&n.g.mem, &bufs);
                        n.kick(TX);
                    }
                    8..=11 => {
                        let len = [0usize, 5, 12, 60, 1514, 9000, 65536, 65549]
                            [(noise.next() % 8) as usize];
                        n.receive(&frame(len, noise.next() as u8));
                    }
                    12 => {
                        let q = (noise.next() % 2) as usize;
                        match noise.next() % 8 {
                            0 => {
                                let at = n.rings[q].desc + noise.next() % (16 * 256 - 8);
                                n.g.mem.write_obj(noise.next(), GuestAddress(at)).unwrap();
                            }
                            1 => n.rings[q].publish(&n.g.mem, (noise.next() % 300) as u16),
                            2 => {
                                let idx = noise.next() as u16;
                                n.rings[q].set_avail_idx(&n.g.mem, idx);
                            }
                            _ => n.dev().set_link(!noise.next().is_multiple_of(4)),
                        }
                    }
                    13 => n.dev().set_link(true),
                    _ => {
                        n.isr();
                        n.arm(RX);
                        n.arm(TX);
                    }
                }
                if n.status() & status::DEVICE_NEEDS_RESET != 0 || noise.next().is_multiple_of(200)
                {
                    n.dev().set_link(true);
                    n.restart();
                }
            }
            let (delivered, sent) = (n.counters().rx_frames, n.counters().tx_frames);
            eprintln!(
                "variant {k}: {delivered} frames in, {sent} out; {:?}",
                n.counters()
            );
            assert!(
                delivered > 50 && sent > 50,
                "the noise must reach the frame code"
            );
        }
    }
}
