//! virtio-console (virtio 1.x, 5.3) in its multiport form, "virtio-serial": named
//! byte-stream ports between host code ([`PortBackend`]s) and guest processes, which see
//! them as `/dev/vportNpM` with a `/dev/virtio-ports/<name>` link (Linux) or through the
//! vioserial driver (Windows). It is what QEMU's `-device virtio-serial` with named
//! `virtserialport`s gives; the spice agent's `com.redhat.spice.0` port is the reason it
//! is here (clipboard sharing).
//!
//! Emulated: VIRTIO_CONSOLE_F_MULTIPORT (the only feature offered) with the control
//! protocol the Linux and Windows drivers speak; named ports at ids 1, 2, ... (a device
//! with `n` ports reports `max_nr_ports = n + 1`); the host end of every port is always
//! connected (the device sends PORT_OPEN 1 right after PORT_NAME), so the guest may
//! write at once. Queue layout, as the spec fixes it for MULTIPORT: 0/1 port 0 rx/tx,
//! 2/3 control rx (device to driver) / control tx (driver to device), then `2(id + 1)`
//! and `2(id + 1) + 1` for port `id`'s rx and tx.
//!
//! Control messages to the driver (PORT_ADD, PORT_NAME, PORT_OPEN) wait in a bounded
//! queue until the driver posts control rx buffers; an identical message already waiting
//! is not queued twice (they state facts, and a driver repeating DEVICE_READY must not
//! grow the queue). Bytes for the guest wait per port (at most [`PENDING_MAX`]) until the
//! driver posts rx buffers; a message may be split over several buffers, which is fine
//! for a byte stream. Guest writes (tx chains) reach the backend whole and in order,
//! a chain larger than [`TX_PIECE`] in several calls; they are read before the chain is
//! returned used, and the driver is not waited on: Linux busy-waits for its tx and
//! control tx buffers to come back, so both are served synchronously on the notifying
//! vCPU. A port's tx data is given to its backend only while the guest has the port open;
//! otherwise it is dropped (the backend has no session for it), as is anything the
//! backend queues for a closed port. When the guest closes a port, or the driver or the
//! machine resets the device, or the rings turn out broken (DEVICE_NEEDS_RESET), every
//! open port is closed: its backend is told and its pending bytes are dropped.
//!
//! Host calls ([`VirtioSerial::send`]) may come from any thread; the device lock orders
//! them against the vCPU's notifications, and the interrupt is raised from the calling
//! thread. Backends run with the device lock held and must not call back into the
//! device: what they want to send goes into the `to_guest` buffer they are handed.
//!
//! Not emulated: port 0 as a console (no PORT_ADD 0, no CONSOLE_PORT; its queues are
//! left alone), VIRTIO_CONSOLE_F_SIZE and RESIZE (a console size has no meaning here),
//! F_EMERG_WRITE (writes to `emerg_wr` are ignored), port hot-plug (PORT_REMOVE), a host
//! side that disconnects (PORT_OPEN 0 from the device), and flow control towards the
//! guest beyond the per-port cap.

use std::collections::VecDeque;
use std::sync::Arc;

use thiserror::Error;
use virtio_queue::{Queue, QueueT};

use super::{
    Activation, Interrupt, RingError, SplitChain, TYPE_CONSOLE, VirtioDevice, pending_chains,
    read_segments, split_chain, write_segments,
};
use crate::memory::GuestMem;

/// Size of every data queue (QEMU's too).
pub const QUEUE_SIZE: u16 = 128;
/// Size of the two control queues (QEMU's too).
pub const CONTROL_QUEUE_SIZE: u16 = 32;
/// Feature bit: ports beyond port 0 and the control queues.
pub const F_MULTIPORT: u32 = 1;
/// The most bytes a port keeps for the guest while the driver posts no rx buffers.
pub const PENDING_MAX: usize = 1 << 20;
/// A tx chain longer than this reaches the backend in pieces of this size.
pub const TX_PIECE: usize = 1 << 20;
/// The most named ports (QEMU's default `max_ports` is 31 as well); more are left out.
pub const MAX_PORTS: usize = 31;
/// The id the driver puts in DEVICE_READY (it names no port).
pub const BAD_ID: u32 = u32::MAX;
/// Control messages waiting for control rx buffers; past this, new ones are dropped.
const CONTROL_PENDING_MAX: usize = 256;
/// The most descriptors a chain may have (indirect tables may exceed the queue size).
const MAX_DESCS: usize = 1024;

/// Control events (virtio 1.x, 5.3.6.2; include/uapi/linux/virtio_console.h).
pub mod event {
    pub const DEVICE_READY: u16 = 0;
    pub const PORT_ADD: u16 = 1;
    pub const PORT_REMOVE: u16 = 2;
    pub const PORT_READY: u16 = 3;
    pub const CONSOLE_PORT: u16 = 4;
    pub const RESIZE: u16 = 5;
    pub const PORT_OPEN: u16 = 6;
    pub const PORT_NAME: u16 = 7;
}

/// Bytes of struct virtio_console_control (le32 id, le16 event, le16 value).
pub const CONTROL_LEN: usize = 8;
/// Bytes of struct virtio_console_config (cols, rows, max_nr_ports, emerg_wr).
const CONFIG_LEN: usize = 12;
const CONTROL_RX: usize = 2;
const CONTROL_TX: usize = 3;

/// The host end of one port.
pub trait PortBackend: Send {
    /// The guest opened (true) or closed (false) its end: PORT_OPEN from the driver, or false when the
    /// driver resets / the device resets while it was open. Bytes pushed to `to_guest` are queued for the guest.
    fn guest_open(&mut self, open: bool, to_guest: &mut Vec<u8>);
    /// Bytes the guest wrote (one tx chain at a time, in order); replies pushed to `to_guest` are queued.
    fn guest_wrote(&mut self, data: &[u8], to_guest: &mut Vec<u8>);
}

/// Why [`VirtioSerial::send`] queued nothing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortError {
    #[error("virtio-serial has no port {0}")]
    NoSuchPort(u32),
    #[error("the guest has not opened port {0}")]
    NotOpen(u32),
    #[error("port {id}: {pending} bytes already wait for the guest, {len} more would pass the cap")]
    Full { id: u32, pending: usize, len: usize },
}

