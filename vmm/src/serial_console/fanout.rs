//! COM1's output to every viewer: what the UART transmits is kept in the scrollback and
//! queued for each connected client, and a client's own thread sends its queue on.
//!
//! The guest must never wait for a viewer: [`SerialFanout::output`] runs on a vCPU
//! thread, takes two short locks and never blocks on a socket. A client whose queue would
//! pass its bound is disconnected (with a log line) rather than have bytes dropped from
//! the middle of its stream: a terminal that silently loses bytes shows garbage (half an
//! escape sequence, a missing line) with nothing to say so, while a closed connection is
//! plain, and reconnecting replays the scrollback.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::scrollback::Scrollback;

/// Why a client's queue ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// It did not read for so long that its queue reached its bound.
    FellBehind,
    /// Its connection went away (or its sender gave up on it).
    Gone,
    /// The VMM is shutting the socket down.
    Stopped,
}

/// The bytes waiting for one client.
#[derive(Debug)]
pub struct ClientQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    limit: usize,
}

#[derive(Debug)]
struct QueueState {
    bytes: VecDeque<u8>,
    closed: Option<Closed>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding one of these left plain bytes behind: go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientQueue {
    fn new(replay: Vec<u8>, limit: usize) -> ClientQueue {
        ClientQueue {
            state: Mutex::new(QueueState {
                bytes: replay.into(),
                closed: None,
            }),
            ready: Condvar::new(),
            limit,
        }
    }

    /// Queues `data`; false (and the queue closed as [`Closed::FellBehind`]) when it would
    /// pass the bound.
    fn push(&self, data: &[u8]) -> bool {
        let mut s = lock(&self.state);
        if s.closed.is_some() {
            return false;
        }
        if s.bytes.len() + data.len() > self.limit {
            s.closed = Some(Closed::FellBehind);
            s.bytes = VecDeque::new();
            self.ready.notify_all();
            return false;
        }
        let was_empty = s.bytes.is_empty();
        s.bytes.extend(data);
        if was_empty {
            self.ready.notify_all();
        }
        true
    }

    /// Waits for bytes and moves up to `max` of them into `out` (cleared first); the
    /// reason once the queue is closed. Bytes queued before [`Closed::Gone`] or
    /// [`Closed::Stopped`] are not handed out: the connection is ending.
    pub fn next(&self, out: &mut Vec<u8>, max: usize) -> Result<(), Closed> {
        out.clear();
        let mut s = lock(&self.state);
        loop {
            if let Some(why) = s.closed {
                return Err(why);
            }
            if !s.bytes.is_empty() {
                let n = s.bytes.len().min(max);
                out.extend(s.bytes.drain(..n));
                return Ok(());
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends the queue (the first reason given stays).
    pub fn close(&self, why: Closed) {
        let mut s = lock(&self.state);
        s.closed.get_or_insert(why);
        self.ready.notify_all();
    }

    /// Why it ended, if it has.
    pub fn closed(&self) -> Option<Closed> {
        lock(&self.state).closed
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        lock(&self.state).bytes.len()
    }
}

/// Too many clients are connected already.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} serial console clients are connected already")]
pub struct TooManyClients(pub usize);

/// The scrollback and the clients.
#[derive(Debug)]
pub struct SerialFanout {
    shared: Mutex<Shared>,
    queue_limit: usize,
    max_clients: usize,
}

#[derive(Debug)]
struct Shared {
    scrollback: Scrollback,
    clients: Vec<Arc<ClientQueue>>,
}

impl SerialFanout {
    /// `scrollback` bytes are replayed to each new client; each client may fall
    /// `queue_limit` bytes behind (the replay included) before it is dropped.
    pub fn new(scrollback: usize, queue_limit: usize, max_clients: usize) -> Arc<SerialFanout> {
        Arc::new(SerialFanout {
            shared: Mutex::new(Shared {
                scrollback: Scrollback::new(scrollback),
                clients: Vec::new(),
            }),
            // The replay alone must fit.
            queue_limit: queue_limit.max(scrollback),
            max_clients,
        })
    }

    /// What the guest sent: into the scrollback and every client's queue.
    pub fn output(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut shared = lock(&self.shared);
        shared.scrollback.push(data);
        shared.clients.retain(|c| {
            let kept = c.push(data);
            if !kept && c.closed() == Some(Closed::FellBehind) {
                tracing::warn!(
                    "serial console: a client fell {} bytes behind; disconnecting it",
                    self.queue_limit
                );
            }
            kept
        });
    }

    /// A new client: its queue starts with the scrollback, and takes every byte output
    /// after it (taken under one lock, so nothing is missed or sent twice).
    pub fn subscribe(&self) -> Result<Arc<ClientQueue>, TooManyClients> {
        let mut shared = lock(&self.shared);
        shared.clients.retain(|c| c.closed().is_none());
        if shared.clients.len() >= self.max_clients {
            return Err(TooManyClients(shared.clients.len()));
        }
        let queue = Arc::new(ClientQueue::new(
            shared.scrollback.replay(),
            self.queue_limit,
        ));
        shared.clients.push(queue.clone());
        Ok(queue)
    }

    /// Forgets a client whose connection ended.
    pub fn unsubscribe(&self, queue: &Arc<ClientQueue>) {
        queue.close(Closed::Gone);
        lock(&self.shared)
            .clients
            .retain(|c| !Arc::ptr_eq(c, queue));
    }

    /// Ends every client's queue (the socket is going away).
    pub fn close_all(&self) {
        for c in lock(&self.shared).clients.drain(..) {
            c.close(Closed::Stopped);
        }
    }

    pub fn clients(&self) -> usize {
        lock(&self.shared).clients.len()
    }
}

/// The UART's output writer when COM1 also has a socket: every byte to the fan-out, and
/// to the `--serial` sink (stdout, the serial file) as before.
pub struct FanoutWriter {
    sink: Box<dyn Write + Send>,
    fanout: Arc<SerialFanout>,
}

impl FanoutWriter {
    pub fn new(sink: Box<dyn Write + Send>, fanout: Arc<SerialFanout>) -> FanoutWriter {
        FanoutWriter { sink, fanout }
    }
}

impl Write for FanoutWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The sink first: what a viewer has seen is in the serial log already. The
        // viewers get it whatever the sink made of it.
        let written = self.sink.write_all(buf);
        self.fanout.output(buf);
        written.map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn next(q: &ClientQueue) -> Result<Vec<u8>, Closed> {
        let mut out = Vec::new();
        q.next(&mut out, usize::MAX).map(|()| out)
    }

    #[test]
    fn every_client_gets_the_output() {
        let f = SerialFanout::new(64, 64, 4);
        let a = f.subscribe().unwrap();
        let b = f.subscribe().unwrap();
        f.output(b"hello");
        assert_eq!(next(&a).unwrap(), b"hello");
        assert_eq!(next(&b).unwrap(), b"hello");
    }

    #[test]
    fn a_late_client_gets_the_scrollback_first() {
        let f = SerialFanout::new(64, 128, 4);
        f.output(b"login: ");
        let late = f.subscribe().unwrap();
        f.output(b"root\r\n");
        assert_eq!(next(&late).unwrap(), b"login: root\r\n");
    }

    #[test]
    fn a_client_that_falls_behind_is_dropped_and_the_rest_go_on() {
        let f = SerialFanout::new(8, 16, 4);
        let slow = f.subscribe().unwrap();
        let fast = f.subscribe().unwrap();
        for _ in 0..5 {
            f.output(b"abcd");
            assert_eq!(next(&fast).unwrap(), b"abcd");
        }
        assert_eq!(next(&slow), Err(Closed::FellBehind));
        assert_eq!(f.clients(), 1);
        // Its queue was let go, not kept growing.
        assert_eq!(slow.queued(), 0);
        f.output(b"more");
        assert_eq!(next(&fast).unwrap(), b"more");
    }

    #[test]
    fn the_number_of_clients_is_bounded_and_a_gone_one_frees_its_place() {
        let f = SerialFanout::new(8, 8, 2);
        let a = f.subscribe().unwrap();
        let _b = f.subscribe().unwrap();
        assert_eq!(f.subscribe().unwrap_err(), TooManyClients(2));
        f.unsubscribe(&a);
        assert!(f.subscribe().is_ok());
    }

    #[test]
    fn a_waiting_client_wakes_on_output_and_on_close() {
        let f = SerialFanout::new(8, 64, 4);
        let q = f.subscribe().unwrap();
        let q2 = q.clone();
        let t = std::thread::spawn(move || next(&q2));
        std::thread::sleep(Duration::from_millis(50));
        f.output(b"x");
        assert_eq!(t.join().unwrap().unwrap(), b"x");
        let q2 = q.clone();
        let t = std::thread::spawn(move || next(&q2));
        std::thread::sleep(Duration::from_millis(50));
        f.close_all();
        assert_eq!(t.join().unwrap(), Err(Closed::Stopped));
        assert_eq!(f.clients(), 0);
    }

    #[test]
    fn the_writer_feeds_the_sink_and_the_clients() {
        use crate::test_sink::Sink;
        let f = SerialFanout::new(64, 64, 4);
        let q = f.subscribe().unwrap();
        let sink = Sink::default();
        let mut w = FanoutWriter::new(Box::new(sink.clone()), f.clone());
        w.write_all(b"ok").unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"ok");
        assert_eq!(next(&q).unwrap(), b"ok");
    }
}
