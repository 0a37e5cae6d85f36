//! The demo VM: a VM anyone can start on a fresh machine with no ISO, to try the whole path
//! (app, VMM, SeaBIOS, VGA, VNC, console) in one command (`vmdesk demo`).
//!
//! Its disk holds a small interactive boot program built from source at build time
//! (`app/demo/demo.S`, assembled by `app/build.rs`): it draws a colourful screen through
//! the VGA BIOS, echoes typed keys, follows the PS/2 mouse and powers off when the ACPI
//! power button is pressed. The definition is an ordinary library entry named
//! [`NAME`] (64 MiB, 1 vCPU, one raw disk in the images directory, no network), so every other
//! command (`console`, `shutdown`, `delete --delete-disks` ...) works on it as on any VM.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::library::{DiskDef, DiskFormat, Library, LibraryError, VmDef};
use crate::runtime::Runtime;

pub const NAME: &str = "demo";
pub const MEMORY_MIB: u64 = 64;
pub const CPUS: u32 = 1;
/// The disk's size: the program needs a few sectors; a MiB looks like a disk to anyone.
pub const DISK_SIZE: u64 = 1 << 20;
/// The disk's file name in the images directory.
pub const DISK_FILE: &str = "demo.raw";

/// The boot image: an MBR boot sector and the program after it, whole sectors.
pub static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo.bin"));

/// What every version of the demo's boot sector says; a file without it is not ours to
/// overwrite.
const MARK: &[u8] = b"vmdesk demo";

/// The demo's definition with its disk at `disk`.
pub fn definition(disk: PathBuf) -> VmDef {
    let mut def = VmDef::new(NAME, MEMORY_MIB, CPUS);
    // The boot program has no network driver: no card, and no passt to start for it.
    def.network = crate::library::NetMode::None;
    def.disks.push(DiskDef {
        path: disk,
        format: DiskFormat::Raw,
        size: Some(DISK_SIZE),
        preallocated: false,
        bus: crate::library::DiskBus::Virtio,
    });
    def
}

/// Why `def` is not the demo whose disk is `disk`, if it is not. Memory, vCPUs and the
/// VNC settings may have been edited; what it boots from may not.
fn not_the_demo(def: &VmDef, disk: &Path) -> Option<String> {
    if def.cdrom.is_some() {
        return Some("it has a CD-ROM".into());
    }
    if def.kernel.is_some() {
        return Some("it boots a kernel".into());
    }
    match def.disks.as_slice() {
        [d] if d.path == disk && d.format == DiskFormat::Raw => None,
        [d] => Some(format!("its disk is {}", d.path.display())),
        ds => Some(format!("it has {} disks", ds.len())),
    }
}

/// Whether the file at `disk` is a demo disk (of this or an older build).
fn is_demo_disk(disk: &Path) -> std::io::Result<bool> {
    let mut head = vec![0u8; 512];
    let mut f = std::fs::File::open(disk)?;
    let n = std::io::Read::read(&mut f, &mut head)?;
    Ok(head[..n].windows(MARK.len()).any(|w| w == MARK))
}

/// Writes the image to `disk` unless it holds it already: to a temp file in the same
/// directory, then renamed over, so a crash leaves the old disk or the new one.
fn write_disk(disk: &Path) -> anyhow::Result<()> {
    if let Ok(old) = std::fs::read(disk)
        && old.len() as u64 == DISK_SIZE
        && old.starts_with(IMAGE)
    {
        return Ok(());
    }
    let dir = disk.parent().context("the demo's disk has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{DISK_FILE}.tmp-{}", std::process::id()));
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(IMAGE)?;
        f.set_len(DISK_SIZE)?;
        f.sync_all()?;
        std::fs::rename(&tmp, disk)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("cannot write the demo's disk {}", disk.display()))
}

/// The demo's definition, created (with its disk in `images`) if the library has no VM
/// [`NAME`], or the existing one if that is the demo. A stopped demo gets this build's
/// image on its disk. Fails, touching nothing, when a different VM has the name or a file
/// that is not a demo disk sits where its disk goes.
pub fn define(lib: &Library, images: &Path, running: bool) -> anyhow::Result<VmDef> {
    let disk = images.join(DISK_FILE);
    match lib.get(NAME) {
        Ok(def) => {
            if let Some(why) = not_the_demo(&def, &disk) {
                bail!(
                    "a VM named '{NAME}' already exists and is not the demo ({why}): delete or rename it to make room for the demo"
                );
            }
            if !running {
                write_disk(&disk)?;
            }
            Ok(def)
        }
        Err(LibraryError::NotFound(_)) => {
            let existed = disk.exists();
            if existed && !is_demo_disk(&disk).unwrap_or(false) {
                bail!(
                    "'{NAME}': {} already exists and is not a demo disk (move it away to create the demo)",
                    disk.display()
                );
            }
            write_disk(&disk)?;
            let def = definition(disk.clone());
            if let Err(e) = lib.create(&def) {
                let _ = std::fs::remove_file(&disk);
                return Err(e).context(format!("cannot define the VM '{NAME}'"));
            }
            Ok(def)
        }
        Err(e) => Err(e).context(format!("'{NAME}'")),
    }
}