struct Port {
    name: String,
    backend: Box<dyn PortBackend>,
    /// The guest has the port open (PORT_OPEN 1 and no close or reset since).
    open: bool,
    /// Bytes for the guest, waiting for rx buffers.
    pending: VecDeque<u8>,
}

impl Port {
    /// Queues what a backend handed back; dropped when the port is closed or full.
    fn queue_reply(&mut self, id: u32, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.open {
            tracing::debug!(
                "virtio-serial: port {id} is closed; {} bytes from its backend dropped",
                bytes.len()
            );
        } else if self.pending.len() + bytes.len() > PENDING_MAX {
            tracing::warn!(
                "virtio-serial: port {id} ({}): guest not reading; {} bytes dropped",
                self.name,
                bytes.len()
            );
        } else {
            self.pending.extend(bytes);
        }
    }
}

struct Active {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

/// A multiport virtio console with named ports (see the module doc).
pub struct VirtioSerial {
    ports: Vec<Port>,
    queue_sizes: Vec<u16>,
    /// Whole control messages for the driver, oldest first.
    control_out: VecDeque<Vec<u8>>,
    /// The driver accepted F_MULTIPORT.
    multiport: bool,
    active: Option<Active>,
    /// The rings were found inconsistent: nothing more is done until a reset.
    broken: bool,
    /// Where tx data is read to before it goes to a backend.
    scratch: Vec<u8>,
}

/// The rx queue of port index `i`, whose id is `i + 1`: `2(id + 1)`; its tx queue is next.
fn rx_queue(i: usize) -> usize {
    2 * (i + 2)
}

fn control_message(id: u32, event: u16, value: u16, extra: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTROL_LEN + extra.len());
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&event.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m.extend_from_slice(extra);
    m
}

fn ready_queue(queues: &mut [Queue], index: usize) -> Option<&mut Queue> {
    queues.get_mut(index).filter(|q| q.ready())
}

/// Takes the next available chain (the caller checked there is one).
fn pop(q: &mut Queue, mem: &GuestMem) -> Result<SplitChain, RingError> {
    let Some(chain) = q.pop_descriptor_chain(mem) else {
        return Err(RingError::Chain("available ring entry unreadable"));
    };
    split_chain(chain, mem, MAX_DESCS)
}

impl VirtioSerial {
    /// A multiport console with these named ports at ids 1, 2, ...
    pub fn new(ports: Vec<(String, Box<dyn PortBackend>)>) -> VirtioSerial {
        if ports.len() > MAX_PORTS {
            tracing::warn!(
                "virtio-serial: {} ports asked for, the first {MAX_PORTS} kept",
                ports.len()
            );
        }
        let ports: Vec<Port> = ports
            .into_iter()
            .take(MAX_PORTS)
            .map(|(name, backend)| Port {
                name,
                backend,
                open: false,
                pending: VecDeque::new(),
            })
            .collect();
        let mut queue_sizes = vec![
            QUEUE_SIZE,
            QUEUE_SIZE,
            CONTROL_QUEUE_SIZE,
            CONTROL_QUEUE_SIZE,
        ];
        queue_sizes.extend(std::iter::repeat_n(QUEUE_SIZE, 2 * ports.len()));
        VirtioSerial {
            ports,
            queue_sizes,
            control_out: VecDeque::new(),
            multiport: false,
            active: None,
            broken: false,
            scratch: Vec::new(),
        }
    }

    /// Queues `bytes` for the guest on port `id` (1-based) and delivers what fits in posted buffers now.
    /// Err when the guest has not opened that port (nothing queued) or the pending bytes would pass
    /// a cap (PENDING_MAX, e.g. 1 MiB: nothing queued); the bytes a port had pending are dropped when it closes.
    pub fn send(&mut self, id: u32, bytes: &[u8]) -> Result<(), PortError> {
        let i = self.port_index(id).ok_or(PortError::NoSuchPort(id))?;
        let port = &mut self.ports[i];
        if !port.open {
            return Err(PortError::NotOpen(id));
        }
        if port.pending.len() + bytes.len() > PENDING_MAX {
            return Err(PortError::Full {
                id,
                pending: port.pending.len(),
                len: bytes.len(),
            });
        }
        if bytes.is_empty() {
            return Ok(());
        }
        port.pending.extend(bytes);
        self.run(None);
        Ok(())
    }

    /// Whether the guest has port `id` open.
    pub fn is_open(&self, id: u32) -> bool {
        self.port_index(id).is_some_and(|i| self.ports[i].open)
    }

    /// Bytes queued for the guest on port `id` that no rx buffer has taken yet.
    pub fn pending(&self, id: u32) -> usize {
        self.port_index(id)
            .map_or(0, |i| self.ports[i].pending.len())
    }

    /// The number of named ports (ids 1..=n).
    pub fn ports(&self) -> usize {
        self.ports.len()
    }

