//! A UEFI VM's own variable store: the file where OVMF keeps the guest's EFI variables
//! (its boot entries, `efibootmgr`'s changes, the firmware setup's settings) between runs.
//! One per VM, `$XDG_DATA_HOME/vmdesk/nvram/NAME_VARS.fd` (libvirt's naming), made from
//! the `ovmf` package's template ([`vmm::firmware::uefi::create_vars`]) when the VM gets
//! UEFI firmware, and recorded in its definition (`efi_vars`).
//!
//! The store is part of the VM, not a user disk: it is copied with a clone (each VM gets
//! its own), moved with a rename, and deleted with the VM whether or not its disks are.
//! A VM switched from UEFI to BIOS keeps it until it is deleted, so switching back finds
//! the boot entries an installer wrote. A store that has gone missing is never quietly
//! replaced by an empty one: starting says so, and `vmdesk set NAME --firmware uefi` (or
//! saving the edit dialog with UEFI) makes a new one.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vmm::firmware::uefi::{self, UefiError};

use crate::library::{self, Firmware, VmDef};

/// What the service asks of the host's UEFI firmware: [`uefi::require`] itself, or in
/// tests a stand-in for a host without the `ovmf` package.
pub type Require = fn() -> Result<(), UefiError>;

/// Where the stores live: `$XDG_DATA_HOME/vmdesk/nvram`.
pub fn nvram_dir() -> anyhow::Result<PathBuf> {
    let base = library::xdg_dir("XDG_DATA_HOME", ".local/share")
        .context("neither XDG_DATA_HOME nor HOME is set: nowhere to keep UEFI variables")?;
    Ok(base.join("vmdesk").join("nvram"))
}

/// The store vmdesk makes for the VM `name` in `dir`.
pub fn store_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}_VARS.fd"))
}

/// Gives `def`, a UEFI VM, a store where it has none (or its recorded one is gone): at the
/// recorded path, else in `dir` after its name. Returns the file made, for the caller to
/// remove if what it is part of fails. A BIOS VM, or one whose store is there, is left as
/// it is.
pub fn ensure(def: &mut VmDef, dir: &Path, require: Require) -> anyhow::Result<Option<PathBuf>> {
    if def.firmware != Firmware::Uefi {
        return Ok(None);
    }
    if let Some(p) = &def.efi_vars
        && std::fs::symlink_metadata(p).is_ok()
    {
        return Ok(None);
    }
    require().map_err(|e| crate::service::Usage(format!("'{}': {e}", def.name)))?;
    let path = def
        .efi_vars
        .clone()
        .unwrap_or_else(|| store_path(dir, &def.name));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    uefi::create_vars(&path).with_context(|| format!("'{}'", def.name))?;
    def.efi_vars = Some(path.clone());
    Ok(Some(path))
}

/// Why `def` cannot start as it is, firmware-wise: a UEFI VM needs the `ovmf` package and
/// its own store, whole. One line each, with the fix.
pub fn check_for_start(def: &VmDef, require: Require) -> anyhow::Result<()> {
    if def.firmware != Firmware::Uefi {
        return Ok(());
    }
    let name = &def.name;
    require().map_err(|e| anyhow::anyhow!("'{name}' has UEFI firmware, but {e}"))?;
    let fix = format!(
        "vmdesk set {name} --firmware uefi (or saving its Edit dialog) makes a new, empty one \
         (the boot entries the old one held are lost)"
    );
    let Some(path) = &def.efi_vars else {
        bail!("'{name}' has UEFI firmware but no variable store: {fix}");
    };
    if std::fs::symlink_metadata(path).is_err() {
        bail!(
            "'{name}': its UEFI variable store {} is missing: {fix}",
            path.display()
        );
    }
    uefi::check_vars(path).map_err(|e| anyhow::anyhow!("'{name}': {e}"))?;
    Ok(())
}

