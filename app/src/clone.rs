//! Clone and rename: a stopped VM copied to a new one (its disks and UEFI variable store
//! copied, a new MAC address), or given another name with the files that carry its name
//! following it.
//! Shared by the CLI (`vmdesk clone`, `vmdesk rename`) and the GUI (Clone…, and a new name
//! in the edit dialog).
//!
//! A running VM is not renamed (its VMM holds its files by their old names) and is cloned
//! only when it has no disk (a live CD, say): a disk copied while its guest writes it is
//! not a consistent disk. (vmdesk's disks are all writable; a CD is read-only and shared.) Nothing is left
//! half done: a failed clone deletes the copies it made, a failed rename moves back what
//! it moved.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::library::{self, DiskDef, Library, VmDef};
use crate::nvram;
use crate::runtime::Runtime;

/// Where vmdesk makes the files a VM owns: its disk images and its UEFI variable store.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub images: PathBuf,
    pub nvram: PathBuf,
}

impl Dirs {
    /// The user's (XDG data dir).
    pub fn open_default() -> anyhow::Result<Dirs> {
        Ok(Dirs {
            images: crate::service::images_dir()?,
            nvram: nvram::nvram_dir()?,
        })
    }

    /// Both under `root` (tests).
    pub fn under(root: &Path) -> Dirs {
        Dirs {
            images: root.join("images"),
            nvram: root.join("nvram"),
        }
    }
}

/// Refuses to make a clone's UEFI variable store over a file that is there, before
/// anything is copied.
pub(crate) fn check_store_free(from: &VmDef, dirs: &Dirs, new: &str) -> anyhow::Result<()> {
    let to = nvram::store_path(&dirs.nvram, new);
    if from.efi_vars.is_some() && std::fs::symlink_metadata(&to).is_ok() {
        bail!("{} already exists: delete it first", to.display());
    }
    Ok(())
}