    fn port_index(&self, id: u32) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.ports.len()).then_some(i)
    }

    /// Serves the rings: the notified queue's requests, then everything waiting for the
    /// driver. Raises the interrupt when the driver asked for one, and marks the device
    /// broken when a ring is inconsistent.
    fn run(&mut self, notified: Option<u16>) {
        if self.broken || !self.multiport {
            return;
        }
        let Some(mut a) = self.active.take() else {
            return;
        };
        match self.service(&mut a, notified) {
            Ok(true) => a.interrupt.signal_used_queues(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("virtio-serial: {e}; the device needs a reset");
                self.broken = true;
                a.interrupt.set_needs_reset();
                self.close_all();
            }
        }
        self.active = Some(a);
    }

    /// Returns whether the driver must be interrupted.
    fn service(&mut self, a: &mut Active, notified: Option<u16>) -> Result<bool, RingError> {
        let mut irq = false;
        match notified.map(usize::from) {
            Some(CONTROL_TX) => irq |= self.control_tx(a)?,
            Some(q) if q > CONTROL_TX && q % 2 == 1 => {
                let i = q / 2 - 2;
                if i < self.ports.len() {
                    irq |= self.port_tx(a, i)?;
                }
            }
            // Rx queues are filled below; port 0's queues are not ours to use.
            _ => {}
        }
        irq |= self.control_rx(a)?;
        for i in 0..self.ports.len() {
            irq |= self.port_rx(a, i)?;
        }
        Ok(irq)
    }

    /// Takes the driver's control messages and gives the buffers back.
    fn control_tx(&mut self, a: &mut Active) -> Result<bool, RingError> {
        let Some(q) = ready_queue(&mut a.queues, CONTROL_TX) else {
            return Ok(false);
        };
        let mut messages = Vec::new();
        let mut used = false;
        loop {
            q.disable_notification(&a.mem)?;
            while pending_chains(q, &a.mem)? > 0 {
                let c = pop(q, &a.mem)?;
                let mut h = [0u8; CONTROL_LEN];
                if c.bad_buffer || read_segments(&a.mem, &c.readable, 0, &mut h).is_err() {
                    tracing::debug!("virtio-serial: short or unreadable control message ignored");
                } else {
                    messages.push(h);
                }
                q.add_used(&a.mem, c.head, 0)?;
                used = true;
            }
            if !q.enable_notification(&a.mem)? {
                break;
            }
        }
        let notify = used && q.needs_notification(&a.mem)?;
        for h in messages {
            self.handle_control(h);
        }
        Ok(notify)
    }

    fn handle_control(&mut self, h: [u8; CONTROL_LEN]) {
        let id = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let ev = u16::from_le_bytes([h[4], h[5]]);
        let value = u16::from_le_bytes([h[6], h[7]]);
        match ev {
            event::DEVICE_READY if value == 0 => {
                tracing::debug!("virtio-serial: the driver failed to set the device up");
            }
            event::DEVICE_READY => {
                for i in 0..self.ports.len() {
                    self.queue_control(control_message(i as u32 + 1, event::PORT_ADD, 1, &[]));
                }
            }
            event::PORT_READY | event::PORT_OPEN => {
                let Some(i) = self.port_index(id) else {
                    tracing::debug!("virtio-serial: control event {ev} for unknown port {id}");
                    return;
                };
                match (ev, value) {
                    (event::PORT_READY, 0) => {
                        tracing::debug!("virtio-serial: the driver failed to add port {id}");
                        self.close_port(i);
                    }
                    (event::PORT_READY, _) => {
                        let name = self.ports[i].name.clone();
                        self.queue_control(control_message(
                            id,
                            event::PORT_NAME,
                            1,
                            name.as_bytes(),
                        ));
                        self.queue_control(control_message(id, event::PORT_OPEN, 1, &[]));
                    }
                    (_, 0) => self.close_port(i),
                    _ => self.open_port(i),
                }
            }
            _ => tracing::debug!("virtio-serial: control event {ev} (port {id}) ignored"),
        }
    }

    fn queue_control(&mut self, m: Vec<u8>) {
        if self.control_out.contains(&m) {
            return;
        }
        if self.control_out.len() >= CONTROL_PENDING_MAX {
            tracing::warn!("virtio-serial: the driver takes no control messages; one dropped");
            return;
        }
        self.control_out.push_back(m);
    }

    fn open_port(&mut self, i: usize) {
        let port = &mut self.ports[i];
        if port.open {
            return;
        }
        tracing::debug!(
            "virtio-serial: the guest opened port {} ({})",
            i + 1,
            port.name
        );
        port.open = true;
        let mut out = Vec::new();
        port.backend.guest_open(true, &mut out);
        port.queue_reply(i as u32 + 1, &out);
    }

    fn close_port(&mut self, i: usize) {
        let port = &mut self.ports[i];
        if !port.open {
            return;
        }
        tracing::debug!("virtio-serial: port {} ({}) closed", i + 1, port.name);
        port.open = false;
        port.pending.clear();
        let mut out = Vec::new();
        port.backend.guest_open(false, &mut out);
        port.queue_reply(i as u32 + 1, &out);
    }

    fn close_all(&mut self) {
        for i in 0..self.ports.len() {
            self.close_port(i);
        }
    }

    /// Moves waiting control messages into the driver's control rx buffers, one per buffer.
    fn control_rx(&mut self, a: &mut Active) -> Result<bool, RingError> {
        if self.control_out.is_empty() {
            return Ok(false);
        }
        let Some(q) = ready_queue(&mut a.queues, CONTROL_RX) else {
            return Ok(false);
        };
        let mut used = false;
        loop {
            while !self.control_out.is_empty() && pending_chains(q, &a.mem)? > 0 {
                let c = pop(q, &a.mem)?;
                let room = c.writable_len();
                let len = match self.control_out.front() {
                    // A buffer that cannot hold the header goes back empty; the message waits.
                    Some(m) if !c.bad_buffer && room >= CONTROL_LEN as u64 => {
                        // Linux posts page-sized buffers; a smaller one gets what fits (a
                        // PORT_NAME cut short) rather than a message the driver cannot parse.
                        let n = (m.len() as u64).min(room) as usize;
                        if write_segments(&a.mem, &c.writable, 0, &m[..n]).is_ok() {
                            self.control_out.pop_front();
                            n
                        } else {
                            0
                        }
                    }
                    _ => 0,
                };
                q.add_used(&a.mem, c.head, len as u32)?;
                used = true;
            }
            // Still waiting: ask for a notification when the driver posts the next buffer.
            if self.control_out.is_empty() || !q.enable_notification(&a.mem)? {
                break;
            }
        }
        Ok(used && q.needs_notification(&a.mem)?)
    }

    /// Moves port `i`'s pending bytes into its rx buffers.
    fn port_rx(&mut self, a: &mut Active, i: usize) -> Result<bool, RingError> {
        let port = &mut self.ports[i];
        if !port.open || port.pending.is_empty() {
            return Ok(false);
        }
        let Some(q) = ready_queue(&mut a.queues, rx_queue(i)) else {
            return Ok(false);
        };
        let mut used = false;
        loop {
            while !port.pending.is_empty() && pending_chains(q, &a.mem)? > 0 {
                let c = pop(q, &a.mem)?;
                let n = if c.bad_buffer {
                    tracing::debug!("virtio-serial: rx buffer outside guest memory returned empty");
                    0
                } else {
                    let n = (port.pending.len() as u64).min(c.writable_len()) as usize;
                    let (front, back) = port.pending.as_slices();
                    let f = n.min(front.len());
                    let ok = write_segments(&a.mem, &c.writable, 0, &front[..f]).is_ok()
                        && write_segments(&a.mem, &c.writable, f as u64, &back[..n - f]).is_ok();
                    if ok {
                        port.pending.drain(..n);
                        n
                    } else {
                        0
                    }
                };
                q.add_used(&a.mem, c.head, n as u32)?;
                used = true;
            }
            // Still waiting: ask for a notification when the driver posts the next buffer.
            if port.pending.is_empty() || !q.enable_notification(&a.mem)? {
                break;
            }
        }
        Ok(used && q.needs_notification(&a.mem)?)
    }

    /// Hands port `i`'s tx chains to its backend and gives the buffers back.
    fn port_tx(&mut self, a: &mut Active, i: usize) -> Result<bool, RingError> {
        let Some(q) = ready_queue(&mut a.queues, rx_queue(i) + 1) else {
            return Ok(false);
        };
        let port = &mut self.ports[i];
        let id = i as u32 + 1;
        let mut used = false;
        loop {
            q.disable_notification(&a.mem)?;
            while pending_chains(q, &a.mem)? > 0 {
                let c = pop(q, &a.mem)?;
                // The data is read before the buffers go back to the driver, which may
                // reuse them at once.
                if c.bad_buffer {
                    tracing::debug!("virtio-serial: port {id}: tx buffer outside guest memory");
                } else if !port.open {
                    tracing::debug!(
                        "virtio-serial: port {id} is not open; {} bytes dropped",
                        c.readable_len()
                    );
                } else {
                    let total = c.readable_len();
                    let mut off = 0u64;
                    while off < total {
                        let n = (total - off).min(TX_PIECE as u64) as usize;
                        self.scratch.resize(n, 0);
                        if read_segments(&a.mem, &c.readable, off, &mut self.scratch).is_err() {
                            break;
                        }
                        let mut out = Vec::new();
                        port.backend.guest_wrote(&self.scratch, &mut out);
                        port.queue_reply(id, &out);
                        off += n as u64;
                    }
                }
                q.add_used(&a.mem, c.head, 0)?;
                used = true;
            }
            if !q.enable_notification(&a.mem)? {
                break;
            }
        }
        Ok(used && q.needs_notification(&a.mem)?)
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        // cols and rows stay 0 (F_SIZE is not offered); emerg_wr reads 0.
        let max_nr_ports = self.ports.len() as u32 + 1;
        c[4..8].copy_from_slice(&max_nr_ports.to_le_bytes());
        c
    }
}

