//! Queue notifications off the vCPU thread: one eventfd per queue, registered with the
//! hypervisor at the queue's notify address in the BAR ([`super::pci::notify_offset`]),
//! and one thread per device that waits on them and runs the device's queue handler.
//! A vCPU that notifies goes straight back into the guest; the disk read, the frame sent,
//! the input event taken happen on this thread while the guest runs on.
//!
//! The registrations follow the BAR: [`QueueDoorbells::place`] moves them when firmware
//! or the OS reprograms it, and drops them while the BAR does not decode. Where the
//! hypervisor refuses a registration, the notify address keeps exiting as MMIO and the
//! transport handles the write on the vCPU thread as before (one warning says so).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::pci::{VirtioPciBar, notify_offset};
use crate::doorbell::Doorbells;
use crate::pause::DeviceGate;

/// The epoll token of the stop eventfd (queue tokens are their indices).
const STOP: u64 = u64::MAX;

/// A device's queue eventfds, where they are registered, and the thread that serves them.
pub struct QueueDoorbells {
    doorbells: Arc<dyn Doorbells>,
    fds: Arc<Vec<EventFd>>,
    placed_at: Option<u64>,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl QueueDoorbells {
    /// One eventfd for each of `queues` and a thread named `name` that hands their
    /// notifications to `bar`, each inside a pass of `gate`. Nothing is registered until
    /// [`QueueDoorbells::place`]. Whoever drops this must not leave `gate` paused (the
    /// thread would never see its stop).
    pub fn start(
        doorbells: Arc<dyn Doorbells>,
        bar: Arc<Mutex<VirtioPciBar>>,
        gate: Arc<DeviceGate>,
        queues: u16,
        name: &str,
    ) -> std::io::Result<QueueDoorbells> {
        let fds: Arc<Vec<EventFd>> = Arc::new(
            (0..queues)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<Result<_, _>>()?,
        );
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let epoll = Epoll::new()?;
        for (i, fd) in fds.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                std::os::fd::AsRawFd::as_raw_fd(fd),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&*stop),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        let thread = {
            let (fds, stop) = (fds.clone(), stop.clone());
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || serve(&epoll, &fds, &stop, &bar, &gate))?
        };
        Ok(QueueDoorbells {
            doorbells,
            fds,
            placed_at: None,
            stop,
            thread: Some(thread),
        })
    }

    /// The BAR now decodes at `base` (`None`: it does not decode): the registrations move
    /// there. Returns whether notifications now arrive through the eventfds.
    pub fn place(&mut self, base: Option<u64>) -> bool {
        if base == self.placed_at {
            return base.is_some();
        }
        if let Some(old) = self.placed_at.take() {
            for (q, fd) in self.fds.iter().enumerate() {
                if let Err(e) = self.doorbells.unregister(fd, old + notify_offset(q as u16)) {
                    tracing::debug!("virtio: queue {q} doorbell at {old:#x}: unregister: {e}");
                }
            }
        }
        let Some(base) = base else { return false };
        for (q, fd) in self.fds.iter().enumerate() {
            let addr = base + notify_offset(q as u16);
            if let Err(e) = self.doorbells.register(fd, addr) {
                tracing::warn!(
                    "virtio: cannot register the doorbell of queue {q} at {addr:#x} ({e}); \
                     this device's notifications are handled on the vCPU thread"
                );
                for (q, fd) in self.fds.iter().enumerate().take(q) {
                    let _ = self
                        .doorbells
                        .unregister(fd, base + notify_offset(q as u16));
                }
                return false;
            }
        }
        self.placed_at = Some(base);
        true
    }

    /// Where the doorbells are registered now.
    pub fn placed_at(&self) -> Option<u64> {
        self.placed_at
    }
}

impl Drop for QueueDoorbells {
    fn drop(&mut self) {
        self.place(None);
        if let Err(e) = self.stop.write(1) {
            tracing::warn!("virtio: cannot stop a doorbell thread: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

thread_local! {
    static ON_DOORBELL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is a doorbell thread (a device thread, never a vCPU): a
/// device may then do a short piece of I/O right here instead of handing it on.
pub fn on_doorbell_thread() -> bool {
    ON_DOORBELL_THREAD.with(|c| c.get())
}

/// The thread: each signalled queue is notified once however many writes it coalesced
/// (the device drains its whole ring on each notify).
fn serve(
    epoll: &Epoll,
    fds: &[EventFd],
    stop: &EventFd,
    bar: &Mutex<VirtioPciBar>,
    gate: &DeviceGate,
) {
    ON_DOORBELL_THREAD.with(|c| c.set(true));
    let mut events = vec![EpollEvent::default(); fds.len() + 1];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("virtio: doorbell wait failed ({e}); notifications stop");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == STOP {
                let _ = stop.read();
                return;
            }
            let Some(fd) = fds.get(token as usize) else {
                continue;
            };
            // Reading resets the counter; a notify that lands after this is seen again.
            let _ = fd.read();
            let _pass = gate.enter();
            bar.lock()
                .unwrap_or_else(|e| e.into_inner())
                .notify(token as u16);
        }
    }
}
