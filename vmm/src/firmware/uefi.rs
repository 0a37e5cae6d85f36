//! UEFI firmware: OVMF from the host's `ovmf` package, as QEMU's `pc` machine runs it.
//! The package ships the firmware's code (`OVMF_CODE_4M.fd`, read-only) and the template
//! of a variable store (`OVMF_VARS_4M.fd`). Each VM gets its own copy of the template
//! ([`create_vars`]), which the VMM maps as the second flash device below the code
//! ([`VarStore`], [`crate::devices::pflash`]) and which keeps the guest's EFI variables
//! (boot entries, `efibootmgr` changes, the setup's settings) across runs.
//!
//! We use the 4 MiB build without Secure Boot: it needs no SMM (which we do not emulate),
//! and its store has room for the variables today's installers write (the 2 MiB build's
//! 64 KiB store fills up).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

use crate::disk::ImageLock;
use crate::memory_slots::HostRam;

/// The firmware's code, mapped read-only just below 4 GiB.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The empty variable store each VM's own store starts as.
pub const OVMF_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Where a firmware volume header keeps its length, its signature and the GUID of its
/// file system (UEFI PI spec, volume 3, EFI_FIRMWARE_VOLUME_HEADER).
const FV_GUID_OFFSET: usize = 0x10;
const FV_LENGTH_OFFSET: usize = 0x20;
const FV_SIGNATURE_OFFSET: usize = 0x28;
/// EFI_SYSTEM_NV_DATA_FV_GUID, fff12b8d-7696-4c8b-a985-2747075b4f50, in its on-disk form:
/// the volume that holds non-volatile variables.
const NV_DATA_FV_GUID: [u8; 16] = [
    0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50,
];

#[derive(Debug, Error)]
pub enum UefiError {
    #[error(
        "UEFI firmware {0} not found: install OVMF (sudo apt-get install ovmf), or use --firmware bios"
    )]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "EFI variables {0} is not a UEFI variable store (no firmware volume for non-volatile data at its start); make a new one from {OVMF_VARS_TEMPLATE}"
    )]
    NotVarStore(PathBuf),
    #[error(
        "EFI variables {path} is {size} bytes, but {OVMF_CODE} needs a store of {want} bytes (a copy of {OVMF_VARS_TEMPLATE})"
    )]
    WrongSize { path: PathBuf, size: u64, want: u64 },
    #[error(
        "EFI variables {0} does not exist: make the VM's store with cp {OVMF_VARS_TEMPLATE} {0}"
    )]
    NoStore(PathBuf),
    #[error("EFI variables {0} already exists; not overwritten")]
    Exists(PathBuf),
    #[error("EFI variables {0}: cannot map it: {1}")]
    Map(PathBuf, String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UefiError + '_ {
    move |source| UefiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the `ovmf` package's code and variables template are both there.
pub fn available() -> bool {
    Path::new(OVMF_CODE).is_file() && Path::new(OVMF_VARS_TEMPLATE).is_file()
}

/// The package's files, or the one line saying which is missing.
pub fn require() -> Result<(), UefiError> {
    for f in [OVMF_CODE, OVMF_VARS_TEMPLATE] {
        if !Path::new(f).is_file() {
            return Err(UefiError::Missing(f.into()));
        }
    }
    Ok(())
}

/// Whether `data` is a variable store of `want` bytes: a firmware volume for
/// non-volatile data that covers the whole file.
pub fn check_vars_bytes(path: &Path, data: &[u8], want: u64) -> Result<(), UefiError> {
    let header_ok = data.len() > FV_SIGNATURE_OFFSET + 4
        && data[FV_GUID_OFFSET..FV_GUID_OFFSET + 16] == NV_DATA_FV_GUID
        && &data[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4] == b"_FVH";
    if !header_ok {
        return Err(UefiError::NotVarStore(path.to_path_buf()));
    }
    let size = data.len() as u64;
    let fv_len = u64::from_le_bytes(
        data[FV_LENGTH_OFFSET..FV_LENGTH_OFFSET + 8]
            .try_into()
            .expect("8 bytes"),
    );
    if size != want || fv_len != want {
        return Err(UefiError::WrongSize {
            path: path.to_path_buf(),
            size,
            want,
        });
    }
    Ok(())
}

/// The size of a VM's variable store: the template's.
pub fn vars_size() -> Result<u64, UefiError> {
    require()?;
    let t = Path::new(OVMF_VARS_TEMPLATE);
    Ok(std::fs::metadata(t).map_err(io(t))?.len())
}

/// Checks that `path` is a variable store this firmware can use.
pub fn check_vars(path: &Path) -> Result<(), UefiError> {
    let want = vars_size()?;
    let data = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => UefiError::NoStore(path.to_path_buf()),
        _ => io(path)(e),
    })?;
    check_vars_bytes(path, &data, want)
}

/// Makes a VM's own variable store at `path`, a copy of the template, mode 0600 (boot
/// entries can hold secrets such as network boot passwords). Never overwrites.
pub fn create_vars(path: &Path) -> Result<(), UefiError> {
    require()?;
    let template = Path::new(OVMF_VARS_TEMPLATE);
    let mut data = Vec::new();
    File::open(template)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(template))?;
    check_vars_bytes(template, &data, data.len() as u64)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => UefiError::Exists(path.to_path_buf()),
            _ => io(path)(e),
        })?;
    let written = f.write_all(&data).and_then(|_| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(io(path)(e));
    }
    Ok(())
}

