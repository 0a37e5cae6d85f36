//! Boot order through fw_cfg `bootorder` with real SeaBIOS: given a CD and a virtio disk,
//! the CD boots first by default and the disk when `--boot disk,cdrom` says so; a qcow2
//! disk boots its MBR through SeaBIOS's own virtio-blk driver and stays clean for
//! `qemu-img check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);
const DISK_MSG: &str = "VMDESK DISK MBR";
const CD_MSG: &str = "VMDESK CD BOOT";

struct Media {
    iso: PathBuf,
    raw: PathBuf,
    qcow2: PathBuf,
    qemu_img: PathBuf,
}

fn media(test: &str, dir: &Path) -> Option<Media> {
    let qemu_img = common::tool_or_skip(test, "qemu-img")?;
    let root = dir.join("cdroot");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(
        root.join("boot/boot.img"),
        common::boot_sector(CD_MSG, 2048),
    )
    .unwrap();
    let iso = dir.join("boot.iso");
    common::make_iso(test, &root, &iso, "VMDESKBOOT", Some("boot/boot.img"))?;
    let raw = dir.join("disk.raw");
    std::fs::write(&raw, common::boot_sector(DISK_MSG, 4 << 20)).unwrap();
    let qcow2 = dir.join("disk.qcow2");
    common::run(
        Command::new(&qemu_img)
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2),
    );
    Some(Media {
        iso,
        raw,
        qcow2,
        qemu_img,
    })
}

/// Boots with `args` until one of the two messages shows; returns the log.
fn boot(dir: &Path, name: &str, args: &[&str]) -> String {
    let mut all = vec!["--memory", "128M", "--serial", "none", "--vnc", "none"];
    all.extend_from_slice(args);
    let (mut child, log) = common::spawn_vmm(dir, name, &all);
    let start = std::time::Instant::now();
    let mut text = String::new();
    while start.elapsed() < TIMEOUT {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(DISK_MSG) || text.contains(CD_MSG) || text.contains("No bootable device") {
            break;
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{name}: vmdesk-vmm exited with {s}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(common::stop(&mut child).code(), Some(0));
    text
}

#[test]
fn cd_first_by_default_disk_first_when_asked() {
    let test = "cd_first_by_default_disk_first_when_asked";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("boot-order");
    let Some(m) = media(test, &dir) else { return };
    let (iso, raw) = (m.iso.to_str().unwrap(), m.raw.to_str().unwrap());

    let log = boot(&dir, "default", &["--cdrom", iso, "--disk", raw]);
    assert!(
        log.contains(CD_MSG) && !log.contains(DISK_MSG),
        "the CD should boot first:\n{log}"
    );
    assert!(
        log.contains("/pci@i0cf8/ide@1,1/drive@1/disk@0"),
        "bootorder names the CD:\n{log}"
    );

    let log = boot(
        &dir,
        "disk-first",
        &["--cdrom", iso, "--disk", raw, "--boot", "disk,cdrom"],
    );
    assert!(
        log.contains(DISK_MSG) && !log.contains(CD_MSG),
        "the disk should boot first:\n{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn qcow2_disk_boots_and_stays_clean() {
    let test = "qcow2_disk_boots_and_stays_clean";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("boot-qcow2");
    let Some(m) = media(test, &dir) else { return };
    let qcow2 = m.qcow2.to_str().unwrap();
    let log = boot(&dir, "qcow2", &["--disk", &format!("{qcow2},format=qcow2")]);
    assert!(
        log.contains(DISK_MSG),
        "the qcow2 disk's MBR did not run:\n{log}"
    );
    assert!(log.contains("found virtio-blk at 00:04.0"), "{log}");
    // Probed (no format=) works the same.
    let log = boot(&dir, "qcow2-probed", &["--disk", qcow2]);
    assert!(log.contains(DISK_MSG), "{log}");
    common::run(Command::new(&m.qemu_img).args(["check", qcow2]));
    let _ = std::fs::remove_dir_all(dir);
}

/// SeaBIOS's boot menu (Esc at its prompt, sent as a VNC key event) lists every device:
/// the CD, then each disk in slot order, as the boot order has them. Hardware-backed KVM
/// only: on kvm_pvm SeaBIOS's POST never takes the keyboard interrupt (see vnc_console.rs).
#[test]
fn boot_menu_lists_the_cd_and_every_disk() {
    let test = "boot_menu_lists_the_cd_and_every_disk";
    if !common::hardware_kvm_or_nested(test, "SeaBIOS's POST never takes a keyboard interrupt")
        || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists()
    {
        return;
    }
    let dir = common::temp_dir("boot-menu");
    let Some(m) = media(test, &dir) else { return };
    let raw = format!("{},format=raw", m.raw.display());
    let qcow2 = format!("{},format=qcow2", m.qcow2.display());
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "menu",
        &[
            "--memory",
            "128M",
            "--serial",
            "none",
            "--vnc",
            "127.0.0.1:auto",
            "--boot-menu",
            "--cdrom",
            m.iso.to_str().unwrap(),
            "--disk",
            &raw,
            "--disk",
            &qcow2,
        ],
    );
    let port = common::vnc_port(&mut child);
    let text = common::open_boot_menu(&mut child, &log, port, TIMEOUT);
    let menu: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("Select boot device"))
        .filter(|l| l.len() > 3 && l.as_bytes()[1] == b'.' && l.as_bytes()[2] == b' ')
        .collect();
    assert_eq!(
        menu,
        [
            // SeaBIOS 1.16 reads the CD's volume label (our ISO's) into its entry.
            "1. DVD/CD [ata1-0: vmdesk DVD-ROM ATAPI-4 DVD/CD] (VMDESKBOOT)",
            "2. Virtio disk PCI:00:04.0",
            "3. Virtio disk PCI:00:05.0",
        ],
        "{text}"
    );
    assert_eq!(common::stop(&mut child).code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
