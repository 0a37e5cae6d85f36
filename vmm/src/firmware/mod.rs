//! The system firmware image: SeaBIOS from the host's `seabios` package, or OVMF's code
//! from its `ovmf` package ([`uefi`]), or an image the user names. The whole image sits
//! just below 4 GiB, where the CPU fetches its reset vector; its last 128 KiB are also
//! copied into RAM at 0xE0000–0xFFFFF, the legacy BIOS area (QEMU maps them there for
//! either firmware; only SeaBIOS runs from there). With OVMF the VM's variable store is a
//! flash device right below the code ([`crate::devices::pflash`]).
//!
//! Real chipsets switch that low area between ROM and RAM with the i440FX PAM
//! registers. We keep it as plain RAM preloaded with the image instead: SeaBIOS's
//! shadowing code then finds RAM already holding its own code, which is exactly the
//! state it sets up with PAM on QEMU, and after a reset the machine is rebuilt from
//! scratch so the pristine image comes back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use uefi::{UefiError, VarStore};

pub mod uefi;

use crate::memory::{FOUR_GIB, KIB, MIB};

pub const DEFAULT_FIRMWARE: &str = "/usr/share/seabios/bios-256k.bin";
/// The legacy BIOS area below 1 MiB that mirrors the end of the image.
pub const LOW_BIOS_START: u64 = 0xE_0000;
pub const LOW_BIOS_LEN: u64 = 128 * KIB;
/// Firmware images come in whole pages (OVMF's code is 3568 KiB), from 64 KiB up to
/// 16 MiB (the top of the 32-bit space above the IOAPIC and LAPIC is ours to give it).
const SIZE_UNIT: u64 = 4 * KIB;
const MIN_SIZE: u64 = 64 * KIB;
const MAX_SIZE: u64 = 16 * MIB;

#[derive(Debug, Error)]
pub enum FirmwareError {
    #[error(
        "firmware {0} not found: install SeaBIOS (sudo apt-get install seabios) or name an image with --firmware PATH"
    )]
    DefaultMissing(PathBuf),
    #[error("firmware {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "firmware {path} is {size} bytes: a firmware image must be a multiple of 4 KiB between 64 KiB and 16 MiB (SeaBIOS's bios-256k.bin is 262144)"
    )]
    BadSize { path: PathBuf, size: u64 },
    #[error(transparent)]
    Uefi(#[from] UefiError),
    #[error(
        "--efi-vars goes with --firmware uefi: SeaBIOS and images named by path keep no EFI variables"
    )]
    VarsWithoutUefi,
}

/// What `--firmware` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FirmwareChoice {
    /// SeaBIOS from the `seabios` package.
    #[default]
    Bios,
    /// OVMF from the `ovmf` package, with a variable store.
    Uefi,
    /// An image of the user's, mapped read-only below 4 GiB.
    Path(PathBuf),
}

impl std::str::FromStr for FirmwareChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<FirmwareChoice, Self::Err> {
        Ok(match s {
            "bios" => FirmwareChoice::Bios,
            "uefi" => FirmwareChoice::Uefi,
            path => FirmwareChoice::Path(path.into()),
        })
    }
}

/// A firmware image checked and read into memory, and with OVMF its variable store.
#[derive(Clone)]
pub struct Firmware {
    pub path: PathBuf,
    pub image: Vec<u8>,
    /// OVMF's variables: a flash device below the image. Shared by every build of the
    /// machine, so guest resets keep them.
    pub vars: Option<Arc<VarStore>>,
}

impl Firmware {
    /// The firmware `--firmware` and `--efi-vars` name. OVMF without a store of the VM's
    /// own runs from a copy of the template in memory: nothing it sets is kept.
    pub fn choose(
        choice: &FirmwareChoice,
        efi_vars: Option<&Path>,
    ) -> Result<Firmware, FirmwareError> {
        match choice {
            FirmwareChoice::Uefi => {
                uefi::require()?;
                let vars = match efi_vars {
                    Some(p) => VarStore::open(p)?,
                    None => VarStore::from_template()?,
                };
                let mut fw = Firmware::load(Some(Path::new(uefi::OVMF_CODE)))?;
                fw.vars = Some(vars);
                Ok(fw)
            }
            _ if efi_vars.is_some() => Err(FirmwareError::VarsWithoutUefi),
            FirmwareChoice::Bios => Firmware::load(None),
            FirmwareChoice::Path(p) => Firmware::load(Some(p)),
        }
    }

