//! Disk images as the storage devices (virtio-blk, the ATAPI CD-ROM) see them: a byte
//! range with read, write, flush, discard and write-zeroes. Formats (raw, qcow2) live
//! behind [`BlockBackend`]; devices never know which one they talk to.

pub mod raw;

use std::io;

/// One open disk image. Offsets and lengths are in bytes; devices check them against
/// [`BlockBackend::len`] before calling (a backend still refuses out-of-range requests
/// with an error rather than panicking).
pub trait BlockBackend: Send {
    /// Size the guest sees, in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_only(&self) -> bool;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Returns only once everything written before it is durable on the host.
    fn flush(&mut self) -> io::Result<()>;
    /// The range may read back as anything afterwards (or as before).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// The range reads back as zeroes afterwards.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether discard does anything (the device advertises the feature only then).
    fn supports_discard(&self) -> bool {
        false
    }
}