/// The store a clone `new` of `from` gets in `dir`: a copy of the source's (its boot
/// entries point at disks the clone has copies of), not shared, since two VMs writing one
/// store would overwrite each other's variables. `None` when the source has none (a BIOS
/// VM, or one whose kept store is gone). Refuses a UEFI source whose store is missing, as
/// starting it would.
pub fn clone_store(from: &VmDef, dir: &Path, new: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(src) = &from.efi_vars else {
        return Ok(None);
    };
    if std::fs::symlink_metadata(src).is_err() {
        if from.firmware == Firmware::Uefi {
            bail!(
                "'{}': its UEFI variable store {} is missing: vmdesk set {} --firmware uefi \
                 makes a new one",
                from.name,
                src.display(),
                from.name
            );
        }
        return Ok(None);
    }
    let to = store_path(dir, new);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    copy_store(src, &to)
        .with_context(|| format!("cannot copy {} to {}", src.display(), to.display()))?;
    Ok(Some(to))
}

/// Copies a store to a new file, mode 0600 as [`uefi::create_vars`] makes them (a store
/// can hold secrets); never over an existing file.
pub fn copy_store(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut data = Vec::new();
    std::fs::File::open(from)?.read_to_end(&mut data)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let written = f.write_all(&data).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(to);
    }
    written
}

/// The new path of the store vmdesk named after the VM `old` in `dir`, for the VM `new`;
/// `None` for a store anywhere else (a path someone wrote into the definition keeps it).
pub fn renamed_store(dir: &Path, old: &str, new: &str, path: &Path) -> Option<PathBuf> {
    (path == store_path(dir, old)).then(|| store_path(dir, new))
}

/// Deletes the store at `path` of the VM `name` (deleted just before). Returns it when it
/// was there; gone already is fine.
pub fn remove(name: &str, path: &Path) -> anyhow::Result<Option<PathBuf>> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Some(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "'{name}' is deleted, but its UEFI variable store {} is not",
                path.display()
            )
        }),
    }
}