/// Copies the stopped VM `src` to a new VM `new`: every disk image copied whole into the
/// images folder (`new.qcow2`, `new-1.raw`, … in each disk's own format; holes stay holes),
/// its UEFI variable store to one of the clone's own ([`nvram::clone_store`]), the same
/// CD, kernel and settings, a new MAC address, and a VNC address of its own when
/// the source has a fixed one. `progress` hears (bytes copied, bytes to copy) and returns
/// `false` to cancel (then nothing is left). Returns the new definition and warnings (port
/// forwards the two VMs share, for instance).
pub fn clone_vm(
    lib: &Library,
    rt: &Runtime,
    dirs: &Dirs,
    src: &str,
    new: &str,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
    let from = lib.get(src)?;
    if rt.state(src).is_live() && !from.disks.is_empty() {
        bail!(
            "'{src}' is running: shut it down first (a disk copied while its guest writes \
             it is not consistent)"
        );
    }
    if lib.path_of(new).exists() {
        bail!("a VM named '{new}' already exists");
    }
    let images = &dirs.images;
    let mut def = from.clone();
    def.name = new.to_string();
    def.mac = library::random_mac();
    if !def.vnc.ends_with(":auto") {
        def.vnc = "127.0.0.1:auto".into();
    }
    let targets: Vec<PathBuf> = from
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let stem = match i {
                0 => new.to_string(),
                i => format!("{new}-{i}"),
            };
            images.join(format!("{stem}.{}", d.format.as_str()))
        })
        .collect();
    if let Some(t) = targets
        .iter()
        .find(|t| std::fs::symlink_metadata(t).is_ok())
    {
        bail!("{} already exists: delete it first", t.display());
    }
    check_store_free(&from, dirs, new)?;
    let total = from
        .disks
        .iter()
        .map(|d| std::fs::metadata(&d.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    std::fs::create_dir_all(images)
        .with_context(|| format!("cannot create {}", images.display()))?;
    let mut made: Vec<PathBuf> = Vec::new();
    let result = (|| -> anyhow::Result<Vec<library::Warning>> {
        let mut copied = 0;
        def.disks.clear();
        for (d, target) in from.disks.iter().zip(&targets) {
            made.push(target.clone());
            let before = copied;
            let mut report = |n| {
                copied = before + n;
                progress(copied, total)
            };
            copy_sparse(&d.path, target, &mut report).with_context(|| {
                format!("cannot copy {} to {}", d.path.display(), target.display())
            })?;
            let size = match d.size {
                Some(s) => s,
                None => crate::disk::virtual_size(target, d.format.into())
                    .with_context(|| format!("{}", target.display()))?,
            };
            def.disks.push(DiskDef {
                path: target.clone(),
                // vmdesk made this copy: reinstall may replace it, as its own disks.
                size: Some(size),
                ..d.clone()
            });
        }
        def.efi_vars = nvram::clone_store(&from, &dirs.nvram, new)?;
        made.extend(def.efi_vars.clone());
        let mut warnings = library::validate(&def, &library::HostFacts::detect())
            .map_err(|e| anyhow::anyhow!("'{new}': {e}"))?;
        warnings.extend(lib.network_clashes(&def, new));
        lib.create(&def)?;
        Ok(warnings)
    })();
    match result {
        Ok(warnings) => Ok((def, warnings)),
        Err(e) => {
            for p in made {
                let _ = std::fs::remove_file(p);
            }
            Err(e)
        }
    }
}

/// Renames the stopped VM `old` to `new`: its definition, the disk images vmdesk made for
/// it in the images folder (named after it: `old.qcow2` → `new.qcow2`, `old-1.raw` →
/// `new-1.raw`), its UEFI variable store (`old_VARS.fd` → `new_VARS.fd`), and its log,
/// serial output and thumbnail. Images given with `--disk path=` keep their names.
pub fn rename_vm(
    lib: &Library,
    rt: &Runtime,
    dirs: &Dirs,
    old: &str,
    new: &str,
) -> anyhow::Result<VmDef> {
    let mut def = lib.get(old)?;
    if rt.state(old).is_live() {
        bail!("'{old}' is running: shut it down first");
    }
    if old == new {
        return Ok(def);
    }
    library::validate_name(new).map_err(|e| anyhow::anyhow!("{e}"))?;
    if lib.path_of(new).exists() {
        bail!("a VM named '{new}' already exists");
    }
    def.name = new.to_string();
    save_renamed(lib, rt, dirs, old, &mut def)?;
    Ok(def)
}

/// Saves `def` (a stopped VM's definition with its new name) in place of `old`'s, with
/// the images and variable store vmdesk named after it and its log and serial output
/// following; the files move back if the save fails. Shared with the edit dialog's rename.
pub fn save_renamed(
    lib: &Library,
    rt: &Runtime,
    dirs: &Dirs,
    old: &str,
    def: &mut VmDef,
) -> anyhow::Result<()> {
    let moved = follow_rename(dirs, old, def)?;
    if let Err(e) = lib.rename(old, def) {
        undo(&moved);
        return Err(e.into());
    }
    rt.rename_files(old, &def.name);
    Ok(())
}

/// Moves the images and the variable store vmdesk made for the VM `old` (in `dirs`,
/// named after it) to names after `def.name`, updating `def`'s paths. Returns the moves
/// made, for [`undo`].
fn follow_rename(
    dirs: &Dirs,
    old: &str,
    def: &mut VmDef,
) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut moved = Vec::new();
    let new = def.name.clone();
    let result = (|| {
        for d in &mut def.disks {
            if let Some(to) = renamed_image(&dirs.images, old, &new, &d.path) {
                move_file(&d.path, &to, &mut moved)?;
                d.path = to;
            }
        }
        // A store kept for a VM switched back to BIOS moves too: it is still the VM's.
        if let Some(p) = &mut def.efi_vars
            && let Some(to) = nvram::renamed_store(&dirs.nvram, old, &new, p)
        {
            // One that has gone missing has nothing to move, but its path follows the
            // name, so the store made again later is not named after another VM.
            if std::fs::symlink_metadata(&*p).is_ok() {
                move_file(p, &to, &mut moved)?;
            }
            *p = to;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(moved),
        Err(e) => {
            undo(&moved);
            Err(e)
        }
    }
}

/// Renames `from` to `to`, never over a file that is there, and notes the move.
fn move_file(from: &Path, to: &Path, moved: &mut Vec<(PathBuf, PathBuf)>) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(to).is_ok() {
        bail!(
            "{} already exists: cannot rename {} to it",
            to.display(),
            from.display()
        );
    }
    std::fs::rename(from, to).with_context(|| format!("cannot rename {}", from.display()))?;
    moved.push((from.to_path_buf(), to.to_path_buf()));
    Ok(())
}

/// Moves back what [`follow_rename`] moved.
fn undo(moved: &[(PathBuf, PathBuf)]) {
    for (from, to) in moved.iter().rev() {
        let _ = std::fs::rename(to, from);
    }
}

/// The new path of an image vmdesk named after the VM `old` in `images` (`old.EXT` or
/// `old-N.EXT`), for the VM `new`; `None` for any other image.
fn renamed_image(images: &Path, old: &str, new: &str, path: &Path) -> Option<PathBuf> {
    if path.parent()? != images {
        return None;
    }
    let file = path.file_name()?.to_str()?;
    let (stem, ext) = file.rsplit_once('.')?;
    let suffix = stem.strip_prefix(old)?;
    let ours = suffix.is_empty()
        || suffix
            .strip_prefix('-')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    ours.then(|| images.join(format!("{new}{suffix}.{ext}")))
}

/// Copies the file `from` to a new file `to`, keeping its holes (a sparse disk image stays
/// sparse): only the data extents (SEEK_DATA / SEEK_HOLE) are copied, in the kernel
/// (copy_file_range, which also shares blocks where the filesystem can). `report` hears the
/// bytes copied so far and returns `false` to stop (an Interrupted error).
pub fn copy_sparse(
    from: &Path,
    to: &Path,
    report: &mut dyn FnMut(u64) -> bool,
) -> std::io::Result<()> {
    use nix::unistd::{Whence, lseek};
    let src = File::open(from)?;
    let len = src.metadata()?.len();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    dst.set_len(len)?;
    let mut at = 0u64;
    let mut done = 0u64;
    while at < len {
        // The next data extent: [start, end). ENXIO: no data past `at`.
        let start = match lseek(&src, at as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = (lseek(&src, start as i64, Whence::SeekHole)? as u64).min(len);
        let mut off_in = start as i64;
        let mut off_out = start as i64;
        while (off_in as u64) < end {
            let chunk = ((end - off_in as u64) as usize).min(64 << 20);
            let n = nix::fcntl::copy_file_range(
                &src,
                Some(&mut off_in),
                &dst,
                Some(&mut off_out),
                chunk,
            )?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while it was copied", from.display()),
                ));
            }
            done += n as u64;
            if !report(done) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "cancelled",
                ));
            }
        }
        at = end;
    }
    dst.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    /// A running VM is cloned only when it has no disk to copy.
    #[test]
    fn a_running_vm_is_cloned_only_without_disks() {
        let root = std::env::temp_dir().join(format!("vmdesk-clone-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        let dirs = Dirs::under(&root);
        let images = dirs.images.clone();
        std::fs::create_dir_all(&images).unwrap();
        let disk = images.join("vm.raw");
        std::fs::write(&disk, [0u8; 4096]).unwrap();
        let mut vm = VmDef::new("vm", 64, 1);
        vm.disks.push(DiskDef {
            path: disk,
            format: library::DiskFormat::Raw,
            size: None,
            preallocated: false,
            bus: library::DiskBus::Virtio,
        });
        lib.create(&vm).unwrap();
        lib.create(&VmDef::new("live", 64, 1)).unwrap();
        let mut a = crate::runtime::fake_vmm(&rt, "vm");
        let mut b = crate::runtime::fake_vmm(&rt, "live");
        let e = clone_vm(&lib, &rt, &dirs, "vm", "vm2", &mut |_, _| true).unwrap_err();
        assert!(e.to_string().contains("'vm' is running"), "{e}");
        assert!(!lib.path_of("vm2").exists());
        let (def, _) = clone_vm(&lib, &rt, &dirs, "live", "live2", &mut |_, _| true).unwrap();
        assert!(def.disks.is_empty());
        assert_eq!(lib.get("live2").unwrap(), def);
        for c in [&mut a, &mut b] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_sparse_file_is_copied_with_its_holes() {
        let dir = std::env::temp_dir().join(format!("vmdesk-sparse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.raw"), dir.join("b.raw"));
        let mut f = File::create(&a).unwrap();
        f.set_len(256 << 20).unwrap();
        for at in [0u64, 100 << 20, (256 << 20) - 4096] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0xa5; 4096]).unwrap();
        }
        drop(f);
        let mut calls = 0;
        copy_sparse(&a, &b, &mut |_| {
            calls += 1;
            true
        })
        .unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let used = std::fs::metadata(&b).unwrap().blocks() * 512;
        assert!(used < 4 << 20, "{used} bytes allocated for 12 KiB of data");
        assert!(calls >= 1);
        // An existing target is never overwritten; a cancel says so.
        assert!(copy_sparse(&a, &b, &mut |_| true).is_err());
        let c = dir.join("c.raw");
        let e = copy_sparse(&a, &c, &mut |_| false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_images_named_after_the_vm_in_the_images_folder_follow() {
        let images = Path::new("/d/images");
        let r = |p: &str| renamed_image(images, "web", "www", Path::new(p));
        assert_eq!(r("/d/images/web.qcow2"), Some("/d/images/www.qcow2".into()));
        assert_eq!(r("/d/images/web-2.raw"), Some("/d/images/www-2.raw".into()));
        assert_eq!(r("/d/images/webby.qcow2"), None);
        assert_eq!(r("/d/images/web-x.qcow2"), None);
        assert_eq!(r("/elsewhere/web.qcow2"), None);
    }
}
