//! `vmdesk disk …`: disk image management from the command line. The image code itself is
//! the VMM library's ([`vmm::disk`]), so what we create is exactly what the VMM opens.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use vmm::disk::{ImageFormat, create_image};

#[derive(Subcommand, Debug)]
pub enum DiskCommand {
    /// Create an empty disk image (raw files are sparse; qcow2 is v3 with 64 KiB clusters).
    Create {
        /// Where the image goes.
        path: PathBuf,
        /// Virtual size: bytes, or with a K/M/G/T suffix (binary: 1K = 1024), e.g. 20G.
        #[arg(value_parser = parse_size)]
        size: u64,
        #[arg(long, value_enum, default_value_t = Format::Qcow2)]
        format: Format,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
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
        } => {
            if !force && std::fs::symlink_metadata(&path).is_ok() {
                anyhow::bail!(
                    "{} already exists (use --force to replace it)",
                    path.display()
                );
            }
            create_image(&path, format.into(), size, force)
                .with_context(|| format!("cannot create {}", path.display()))?;
            println!(
                "created {} ({}, {} bytes)",
                path.display(),
                ImageFormat::from(format),
                size
            );
            Ok(())
        }
    }
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
