//! What an ISO 9660 image says about itself: the identifiers in its Primary Volume
//! Descriptor (ECMA-119 §8.4), which osinfo-db's media entries match against.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The Primary Volume Descriptor is the first descriptor, at sector 16 (2 KiB sectors).
const PVD_OFFSET: u64 = 16 * 2048;

/// An ISO's identifiers, with the padding (spaces) trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IsoIds {
    pub system_id: String,
    pub volume_id: String,
    pub publisher_id: String,
    pub application_id: String,
    /// The volume's size in bytes (its block count times its block size).
    pub volume_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not an ISO 9660 image (no CD001 volume descriptor at sector 16)")]
    NotIso(String),
}

/// Reads the identifiers of the ISO at `path`.
pub fn read_ids(path: &Path) -> Result<IsoIds, IsoError> {
    let shown = path.display().to_string();
    let read = |source| IsoError::Read {
        path: shown.clone(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read)?;
    f.seek(SeekFrom::Start(PVD_OFFSET)).map_err(read)?;
    let mut pvd = [0u8; 2048];
    f.read_exact(&mut pvd).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => IsoError::NotIso(shown.clone()),
        _ => read(e),
    })?;
    parse_pvd(&pvd).ok_or(IsoError::NotIso(shown))
}

/// The identifiers of a Primary Volume Descriptor, or `None` if `pvd` is not one.
pub fn parse_pvd(pvd: &[u8; 2048]) -> Option<IsoIds> {
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    // Offsets and lengths from ECMA-119's table 4 (a-characters and d-characters, padded
    // with spaces).
    let field = |at: usize, len: usize| {
        String::from_utf8_lossy(&pvd[at..at + len])
            .trim_end_matches([' ', '\0'])
            .to_string()
    };
    // Both-endian numbers: the little-endian half first.
    let blocks = u32::from_le_bytes(pvd[80..84].try_into().unwrap());
    let block_size = u16::from_le_bytes(pvd[128..130].try_into().unwrap());
    Some(IsoIds {
        system_id: field(8, 32),
        volume_id: field(40, 32),
        publisher_id: field(318, 128),
        application_id: field(574, 128),
        volume_size: u64::from(blocks) * u64::from(block_size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvd(volume: &str, publisher: &str) -> [u8; 2048] {
        let mut p = [b' '; 2048];
        p[0] = 1;
        p[1..6].copy_from_slice(b"CD001");
        p[8..13].copy_from_slice(b"LINUX");
        p[40..40 + volume.len()].copy_from_slice(volume.as_bytes());
        p[318..318 + publisher.len()].copy_from_slice(publisher.as_bytes());
        p[80..84].copy_from_slice(&1000u32.to_le_bytes());
        p[128..130].copy_from_slice(&2048u16.to_le_bytes());
        p
    }

    #[test]
    fn reads_the_identifiers_and_refuses_what_is_no_pvd() {
        let ids = parse_pvd(&pvd("Debian 11.5.0 amd64 n", "MICROSOFT CORPORATION")).unwrap();
        assert_eq!(ids.system_id, "LINUX");
        assert_eq!(ids.volume_id, "Debian 11.5.0 amd64 n");
        assert_eq!(ids.publisher_id, "MICROSOFT CORPORATION");
        assert_eq!(ids.application_id, "");
        assert_eq!(ids.volume_size, 1000 * 2048);
        let mut bad = pvd("x", "");
        bad[1] = b'X';
        assert_eq!(parse_pvd(&bad), None);
    }

    #[test]
    fn a_short_file_is_not_an_iso() {
        let p = std::env::temp_dir().join(format!("vmdesk-iso-{}", std::process::id()));
        std::fs::write(&p, b"hello").unwrap();
        let e = read_ids(&p).unwrap_err();
        assert!(e.to_string().contains("not an ISO 9660 image"), "{e}");
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(read_ids(&p), Err(IsoError::Read { .. })));
    }
}