impl VirtioDevice for VirtioSerial {
    fn device_type(&self) -> u16 {
        TYPE_CONSOLE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        1 << F_MULTIPORT
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config(), offset, data);
    }
    // write_config: the default ignores it (emerg_wr is not offered).
    fn activate(&mut self, a: Activation) {
        self.multiport = a.features & (1 << F_MULTIPORT) != 0;
        if !self.multiport {
            tracing::warn!(
                "virtio-serial: the driver did not accept MULTIPORT; the device has no port 0 and stays idle"
            );
        }
        self.active = Some(Active {
            mem: a.mem,
            queues: a.queues,
            interrupt: a.interrupt,
        });
    }
    fn queue_notify(&mut self, index: u16) {
        self.run(Some(index));
    }
    fn reset(&mut self) {
        self.close_all();
        self.control_out.clear();
        self.active = None;
        self.broken = false;
        self.multiport = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::virtio::pci::common;
    use crate::virtio::pci::tests::Guest;
    use crate::virtio::status;
    use crate::virtio::testing::{DESC_F_NEXT, DriverRing};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use vm_memory::{Bytes, GuestAddress};

    const SPICE: &str = "com.redhat.spice.0";
    const AGENT: &str = "org.qemu.guest_agent.0";
    /// Linux's control and rx buffers are a page each (fill_queue / alloc_buf).
    pub(crate) const PAGE: u32 = 4096;

    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Ev {
        Open(bool),
        Wrote(Vec<u8>),
    }

    /// A backend that records what it is told; greets on open, echoes writes with "re:".
    struct Recorder {
        log: Arc<Mutex<Vec<Ev>>>,
        greeting: Vec<u8>,
    }

    impl PortBackend for Recorder {
        fn guest_open(&mut self, open: bool, to_guest: &mut Vec<u8>) {
            self.log.lock().unwrap().push(Ev::Open(open));
            if open {
                to_guest.extend_from_slice(&self.greeting);
            } else {
                // Must go nowhere: the port is closed.
                to_guest.extend_from_slice(b"too late");
            }
        }
        fn guest_wrote(&mut self, data: &[u8], to_guest: &mut Vec<u8>) {
            self.log.lock().unwrap().push(Ev::Wrote(data.to_vec()));
            to_guest.extend_from_slice(b"re:");
            to_guest.extend_from_slice(data);
        }
    }

    /// Linux's virtio_console driver, played against the device through virtio-pci.
    pub(crate) struct Driver {
        g: Guest,
        pub(crate) dev: Arc<Mutex<VirtioSerial>>,
        common: u64,
        isr: u64,
        cfg: u64,
        features: u64,
        rings: Vec<DriverRing>,
        kicks: Vec<u64>,
        logs: Vec<Arc<Mutex<Vec<Ev>>>>,
        /// Where each posted chain's first buffer is, by (queue, head).
        bufs: HashMap<(usize, u16), u64>,
        next_buf: u64,
    }

    impl Driver {
        /// virtio_pci_modern probe, then virtcons_probe up to init_vqs (queues set up,
        /// DRIVER_OK not yet written).
        fn new(greetings: &[&[u8]]) -> Driver {
            let names = [SPICE, AGENT];
            let mut logs = Vec::new();
            let mut ports: Vec<(String, Box<dyn PortBackend>)> = Vec::new();
            for (i, greeting) in greetings.iter().enumerate() {
                let log = Arc::new(Mutex::new(Vec::new()));
                logs.push(log.clone());
                ports.push((
                    names[i].to_string(),
                    Box::new(Recorder {
                        log,
                        greeting: greeting.to_vec(),
                    }),
                ));
            }
            Driver::with_ports(ports, logs)
        }

        /// The same for ports with backends of the caller's (`logs` stay empty then).
        pub(crate) fn with_ports(
            ports: Vec<(String, Box<dyn PortBackend>)>,
            logs: Vec<Arc<Mutex<Vec<Ev>>>>,
        ) -> Driver {
            let dev = Arc::new(Mutex::new(VirtioSerial::new(ports)));
            let mut g = Guest::new(dev.clone());
            assert_eq!(g.cfg_read(2, 2), 0x1043, "modern virtio console");
            let (common, isr, cfg, notify, mult, features) = g.probe(!0);
            // virtcons_probe: MULTIPORT accepted, max_nr_ports read (virtio_cread_feature).
            let max_nr_ports = g.read(cfg + 4, 4);
            let nr_queues = (max_nr_ports + 1) * 2;
            assert_eq!(g.read(common + common::NUM_QUEUES, 2), nr_queues);
            let mut rings = Vec::new();
            let mut kicks = Vec::new();
            for q in 0..nr_queues {
                let ring = DriverRing::new(&g.mem, 0x10000 + q * 0x4000, 16);
                kicks.push(g.setup_queue(common, notify, mult, q as u16, &ring));
                rings.push(ring);
            }
            Driver {
                g,
                dev,
                common,
                isr,
                cfg,
                features,
                rings,
                kicks,
                logs,
                bufs: HashMap::new(),
                next_buf: 0x100000,
            }
        }

        /// The rest of virtcons_probe: DRIVER_OK, control rx buffers, DEVICE_READY.
        fn start(&mut self) {
            self.g.write(self.common + common::DEVICE_STATUS, 1, 0xf);
            for _ in 0..8 {
                self.post(CONTROL_RX, PAGE);
            }
            self.kick(CONTROL_RX);
            self.control(BAD_ID, event::DEVICE_READY, 1);
        }

        /// A fresh buffer of `len` bytes (never reused, so old contents stay readable).
        fn alloc(&mut self, len: u32) -> u64 {
            let a = self.next_buf;
            self.next_buf += u64::from(len).next_multiple_of(0x1000);
            a
        }

        /// add_inbuf: one device-writable buffer on queue `q` (no kick).
        pub(crate) fn post(&mut self, q: usize, len: u32) -> u16 {
            let addr = self.alloc(len);
            let head = self.rings[q].add_chain(&self.g.mem, &[(addr, len, true)]);
            self.bufs.insert((q, head), addr);
            head
        }

        /// What virtqueue_get_buf does for a queue with a callback under EVENT_IDX: ask
        /// for an interrupt at the next used entry.
        fn want_interrupt(&self, q: usize) {
            let r = &self.rings[q];
            let used_event = r.avail + 4 + 2 * u64::from(r.size);
            self.g
                .mem
                .write_obj(r.used_seen, GuestAddress(used_event))
                .unwrap();
        }

        pub(crate) fn kick(&self, q: usize) {
            self.g.write(self.kicks[q], 2, q as u64);
        }

        /// Adds a chain of device-readable buffers holding `parts` to queue `q`, kicks, and
        /// checks the device gave it back at once (Linux spins until it does).
        fn send_chain(&mut self, q: usize, parts: &[&[u8]]) {
            let mut bufs = Vec::new();
            for p in parts {
                let addr = self.alloc(p.len() as u32);
                self.g.mem.write_slice(p, GuestAddress(addr)).unwrap();
                bufs.push((addr, p.len() as u32, false));
            }
            let head = self.rings[q].add_chain(&self.g.mem, &bufs);
            self.kick(q);
            let used = self.rings[q].take_used(&self.g.mem);
            assert_eq!(
                used,
                vec![(u32::from(head), 0)],
                "queue {q} buffer returned"
            );
        }

        /// __send_control_msg.
        pub(crate) fn control(&mut self, id: u32, ev: u16, value: u16) {
            self.send_chain(CONTROL_TX, &[&control_message(id, ev, value, &[])]);
        }

        /// control_work_handler: every control message the device sent since the last
        /// call, as (id, event, value, payload); each buffer is given back, as Linux does.
        fn messages(&mut self) -> Vec<(u32, u16, u16, Vec<u8>)> {
            let mut out = Vec::new();
            for (head, len) in self.rings[CONTROL_RX].take_used(&self.g.mem) {
                let addr = self.bufs[&(CONTROL_RX, head as u16)];
                let mut b = vec![0u8; len as usize];
                self.g.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
                assert!(b.len() >= CONTROL_LEN, "control message of {len} bytes");
                out.push((
                    u32::from_le_bytes(b[0..4].try_into().unwrap()),
                    u16::from_le_bytes([b[4], b[5]]),
                    u16::from_le_bytes([b[6], b[7]]),
                    b[CONTROL_LEN..].to_vec(),
                ));
                self.post(CONTROL_RX, PAGE);
            }
            self.want_interrupt(CONTROL_RX);
            if !out.is_empty() {
                self.kick(CONTROL_RX);
            }
            out
        }

        pub(crate) fn rx(id: u32) -> usize {
            2 * (id as usize + 1)
        }

        /// get_inbuf for port `id`: the lengths of the used buffers and their bytes joined.
        pub(crate) fn received(&mut self, id: u32) -> (Vec<u32>, Vec<u8>) {
            let q = Self::rx(id);
            let mut lens = Vec::new();
            let mut data = Vec::new();
            for (head, len) in self.rings[q].take_used(&self.g.mem) {
                let addr = self.bufs[&(q, head as u16)];
                let mut b = vec![0u8; len as usize];
                self.g.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
                lens.push(len);
                data.extend_from_slice(&b);
            }
            self.want_interrupt(q);
            (lens, data)
        }

        /// A guest process writes to /dev/vportNpM: one tx chain.
        pub(crate) fn write(&mut self, id: u32, parts: &[&[u8]]) {
            self.send_chain(Self::rx(id) + 1, parts);
        }

        fn log(&self, id: u32) -> Vec<Ev> {
            std::mem::take(&mut *self.logs[id as usize - 1].lock().unwrap())
        }

        fn status(&self) -> u8 {
            self.g.read(self.common + common::DEVICE_STATUS, 1) as u8
        }

        /// Both ports added, ready and named, the way add_port does it.
        pub(crate) fn bring_up(&mut self) {
            let ports = self.dev.lock().unwrap().ports();
            self.start();
            assert_eq!(self.messages().len(), ports);
            for id in 1..=ports as u32 {
                for _ in 0..4 {
                    self.post(Self::rx(id), PAGE);
                }
                self.kick(Self::rx(id));
                self.control(id, event::PORT_READY, 1);
            }
            assert_eq!(self.messages().len(), 2 * ports);
        }
    }

    #[test]
    fn linux_driver_adds_and_names_the_ports() {
        let mut d = Driver::new(&[b"", b""]);
        assert_eq!(
            d.features & 0xffff_ffff & !(3 << 28),
            1 << F_MULTIPORT,
            "MULTIPORT is the only device feature"
        );
        // struct virtio_console_config: cols, rows 0; max_nr_ports = ports + 1; emerg_wr 0.
        assert_eq!(d.g.read(d.cfg, 4), 0);
        assert_eq!(d.g.read(d.cfg + 4, 4), 3);
        assert_eq!(d.g.read(d.cfg + 8, 4), 0);
        d.g.write(d.cfg + 8, 4, u64::from(b'x'));
        assert_eq!(d.g.read(d.cfg + 4, 4), 3, "emerg_wr writes change nothing");

        d.start();
        assert!(d.g.irq.level(), "PORT_ADD interrupts");
        assert_eq!(d.g.read(d.isr, 1), 1);
        assert_eq!(
            d.messages(),
            vec![
                (1, event::PORT_ADD, 1, vec![]),
                (2, event::PORT_ADD, 1, vec![])
            ],
            "ports 1 and 2, never port 0"
        );

        // add_port: fill the port's rx queue, then PORT_READY.
        for _ in 0..4 {
            d.post(Driver::rx(1), PAGE);
        }
        d.kick(Driver::rx(1));
        d.control(1, event::PORT_READY, 1);
        assert_eq!(
            d.messages(),
            vec![
                (1, event::PORT_NAME, 1, SPICE.as_bytes().to_vec()),
                (1, event::PORT_OPEN, 1, vec![])
            ],
            "name without a NUL, then the host end is connected"
        );
        d.control(2, event::PORT_READY, 1);
        assert_eq!(
            d.messages(),
            vec![
                (2, event::PORT_NAME, 1, AGENT.as_bytes().to_vec()),
                (2, event::PORT_OPEN, 1, vec![])
            ]
        );
        // Ready is not open: only a guest process opening the port is.
        let dev = d.dev.lock().unwrap();
        assert!(!dev.is_open(1) && !dev.is_open(2));
        assert_eq!(dev.ports(), 2);
        drop(dev);
        assert!(d.log(1).is_empty());
        assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn guest_opens_writes_and_reads_replies() {
        let mut d = Driver::new(&[b"hello", b""]);
        d.bring_up();
        // port_fops_open: PORT_OPEN 1. The backend's greeting arrives in rx.
        d.control(1, event::PORT_OPEN, 1);
        assert_eq!(d.log(1), vec![Ev::Open(true)]);
        assert!(d.dev.lock().unwrap().is_open(1));
        assert!(!d.dev.lock().unwrap().is_open(2));
        assert_eq!(d.received(1), (vec![5], b"hello".to_vec()));
        assert!(d.g.irq.level());
        d.g.read(d.isr, 1);

        // Writes: each chain whole and in order, one of them over three buffers.
        d.write(1, &[b"one"]);
        d.write(1, &[b"tw", b"o-", b"parts"]);
        d.write(1, &[b"three"]);
        assert_eq!(
            d.log(1),
            vec![
                Ev::Wrote(b"one".to_vec()),
                Ev::Wrote(b"two-parts".to_vec()),
                Ev::Wrote(b"three".to_vec())
            ]
        );
        assert!(d.log(2).is_empty(), "port 2 heard nothing");
        // The replies fill the rx buffers (4 were posted, the greeting took one), each
        // delivered as soon as the write that caused it was served.
        let (lens, data) = d.received(1);
        assert_eq!(data, b"re:onere:two-partsre:three");
        assert_eq!(lens, vec![6, 12, 8]);
        assert_eq!(d.dev.lock().unwrap().pending(1), 0);

        // A second open changes nothing; close tells the backend and refuses sends.
        d.control(1, event::PORT_OPEN, 1);
        assert!(d.log(1).is_empty());
        d.control(1, event::PORT_OPEN, 0);
        assert_eq!(d.log(1), vec![Ev::Open(false)]);
        assert_eq!(
            d.dev.lock().unwrap().send(1, b"x"),
            Err(PortError::NotOpen(1))
        );
        assert_eq!(
            d.received(1).1,
            b"",
            "the backend's words at close go nowhere"
        );
        // Writes to a closed port are given back and dropped.
        d.write(1, &[b"late"]);
        assert!(d.log(1).is_empty());
    }

    #[test]
    fn host_send_waits_for_the_guest_and_its_buffers() {
        let mut d = Driver::new(&[b"", b""]);
        assert_eq!(
            d.dev.lock().unwrap().send(1, b"early"),
            Err(PortError::NotOpen(1)),
            "no driver yet"
        );
        d.bring_up();
        {
            let mut dev = d.dev.lock().unwrap();
            assert_eq!(dev.send(1, b"x"), Err(PortError::NotOpen(1)));
            assert_eq!(dev.send(0, b"x"), Err(PortError::NoSuchPort(0)));
            assert_eq!(dev.send(3, b"x"), Err(PortError::NoSuchPort(3)));
            assert_eq!(dev.pending(1), 0);
        }
        d.control(2, event::PORT_OPEN, 1);
        d.dev.lock().unwrap().send(2, b"clipboard").unwrap();
        assert_eq!(d.received(2), (vec![9], b"clipboard".to_vec()));

        // Small buffers: one message spread over several, in order. Port 2's three
        // remaining page buffers are used up first.
        d.dev
            .lock()
            .unwrap()
            .send(2, &[7u8; 3 * PAGE as usize])
            .unwrap();
        assert_eq!(d.received(2).0, vec![PAGE; 3]);
        for _ in 0..3 {
            d.post(Driver::rx(2), 4);
        }
        d.kick(Driver::rx(2));
        d.g.read(d.isr, 1);
        d.dev.lock().unwrap().send(2, b"0123456789").unwrap();
        assert_eq!(d.received(2), (vec![4, 4, 2], b"0123456789".to_vec()));
        assert!(d.g.irq.level());

        // No buffer posted: the bytes wait, and arrive when the driver posts one.
        d.dev.lock().unwrap().send(2, b"later").unwrap();
        d.dev.lock().unwrap().send(2, b"!").unwrap();
        assert_eq!(d.dev.lock().unwrap().pending(2), 6);
        assert_eq!(d.received(2).1, b"");
        d.g.read(d.isr, 1);
        d.post(Driver::rx(2), PAGE);
        d.kick(Driver::rx(2));
        assert!(d.g.irq.level(), "the late delivery interrupts");
        assert_eq!(d.received(2), (vec![6], b"later!".to_vec()));

        // The cap: what would pass it is refused whole.
        let mut dev = d.dev.lock().unwrap();
        dev.send(2, &vec![1u8; PENDING_MAX - 10]).unwrap();
        assert_eq!(
            dev.send(2, &[2u8; 11]),
            Err(PortError::Full {
                id: 2,
                pending: PENDING_MAX - 10,
                len: 11
            })
        );
        assert_eq!(dev.pending(2), PENDING_MAX - 10);
        dev.send(2, &[3u8; 10]).unwrap();
        assert_eq!(dev.pending(2), PENDING_MAX);
        assert!(dev.send(2, b"").is_ok());
    }

    #[test]
    fn reset_closes_ports_and_drops_pending_bytes() {
        let mut d = Driver::new(&[b"", b""]);
        d.bring_up();
        d.control(1, event::PORT_OPEN, 1);
        d.received(1);
        d.log(1);
        // Fill the posted buffers, then leave bytes waiting.
        d.dev
            .lock()
            .unwrap()
            .send(1, &[0u8; 4 * PAGE as usize])
            .unwrap();
        d.dev.lock().unwrap().send(1, b"stale").unwrap();
        assert_eq!(d.dev.lock().unwrap().pending(1), 5);

        // The driver resets the device (module unload, kexec, reboot).
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(d.log(1), vec![Ev::Open(false)]);
        assert!(d.log(2).is_empty(), "port 2 was never open");
        let dev = d.dev.lock().unwrap();
        assert!(!dev.is_open(1));
        assert_eq!(dev.pending(1), 0);
        drop(dev);

        // A new driver starts from scratch: ports added again, nothing stale arrives.
        let mut d2 = Driver::new(&[b"hi", b""]);
        d2.bring_up();
        d2.control(1, event::PORT_OPEN, 1);
        assert_eq!(d2.received(1).1, b"hi");
        // PORT_READY 0 for an open port (the guest gave up on it) closes it too.
        d2.control(1, event::PORT_READY, 0);
        assert_eq!(d2.log(1), vec![Ev::Open(true), Ev::Open(false)]);
        assert!(!d2.dev.lock().unwrap().is_open(1));
    }

    #[test]
    fn driver_reset_then_restart_on_the_same_device() {
        let mut d = Driver::new(&[b"", b""]);
        d.bring_up();
        d.control(2, event::PORT_OPEN, 1);
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(d.log(2), vec![Ev::Open(true), Ev::Open(false)]);
        // Re-probe the same function; the device comes back.
        let (common, _, _, notify, mult, _) = d.g.probe(!0);
        for q in 0..d.rings.len() {
            d.rings[q] = DriverRing::new(&d.g.mem, 0x10000 + q as u64 * 0x4000, 16);
            d.kicks[q] = d.g.setup_queue(common, notify, mult, q as u16, &d.rings[q]);
        }
        d.bring_up();
        d.control(2, event::PORT_OPEN, 1);
        d.dev.lock().unwrap().send(2, b"again").unwrap();
        assert_eq!(d.received(2).1, b"again");
        assert_eq!(d.log(2), vec![Ev::Open(true)]);
    }

    #[test]
    fn control_messages_wait_for_control_buffers() {
        let mut d = Driver::new(&[b"", b""]);
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0xf);
        // DEVICE_READY before any control rx buffer (and twice: nothing doubles).
        d.control(BAD_ID, event::DEVICE_READY, 1);
        d.control(BAD_ID, event::DEVICE_READY, 1);
        assert!(d.rings[CONTROL_RX].take_used(&d.g.mem).is_empty());
        // A buffer too small for a header goes back empty; the message waits.
        let tiny = d.post(CONTROL_RX, 4);
        d.kick(CONTROL_RX);
        assert_eq!(
            d.rings[CONTROL_RX].take_used(&d.g.mem),
            vec![(u32::from(tiny), 0)]
        );
        let a = d.post(CONTROL_RX, 12);
        let b = d.post(CONTROL_RX, PAGE);
        d.kick(CONTROL_RX);
        assert_eq!(
            d.rings[CONTROL_RX].take_used(&d.g.mem),
            vec![(u32::from(a), 8), (u32::from(b), 8)]
        );
        assert_eq!(
            d.read_buf(CONTROL_RX, a, 8),
            control_message(1, event::PORT_ADD, 1, &[])
        );
        assert_eq!(
            d.read_buf(CONTROL_RX, b, 8),
            control_message(2, event::PORT_ADD, 1, &[])
        );
        // PORT_NAME and PORT_OPEN wait; a buffer that holds the header but not the whole
        // name gets the name cut short, and PORT_OPEN waits for the next one.
        d.control(1, event::PORT_READY, 1);
        assert!(d.rings[CONTROL_RX].take_used(&d.g.mem).is_empty());
        let c = d.post(CONTROL_RX, 12);
        d.kick(CONTROL_RX);
        assert_eq!(
            d.rings[CONTROL_RX].take_used(&d.g.mem),
            vec![(u32::from(c), 12)]
        );
        assert_eq!(
            d.read_buf(CONTROL_RX, c, 12),
            control_message(1, event::PORT_NAME, 1, &SPICE.as_bytes()[..4])
        );
        d.post(CONTROL_RX, PAGE);
        d.kick(CONTROL_RX);
        assert_eq!(d.messages(), vec![(1, event::PORT_OPEN, 1, vec![])]);
    }

    #[test]
    fn malformed_control_messages_are_ignored() {
        let mut d = Driver::new(&[b"", b""]);
        d.bring_up();
        // Short, unknown port, port 0, unknown event, events only the device sends,
        // DEVICE_READY 0, PORT_OPEN for a port that is not open (close of a closed port).
        d.send_chain(CONTROL_TX, &[&[1, 0, 0, 0, 6, 0]]);
        d.send_chain(CONTROL_TX, &[&[]]);
        d.control(99, event::PORT_OPEN, 1);
        d.control(0, event::PORT_OPEN, 1);
        d.control(BAD_ID, event::PORT_READY, 1);
        d.control(1, 42, 1);
        d.control(1, event::PORT_ADD, 1);
        d.control(1, event::PORT_NAME, 1);
        d.control(1, event::RESIZE, 1);
        d.control(1, event::CONSOLE_PORT, 1);
        d.control(1, event::PORT_REMOVE, 1);
        d.control(BAD_ID, event::DEVICE_READY, 0);
        d.control(2, event::PORT_OPEN, 0);
        // A header split over two buffers is still a header.
        d.send_chain(CONTROL_TX, &[&[1, 0], &[0, 0, 6, 0, 1, 0]]);
        assert_eq!(d.log(1), vec![Ev::Open(true)]);
        d.control(1, event::PORT_OPEN, 0);
        assert_eq!(d.log(1), vec![Ev::Open(false)]);
        // A control message in a buffer outside guest memory.
        let head = d.rings[CONTROL_TX].add_chain(&d.g.mem, &[(1 << 40, 8, false)]);
        d.kick(CONTROL_TX);
        assert_eq!(
            d.rings[CONTROL_TX].take_used(&d.g.mem),
            vec![(u32::from(head), 0)]
        );
        // Notifications of queues that do not exist or belong to port 0.
        d.g.write(d.kicks[1], 2, 1);
        d.g.write(d.kicks[0], 2, 0);
        d.dev.lock().unwrap().queue_notify(500);
        d.dev.lock().unwrap().queue_notify(u16::MAX);

        assert!(d.messages().is_empty(), "nothing answered");
        assert!(d.log(1).is_empty() && d.log(2).is_empty());
        assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
        // Port 0's tx queue is left alone.
        d.rings[1].add_chain(&d.g.mem, &[(0x100, 4, false)]);
        d.kick(1);
        assert!(d.rings[1].take_used(&d.g.mem).is_empty());
        // The device still works.
        d.control(1, event::PORT_OPEN, 1);
        d.write(1, &[b"ok"]);
        assert_eq!(d.log(1), vec![Ev::Open(true), Ev::Wrote(b"ok".to_vec())]);
    }

    #[test]
    fn bad_buffers_fail_alone_and_bad_rings_need_reset() {
        let mut d = Driver::new(&[b"", b""]);
        d.bring_up();
        d.control(1, event::PORT_OPEN, 1);
        d.log(1);
        // A tx buffer outside guest memory: given back, nothing delivered.
        let q = Driver::rx(1) + 1;
        let head = d.rings[q].add_chain(&d.g.mem, &[(1 << 40, 16, false)]);
        d.kick(q);
        assert_eq!(d.rings[q].take_used(&d.g.mem), vec![(u32::from(head), 0)]);
        assert!(d.log(1).is_empty());
        assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);

        // A looping chain on the tx queue breaks the ring.
        let i = d.rings[q].next_desc;
        d.rings[q].write_desc(&d.g.mem, i, 0x100, 4, DESC_F_NEXT, i);
        d.rings[q].publish(&d.g.mem, i);
        d.kick(q);
        assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
        // The guest can no longer talk: the port is closed and the backend told.
        assert_eq!(d.log(1), vec![Ev::Open(false)]);
        assert_eq!(
            d.dev.lock().unwrap().send(1, b"x"),
            Err(PortError::NotOpen(1))
        );
        // Nothing more is done until the reset, which clears the condition.
        d.control_unchecked(2, event::PORT_OPEN, 1);
        assert!(d.log(2).is_empty());
        d.g.write(d.common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(d.status(), 0);
        assert!(d.log(1).is_empty(), "closed once, not twice");
    }

    impl Driver {
        fn read_buf(&self, q: usize, head: u16, len: usize) -> Vec<u8> {
            let mut b = vec![0u8; len];
            self.g
                .mem
                .read_slice(&mut b, GuestAddress(self.bufs[&(q, head)]))
                .unwrap();
            b
        }

        /// A control message the device may not answer.
        fn control_unchecked(&mut self, id: u32, ev: u16, value: u16) {
            let addr = self.alloc(8);
            self.g
                .mem
                .write_slice(&control_message(id, ev, value, &[]), GuestAddress(addr))
                .unwrap();
            self.rings[CONTROL_TX].add_chain(&self.g.mem, &[(addr, 8, false)]);
            self.kick(CONTROL_TX);
        }
    }

    #[test]
    fn a_large_write_reaches_the_backend_in_pieces() {
        let mut d = Driver::new(&[b"", b""]);
        d.bring_up();
        d.control(1, event::PORT_OPEN, 1);
        d.log(1);
        let big: Vec<u8> = (0..TX_PIECE + 100).map(|i| (i % 251) as u8).collect();
        d.write(1, &[&big[..10], &big[10..]]);
        let log = d.log(1);
        assert_eq!(log.len(), 2);
        assert_eq!(log[0], Ev::Wrote(big[..TX_PIECE].to_vec()));
        assert_eq!(log[1], Ev::Wrote(big[TX_PIECE..].to_vec()));
    }
}
