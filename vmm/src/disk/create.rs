//! Making new, empty images. A raw image is sparse by default (a hole the size of the
//! disk, taking no space until the guest writes); with [`Preallocation::Full`] all of its
//! space is reserved at creation, so a full host filesystem shows up now and not as I/O
//! errors in the middle of a guest's install. qemu-img calls the same choice
//! `preallocation=off|full`; virt-install calls it `sparse=yes|no`.
//!
//! Reserving space goes through `fallocate` (instant on ext4, xfs, btrfs, tmpfs) and falls
//! back to writing zeros where the filesystem has no fallocate (some network and FUSE
//! filesystems), which takes as long as writing the whole disk: that is why creation
//! reports progress, chunk by chunk, and can be cancelled between chunks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

use super::{ImageFormat, Qcow2Image};

/// How much of a new image's space is taken when it is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preallocation {
    /// Nothing: the image grows as the guest writes.
    #[default]
    Off,
    /// All of it, now (raw images only).
    Full,
}

/// Space is reserved this much at a time, with a progress report after each piece.
const CHUNK: u64 = 64 << 20;
/// The zero buffer of the write fallback.
const ZEROS: usize = 1 << 20;

/// Makes a new, empty image of `size` bytes: a sparse file for raw, an unallocated qcow2 v3
/// image otherwise. An existing file is refused unless `overwrite`.
pub fn create_image(
    path: &Path,
    format: ImageFormat,
    size: u64,
    overwrite: bool,
) -> io::Result<()> {
    create_image_with(
        path,
        format,
        size,
        overwrite,
        Preallocation::Off,
        &mut |_| true,
    )
}

/// [`create_image`] with a choice of preallocation. `progress` hears how many bytes are
/// reserved so far (ending with `size`) and returns `false` to stop: the half-made file is
/// removed and the error's kind is [`io::ErrorKind::Interrupted`]. A failure after the file
/// was made removes it; a file that was there before and not overwritten stays.
pub fn create_image_with(
    path: &Path,
    format: ImageFormat,
    size: u64,
    overwrite: bool,
    prealloc: Preallocation,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    match (format, prealloc) {
        (ImageFormat::Qcow2, Preallocation::Off) => Qcow2Image::create(path, size, overwrite),
        (ImageFormat::Qcow2, Preallocation::Full) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "full preallocation is for raw images (a qcow2 image grows as the guest \
             writes; use the raw format to reserve the space)",
        )),
        (ImageFormat::Raw, prealloc) => create_raw(path, size, overwrite, prealloc, progress),
    }
}

fn create_raw(
    path: &Path,
    size: u64,
    overwrite: bool,
    prealloc: Preallocation,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let f = opts.open(path)?;
    let made = (|| {
        // set_len on a new file leaves a hole: the image takes no space until written.
        f.set_len(size)?;
        if prealloc == Preallocation::Full {
            reserve(&f, size, true, progress)?;
        }
        f.sync_all()
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Reserves `size` bytes of `f` in chunks, through fallocate while the filesystem has it
/// (`try_fallocate`), else by writing zeros.
fn reserve(
    f: &File,
    size: u64,
    mut try_fallocate: bool,
    progress: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    let zeros = vec![0u8; ZEROS];
    let mut done = 0;
    while done < size {
        let n = CHUNK.min(size - done);
        if try_fallocate {
            // Mode 0 allocates without changing the size (already set) or the contents.
            match fallocate(f, FallocateFlags::empty(), done as i64, n as i64) {
                Ok(()) => {}
                Err(Errno::EOPNOTSUPP) => try_fallocate = false,
                Err(e) => return Err(e.into()),
            }
        }
        if !try_fallocate {
            let mut at = done;
            while at < done + n {
                let len = (done + n - at).min(ZEROS as u64) as usize;
                f.write_all_at(&zeros[..len], at)?;
                at += len as u64;
            }
        }
        done += n;
        if !progress(done) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "disk creation cancelled",
            ));
        }
    }
    // The caller's sync_all makes it durable (a File has no buffer to flush).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::test_tools::TempDir;
    use std::os::unix::fs::MetadataExt;

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn sparse_by_default() {
        let d = TempDir::new("create-sparse");
        let p = d.0.join("a.raw");
        create_image(&p, ImageFormat::Raw, 256 << 20, false).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 256 << 20);
        assert!(allocated(&p) < 1 << 20, "{} bytes allocated", allocated(&p));
    }

    #[test]
    fn full_preallocation_reserves_every_byte_and_reports_progress() {
        let d = TempDir::new("create-full");
        let p = d.0.join("a.raw");
        let size = 3 * CHUNK + 4096;
        let mut seen = Vec::new();
        create_image_with(
            &p,
            ImageFormat::Raw,
            size,
            false,
            Preallocation::Full,
            &mut |done| {
                seen.push(done);
                true
            },
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
        assert!(
            allocated(&p) >= size,
            "{} of {size} allocated",
            allocated(&p)
        );
        assert_eq!(seen, vec![CHUNK, 2 * CHUNK, 3 * CHUNK, size]);
        // Reserved, and still reads as zeros.
        let mut buf = vec![1u8; 4096];
        File::open(&p)
            .unwrap()
            .read_exact_at(&mut buf, size - 4096)
            .unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn the_zero_writing_fallback_reserves_the_same() {
        let d = TempDir::new("create-zeros");
        let p = d.0.join("a.raw");
        let size = CHUNK + 3 * 512;
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        let mut calls = 0;
        reserve(&f, size, false, &mut |_| {
            calls += 1;
            true
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
        assert!(allocated(&p) >= size);
    }

    #[test]
    fn a_cancelled_creation_leaves_nothing() {
        let d = TempDir::new("create-cancel");
        let p = d.0.join("a.raw");
        let e = create_image_with(
            &p,
            ImageFormat::Raw,
            4 * CHUNK,
            false,
            Preallocation::Full,
            &mut |done| done < 2 * CHUNK,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert!(!p.exists());
    }

    #[test]
    fn qcow2_with_full_preallocation_is_refused_and_leaves_nothing() {
        let d = TempDir::new("create-qcow2-full");
        let p = d.0.join("a.qcow2");
        let e = create_image_with(
            &p,
            ImageFormat::Qcow2,
            1 << 20,
            false,
            Preallocation::Full,
            &mut |_| true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("raw"), "{e}");
        assert!(!p.exists());
    }

    #[test]
    fn an_existing_file_is_kept_unless_overwriting() {
        let d = TempDir::new("create-exists");
        let p = d.0.join("a.raw");
        std::fs::write(&p, b"precious").unwrap();
        let e = create_image(&p, ImageFormat::Raw, 1 << 20, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
        create_image(&p, ImageFormat::Raw, 1 << 20, true).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
    }
}
