//! `vmdesk disk …`: disk image management from the command line. The image code itself is
//! the VMM library's ([`vmm::disk`]), so what we create is exactly what the VMM opens.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};

use vmm::disk::{ImageFormat, Preallocation, create_image_with};

#[derive(Subcommand, Debug)]
pub enum DiskCommand {
    /// Create an empty disk image (raw files are sparse unless --preallocation full; qcow2 is
    /// v3 with 64 KiB clusters).
    Create {
        /// Where the image goes.
        path: PathBuf,
        /// Virtual size: bytes, or with a K/M/G/T suffix (binary: 1K = 1024), e.g. 20G.
        #[arg(value_parser = parse_size)]
        size: u64,
        /// The image format; by default what the name says (.qcow2; .raw or .img), qcow2
        /// for other names. A format the name contradicts is refused.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// `full` reserves all the space now (raw only): a full host disk shows up here,
        /// not as I/O errors in the guest later.
        #[arg(long, value_enum, default_value_t = Prealloc::Off)]
        preallocation: Prealloc,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Prealloc {
    Off,
    Full,
}

impl From<Prealloc> for Preallocation {
    fn from(p: Prealloc) -> Preallocation {
        match p {
            Prealloc::Off => Preallocation::Off,
            Prealloc::Full => Preallocation::Full,
        }
    }
}

/// A progress callback for a terminal: "what: 42%" redrawn on stderr when it is a
/// terminal (nothing otherwise, so logs and pipes stay clean), a line end when done.
pub fn terminal_progress(what: &str) -> impl FnMut(u64, u64) -> bool {
    let tty = std::io::stderr().is_terminal();
    let what = what.to_string();
    let mut shown = None;
    move |done, total| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if tty && shown != Some(pct) {
            shown = Some(pct);
            let end = if done >= total { "\n" } else { "" };
            eprint!("\r{what}: {pct:3}%{end}");
            let _ = std::io::stderr().flush();
        }
        true
    }
}

impl From<Format> for ImageFormat {
    fn from(f: Format) -> ImageFormat {
        match f {
            Format::Raw => ImageFormat::Raw,
            Format::Qcow2 => ImageFormat::Qcow2,
        }
    }
}

pub fn run(cmd: DiskCommand) -> anyhow::Result<()> {
    match cmd {
        DiskCommand::Create {
            path,
            size,
            format,
            force,
            preallocation,
        } => {
            let format =
                new_image_format(&path, format.map(Into::into)).map_err(crate::cli::Usage)?;
            if !force && std::fs::symlink_metadata(&path).is_ok() {
                anyhow::bail!(
                    "{} already exists (use --force to replace it)",
                    path.display()
                );
            }
            let mut progress = terminal_progress("reserving disk space");
            create_image_with(
                &path,
                format,
                size,
                force,
                preallocation.into(),
                &mut |done| progress(done, size),
            )
            .with_context(|| format!("cannot create {}", path.display()))?;
            println!("created {} ({format}, {size} bytes)", path.display());
            Ok(())
        }
    }
}

/// The format of a new image at `path`: what its name says (`.qcow2`; `.raw` or `.img`),
/// else `asked`, else qcow2. An `asked` format the name contradicts is refused: a
/// `t1.raw` holding qcow2 misleads every person and tool that sees the name later.
pub fn new_image_format(path: &Path, asked: Option<ImageFormat>) -> Result<ImageFormat, String> {
    match (asked, ImageFormat::from_name(path)) {
        (Some(a), Some(named)) if a != named => Err(format!(
            "{}: its name says {named}, but the format asked for is {a} (name it .{a}, or \
             leave the format out)",
            path.display()
        )),
        (a, named) => Ok(a.or(named).unwrap_or(ImageFormat::Qcow2)),
    }
}

/// One image to replace with a fresh, empty one (for reinstall).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreshImage {
    pub path: PathBuf,
    pub format: ImageFormat,
    pub size: u64,
    /// Reserve all its space again, as when vmdesk first made it.
    pub prealloc: Preallocation,
}

/// Replaces every image in `images` with an empty one of its size and format, all or
/// nothing: each new image is made beside its old one under a temp name first, and only
/// when all of them exist are they renamed over the old ones. A failure (a full disk, a
/// read-only directory) leaves every old image as it was.
pub fn replace_with_fresh(images: &[FreshImage]) -> std::io::Result<()> {
    let temp_of = |p: &Path| -> PathBuf {
        let file = p
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        p.with_file_name(format!(".{file}.{}.fresh", std::process::id()))
    };
    let mut made: Vec<PathBuf> = Vec::new();
    let fail = |made: &[PathBuf], e: std::io::Error, path: &Path| {
        for t in made {
            let _ = std::fs::remove_file(t);
        }
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    for img in images {
        let tmp = temp_of(&img.path);
        let fresh = create_image_with(&tmp, img.format, img.size, true, img.prealloc, &mut |_| {
            true
        });
        if let Err(e) = fresh {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(&made, e, &img.path));
        }
        made.push(tmp);
    }
    for (img, tmp) in images.iter().zip(&made) {
        // Same directory, so rename is atomic: the old image is whole until this moment.
        std::fs::rename(tmp, &img.path).map_err(|e| fail(&made, e, &img.path))?;
    }
    Ok(())
}

