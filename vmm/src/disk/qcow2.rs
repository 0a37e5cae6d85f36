//! qcow2 images (versions 2 and 3, as `qemu-img` makes them) through the `imago` crate.
//!
//! Why imago: it is the maintained Rust implementation of the format (by a QEMU block-layer
//! maintainer), reads v2 and v3, follows backing chains, allocates on write with correct
//! refcounts, and — built with its `sync` feature — needs no async runtime, which suits
//! device threads that block on I/O anyway. It also creates images (v3, 64 KiB clusters,
//! 16-bit refcounts: what `qemu-img create -f qcow2` makes), so we write no format code.
//!
//! Guest requests go through imago's vectored calls over the guest's own buffers (its
//! `vm-memory` feature turns [`GuestSlice`]s into its I/O vectors), so data is copied
//! once, by the kernel, between the page cache and guest memory.
//!
//! Backing files are opened read-only, by the path the image's header names (relative to the
//! image). The header is host data: a guest cannot write it, because the guest only ever
//! sees the virtual disk inside.

use std::io;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use imago::file::File;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::{
    FormatAccess, FormatCreateBuilder, FormatDriverBuilder, PermissiveImplicitOpenGate, Storage,
    StorageCreateOptions, StorageOpenOptions,
};

use super::{BlockBackend, GuestSlice, check_range, check_writable, slices_len, write_zeroes_out};

pub struct Qcow2Image {
    /// imago serves reads, writes and flushes through `&self`, with its own locks around
    /// its metadata, so requests in flight at once share the read side; discard needs the
    /// image to itself and takes the write side.
    access: RwLock<FormatAccess<File>>,
    len: u64,
    read_only: bool,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("len", &self.len)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Qcow2Image {
    /// Opens `path` (and its backing chain, read-only).
    pub fn open(path: &Path, read_only: bool) -> io::Result<Qcow2Image> {
        let qcow2 = Qcow2::<File>::builder_path(path)
            .write(!read_only)
            .storage_open_options(StorageOpenOptions::new().write(!read_only))
            .open(PermissiveImplicitOpenGate::default())?;
        let access = FormatAccess::new(qcow2);
        let len = access.size();
        Ok(Qcow2Image {
            access: RwLock::new(access),
            len,
            read_only,
        })
    }

    /// Makes an empty qcow2 v3 image of `size` bytes at `path` (64 KiB clusters, as
    /// `qemu-img create -f qcow2` does). Refuses an existing file unless `overwrite`.
    pub fn create(path: &Path, size: u64, overwrite: bool) -> io::Result<()> {
        let file = File::create_open(
            StorageCreateOptions::new()
                .filename(path)
                .overwrite(overwrite),
        )?;
        Qcow2::<File>::create_builder(file)
            .size(size)
            .cluster_size(64 * 1024)
            .create()
    }

    /// Makes an empty qcow2 v3 overlay at `path` on the image `backing` (of `format`): it
    /// reads `backing` where it has no data of its own, and takes every write itself. The
    /// header names `backing` by the path given (absolute, so the overlay may move); its
    /// virtual size is `backing`'s. Refuses an existing file.
    pub fn create_overlay(
        path: &Path,
        backing: &Path,
        format: super::ImageFormat,
    ) -> io::Result<()> {
        let size = super::open_image(backing, Some(format), true)?.len();
        let name = backing
            .to_str()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a UTF-8 path", backing.display()),
                )
            })?
            .to_string();
        let file = File::create_open(StorageCreateOptions::new().filename(path))?;
        Qcow2::<File>::create_builder(file)
            .size(size)
            .cluster_size(64 * 1024)
            .backing(name, format.to_string())
            .create()
    }

    /// The backing file `path`'s header names (relative names are taken from the image's
    /// folder), or `None` for an image that has none. Reads the header only.
    pub fn backing_file(path: &Path) -> io::Result<Option<std::path::PathBuf>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path)?;
        let mut head = [0u8; 20];
        f.read_exact(&mut head)?;
        if head[..4] != *b"QFI\xfb" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a qcow2 image", path.display()),
            ));
        }
        let offset = u64::from_be_bytes(head[8..16].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap_or_default());
        if offset == 0 || len == 0 {
            return Ok(None);
        }
        // qcow2 caps the name at 1023 bytes.
        if len > 1023 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a backing file name of {len} bytes", path.display()),
            ));
        }
        let mut name = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut name)?;
        let name = std::path::PathBuf::from(String::from_utf8_lossy(&name).into_owned());
        Ok(Some(match path.parent() {
            Some(dir) if name.is_relative() => dir.join(name),
            _ => name,
        }))
    }
}