/// A VM's variable store while it runs: the file locked against a second VM (as disks
/// are) and mapped shared, so each byte the guest's flash commands change is in the
/// page cache at once and survives the VMM being killed; [`VarStore::sync`] puts it on
/// disk. Without a file ([`VarStore::from_template`]) the variables live in memory and
/// end with the process.
pub struct VarStore {
    path: Option<PathBuf>,
    ram: HostRam,
    /// Wakes the `efi-vars-sync` thread, which writes the store back; a full channel
    /// already has a write-back coming, which will include this change.
    sync: Option<crossbeam_channel::Sender<()>>,
    _lock: Option<ImageLock>,
}

impl VarStore {
    pub fn open(path: &Path) -> Result<Arc<VarStore>, UefiError> {
        check_vars(path)?;
        let lock = ImageLock::acquire(path, true).map_err(io(path))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let size = file.metadata().map_err(io(path))?.len() as usize;
        let mapped = file.try_clone().map_err(io(path))?;
        let ram: HostRam = Arc::new(
            MmapRegion::from_file(FileOffset::new(mapped, 0), size)
                .map_err(|e| UefiError::Map(path.to_path_buf(), e.to_string()))?,
        );
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let (thread_ram, name) = (ram.clone(), path.display().to_string());
        std::thread::Builder::new()
            .name("efi-vars-sync".into())
            .spawn(move || {
                // Ends when the store (the sender) goes.
                for () in rx {
                    if let Err(e) = write_back(&thread_ram, &file) {
                        tracing::warn!("EFI variables {name}: cannot write them to disk: {e}");
                    }
                }
            })
            .map_err(io(path))?;
        Ok(Arc::new(VarStore {
            path: Some(path.to_path_buf()),
            ram,
            sync: Some(tx),
            _lock: Some(lock),
        }))
    }

    /// A store in memory holding `data` (tests; [`VarStore::from_template`]).
    pub fn in_memory(data: &[u8]) -> Result<Arc<VarStore>, UefiError> {
        let ram = MmapRegion::new(data.len())
            .map_err(|e| UefiError::Map(PathBuf::from("(memory)"), e.to_string()))?;
        ram.as_volatile_slice().copy_from(data);
        Ok(Arc::new(VarStore {
            path: None,
            ram: Arc::new(ram),
            sync: None,
            _lock: None,
        }))
    }

    /// A store in memory, started from the template: nothing the guest sets is kept.
    pub fn from_template() -> Result<Arc<VarStore>, UefiError> {
        require()?;
        let template = Path::new(OVMF_VARS_TEMPLATE);
        let data = std::fs::read(template).map_err(io(template))?;
        check_vars_bytes(template, &data, data.len() as u64)?;
        VarStore::in_memory(&data)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The store's bytes, which the flash device reads and writes and maps into the guest.
    pub fn ram(&self) -> &HostRam {
        &self.ram
    }

    pub fn len(&self) -> u64 {
        self.ram.size() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.ram.size() == 0
    }

    /// Asks for what the guest changed to be written to the disk, without waiting (the
    /// page cache has it already, so the VMM being killed loses nothing; a host crash
    /// before the write-back would).
    pub fn commit(&self) {
        if let Some(tx) = &self.sync {
            let _ = tx.try_send(());
        }
    }
}

fn write_back(ram: &HostRam, file: &File) -> std::io::Result<()> {
    // SAFETY: `ram` is a live shared mapping of `size` bytes, kept alive by the Arc;
    // msync only writes its dirty pages back to the file.
    let r = unsafe { libc::msync(ram.as_ptr().cast(), ram.size(), libc::MS_SYNC) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_bytes(len: usize) -> Vec<u8> {
        let mut d = vec![0xffu8; len];
        d[..0x10].fill(0);
        d[FV_GUID_OFFSET..FV_GUID_OFFSET + 16].copy_from_slice(&NV_DATA_FV_GUID);
        d[FV_LENGTH_OFFSET..FV_LENGTH_OFFSET + 8].copy_from_slice(&(len as u64).to_le_bytes());
        d[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4].copy_from_slice(b"_FVH");
        d
    }

    #[test]
    fn a_variable_store_is_recognised_and_anything_else_refused() {
        let p = Path::new("vars.fd");
        check_vars_bytes(p, &store_bytes(0x84000), 0x84000).unwrap();
        let e = check_vars_bytes(p, &vec![0u8; 0x84000], 0x84000).unwrap_err();
        assert!(e.to_string().contains("not a UEFI variable store"), "{e}");
        let e = check_vars_bytes(p, b"short", 0x84000).unwrap_err();
        assert!(matches!(e, UefiError::NotVarStore(_)), "{e}");
        let e = check_vars_bytes(p, &store_bytes(0x20000), 0x84000).unwrap_err();
        assert!(e.to_string().contains("is 131072 bytes"), "{e}");
        assert!(
            e.to_string().contains("needs a store of 540672 bytes"),
            "{e}"
        );
    }

    #[test]
    fn the_package_template_is_a_store_and_copies_are_not_overwritten() {
        if !available() {
            eprintln!("SKIP: the ovmf package is not installed");
            return;
        }
        check_vars(Path::new(OVMF_VARS_TEMPLATE)).unwrap();
        let p = std::env::temp_dir().join(format!("vmdesk-vars-{}.fd", std::process::id()));
        let _ = std::fs::remove_file(&p);
        create_vars(&p).unwrap();
        check_vars(&p).unwrap();
        assert!(matches!(create_vars(&p), Err(UefiError::Exists(_))));
        let store = VarStore::open(&p).unwrap();
        // A second VM on the same store is refused, as for disks.
        let e = VarStore::open(&p).err().unwrap();
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(store);
        VarStore::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
}