/// The virtual size of an existing image, as the VMM would see it.
pub fn virtual_size(path: &Path, format: ImageFormat) -> std::io::Result<u64> {
    Ok(vmm::disk::open_image(path, Some(format), true)?.len())
}

/// The largest virtual size we accept: qcow2's limit with 64 KiB clusters is far above
/// this, and no host filesystem holds a sparse file much larger (ext4: 16 TiB; xfs: 8 EiB).
const MAX_SIZE: u64 = 1 << 50;
const SECTOR: u64 = 512;

/// "20G", "512M", "1T", "65536", "4096B", "1KiB": binary units, as qemu-img reads them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("{s:?} is not a size (e.g. 20G, 512M, 1048576)"));
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?}: unknown size unit {unit:?} (K, M, G or T)")),
    };
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|&b| b <= MAX_SIZE)
        .ok_or_else(|| format!("{s:?} is too large (at most 1P)"))?;
    if bytes == 0 {
        return Err("the size must be more than 0".into());
    }
    if bytes % SECTOR != 0 {
        return Err(format!("{s:?} is not a multiple of 512 bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::disk::create_image;

    #[test]
    fn fresh_images_replace_old_ones_all_or_nothing() {
        let dir = std::env::temp_dir().join(format!("vmdesk-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("a.raw");
        let qcow = dir.join("b.qcow2");
        std::fs::write(&raw, vec![0xAB; 4096]).unwrap();
        create_image(&qcow, ImageFormat::Qcow2, 1 << 20, false).unwrap();
        // Write into the qcow2 image so its content differs from a fresh one.
        {
            let img = vmm::disk::open_image(&qcow, Some(ImageFormat::Qcow2), false).unwrap();
            img.write_at(0, &[0x55; 512]).unwrap();
            img.flush().unwrap();
        }
        let plan = [
            FreshImage {
                path: raw.clone(),
                format: ImageFormat::Raw,
                size: 8192,
                prealloc: Preallocation::Full,
            },
            FreshImage {
                path: qcow.clone(),
                format: ImageFormat::Qcow2,
                size: virtual_size(&qcow, ImageFormat::Qcow2).unwrap(),
                prealloc: Preallocation::Off,
            },
        ];
        replace_with_fresh(&plan).unwrap();
        let bytes = std::fs::read(&raw).unwrap();
        assert_eq!(bytes.len(), 8192);
        // Preallocated, as it was made: every byte has its block.
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&raw).unwrap().blocks() * 512 >= 8192);
        assert!(bytes.iter().all(|&b| b == 0), "the raw image is empty");
        let img = vmm::disk::open_image(&qcow, Some(ImageFormat::Qcow2), true).unwrap();
        assert_eq!(img.len(), 1 << 20);
        let mut sector = [0xFFu8; 512];
        img.read_at(0, &mut sector).unwrap();
        assert_eq!(sector, [0u8; 512], "the qcow2 image is empty");
        drop(img);

        // One image cannot be made (its directory is gone): the other keeps its data.
        std::fs::write(&raw, vec![0xCD; 4096]).unwrap();
        let bad = [
            FreshImage {
                path: raw.clone(),
                format: ImageFormat::Raw,
                size: 4096,
                prealloc: Preallocation::Off,
            },
            FreshImage {
                path: dir.join("missing/c.raw"),
                format: ImageFormat::Raw,
                size: 4096,
                prealloc: Preallocation::Off,
            },
        ];
        let err = replace_with_fresh(&bad).unwrap_err();
        assert!(err.to_string().contains("c.raw"), "{err}");
        assert_eq!(std::fs::read(&raw).unwrap(), vec![0xCD; 4096]);
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.raw", "b.qcow2"], "no temp files are left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_image_takes_the_format_its_name_says() {
        let f = |name: &str, asked| new_image_format(Path::new(name), asked);
        use ImageFormat::{Qcow2, Raw};
        assert_eq!(f("t1.raw", None), Ok(Raw));
        assert_eq!(f("t1.img", None), Ok(Raw));
        assert_eq!(f("T1.RAW", None), Ok(Raw));
        assert_eq!(f("t1.qcow2", None), Ok(Qcow2));
        assert_eq!(f("t1", None), Ok(Qcow2));
        assert_eq!(f("t1.disk", Some(Raw)), Ok(Raw));
        assert_eq!(f("t1.raw", Some(Raw)), Ok(Raw));
        let e = f("t1.raw", Some(Qcow2)).unwrap_err();
        assert!(e.contains("t1.raw: its name says raw"), "{e}");
        assert!(f("t1.qcow2", Some(Raw)).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        for bad in [
            "",
            "G",
            "10X",
            "-1G",
            "1.5G",
            "0",
            "1000",
            "99999999999999999999",
            "2000T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