impl Qcow2Image {
    fn access(&self) -> RwLockReadGuard<'_, FormatAccess<File>> {
        self.access.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockBackend for Qcow2Image {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        self.access().read(buf, offset)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, buf.len() as u64)?;
        self.access().write(buf, offset)
    }
    fn read_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        check_range(self.len, offset, slices_len(bufs))?;
        // The guard keeps the guest mappings valid while imago uses the vector.
        let (iov, _guard) = IoVectorMut::from_volatile_slice(bufs.iter());
        self.access().readv(iov, offset)
    }
    fn write_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, slices_len(bufs))?;
        let (iov, _guard) = IoVector::from_volatile_slice(bufs.iter());
        self.access().writev(iov, offset)
    }
    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        // imago's flush writes its cached metadata (L2 tables, refcount blocks) to the
        // file; sync then makes file data and metadata durable.
        let access = self.access();
        access.flush()?;
        access.sync()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, len)?;
        self.access
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .discard_to_any(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        check_writable(self.read_only)?;
        check_range(self.len, offset, len)?;
        // One guard for both calls: a second read lock on this thread could wait behind a
        // discard queued for the write side in between.
        let access = self.access();
        match access.write_zeroes(offset, len) {
            // Version 2 has no zero clusters: write the zeroes out.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                write_zeroes_out(offset, len, |buf, at| access.write(buf, at))
            }
            r => r,
        }
    }
    fn supports_discard(&self) -> bool {
        !self.read_only
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_tools::*;
    use super::*;

    fn qemu_tools() -> bool {
        have("qemu-img") && have("qemu-io")
    }

    fn check_clean(p: &Path) {
        let out = run("qemu-img", &["check", s(p)]);
        assert!(out.contains("No errors were found"), "{out}");
    }

    /// Images qemu-img makes (v2 = compat 0.10, v3 = 1.1) with data qemu-io wrote read back
    /// through us; our writes read back through qemu-io and leave `qemu-img check` clean.
    #[test]
    fn reads_and_writes_qemu_images_v2_and_v3() {
        if !qemu_tools() {
            return;
        }
        let dir = TempDir::new("qcow2");
        for compat in ["0.10", "1.1"] {
            let p = dir.path(&format!("v{compat}.qcow2"));
            run(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-o",
                    &format!("compat={compat}"),
                    s(&p),
                    "64M",
                ],
            );
            run(
                "qemu-io",
                &[
                    "-c",
                    "write -P 0xab 0 64k",
                    "-c",
                    "write -P 0xcd 1M 4k",
                    s(&p),
                ],
            );

            let d = Qcow2Image::open(&p, false).unwrap();
            assert_eq!(d.len(), 64 << 20);
            let mut buf = vec![0u8; 64 * 1024];
            d.read_at(0, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0xab));
            let mut b4 = vec![0u8; 8192];
            d.read_at((1 << 20) - 4096, &mut b4).unwrap();
            assert!(b4[..4096].iter().all(|&b| b == 0));
            assert!(b4[4096..].iter().all(|&b| b == 0xcd));
            // Past the end: an error, not a panic or zeroes.
            assert!(d.read_at((64 << 20) - 512, &mut b4).is_err());
            assert!(d.write_at(u64::MAX - 1, &b4).is_err());

            // Our writes: a fresh cluster, a partial cluster, and across a cluster boundary.
            d.write_at(2 << 20, &vec![0x5a; 128 * 1024]).unwrap();
            d.write_at(512, &[0x11; 512]).unwrap();
            d.write_at((3 << 20) - 1024, &[0x22; 2048]).unwrap();
            d.write_zeroes(1 << 20, 4096).unwrap();
            d.flush().unwrap();
            drop(d);

            check_clean(&p);
            let out = run(
                "qemu-io",
                &[
                    "-c",
                    "read -P 0x5a 2M 128k",
                    "-c",
                    "read -P 0xab 0 512",
                    "-c",
                    "read -P 0x11 512 512",
                    "-c",
                    "read -P 0xab 1024 63k",
                    "-c",
                    "read -P 0x22 3071k 2k",
                    "-c",
                    "read -P 0 1M 4k",
                    "-r",
                    s(&p),
                ],
            );
            assert!(
                !out.contains("verification failed"),
                "compat {compat}: {out}"
            );
        }
    }

    /// Vectored I/O over guest memory: reads what qemu-io wrote (allocated, unallocated and
    /// across clusters) into scattered buffers; writes from scattered buffers across a
    /// cluster boundary read back through qemu-io, and `qemu-img check` stays clean.
    #[test]
    fn vectored_io_against_qemu() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
        if !qemu_tools() {
            return;
        }
        let dir = TempDir::new("qcow2-vec");
        let p = dir.path("v.qcow2");
        run("qemu-img", &["create", "-q", "-f", "qcow2", s(&p), "16M"]);
        run(
            "qemu-io",
            &[
                "-c",
                "write -P 0x41 60k 8k",
                "-c",
                "write -P 0x42 1M 4k",
                s(&p),
            ],
        );
        let mem = crate::memory::GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let d = Qcow2Image::open(&p, false).unwrap();
        // 56k..72k: zeroes, 0x41 across the 64k cluster boundary, zeroes; in 4 KiB pieces
        // scattered backwards through memory.
        let bufs: Vec<GuestSlice<'_>> = (0..4u64)
            .map(|i| {
                mem.get_slice(GuestAddress(0x80000 - i * 0x10000), 4096)
                    .unwrap()
            })
            .collect();
        d.read_vectored(56 << 10, &bufs).unwrap();
        let want = [0u8, 0x41, 0x41, 0];
        for (i, w) in want.iter().enumerate() {
            let mut got = [0u8; 4096];
            mem.read_slice(&mut got, GuestAddress(0x80000 - i as u64 * 0x10000))
                .unwrap();
            assert!(got.iter().all(|b| b == w), "piece {i}");
        }
        for (i, b) in bufs.iter().enumerate() {
            b.copy_from(&[0x60 + i as u8; 4096]);
        }
        d.write_vectored((2 << 20) - 8192, &bufs).unwrap();
        assert!(d.read_vectored((16 << 20) - 4096, &bufs).is_err());
        d.flush().unwrap();
        drop(d);
        check_clean(&p);
        let out = run(
            "qemu-io",
            &[
                "-r",
                "-c",
                "read -P 0x60 2040k 4k",
                "-c",
                "read -P 0x61 2044k 4k",
                "-c",
                "read -P 0x62 2M 4k",
                "-c",
                "read -P 0x63 2052k 4k",
                "-c",
                "read -P 0x42 1M 4k",
                s(&p),
            ],
        );
        assert!(!out.contains("verification failed"), "{out}");
        let ro = Qcow2Image::open(&p, true).unwrap();
        assert!(ro.write_vectored(0, &bufs).is_err());
    }

    /// An overlay made here on a qcow2 or a raw image reads it through, keeps its own
    /// writes, names it in its header, and leaves the base as it was.
    #[test]
    fn overlays_read_their_base_and_keep_their_writes() {
        let dir = TempDir::new("qcow2-overlay");
        for format in [
            super::super::ImageFormat::Qcow2,
            super::super::ImageFormat::Raw,
        ] {
            let base = dir.path(&format!("base.{format}"));
            super::super::create_image(&base, format, 4 << 20, false).unwrap();
            {
                let b = super::super::open_image(&base, Some(format), false).unwrap();
                b.write_at(1 << 20, &[0x5a; 4096]).unwrap();
                b.flush().unwrap();
            }
            let before = std::fs::read(&base).unwrap();
            let top = dir.path(&format!("top-on-{format}.qcow2"));
            Qcow2Image::create_overlay(&top, &base, format).unwrap();
            assert_eq!(Qcow2Image::backing_file(&top).unwrap(), Some(base.clone()));
            assert_eq!(Qcow2Image::backing_file(&base).ok().flatten(), None);
            let t = Qcow2Image::open(&top, false).unwrap();
            assert_eq!(t.len(), 4 << 20);
            let mut got = [0u8; 4096];
            t.read_at(1 << 20, &mut got).unwrap();
            assert_eq!(got, [0x5a; 4096], "the base's data, read through");
            t.write_at(1 << 20, &[0xa5; 512]).unwrap();
            t.flush().unwrap();
            t.read_at(1 << 20, &mut got).unwrap();
            assert_eq!(got[..512], [0xa5; 512]);
            assert_eq!(got[512..], [0x5a; 4096 - 512]);
            assert_eq!(
                std::fs::read(&base).unwrap(),
                before,
                "the base is untouched"
            );
            assert!(
                Qcow2Image::create_overlay(&top, &base, format).is_err(),
                "exists"
            );
        }
    }

    /// An overlay on a backing file reads the backing data where it has none of its own;
    /// our writes land in the overlay only.
    #[test]
    fn backing_file_is_read_through() {
        if !qemu_tools() {
            return;
        }
        let dir = TempDir::new("qcow2-backing");
        let base = dir.path("base.qcow2");
        let top = dir.path("top.qcow2");
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", s(&base), "16M"],
        );
        run("qemu-io", &["-c", "write -P 0x77 0 1M", s(&base)]);
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                s(&top),
            ],
        );
        let d = Qcow2Image::open(&top, false).unwrap();
        assert_eq!(d.len(), 16 << 20);
        let mut b = vec![0u8; 4096];
        d.read_at(8192, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0x77));
        d.write_at(8192, &[0x99; 4096]).unwrap();
        d.flush().unwrap();
        drop(d);
        check_clean(&top);
        check_clean(&base);
        let out = run("qemu-io", &["-r", "-c", "read -P 0x77 8k 4k", s(&base)]);
        assert!(!out.contains("verification failed"), "{out}");
        let out = run(
            "qemu-io",
            &[
                "-r",
                "-c",
                "read -P 0x99 8k 4k",
                "-c",
                "read -P 0x77 12k 4k",
                s(&top),
            ],
        );
        assert!(!out.contains("verification failed"), "{out}");

        // Read-only: writes refused, reads fine.
        let ro = Qcow2Image::open(&top, true).unwrap();
        assert!(ro.write_at(0, &b).is_err());
        ro.read_at(0, &mut b).unwrap();
    }

    /// What flush promises: after it returns, a process that dies without closing the image
    /// (we leak it, as SIGKILL would) left the data and metadata on disk.
    #[test]
    fn flushed_writes_survive_without_close() {
        if !qemu_tools() {
            return;
        }
        let dir = TempDir::new("qcow2-flush");
        let p = dir.path("f.qcow2");
        Qcow2Image::create(&p, 8 << 20, false).unwrap();
        let d = Qcow2Image::open(&p, false).unwrap();
        d.write_at(4 << 20, &[0x3c; 65536]).unwrap();
        d.flush().unwrap();
        // No Drop (which would flush again): the state on disk is what flush left.
        std::mem::forget(d);
        check_clean(&p);
        let out = run("qemu-io", &["-r", "-c", "read -P 0x3c 4M 64k", s(&p)]);
        assert!(!out.contains("verification failed"), "{out}");
    }
}

