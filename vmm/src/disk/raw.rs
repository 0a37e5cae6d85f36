//! Raw images: the file is the disk. Sparse where the filesystem allows; discard punches
//! holes, so a guest's TRIM gives space back to the host.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::BlockBackend;

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

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "request {offset}+{len} is beyond the {}-byte disk",
                    self.len
                ),
            )),
        }
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the disk is read-only",
            ));
        }
        Ok(())
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
}

impl BlockBackend for RawImage {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.writable()?;
        self.check(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        self.check(offset, len)?;
        self.punch(
            offset,
            len,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        self.check(offset, len)?;
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
        let zeroes = vec![0u8; 64 * 1024];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], at)?;
            at += n as u64;
        }
        Ok(())
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
        let mut d = RawImage::open(&p, false).unwrap();
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
        let mut ro = RawImage::open(&p, true).unwrap();
        assert!(ro.write_at(0, &b).is_err());
        std::fs::remove_file(p).unwrap();
    }
}
