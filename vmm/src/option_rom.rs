//! Option ROMs given with `--option-rom FILE`, and the builder that wraps a flat real-mode
//! program into one.
//!
//! Like QEMU's `-option-rom`, each file reaches the guest as the fw_cfg file
//! `genroms/<basename>`; SeaBIOS copies it into the option ROM area (0xC0000–0xDFFFF),
//! calls its init vector and, when it carries a PnP header with a Boot Entry Vector,
//! lists it as a boot device (SeaBIOS's `optionroms.c`).
//!
//! What is checked when a file is loaded: that it can be read, starts with 0x55 0xAA,
//! declares a non-zero length no longer than the file, and fits the option ROM area.
//! The checksum is not enforced (SeaBIOS on QEMU does not either); a bad one is logged.
//!
//! [`wrap_program`] is how the test programs under `tests/guests/` become ROMs: the
//! program is linked to run at offset [`PROGRAM_OFFSET`] of the ROM's segment, and the
//! wrapper puts the ROM header, an init vector that just returns, a PnP header whose
//! BEV points at the program, padding to 512-byte blocks and the checksum around it.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The option ROM area below the BIOS is 128 KiB: no ROM can be larger.
pub const MAX_OPTION_ROM: usize = 128 * 1024;
/// The length byte counts 512-byte blocks.
const BLOCK: usize = 512;
/// Where a wrapped program starts inside the ROM (it is linked at this address, with CS
/// the ROM's segment).
pub const PROGRAM_OFFSET: usize = 0x100;
/// fw_cfg's directory holds names of at most 55 bytes.
const MAX_NAME: usize = 55;
const FW_CFG_PREFIX: &str = "genroms/";

#[derive(Debug, Error)]
pub enum OptionRomError {
    #[error("option ROM {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("option ROM {0} is not an option ROM (it must start with 0x55 0xAA)")]
    NoSignature(PathBuf),
    #[error("option ROM {path} is {size} bytes: at most {max} bytes fit the option ROM area", max = MAX_OPTION_ROM)]
    TooLarge { path: PathBuf, size: usize },
    #[error("option ROM {path} declares {declared} bytes (byte 2 × 512) but the file has {size}")]
    BadLength {
        path: PathBuf,
        declared: usize,
        size: usize,
    },
    #[error(
        "option ROM {0}: the file name must be 1 to 47 bytes of UTF-8 (it becomes genroms/NAME in fw_cfg)"
    )]
    BadName(PathBuf),
    #[error("option ROM {0}: another --option-rom has the same file name")]
    Duplicate(PathBuf),
    #[error("program of {0} bytes does not fit an option ROM")]
    ProgramTooLarge(usize),
}

/// A checked option ROM and the fw_cfg name it goes under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionRom {
    /// `genroms/<basename>`.
    pub fw_cfg_name: String,
    pub data: Vec<u8>,
}

impl OptionRom {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<OptionRom, OptionRomError> {
        let data = std::fs::read(path).map_err(|source| OptionRomError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && n.len() + FW_CFG_PREFIX.len() <= MAX_NAME)
            .ok_or_else(|| OptionRomError::BadName(path.to_path_buf()))?;
        Self::from_bytes(path, name, data)
    }

    /// Checks `data` as the ROM named `name` (`path` is only for messages).
    pub fn from_bytes(path: &Path, name: &str, data: Vec<u8>) -> Result<OptionRom, OptionRomError> {
        if data.len() < 3 || data[0] != 0x55 || data[1] != 0xAA {
            return Err(OptionRomError::NoSignature(path.to_path_buf()));
        }
        if data.len() > MAX_OPTION_ROM {
            return Err(OptionRomError::TooLarge {
                path: path.to_path_buf(),
                size: data.len(),
            });
        }
        let declared = usize::from(data[2]) * BLOCK;
        if declared == 0 || declared > data.len() {
            return Err(OptionRomError::BadLength {
                path: path.to_path_buf(),
                declared,
                size: data.len(),
            });
        }
        let sum = data[..declared].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        if sum != 0 {
            tracing::warn!(
                "option ROM {}: checksum of its {declared} bytes is {sum:#04x}, not 0",
                path.display()
            );
        }
        Ok(OptionRom {
            fw_cfg_name: format!("{FW_CFG_PREFIX}{name}"),
            data,
        })
    }