/// Durability across SIGKILL: a child process (this test binary again) writes, flushes,
/// says so, and is killed with SIGKILL; what it flushed must be in the image, and qcow2
/// metadata must be consistent.
#[cfg(test)]
mod sigkill {
    use super::super::test_tools::*;
    use super::super::{ImageFormat, create_image, open_image};
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Command, Stdio};

    const CHILD_ENV: &str = "VMDESK_SIGKILL_CHILD";
    const TEST: &str = "disk::qcow2::sigkill::flushed_writes_survive_sigkill";

    #[test]
    fn flushed_writes_survive_sigkill() {
        if let Ok(p) = std::env::var(CHILD_ENV) {
            let d = open_image(Path::new(&p), None, false).unwrap();
            d.write_at(1 << 20, &[0x6b; 65536]).unwrap();
            d.write_at(5 << 20, &[0x6c; 512]).unwrap();
            d.flush().unwrap();
            // Not flushed: may or may not be there afterwards, but must not corrupt.
            d.write_at(3 << 20, &[0x77; 4096]).unwrap();
            println!("FLUSHED");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        if !(have("qemu-img") && have("qemu-io")) {
            return;
        }
        let dir = TempDir::new("sigkill");
        for format in [ImageFormat::Qcow2, ImageFormat::Raw] {
            let p = dir.path(&format!("k.{format}"));
            create_image(&p, format, 16 << 20, false).unwrap();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &p)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            let mut flushed = false;
            for line in out.lines() {
                if line.unwrap().contains("FLUSHED") {
                    flushed = true;
                    break;
                }
            }
            assert!(flushed, "{format}: the child never flushed");
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            if format == ImageFormat::Qcow2 {
                let out = run("qemu-img", &["check", s(&p)]);
                assert!(out.contains("No errors were found"), "{out}");
            }
            let f = format.to_string();
            let out = run(
                "qemu-io",
                &[
                    "-r",
                    "-f",
                    &f,
                    "-c",
                    "read -P 0x6b 1M 64k",
                    "-c",
                    "read -P 0x6c 5M 512",
                    s(&p),
                ],
            );
            assert!(!out.contains("verification failed"), "{format}: {out}");
        }
    }
}