/// Gets the demo ready to start in the user's library and images directory: defined, and
/// its disk written unless it runs. Returns whether it must be started (false: it runs).
/// Shared by `vmdesk demo` and the window's Demo button.
pub fn prepare(lib: &Library, rt: &Runtime) -> anyhow::Result<(VmDef, bool)> {
    let running = rt.state(NAME).is_live();
    let def = define(lib, &crate::service::images_dir()?, running)?;
    Ok((def, !running))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dirs {
        root: PathBuf,
        lib: Library,
        images: PathBuf,
    }

    impl Dirs {
        fn new(tag: &str) -> Dirs {
            let root =
                std::env::temp_dir().join(format!("vmdesk-demo-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Dirs {
                lib: Library::at(root.join("vms")),
                images: root.join("images"),
                root,
            }
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn the_image_is_a_boot_sector_that_loads_the_rest() {
        assert_eq!(IMAGE.len() % 512, 0);
        assert!(IMAGE.len() >= 1024, "a boot sector and a program");
        assert_eq!(IMAGE[510..512], [0x55, 0xaa]);
        assert!(IMAGE[..512].windows(MARK.len()).any(|w| w == MARK));
        // The int 13h AH=42h packet: 16 bytes, the sectors after the first, to 0000:7E00,
        // from LBA 1.
        let sectors = (IMAGE.len() / 512 - 1) as u16;
        let mut dap = vec![0x10, 0];
        dap.extend_from_slice(&sectors.to_le_bytes());
        dap.extend_from_slice(&[0x00, 0x7e, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(
            IMAGE[..512].windows(dap.len()).any(|w| w == dap),
            "no disk address packet for {sectors} sectors in the boot sector"
        );
    }

    #[test]
    fn define_creates_the_demo_then_reuses_it() {
        let d = Dirs::new("reuse");
        let def = define(&d.lib, &d.images, false).unwrap();
        let disk = d.images.join(DISK_FILE);
        // The same but for the MAC address each new definition draws (and the demo,
        // without a network card, never uses).
        assert_eq!(
            def,
            VmDef {
                mac: def.mac,
                ..definition(disk.clone())
            }
        );
        assert_eq!(def.network, crate::library::NetMode::None);
        assert_eq!(d.lib.get(NAME).unwrap(), def);
        let bytes = std::fs::read(&disk).unwrap();
        assert_eq!(bytes.len() as u64, DISK_SIZE);
        assert!(bytes.starts_with(IMAGE));

        // Edited memory is still the demo; a stopped demo gets the image back.
        let mut edited = def.clone();
        edited.memory_mib = 128;
        d.lib.update(&edited).unwrap();
        std::fs::write(&disk, b"scribbled over").unwrap();
        assert_eq!(define(&d.lib, &d.images, true).unwrap(), edited);
        assert_eq!(
            std::fs::read(&disk).unwrap(),
            b"scribbled over",
            "running: untouched"
        );
        define(&d.lib, &d.images, false).unwrap();
        assert!(std::fs::read(&disk).unwrap().starts_with(IMAGE));
        // Nothing else was left in the images directory.
        let names: Vec<_> = std::fs::read_dir(&d.images)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [DISK_FILE]);
    }

    #[test]
    fn another_vm_named_demo_is_refused() {
        let d = Dirs::new("other");
        let mut other = VmDef::new(NAME, 512, 2);
        other.disks.push(DiskDef {
            path: d.root.join("mine.qcow2"),
            format: DiskFormat::Qcow2,
            size: None,
            preallocated: false,
            bus: crate::library::DiskBus::Virtio,
        });
        d.lib.create(&other).unwrap();
        let e = define(&d.lib, &d.images, false).unwrap_err().to_string();
        assert!(
            e.contains("'demo' already exists and is not the demo"),
            "{e}"
        );
        assert!(e.contains("mine.qcow2"), "{e}");
        assert!(!d.images.join(DISK_FILE).exists());
        assert_eq!(d.lib.get(NAME).unwrap(), other);
    }

    #[test]
    fn a_file_that_is_not_a_demo_disk_is_not_overwritten() {
        let d = Dirs::new("foreign");
        std::fs::create_dir_all(&d.images).unwrap();
        let disk = d.images.join(DISK_FILE);
        std::fs::write(&disk, b"someone's data").unwrap();
        let e = define(&d.lib, &d.images, false).unwrap_err().to_string();
        assert!(e.contains("is not a demo disk"), "{e}");
        assert_eq!(std::fs::read(&disk).unwrap(), b"someone's data");
        assert!(matches!(d.lib.get(NAME), Err(LibraryError::NotFound(_))));

        // An old demo disk left by `delete` without --delete-disks is taken over.
        let mut old = IMAGE[..512].to_vec();
        old.resize(4096, 0);
        std::fs::write(&disk, &old).unwrap();
        define(&d.lib, &d.images, false).unwrap();
        assert!(std::fs::read(&disk).unwrap().starts_with(IMAGE));
    }
}
