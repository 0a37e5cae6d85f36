//! Disk images as the storage devices (virtio-blk, the ATAPI CD-ROM) see them: a byte
//! range with read, write, flush, discard and write-zeroes. Formats (raw, qcow2) live
//! behind [`BlockBackend`]; devices never know which one they talk to.
//!
//! Data moves between the image and guest memory without a copy in between:
//! [`BlockBackend::read_vectored`] and [`BlockBackend::write_vectored`] take the guest's
//! buffers as [`GuestSlice`]s, which raw images hand to one `preadv`/`pwritev` and qcow2
//! images to imago's vectored I/O. The `&[u8]` calls stay for devices that build their
//! data in the VMM (the ATAPI CD-ROM's PIO path, sense and TOC replies).

pub mod counters;
pub mod create;
pub mod lock;
pub mod probe;
pub mod qcow2;
pub mod raw;

use std::io;

pub use counters::{Counted, IoCounters, IoCounts};
pub use create::{Preallocation, create_image, create_image_with};
pub use lock::ImageLock;
pub use probe::{ImageFormat, open_image, probe};
pub use qcow2::Qcow2Image;
pub use raw::RawImage;

/// A piece of guest memory (plain mmap'd RAM, no dirty bitmap: the VMM tracks dirty pages
/// through KVM's log, which covers only what the guest writes itself).
pub type GuestSlice<'a> = vm_memory::VolatileSlice<'a, ()>;

/// Total bytes of `bufs`.
pub fn slices_len(bufs: &[GuestSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

/// One open disk image. Offsets and lengths are in bytes; devices check them against
/// [`BlockBackend::len`] before calling (a backend still refuses out-of-range requests
/// with an error rather than panicking).
pub trait BlockBackend: Send + Sync {
    /// Size the guest sees, in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_only(&self) -> bool;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `bufs`, in order, from the bytes at `offset`: the whole of them or an error
    /// (their contents are then unspecified). Formats override this to read straight into
    /// guest memory; the default goes through a buffer, one slice at a time.
    fn read_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        check_range(self.len(), offset, slices_len(bufs))?;
        let mut at = offset;
        let mut tmp = Vec::new();
        for b in bufs {
            tmp.resize(b.len(), 0);
            self.read_at(at, &mut tmp)?;
            b.copy_from(&tmp);
            at += b.len() as u64;
        }
        Ok(())
    }
    /// Writes `bufs`, in order, at `offset`: the whole of them or an error. Formats
    /// override this to write straight from guest memory; the default goes through a
    /// buffer, one slice at a time.
    fn write_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        check_range(self.len(), offset, slices_len(bufs))?;
        let mut at = offset;
        let mut tmp = Vec::new();
        for b in bufs {
            tmp.resize(b.len(), 0);
            b.copy_to(&mut tmp);
            self.write_at(at, &tmp)?;
            at += b.len() as u64;
        }
        Ok(())
    }
    /// Returns only once everything written before it is durable on the host.
    fn flush(&self) -> io::Result<()>;
    /// The range may read back as anything afterwards (or as before).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The range reads back as zeroes afterwards.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether discard does anything (the device advertises the feature only then).
    fn supports_discard(&self) -> bool {
        false
    }
}

/// Refuses a request that does not lie inside a disk of `disk_len` bytes; every format
/// checks with this before it touches the file.
pub(crate) fn check_range(disk_len: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= disk_len => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("request {offset}+{len} is beyond the {disk_len}-byte disk"),
        )),
    }
}

/// Refuses a write to a read-only image.
pub(crate) fn check_writable(read_only: bool) -> io::Result<()> {
    if read_only {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the disk is read-only",
        ));
    }
    Ok(())
}

/// Writes `len` zero bytes at `offset` through `write`, 64 KiB at a time: for a file or
/// format that can neither punch holes nor mark zero clusters.
pub(crate) fn write_zeroes_out(
    offset: u64,
    len: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let zeroes = vec![0u8; (64 << 10).min(len) as usize];
    let mut at = offset;
    let end = offset.saturating_add(len);
    while at < end {
        let n = (end - at).min(zeroes.len() as u64) as usize;
        write(&zeroes[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Host tools the tests compare against (qemu-img, qemu-io, xorriso). A missing tool skips
/// the test with a SKIP line, unless VMDESK_REQUIRE_TOOLS=1 makes it a failure.
#[cfg(test)]
pub(crate) mod test_tools {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub fn have(tool: &str) -> bool {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{tool} is required (VMDESK_REQUIRE_TOOLS=1) but missing");
            }
            eprintln!("SKIP: {tool} is not installed");
        }
        found
    }

    /// Runs a tool; panics with its output when it fails.
    pub fn run(tool: &str, args: &[&str]) -> String {
        let o = Command::new(tool).args(args).output().unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{tool} {args:?} failed: {out}");
        out
    }

    /// A fresh directory for one test, removed on drop.
    pub struct TempDir(pub PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!("vmdesk-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_tools::*;
    use super::*;

    #[test]
    fn created_images_pass_qemu_img() {
        let dir = TempDir::new("create");
        let raw = dir.path("d.raw");
        create_image(&raw, ImageFormat::Raw, 1 << 30, false).unwrap();
        let md = std::fs::metadata(&raw).unwrap();
        assert_eq!(md.len(), 1 << 30);
        // Sparse: nothing allocated.
        assert!(std::os::unix::fs::MetadataExt::blocks(&md) < 16);
        // Never overwritten unless asked.
        let e = create_image(&raw, ImageFormat::Raw, 4096, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1 << 30);
        create_image(&raw, ImageFormat::Raw, 4096, true).unwrap();
        assert_eq!(std::fs::metadata(&raw).unwrap().len(), 4096);

        let q = dir.path("d.qcow2");
        create_image(&q, ImageFormat::Qcow2, 20 << 30, false).unwrap();
        let e = create_image(&q, ImageFormat::Qcow2, 1 << 20, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(probe(&q).unwrap(), ImageFormat::Qcow2);
        let d = open_image(&q, None, false).unwrap();
        assert_eq!(d.len(), 20 << 30);
        drop(d);
        if !have("qemu-img") {
            return;
        }
        let info = run("qemu-img", &["info", "--output=json", s(&q)]);
        assert!(info.contains("\"format\": \"qcow2\""), "{info}");
        assert!(info.contains("\"virtual-size\": 21474836480"), "{info}");
        assert!(info.contains("\"cluster-size\": 65536"), "{info}");
        assert!(info.contains("\"compat\": \"1.1\""), "{info}");
        run("qemu-img", &["check", s(&q)]);
        let info = run("qemu-img", &["info", "--output=json", s(&raw)]);
        assert!(info.contains("\"format\": \"raw\""), "{info}");
    }
}
