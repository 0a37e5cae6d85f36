//! Linked clones: a copy of a stopped VM that shares its disks' contents instead of copying
//! them, as VirtualBox's linked clones do. Each source disk becomes a read-only base image,
//! and both VMs get a qcow2 overlay on it: what either guest writes lands in its own
//! overlay, so neither sees the other's writes and the base never changes. A clone takes
//! an instant and almost no space, whatever the disks' size.
//!
//! The source's disk is moved, not copied: `web.qcow2` becomes the base `web.base1.qcow2`
//! (read-only) and a new overlay takes the name `web.qcow2` (a raw `web.raw` gets the
//! overlay `web.qcow2` and its definition says so). An overlay names its base by its full
//! path, so the overlays may be renamed with their VM; a base is never renamed, and goes
//! when the last overlay that needs it is deleted ([`remove_unused_bases`]).
//!
//! A UEFI VM's variable store is copied, as a full clone's is: it is a few hundred KiB,
//! and the firmware writes it in place, so it cannot be shared.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use vmm::disk::{ImageFormat, Qcow2Image};

use crate::clone::Dirs;
use crate::library::{self, DiskDef, DiskFormat, Library, VmDef};
use crate::nvram;
use crate::runtime::Runtime;

/// One source disk's new files, worked out before anything is touched.
struct Plan {
    /// The source's image now, and the base it becomes.
    image: PathBuf,
    base: PathBuf,
    /// The source's overlay (the image's own path for a qcow2 image).
    source_overlay: PathBuf,
    clone_overlay: PathBuf,
}

/// Makes `new` a linked clone of the stopped VM `src` (see the module doc); the clone's
/// overlays go to `dirs.images`, its variable store to `dirs.nvram`. Returns the clone's
/// definition and its warnings. On failure everything is put back as it was.
pub fn clone_linked(
    lib: &Library,
    rt: &Runtime,
    dirs: &Dirs,
    src: &str,
    new: &str,
) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
    let from = lib.get(src)?;
    if rt.state(src).is_live() {
        bail!("'{src}' is running: shut it down first (its disks become the clone's base)");
    }
    if lib.path_of(new).exists() {
        bail!("a VM named '{new}' already exists");
    }
    let images = &dirs.images;
    let plans: Vec<Plan> = from
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| plan(d, images, new, i))
        .collect::<anyhow::Result<_>>()?;
    crate::clone::check_store_free(&from, dirs, new)?;
    std::fs::create_dir_all(images)
        .with_context(|| format!("cannot create {}", images.display()))?;

    let mut source = from.clone();
    let mut def = from.clone();
    def.name = new.to_string();
    def.mac = library::random_mac();
    if !def.vnc.ends_with(":auto") {
        def.vnc = "127.0.0.1:auto".into();
    }
    def.disks.clear();
    // What was done, to undo in reverse on failure.
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut made: Vec<PathBuf> = Vec::new();
    let result = (|| -> anyhow::Result<Vec<library::Warning>> {
        for (d, (p, src_disk)) in from.disks.iter().zip(plans.iter().zip(&mut source.disks)) {
            let format = ImageFormat::from(d.format);
            std::fs::rename(&p.image, &p.base).with_context(|| {
                format!("cannot move {} to {}", p.image.display(), p.base.display())
            })?;
            moved.push((p.image.clone(), p.base.clone()));
            // Nothing writes a base again: read-only for everyone, a guard against a
            // person (or a VM definition) pointing at it by mistake.
            set_read_only(&p.base, true)?;
            for overlay in [&p.source_overlay, &p.clone_overlay] {
                Qcow2Image::create_overlay(overlay, &p.base, format)
                    .with_context(|| format!("cannot create {}", overlay.display()))?;
                made.push(overlay.clone());
            }
            let size = vmm::disk::open_image(&p.clone_overlay, Some(ImageFormat::Qcow2), true)
                .map(|i| i.len())
                .with_context(|| format!("{}", p.clone_overlay.display()))?;
            *src_disk = DiskDef {
                path: p.source_overlay.clone(),
                format: DiskFormat::Qcow2,
                ..d.clone()
            };
            def.disks.push(DiskDef {
                path: p.clone_overlay.clone(),
                format: DiskFormat::Qcow2,
                // vmdesk made it: reinstall may replace it with a fresh disk.
                size: Some(size),
                preallocated: false,
                bus: d.bus,
            });
        }
        def.efi_vars = nvram::clone_store(&from, &dirs.nvram, new)?;
        made.extend(def.efi_vars.clone());
        let mut warnings = library::validate(&def, &library::HostFacts::detect())
            .map_err(|e| anyhow::anyhow!("'{new}': {e}"))?;
        warnings.extend(lib.network_clashes(&def, new));
        lib.update(&source)?;
        if let Err(e) = lib.create(&def) {
            let _ = lib.update(&from);
            return Err(e.into());
        }
        Ok(warnings)
    })();
    match result {
        Ok(warnings) => Ok((def, warnings)),
        Err(e) => {
            for p in made.iter().rev() {
                let _ = std::fs::remove_file(p);
            }
            for (image, base) in moved.iter().rev() {
                let _ = set_read_only(base, false);
                let _ = std::fs::rename(base, image);
            }
            Err(e)
        }
    }
}