    /// Whether this is OVMF with its variable store (`--firmware uefi`).
    pub fn is_uefi(&self) -> bool {
        self.vars.is_some()
    }

    /// Where the variable store's flash goes: right below the image, as QEMU puts the
    /// second pflash device below the first.
    pub fn vars_base(&self) -> Option<u64> {
        self.vars.as_ref().map(|v| self.base() - v.len())
    }

    /// Reads `path`, or the `seabios` package's image when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Firmware, FirmwareError> {
        let (path, is_default) = match path {
            Some(p) => (p.to_path_buf(), false),
            None => (PathBuf::from(DEFAULT_FIRMWARE), true),
        };
        let image = match std::fs::read(&path) {
            Ok(image) => image,
            Err(e) if is_default && e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FirmwareError::DefaultMissing(path));
            }
            Err(source) => return Err(FirmwareError::Read { path, source }),
        };
        let size = image.len() as u64;
        if size < MIN_SIZE || !size.is_multiple_of(SIZE_UNIT) || size > MAX_SIZE {
            return Err(FirmwareError::BadSize { path, size });
        }
        Ok(Firmware {
            path,
            image,
            vars: None,
        })
    }

    /// Where the image starts in guest-physical memory (it ends at 4 GiB).
    pub fn base(&self) -> u64 {
        FOUR_GIB - self.image.len() as u64
    }

    /// The bytes that also appear at [`LOW_BIOS_START`]: the image's last 128 KiB (all
    /// of it, right-aligned, when it is smaller).
    pub fn low_bios(&self) -> &[u8] {
        let n = self.image.len().min(LOW_BIOS_LEN as usize);
        &self.image[self.image.len() - n..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(name: &str, len: usize) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vmdesk-fw-{}-{name}", std::process::id()));
        let mut data = vec![0u8; len];
        if len > 0 {
            data[len - 1] = 0xAB;
        }
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn accepts_256k_and_places_it_below_4g() {
        let p = write_temp("ok", 256 * 1024);
        let fw = Firmware::load(Some(&p)).unwrap();
        assert_eq!(fw.base(), 0xFFFC_0000);
        assert_eq!(fw.low_bios().len(), 128 * 1024);
        assert_eq!(*fw.low_bios().last().unwrap(), 0xAB);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn small_image_is_right_aligned_below_1m() {
        let p = write_temp("small", 64 * 1024);
        let fw = Firmware::load(Some(&p)).unwrap();
        assert_eq!(fw.low_bios().len(), 64 * 1024);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn rejects_odd_sizes_and_empty_files() {
        for len in [0, 1000, 65536 + 512, 32768] {
            let p = write_temp(&format!("bad{len}"), len);
            let e = Firmware::load(Some(&p)).err().unwrap();
            assert!(matches!(e, FirmwareError::BadSize { .. }), "{len}: {e}");
            assert!(e.to_string().contains("multiple of 4 KiB"));
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn uefi_takes_ovmf_and_puts_its_store_below_it() {
        let e = Firmware::choose(&FirmwareChoice::Bios, Some(Path::new("v.fd")))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("--efi-vars goes with --firmware uefi"),
            "{e}"
        );
        assert_eq!("uefi".parse(), Ok(FirmwareChoice::Uefi));
        assert_eq!("./bios".parse(), Ok(FirmwareChoice::Path("./bios".into())));
        if !uefi::available() {
            eprintln!("SKIP: the ovmf package is not installed");
            return;
        }
        let fw = Firmware::choose(&FirmwareChoice::Uefi, None).unwrap();
        assert_eq!(fw.path, Path::new(uefi::OVMF_CODE));
        // The 4 MiB build: code and variables fill the 4 MiB below 4 GiB.
        assert_eq!(fw.vars_base(), Some(FOUR_GIB - 4 * MIB));
        let e = Firmware::choose(&FirmwareChoice::Uefi, Some(Path::new("/etc/hostname")))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a UEFI variable store"), "{e}");
    }

    #[test]
    fn missing_named_file_says_which() {
        let e = Firmware::load(Some(Path::new("/nonexistent/bios.bin")))
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("firmware /nonexistent/bios.bin:"),
            "{e}"
        );
    }
}