/// The firmware a new VM gets when the person did not choose: UEFI where the host has the
/// `ovmf` package and the OS on its CD supports or needs UEFI (osinfo-db says so), as
/// virt-manager and GNOME Boxes choose for modern guests; BIOS otherwise: no CD, a CD
/// osinfo-db does not know (BIOS boots every PC OS that predates UEFI, and most since),
/// or no OVMF to run.
pub fn default_firmware(ovmf: bool, need: Option<crate::osinfo::FirmwareNeed>) -> Firmware {
    use crate::osinfo::FirmwareNeed;
    match need {
        Some(FirmwareNeed::UefiSupported | FirmwareNeed::UefiRequired) if ovmf => Firmware::Uefi,
        _ => Firmware::Bios,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osinfo::FirmwareNeed;

    fn missing() -> Result<(), UefiError> {
        Err(UefiError::Missing(uefi::OVMF_CODE.into()))
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmdesk-nvram-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_default_is_uefi_only_with_ovmf_and_an_os_that_takes_it() {
        use Firmware::{Bios, Uefi};
        for (ovmf, need, want) in [
            (true, Some(FirmwareNeed::UefiSupported), Uefi),
            (true, Some(FirmwareNeed::UefiRequired), Uefi),
            (true, Some(FirmwareNeed::Any), Bios),
            (true, None, Bios),
            (false, Some(FirmwareNeed::UefiSupported), Bios),
            (false, Some(FirmwareNeed::UefiRequired), Bios),
            (false, None, Bios),
        ] {
            assert_eq!(default_firmware(ovmf, need), want, "{ovmf} {need:?}");
        }
    }

    #[test]
    fn a_store_is_made_once_and_only_for_uefi() {
        if !uefi::available() {
            eprintln!("SKIP: the ovmf package is not installed");
            return;
        }
        let dir = temp("ensure");
        let mut def = VmDef::new("vm", 64, 1);
        assert_eq!(ensure(&mut def, &dir, uefi::require).unwrap(), None, "BIOS");
        assert!(!dir.exists());
        def.firmware = Firmware::Uefi;
        let made = ensure(&mut def, &dir, uefi::require).unwrap().unwrap();
        assert_eq!(made, dir.join("vm_VARS.fd"));
        assert_eq!(def.efi_vars.as_deref(), Some(made.as_path()));
        uefi::check_vars(&made).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        check_for_start(&def, uefi::require).unwrap();
        // There: kept as it is (the guest's variables in it).
        std::fs::write(&made, b"the guest's").unwrap();
        assert_eq!(ensure(&mut def, &dir, uefi::require).unwrap(), None);
        assert_eq!(std::fs::read(&made).unwrap(), b"the guest's");
        let e = check_for_start(&def, uefi::require)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a UEFI variable store"), "{e}");
        // Gone: starting says so and how to fix it; ensure makes it again where it was.
        std::fs::remove_file(&made).unwrap();
        let e = check_for_start(&def, uefi::require)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'vm': its UEFI variable store"), "{e}");
        assert!(
            e.contains("is missing: vmdesk set vm --firmware uefi"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        assert_eq!(ensure(&mut def, &dir, uefi::require).unwrap(), Some(made));
        // Without OVMF: neither made nor started, one line naming the package.
        let mut other = VmDef::new("other", 64, 1);
        other.firmware = Firmware::Uefi;
        let e = ensure(&mut other, &dir, missing).unwrap_err();
        assert!(e.is::<crate::service::Usage>());
        assert!(e.to_string().contains("sudo apt-get install ovmf"), "{e}");
        assert!(!store_path(&dir, "other").exists());
        let e = check_for_start(&def, missing).unwrap_err().to_string();
        assert!(e.contains("'vm' has UEFI firmware, but"), "{e}");
        assert!(e.contains("sudo apt-get install ovmf"), "{e}");
        // BIOS VMs need none of it.
        def.firmware = Firmware::Bios;
        check_for_start(&def, missing).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_clone_gets_a_copy_and_delete_removes_it() {
        let dir = temp("copy");
        std::fs::create_dir_all(&dir).unwrap();
        let mut def = VmDef::new("src", 64, 1);
        assert_eq!(
            clone_store(&def, &dir, "dst").unwrap(),
            None,
            "none to copy"
        );
        let src = store_path(&dir, "src");
        std::fs::write(&src, b"boot entries").unwrap();
        def.efi_vars = Some(src.clone());
        def.firmware = Firmware::Uefi;
        let copy = clone_store(&def, &dir, "dst").unwrap().unwrap();
        assert_eq!(copy, dir.join("dst_VARS.fd"));
        assert_eq!(std::fs::read(&copy).unwrap(), b"boot entries");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never over a file that is there.
        let e = clone_store(&def, &dir, "dst").unwrap_err();
        assert!(format!("{e:#}").contains("exists"), "{e:#}");
        // A UEFI source without its store is refused; a BIOS one that kept none is fine.
        std::fs::remove_file(&src).unwrap();
        let e = clone_store(&def, &dir, "dst2").unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");
        def.firmware = Firmware::Bios;
        assert_eq!(clone_store(&def, &dir, "dst2").unwrap(), None);
        // Delete: gone already is fine; there, it goes.
        assert_eq!(remove("src", &src).unwrap(), None);
        assert_eq!(remove("dst", &copy).unwrap(), Some(copy.clone()));
        assert!(!copy.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_store_named_after_the_vm_in_the_nvram_folder_follows_a_rename() {
        let dir = Path::new("/d/nvram");
        let r = |p: &str| renamed_store(dir, "web", "www", Path::new(p));
        assert_eq!(
            r("/d/nvram/web_VARS.fd"),
            Some("/d/nvram/www_VARS.fd".into())
        );
        assert_eq!(r("/d/nvram/webby_VARS.fd"), None);
        assert_eq!(r("/elsewhere/web_VARS.fd"), None);
    }
}
