//! Whole-file locks on the disk images a VM has open, so that a second VM, or `qemu-img`
//! writing the image, cannot change it under the guest (a qcow2 image written by two
//! processes at once is corrupt; we have seen it happen).
//!
//! The locks are Linux open-file-description (OFD) record locks over the whole file:
//! a write lock for a writable disk, a read lock for a read-only one. QEMU and
//! `qemu-img` take OFD locks on single bytes of the same file to announce what they do
//! with it, so they meet ours and refuse ("Failed to get shared "write" lock. Is another
//! process using the image?"), and two vmdesk VMs refuse each other. OFD rather than
//! classic POSIX locks because a POSIX lock vanishes when the process closes *any*
//! descriptor of the file, which the VMM does whenever it reopens an image (at a guest
//! reset). Like QEMU's, these locks are advisory: a program that takes none is not
//! stopped.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use nix::fcntl::{FcntlArg, fcntl};

/// A held lock; dropping it (closing its own descriptor) releases it.
#[derive(Debug)]
pub struct ImageLock {
    _file: File,
}

impl ImageLock {
    /// Locks `path` for writing (`writable`) or for reading, without waiting. A
    /// conflicting lock is an error that says so; a file system without lock support
    /// (some network mounts) is not, since refusing to run there would help no one.
    pub fn acquire(path: &Path, writable: bool) -> io::Result<ImageLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let flock = libc::flock {
            l_type: if writable {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            } as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0, // to the end of the file, however it grows
            l_pid: 0,
        };
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&flock)) {
            Ok(_) => Ok(ImageLock { _file: file }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "{} is in use by another process (a running VM or qemu-img?); stop it first",
                    path.display()
                ),
            )),
            Err(e) => {
                tracing::warn!("{}: cannot lock the image ({e}); going on", path.display());
                Ok(ImageLock { _file: file })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("vmdesk-lock-{tag}-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        p
    }

    #[test]
    fn a_writer_excludes_everyone_and_readers_share() {
        let p = image("rw");
        let w = ImageLock::acquire(&p, true).unwrap();
        // OFD locks conflict between descriptions even inside one process, which is
        // what lets this test stand in for a second VM.
        let e = ImageLock::acquire(&p, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert!(e.to_string().contains("in use by another process"), "{e}");
        assert!(ImageLock::acquire(&p, false).is_err());
        drop(w);
        let r1 = ImageLock::acquire(&p, false).unwrap();
        let _r2 = ImageLock::acquire(&p, false).unwrap();
        assert!(ImageLock::acquire(&p, true).is_err());
        drop(r1);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn reopening_the_image_elsewhere_keeps_the_lock() {
        // A classic POSIX lock would vanish here: the VMM reopens images at a reset.
        let p = image("reopen");
        let _w = ImageLock::acquire(&p, true).unwrap();
        drop(File::open(&p).unwrap());
        assert!(ImageLock::acquire(&p, true).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_missing_image_names_its_path() {
        let e = ImageLock::acquire(Path::new("/nonexistent/disk.raw"), true).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/disk.raw"), "{e}");
    }
}
