//! Which format an image file is, and opening it as a [`BlockBackend`].
//!
//! Probing looks only at the qcow2 magic. The danger it guards against is QEMU's old one: a
//! raw image is the guest's disk, so a guest may write anything into its first sector —
//! including a qcow2 header that names a backing file such as `/etc/shadow`. If the next
//! start probed that image as qcow2, the guest would read host files. So:
//! - an image whose format was *probed* as raw refuses (fails that one write) any write that
//!   would make its first sector look like a non-raw format ([`ProbedRaw`]), as QEMU's raw
//!   driver does for probed images;
//! - an image that starts with the qcow2 magic but does not open as qcow2 is an error, never
//!   silently raw: the user says `format=raw` to use such a file as raw.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use super::{BlockBackend, GuestSlice, Qcow2Image, RawImage, slices_len};

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
/// First bytes of formats QEMU would probe as something other than raw. A probed raw image
/// must never start with one of them, whichever tool opens it next.
const FOREIGN_MAGICS: &[&[u8]] = &[
    QCOW2_MAGIC,
    b"QED\0",
    b"KDMV",
    b"vhdxfile",
    b"conectix",
    b"LUKS\xba\xbe",
    b"<<< Oracle VM VirtualBox Disk Image >>>",
    b"<<< Sun VirtualBox Disk Image >>>",
];
const PROBE_LEN: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        })
    }
}

impl ImageFormat {
    /// The format a file's name says: `.qcow2` is qcow2, `.raw` and `.img` are raw (any
    /// case); `None` for other names.
    pub fn from_name(path: &Path) -> Option<ImageFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "qcow2" => Some(ImageFormat::Qcow2),
            "raw" | "img" => Some(ImageFormat::Raw),
            _ => None,
        }
    }
}

impl FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            _ => Err(format!("unknown image format {s:?} (raw or qcow2)")),
        }
    }
}

fn looks_foreign(sector: &[u8]) -> bool {
    FOREIGN_MAGICS.iter().any(|m| sector.starts_with(m))
}

