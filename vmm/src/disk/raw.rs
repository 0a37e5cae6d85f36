//! Raw images: the file is the disk. Sparse where the filesystem allows; discard punches
//! holes, so a guest's TRIM gives space back to the host.
//!
//! Guest requests go to the file as one `preadv`/`pwritev` over the guest's own buffers
//! (more only when the kernel returns short, or past `IOV_MAX` buffers): no copy through
//! the VMM, one system call per request, as QEMU's raw driver does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::{BlockBackend, GuestSlice, check_range, check_writable, slices_len, write_zeroes_out};
use crate::iov;

pub struct RawImage {
    file: File,
    len: u64,
    read_only: bool,
}

impl RawImage {
    pub fn open(path: &Path, read_only: bool) -> io::Result<RawImage> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let len = file.metadata()?.len();
        Ok(RawImage {
            file,
            len,
            read_only,
        })
    }

    fn punch(&self, offset: u64, len: u64, mode: libc::c_int) -> io::Result<()> {
        // SAFETY: fallocate on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `preadv` (`write` false) or `pwritev` (`write` true) of all of `bufs` at `offset`,
    /// resuming after short transfers.
    fn transfer(&self, mut offset: u64, bufs: &[GuestSlice<'_>], write: bool) -> io::Result<()> {
        // The guards keep the mappings valid while the kernel uses the pointers.
        let guards = iov::guards(bufs);
        let mut vecs: Vec<libc::iovec> = guards.iter().map(iov::guest_iovec).collect();
        let zero = if write {
            // The file shrank under us (someone else truncated it).
            io::ErrorKind::WriteZero
        } else {
            io::ErrorKind::UnexpectedEof
        };
        iov::transfer_all(&mut vecs, zero, |batch| {
            let pos = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: every iovec points into guest memory that `guards` keeps mapped, with
            // the length vm-memory checked for its slice; the kernel reads or writes only
            // those bytes. The guest may touch the same memory concurrently, which is what
            // a DMA-capable device allows it to do; no Rust reference covers these bytes.
            let r = unsafe {
                if write {
                    libc::pwritev(
                        self.file.as_raw_fd(),
                        batch.as_ptr(),
                        batch.len() as libc::c_int,
                        pos,
                    )
                } else {
                    libc::preadv(
                        self.file.as_raw_fd(),
                        batch.as_ptr(),
                        batch.len() as libc::c_int,
                        pos,
                    )
                }
            };
            let n = iov::syscall_result(r)?;
            offset += n as u64;
            Ok(n)
        })
    }
}

impl BlockBackend for RawImage {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)
    }
    fn read_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        check_range(self.len, offset, slices_len(bufs))?;
        self.transfer(offset, bufs, false)
    }
    fn write_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, slices_len(bufs))?;
        self.transfer(offset, bufs, true)
    }
    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, len)?;
        self.punch(
            offset,
            len,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, len)?;
        // Punching a hole reads back as zeroes; fall back to writing them.
        if self
            .punch(
                offset,
                len,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            )
            .is_ok()
        {
            return Ok(());
        }
        write_zeroes_out(offset, len, |buf, at| self.file.write_all_at(buf, at))
    }
    fn supports_discard(&self) -> bool {
        !self.read_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_zero_and_bounds() {
        let p = std::env::temp_dir().join(format!("vmdesk-raw-{}", std::process::id()));
        std::fs::write(&p, vec![0x11u8; 1 << 20]).unwrap();
        let d = RawImage::open(&p, false).unwrap();
        assert_eq!(d.len(), 1 << 20);
        d.write_at(4096, &[7u8; 512]).unwrap();
        let mut b = [0u8; 512];
        d.read_at(4096, &mut b).unwrap();
        assert_eq!(b, [7u8; 512]);
        d.write_zeroes(4096, 512).unwrap();
        d.read_at(4096, &mut b).unwrap();
        assert_eq!(b, [0u8; 512]);
        d.flush().unwrap();
        assert!(d.read_at((1 << 20) - 100, &mut b).is_err());
        assert!(d.write_at(u64::MAX - 10, &b).is_err());
        let ro = RawImage::open(&p, true).unwrap();
        assert!(ro.write_at(0, &b).is_err());
        std::fs::remove_file(p).unwrap();
    }

    /// Vectored I/O lands exactly where the slices say, in order, across more buffers
    /// than one `preadv` takes; out-of-range and read-only requests fail before any I/O.
    #[test]
    fn vectored_reads_and_writes_go_straight_to_guest_memory() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
        let p = std::env::temp_dir().join(format!("vmdesk-rawv-{}", std::process::id()));
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 13 / 7) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let mem = crate::memory::GuestMem::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let d = RawImage::open(&p, false).unwrap();

        // 1100 buffers of 512 bytes, one per 4 KiB page (more than IOV_MAX), plus one of zero
        // length, read from 64 KiB on.
        let n = 1100usize;
        let mut bufs: Vec<GuestSlice<'_>> = (0..n as u64)
            .map(|i| mem.get_slice(GuestAddress(i * 4096 + 0x1000), 512).unwrap())
            .collect();
        bufs.insert(7, mem.get_slice(GuestAddress(0), 0).unwrap());
        d.read_vectored(65536, &bufs).unwrap();
        for i in 0..n as u64 {
            let mut got = [0u8; 512];
            mem.read_slice(&mut got, GuestAddress(i * 4096 + 0x1000))
                .unwrap();
            let at = 65536 + i as usize * 512;
            assert_eq!(&got[..], &data[at..at + 512], "buffer {i}");
        }

        // Write them back, shifted by one sector: the file holds them in order.
        for i in 0..n as u64 {
            mem.write_slice(&[i as u8; 512], GuestAddress(i * 4096 + 0x1000))
                .unwrap();
        }
        d.write_vectored(512, &bufs).unwrap();
        d.flush().unwrap();
        let file = std::fs::read(&p).unwrap();
        for i in 0..n {
            assert!(
                file[512 + i * 512..1024 + i * 512]
                    .iter()
                    .all(|&b| b == i as u8)
            );
        }
        assert_eq!(&file[..512], &data[..512]);

        // Past the end, or read-only: refused, nothing changes.
        assert!(d.read_vectored((4 << 20) - 512, &bufs[..2]).is_err());
        assert!(d.write_vectored(u64::MAX - 100, &bufs[..1]).is_err());
        let ro = RawImage::open(&p, true).unwrap();
        let e = ro.write_vectored(0, &bufs[..1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(std::fs::read(&p).unwrap(), file);
        std::fs::remove_file(p).unwrap();
    }
}
