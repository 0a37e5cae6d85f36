//! What one disk did: requests and bytes read and written, the time its writes took in
//! the backend, flushes, and the most requests that were inside the backend at once
//! (virtio-blk runs them on several I/O threads, so this shows whether a guest's queue
//! depth reached the disk). [`Counted`] wraps a disk's [`BlockBackend`] and adds to an
//! [`IoCounters`] once per backend call (a virtio-blk request, an IDE DRQ block or DMA
//! transfer: never per sector), with relaxed atomic adds. The counters live outside the
//! machine, so they add up across guest resets; the control socket's `status` and the
//! VMM's exit line report them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::{BlockBackend, GuestSlice, slices_len};

/// One disk's running totals.
#[derive(Debug, Default)]
pub struct IoCounters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    write_nanos: AtomicU64,
    flushes: AtomicU64,
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
}

/// The totals at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoCounts {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    /// Time spent in the backend's write calls (summed over calls that overlap).
    pub write_nanos: u64,
    pub flushes: u64,
    /// The most backend calls that were running at the same moment.
    pub most_in_flight: u64,
}

impl IoCounters {
    pub fn counts(&self) -> IoCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IoCounts {
            reads: get(&self.reads),
            read_bytes: get(&self.read_bytes),
            writes: get(&self.writes),
            write_bytes: get(&self.write_bytes),
            write_nanos: get(&self.write_nanos),
            flushes: get(&self.flushes),
            most_in_flight: get(&self.most_in_flight),
        }
    }

    /// Marks a backend call as running until the guard drops.
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.most_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    fn read(&self, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn write(&self, bytes: u64, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.write_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

struct InFlight<'a>(&'a IoCounters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IoCounts {
    /// Bytes written per second of backend write time (0 before the first write).
    pub fn write_throughput(&self) -> f64 {
        if self.write_nanos == 0 {
            return 0.0;
        }
        self.write_bytes as f64 * 1e9 / self.write_nanos as f64
    }
}

impl std::fmt::Display for IoCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = (1 << 20) as f64;
        write!(
            f,
            "read {} bytes in {} requests, wrote {} bytes in {} requests ({:.1} ms in the \
             backend, {:.1} MiB/s), {} flushes, up to {} in flight at once",
            self.read_bytes,
            self.reads,
            self.write_bytes,
            self.writes,
            self.write_nanos as f64 / 1e6,
            self.write_throughput() / MIB,
            self.flushes,
            self.most_in_flight
        )
    }
}

/// A backend whose successful calls are counted in an [`IoCounters`].
pub struct Counted {
    inner: Box<dyn BlockBackend>,
    counters: Arc<IoCounters>,
}

impl Counted {
    pub fn new(inner: Box<dyn BlockBackend>, counters: Arc<IoCounters>) -> Counted {
        Counted { inner, counters }
    }
}

impl BlockBackend for Counted {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let _running = self.counters.enter();
        self.inner.read_at(offset, buf)?;
        self.counters.read(buf.len() as u64);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let t = Instant::now();
        let _running = self.counters.enter();
        self.inner.write_at(offset, buf)?;
        self.counters.write(buf.len() as u64, t);
        Ok(())
    }
    fn read_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        let _running = self.counters.enter();
        self.inner.read_vectored(offset, bufs)?;
        self.counters.read(slices_len(bufs));
        Ok(())
    }
    fn write_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        let t = Instant::now();
        let _running = self.counters.enter();
        self.inner.write_vectored(offset, bufs)?;
        self.counters.write(slices_len(bufs), t);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let _running = self.counters.enter();
        self.inner.flush()?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _running = self.counters.enter();
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let _running = self.counters.enter();
        self.inner.write_zeroes(offset, len)
    }
    fn supports_discard(&self) -> bool {
        self.inner.supports_discard()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_tools::TempDir;
    use super::*;
    use crate::disk::RawImage;

    #[test]
    fn counts_each_call_once_with_its_bytes() {
        let dir = TempDir::new("counters");
        let path = dir.path("d.raw");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let counters = Arc::new(IoCounters::default());
        let d = Counted::new(
            Box::new(RawImage::open(&path, false).unwrap()),
            counters.clone(),
        );
        d.write_at(4096, &[7u8; 8192]).unwrap();
        d.write_at(0, &[1u8; 512]).unwrap();
        let mut buf = [0u8; 1024];
        d.read_at(4096, &mut buf).unwrap();
        d.flush().unwrap();
        // A refused request counts nothing.
        assert!(d.write_at(1 << 20, &[0u8; 512]).is_err());
        let c = counters.counts();
        assert_eq!(
            (c.reads, c.read_bytes, c.writes, c.write_bytes, c.flushes),
            (1, 1024, 2, 8704, 1)
        );
        assert!(c.write_nanos > 0 && c.write_throughput() > 0.0);
        assert_eq!(buf, [7u8; 1024]);
        let line = c.to_string();
        assert!(line.contains("wrote 8704 bytes in 2 requests"), "{line}");
        // One call at a time here.
        assert_eq!(c.most_in_flight, 1);
        assert!(line.ends_with("up to 1 in flight at once"), "{line}");
        assert_eq!(IoCounts::default().write_throughput(), 0.0);
    }
}