    /// Loads every path in order, refusing two with the same file name (fw_cfg would
    /// hold only one of them).
    pub fn load_all(paths: &[PathBuf]) -> Result<Vec<OptionRom>, OptionRomError> {
        let mut roms: Vec<OptionRom> = Vec::with_capacity(paths.len());
        for path in paths {
            let rom = Self::load(path)?;
            if roms.iter().any(|r| r.fw_cfg_name == rom.fw_cfg_name) {
                return Err(OptionRomError::Duplicate(path.clone()));
            }
            roms.push(rom);
        }
        Ok(roms)
    }
}

// Offsets in the ROM header and the PnP expansion header (PnP BIOS spec 1.0a, 3.2).
const INIT_VECTOR: usize = 3;
const PNP_OFFSET_FIELD: usize = 0x1a;
const PNP_HEADER: usize = 0x20;
const PNP_LEN: usize = 0x20;
const PRODUCT_NAME: usize = 0x40;
const MAX_PRODUCT_NAME: usize = PROGRAM_OFFSET - PRODUCT_NAME - 1;

/// Wraps a flat program linked at [`PROGRAM_OFFSET`] into a bootable option ROM: ROM
/// header, an init vector that returns at once, a PnP header whose Boot Entry Vector is
/// the program's first byte and whose product name (what SeaBIOS's boot menu shows) is
/// `product`, padding to whole 512-byte blocks, and the checksum in the last byte.
pub fn wrap_program(program: &[u8], product: &str) -> Result<Vec<u8>, OptionRomError> {
    // One spare byte at the end for the checksum.
    let size = (PROGRAM_OFFSET + program.len() + 1).div_ceil(BLOCK) * BLOCK;
    if size > MAX_OPTION_ROM.min(255 * BLOCK) {
        return Err(OptionRomError::ProgramTooLarge(program.len()));
    }
    let mut rom = vec![0u8; size];
    rom[0] = 0x55;
    rom[1] = 0xAA;
    rom[2] = (size / BLOCK) as u8;
    // Init vector: `retf`. SeaBIOS far-calls it before boot; there is nothing to set up.
    rom[INIT_VECTOR] = 0xCB;
    rom[PNP_OFFSET_FIELD..PNP_OFFSET_FIELD + 2].copy_from_slice(&(PNP_HEADER as u16).to_le_bytes());

    let pnp = &mut rom[PNP_HEADER..PNP_HEADER + PNP_LEN];
    pnp[0..4].copy_from_slice(b"$PnP");
    pnp[4] = 1; // structure revision
    pnp[5] = (PNP_LEN / 16) as u8; // length in 16-byte units
    // 0x06 next header: none. 0x0a device id, 0x0e manufacturer: none.
    pnp[0x10..0x12].copy_from_slice(&(PRODUCT_NAME as u16).to_le_bytes());
    // Device type 0x08xxxx... is unused for a BEV device; indicators: 0x04 "may be
    // shadowed" would do, but SeaBIOS reads none of them.
    pnp[0x1a..0x1c].copy_from_slice(&(PROGRAM_OFFSET as u16).to_le_bytes()); // BEV
    let pnp_sum = pnp.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    pnp[9] = 0u8.wrapping_sub(pnp_sum);

    let name = &product.as_bytes()[..product.len().min(MAX_PRODUCT_NAME)];
    rom[PRODUCT_NAME..PRODUCT_NAME + name.len()].copy_from_slice(name);
    rom[PROGRAM_OFFSET..PROGRAM_OFFSET + program.len()].copy_from_slice(program);
    let sum = rom.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    rom[size - 1] = 0u8.wrapping_sub(sum);
    Ok(rom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    #[test]
    fn wrapped_program_is_a_bootable_pnp_rom() {
        let program = [0xEB, 0xFE]; // jmp $
        let rom = wrap_program(&program, "vmdesk test").unwrap();
        assert_eq!(rom.len(), 512);
        assert_eq!(&rom[..3], &[0x55, 0xAA, 1]);
        assert_eq!(sum(&rom), 0, "ROM checksum");
        // As SeaBIOS's get_pnp_rom finds it.
        let pnp = usize::from(u16::from_le_bytes([rom[0x1a], rom[0x1b]]));
        assert_eq!(&rom[pnp..pnp + 4], b"$PnP");
        let len = usize::from(rom[pnp + 5]) * 16;
        assert_eq!(sum(&rom[pnp..pnp + len]), 0, "PnP header checksum");
        let bev = usize::from(u16::from_le_bytes([rom[pnp + 0x1a], rom[pnp + 0x1b]]));
        assert_eq!(&rom[bev..bev + 2], &program);
        let name = usize::from(u16::from_le_bytes([rom[pnp + 0x10], rom[pnp + 0x11]]));
        assert_eq!(&rom[name..name + 12], b"vmdesk test\0");
        assert_eq!(rom[3], 0xCB, "init vector returns");
        OptionRom::from_bytes(Path::new("t.rom"), "t.rom", rom).unwrap();
    }

    #[test]
    fn size_rounds_up_to_blocks() {
        let rom = wrap_program(&vec![0x90; 512 - PROGRAM_OFFSET], "x").unwrap();
        assert_eq!(rom.len(), 1024, "the checksum byte needs a second block");
        assert_eq!(rom[2], 2);
        assert_eq!(sum(&rom), 0);
        assert!(wrap_program(&vec![0; 255 * 512], "x").is_err());
    }

    #[test]
    fn long_product_names_are_cut() {
        let rom = wrap_program(&[0xF4], &"n".repeat(500)).unwrap();
        assert_eq!(rom[PROGRAM_OFFSET - 1], 0, "name stays NUL-terminated");
        assert_eq!(rom[PROGRAM_OFFSET], 0xF4);
    }

    #[test]
    fn bad_roms_are_refused() {
        let p = Path::new("x.rom");
        let check = |d: Vec<u8>| OptionRom::from_bytes(p, "x.rom", d);
        assert!(matches!(check(vec![]), Err(OptionRomError::NoSignature(_))));
        assert!(matches!(
            check(vec![0x55, 0xAB, 1]),
            Err(OptionRomError::NoSignature(_))
        ));
        assert!(matches!(
            check(vec![0x55, 0xAA, 0, 0]),
            Err(OptionRomError::BadLength { .. })
        ));
        let mut short = vec![0u8; 512];
        short[..3].copy_from_slice(&[0x55, 0xAA, 2]);
        assert!(matches!(
            check(short),
            Err(OptionRomError::BadLength { .. })
        ));
        let mut big = vec![0u8; MAX_OPTION_ROM + 512];
        big[..3].copy_from_slice(&[0x55, 0xAA, 1]);
        assert!(matches!(check(big), Err(OptionRomError::TooLarge { .. })));
        // A bad checksum is only logged, as SeaBIOS on QEMU accepts it.
        let mut ok = vec![0u8; 512];
        ok[..3].copy_from_slice(&[0x55, 0xAA, 1]);
        let rom = check(ok).unwrap();
        assert_eq!(rom.fw_cfg_name, "genroms/x.rom");
    }

    #[test]
    fn files_load_with_their_basename() {
        let dir = std::env::temp_dir().join(format!("vmdesk-optrom-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let a = dir.join("a.rom");
        let b = dir.join("sub/a.rom");
        let rom = wrap_program(&[0xF4], "a").unwrap();
        std::fs::write(&a, &rom).unwrap();
        std::fs::write(&b, &rom).unwrap();
        let roms = OptionRom::load_all(std::slice::from_ref(&a)).unwrap();
        assert_eq!(roms[0].fw_cfg_name, "genroms/a.rom");
        assert_eq!(roms[0].data, rom);
        assert!(matches!(
            OptionRom::load_all(&[a.clone(), b]),
            Err(OptionRomError::Duplicate(_))
        ));
        assert!(matches!(
            OptionRom::load(&dir.join("missing.rom")),
            Err(OptionRomError::Read { .. })
        ));
        let long = dir.join("l".repeat(48));
        std::fs::write(&long, &rom).unwrap();
        assert!(matches!(
            OptionRom::load(&long),
            Err(OptionRomError::BadName(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