/// The format of the image at `path`, from its first bytes.
pub fn probe(path: &Path) -> io::Result<ImageFormat> {
    let mut head = Vec::with_capacity(PROBE_LEN);
    File::open(path)?
        .take(PROBE_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(if head.starts_with(QCOW2_MAGIC) {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// Opens `path` as `format`, or as what [`probe`] finds when `format` is `None`.
pub fn open_image(
    path: &Path,
    format: Option<ImageFormat>,
    read_only: bool,
) -> io::Result<Box<dyn BlockBackend>> {
    let ctx = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{}: {what}{e}", path.display()))
    };
    match format {
        Some(ImageFormat::Raw) => Ok(Box::new(
            RawImage::open(path, read_only).map_err(|e| ctx(e, ""))?,
        )),
        Some(ImageFormat::Qcow2) => Ok(Box::new(
            Qcow2Image::open(path, read_only).map_err(|e| ctx(e, "qcow2: "))?,
        )),
        None => match probe(path).map_err(|e| ctx(e, ""))? {
            ImageFormat::Qcow2 => Ok(Box::new(Qcow2Image::open(path, read_only).map_err(
                |e| ctx(e, "starts like qcow2 but does not open as qcow2 (say format=raw to use it as raw): "),
            )?)),
            ImageFormat::Raw => {
                let raw = RawImage::open(path, read_only).map_err(|e| ctx(e, ""))?;
                Ok(Box::new(ProbedRaw {
                    inner: raw,
                    first_sector: Default::default(),
                }))
            }
        },
    }
}

/// A raw image whose format was guessed: writes that would make the first sector probe as
/// another format fail with PermissionDenied (the device reports an I/O error for that one
/// request).
pub struct ProbedRaw {
    inner: RawImage,
    /// Held from the check of a write into the first sector to its end, so two such writes
    /// in flight at once cannot each pass the check and together make a magic.
    first_sector: std::sync::Mutex<()>,
}

impl ProbedRaw {
    /// The first-sector lock, for a write starting at `offset` (only writes from inside
    /// the first sector can change it).
    fn lock_first_sector(&self, offset: u64) -> Option<std::sync::MutexGuard<'_, ()>> {
        (offset < PROBE_LEN as u64)
            .then(|| self.first_sector.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn check_first_sector(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if offset >= PROBE_LEN as u64 || buf.is_empty() {
            return Ok(());
        }
        // The first sector as it will be after the write.
        let n = (PROBE_LEN as u64).min(self.inner.len()) as usize;
        let mut sector = vec![0u8; n];
        self.inner.read_at(0, &mut sector)?;
        let start = offset as usize;
        let end = (start + buf.len()).min(n);
        sector[start..end].copy_from_slice(&buf[..end - start]);
        if looks_foreign(&sector) {
            tracing::warn!(
                "refused a guest write that would make a probed raw image look like another format"
            );
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "write would change the probed format of a raw image",
            ));
        }
        Ok(())
    }
}

impl BlockBackend for ProbedRaw {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        super::check_range(self.inner.len(), offset, buf.len() as u64)?;
        let _first = self.lock_first_sector(offset);
        self.check_first_sector(offset, buf)?;
        self.inner.write_at(offset, buf)
    }
    fn read_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        self.inner.read_vectored(offset, bufs)
    }
    fn write_vectored(&self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<()> {
        super::check_range(self.inner.len(), offset, slices_len(bufs))?;
        let _first = self.lock_first_sector(offset);
        if offset < PROBE_LEN as u64 {
            // Only the part that lands in the first sector matters for the check.
            let mut head = Vec::with_capacity(PROBE_LEN);
            for b in bufs {
                let want = PROBE_LEN - offset as usize - head.len();
                if want == 0 {
                    break;
                }
                let n = b.len().min(want);
                let at = head.len();
                head.resize(at + n, 0);
                b.subslice(0, n)
                    .map_err(|e| io::Error::other(e.to_string()))?
                    .copy_to(&mut head[at..]);
            }
            self.check_first_sector(offset, &head)?;
        }
        self.inner.write_vectored(offset, bufs)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    // Zeroes (and discard, which reads back as zeroes on raw) never form a magic.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
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

    #[test]
    fn probed_raw_cannot_become_qcow2() {
        let dir = TempDir::new("probe");
        let p = dir.path("d.img");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(probe(&p).unwrap(), ImageFormat::Raw);
        let d = open_image(&p, None, false).unwrap();
        // The guest writes a qcow2 header into sector 0: refused.
        let mut hdr = [0u8; 512];
        hdr[..4].copy_from_slice(QCOW2_MAGIC);
        let e = d.write_at(0, &hdr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        // Byte by byte is no way around it: the sector as it would be is what counts.
        d.write_at(0, b"QFI").unwrap();
        assert!(d.write_at(3, &[0xfb]).is_err());
        // A longer write starting in sector 0 that carries the magic at 0 is refused too.
        let mut big = vec![0u8; 4096];
        big[..4].copy_from_slice(QCOW2_MAGIC);
        assert!(d.write_at(0, &big).is_err());
        // Nor is a vectored write from guest memory, the magic split over two buffers.
        {
            use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
            let mem = crate::memory::GuestMem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
            mem.write_slice(b"QF", GuestAddress(0x1000)).unwrap();
            mem.write_slice(b"I\xfb", GuestAddress(0x2000)).unwrap();
            let bufs = [
                mem.get_slice(GuestAddress(0x1000), 2).unwrap(),
                mem.get_slice(GuestAddress(0x2000), 510).unwrap(),
                mem.get_slice(GuestAddress(0x3000), 4096).unwrap(),
            ];
            let e = d.write_vectored(0, &bufs).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            // The same bytes one sector further on are data like any other.
            d.write_vectored(512, &bufs).unwrap();
        }
        // Ordinary boot sectors and writes elsewhere are fine.
        let mut mbr = [0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        d.write_at(0, &mbr).unwrap();
        d.write_at(4096, &hdr).unwrap();
        d.flush().unwrap();
        drop(d);
        assert_eq!(probe(&p).unwrap(), ImageFormat::Raw);

        // Told it is raw, the user may write anything.
        let d = open_image(&p, Some(ImageFormat::Raw), false).unwrap();
        d.write_at(0, &hdr).unwrap();
        drop(d);
        // Now it starts like qcow2 but is not one: probing refuses rather than guessing raw.
        assert_eq!(probe(&p).unwrap(), ImageFormat::Qcow2);
        let e = open_image(&p, None, false).err().unwrap();
        assert!(e.to_string().contains("format=raw"), "{e}");
        assert!(open_image(&p, Some(ImageFormat::Raw), true).is_ok());
    }

    #[test]
    fn format_names() {
        assert_eq!("raw".parse::<ImageFormat>(), Ok(ImageFormat::Raw));
        assert_eq!("qcow2".parse::<ImageFormat>(), Ok(ImageFormat::Qcow2));
        assert!("vmdk".parse::<ImageFormat>().is_err());
        assert_eq!(ImageFormat::Qcow2.to_string(), "qcow2");
    }
}