/// The files a linked clone of disk `d` (the clone's disk `index`) makes; refuses names
/// that are taken.
fn plan(d: &DiskDef, images: &Path, new: &str, index: usize) -> anyhow::Result<Plan> {
    let image = d.path.clone();
    let dir = image.parent().unwrap_or(Path::new("."));
    let file = image
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("{}: not a file name vmdesk can use", image.display()))?;
    let (stem, ext) = file.rsplit_once('.').unwrap_or((file, d.format.as_str()));
    // web.base1.qcow2, or the next free number (a source cloned again has a base already).
    let base = (1..)
        .map(|n| dir.join(format!("{stem}.base{n}.{ext}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_default();
    let source_overlay = match d.format {
        DiskFormat::Qcow2 => image.clone(),
        DiskFormat::Raw => dir.join(format!("{stem}.qcow2")),
    };
    let clone_overlay = images.join(match index {
        0 => format!("{new}.qcow2"),
        i => format!("{new}-{i}.qcow2"),
    });
    for p in [&clone_overlay]
        .into_iter()
        .chain((source_overlay != image).then_some(&source_overlay))
    {
        if std::fs::symlink_metadata(p).is_ok() {
            bail!("{} already exists: delete it first", p.display());
        }
    }
    if !image.is_file() {
        bail!("{}: no such file", image.display());
    }
    Ok(Plan {
        image,
        base,
        source_overlay,
        clone_overlay,
    })
}

fn set_read_only(path: &Path, read_only: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if read_only { 0o444 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot change the permissions of {}", path.display()))
}

/// Whether `path` is a base a linked clone made (`NAME.baseN.EXT`).
fn is_base(path: &Path) -> bool {
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
        return false;
    };
    let Some((stem, _ext)) = file.rsplit_once('.') else {
        return false;
    };
    stem.rsplit_once(".base")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every image the VMs in `lib` use, their backing chains included.
fn images_in_use(lib: &Library) -> anyhow::Result<Vec<PathBuf>> {
    let mut used = Vec::new();
    for e in lib.list()? {
        let Ok(def) = e.def else {
            continue;
        };
        for d in def.disks {
            let mut next = Some(d.path);
            // A chain is short; the bound only stops a loop a broken header could make.
            for _ in 0..64 {
                let Some(p) = next.take() else {
                    break;
                };
                next = Qcow2Image::backing_file(&p).ok().flatten();
                used.push(p);
            }
        }
    }
    Ok(used)
}

/// After `deleted` images went: deletes the linked-clone bases they stood on that no VM in
/// `lib` still needs (and, in turn, the bases those stood on). Returns what it deleted.
pub fn remove_unused_bases(lib: &Library, backings: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let used = images_in_use(lib)?;
    let mut removed = Vec::new();
    let mut todo = backings;
    while let Some(base) = todo.pop() {
        if !is_base(&base) || used.contains(&base) || removed.contains(&base) {
            continue;
        }
        let below = Qcow2Image::backing_file(&base).ok().flatten();
        match std::fs::remove_file(&base) {
            Ok(()) => removed.push(base),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", base.display())),
        }
        todo.extend(below);
    }
    Ok(removed)
}

/// The backing file each of `images` names (read before they are deleted).
pub fn backings_of(images: &[PathBuf]) -> Vec<PathBuf> {
    images
        .iter()
        .filter_map(|p| Qcow2Image::backing_file(p).ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_known_by_their_names() {
        assert!(is_base(Path::new("/i/web.base1.qcow2")));
        assert!(is_base(Path::new("/i/web.base12.raw")));
        assert!(!is_base(Path::new("/i/web.qcow2")));
        assert!(!is_base(Path::new("/i/web.base.qcow2")));
        assert!(!is_base(Path::new("/i/database.qcow2")));
    }

    fn read(path: &Path, offset: u64) -> [u8; 512] {
        let img = vmm::disk::open_image(path, Some(vmm::disk::ImageFormat::Qcow2), true).unwrap();
        let mut b = [0u8; 512];
        img.read_at(offset, &mut b).unwrap();
        b
    }

    fn write(path: &Path, format: DiskFormat, offset: u64, byte: u8) {
        let img = vmm::disk::open_image(path, Some(format.into()), false).unwrap();
        img.write_at(offset, &[byte; 512]).unwrap();
        img.flush().unwrap();
    }

    /// A linked clone of a VM with a qcow2 and a raw disk: both VMs read the source's data
    /// through overlays, their writes stay apart, the base is read-only and unchanged;
    /// deleting the source keeps the base the clone needs, deleting the clone then removes
    /// it; taken names and a running source are refused with nothing changed.
    #[test]
    fn a_linked_clone_shares_a_read_only_base_until_the_last_overlay_goes() {
        let root = std::env::temp_dir().join(format!("vmdesk-linked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        let dirs = Dirs::under(&root);
        let images = dirs.images.clone();
        std::fs::create_dir_all(&images).unwrap();
        let mut vm = VmDef::new("web", 64, 1);
        for (name, format) in [
            ("web.qcow2", DiskFormat::Qcow2),
            ("web-1.raw", DiskFormat::Raw),
        ] {
            let path = images.join(name);
            vmm::disk::create_image(&path, format.into(), 1 << 20, false).unwrap();
            write(&path, format, 4096, 0x11);
            vm.disks.push(DiskDef {
                path,
                format,
                size: Some(1 << 20),
                preallocated: false,
                bus: library::DiskBus::Virtio,
            });
        }
        lib.create(&vm).unwrap();

        // Running: refused, nothing moved.
        let mut child = crate::runtime::fake_vmm(&rt, "web");
        let e = clone_linked(&lib, &rt, &dirs, "web", "web2").unwrap_err();
        assert!(e.to_string().contains("'web' is running"), "{e}");
        let _ = child.kill();
        let _ = child.wait();
        rt.clean("web");
        assert_eq!(lib.get("web").unwrap(), vm);

        let (clone, _) = clone_linked(&lib, &rt, &dirs, "web", "web2").unwrap();
        let source = lib.get("web").unwrap();
        assert_eq!(lib.get("web2").unwrap(), clone);
        assert_eq!(source.disks[0].path, images.join("web.qcow2"));
        assert_eq!(source.disks[1].path, images.join("web-1.qcow2"));
        assert_eq!(source.disks[1].format, DiskFormat::Qcow2);
        assert_eq!(clone.disks[0].path, images.join("web2.qcow2"));
        assert_eq!(clone.disks[1].path, images.join("web2-1.qcow2"));
        assert_ne!(clone.mac, source.mac);
        let bases = [
            images.join("web.base1.qcow2"),
            images.join("web-1.base1.raw"),
        ];
        for (i, base) in bases.iter().enumerate() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(base).unwrap().permissions().mode();
            assert_eq!(mode & 0o222, 0, "{} is read-only", base.display());
            for d in [&source.disks[i], &clone.disks[i]] {
                assert_eq!(
                    Qcow2Image::backing_file(&d.path).unwrap().as_ref(),
                    Some(base)
                );
                assert_eq!(read(&d.path, 4096), [0x11; 512], "the base's data");
            }
        }
        // Writes stay in their own overlay.
        write(&source.disks[0].path, DiskFormat::Qcow2, 4096, 0x22);
        assert_eq!(read(&clone.disks[0].path, 4096), [0x11; 512]);
        write(&clone.disks[1].path, DiskFormat::Qcow2, 4096, 0x33);
        assert_eq!(read(&source.disks[1].path, 4096), [0x11; 512]);

        // A name taken: refused before anything moves.
        std::fs::write(images.join("web3.qcow2"), b"x").unwrap();
        let e = clone_linked(&lib, &rt, &dirs, "web", "web3").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(lib.get("web").unwrap(), source);
        assert!(!images.join("web.base2.qcow2").exists());

        // The source goes with its disks: the bases stay for the clone.
        let overlays: Vec<PathBuf> = source.disks.iter().map(|d| d.path.clone()).collect();
        let backings = backings_of(&overlays);
        lib.remove("web").unwrap();
        for p in &overlays {
            std::fs::remove_file(p).unwrap();
        }
        assert!(remove_unused_bases(&lib, backings).unwrap().is_empty());
        assert!(bases.iter().all(|b| b.exists()));
        assert_eq!(read(&clone.disks[0].path, 4096), [0x11; 512]);
        // Then the clone: nothing needs the bases any more.
        let overlays: Vec<PathBuf> = clone.disks.iter().map(|d| d.path.clone()).collect();
        let backings = backings_of(&overlays);
        lib.remove("web2").unwrap();
        for p in &overlays {
            std::fs::remove_file(p).unwrap();
        }
        let mut removed = remove_unused_bases(&lib, backings).unwrap();
        removed.sort();
        let mut want = bases.to_vec();
        want.sort();
        assert_eq!(removed, want);
        let _ = std::fs::remove_dir_all(&root);
    }
}
