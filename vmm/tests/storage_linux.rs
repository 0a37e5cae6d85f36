//! Linux drives our storage: the Debian cloud kernel boots straight into
//! `storage-initrd.img` (resources/scripts/test-assets.sh builds it from the same kernel
//! package: busybox, the storage modules in load order, an /init), which loads ata_piix,
//! sr_mod, isofs, virtio_pci and virtio_blk, checksums every file on the ISO through
//! /dev/sr0, makes an ext2 filesystem with one file on the virtio disk (/dev/vda), syncs and
//! powers off. The host then checks the checksums, `e2fsck` and the file in the image (raw,
//! and qcow2 through `qemu-img convert`, with `qemu-img check`).
//!
//! The guest tests need hardware-backed KVM (kvm_pvm cannot run a guest kernel) and skip
//! here with one tallied line. What can run anywhere does: the initrd's contents (every
//! module there, dependencies before the modules that need them, built for exactly the
//! kernel in vmlinuz, an /init busybox accepts) and the command line the guest test uses.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
const SAY: &str = "vmdesk-storage: ";
/// The modules the guest needs, each after everything it depends on.
const LOAD_BEFORE: &[(&str, &str)] = &[
    ("scsi_mod", "libata"),
    ("libata", "ata_piix"),
    ("scsi_mod", "sr_mod"),
    ("cdrom", "sr_mod"),
    ("cdrom", "isofs"),
    ("virtio_ring", "virtio_pci"),
    ("virtio", "virtio_pci"),
    ("virtio", "virtio_blk"),
];

/// vmdesk-vmm's arguments for the guest: direct kernel boot, the ISO on the IDE CD-ROM,
/// the disk on virtio-blk, COM1 to `serial`.
fn guest_args(
    kernel: &Path,
    initrd: &Path,
    iso: &Path,
    disk: &Path,
    format: &str,
    serial: &Path,
) -> Vec<String> {
    [
        "--memory",
        "256M",
        "--vnc",
        "none",
        "--kernel",
        &kernel.display().to_string(),
        "--initrd",
        &initrd.display().to_string(),
        "--cmdline",
        common::LINUX_CMDLINE,
        "--cdrom",
        &iso.display().to_string(),
        "--disk",
        &format!("{},format={format}", disk.display()),
        "--serial",
        &format!("file:{}", serial.display()),
    ]
    .map(str::to_string)
    .to_vec()
}

fn sha256(path: &Path) -> String {
    let out = common::run(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

#[test]
fn storage_initrd_holds_the_modules_in_load_order() {
    let test = "storage_initrd_holds_the_modules_in_load_order";
    let Some((kernel, initrd)) = common::linux_assets(test, "storage-initrd.img") else {
        return;
    };
    if common::tool_or_skip(test, "cpio").is_none() {
        return;
    }
    let dir = common::temp_dir("storage-initrd");
    common::unpack_initrd(&initrd, &dir);
    common::checked_module_order(&kernel, &dir, LOAD_BEFORE);
    // The /init busybox runs is valid shell, and it says what the guest test waits for.
    let init = common::checked_init(&dir);
    for want in ["/dev/sr0", "/dev/vda", "mke2fs", "hello.txt", "poweroff -f"] {
        assert!(init.contains(want), "init lacks {want}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_command_line() {
    let args = guest_args(
        Path::new("/a/vmlinuz"),
        Path::new("/a/initrd"),
        Path::new("/t/cd.iso"),
        Path::new("/t/disk.qcow2"),
        "qcow2",
        Path::new("/t/com1"),
    );
    let pair = |flag: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].as_str()
    };
    assert_eq!(pair("--kernel"), "/a/vmlinuz");
    assert_eq!(pair("--cdrom"), "/t/cd.iso");
    assert_eq!(pair("--disk"), "/t/disk.qcow2,format=qcow2");
    assert_eq!(pair("--serial"), "file:/t/com1");
    let cmdline = pair("--cmdline");
    assert!(cmdline.split(' ').any(|w| w == "console=ttyS0"));
    assert!(cmdline.split(' ').any(|w| w == "panic=-1"));
    // vmdesk-vmm itself accepts them (up to the missing files).
    use clap::Parser;
    let cli =
        vmm::config::Cli::try_parse_from(std::iter::once("vmdesk-vmm".to_string()).chain(args));
    assert!(cli.is_ok(), "{:?}", cli.err());
}

#[test]
fn linux_reads_the_cd_and_writes_a_filesystem() {
    let test = "linux_reads_the_cd_and_writes_a_filesystem";
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some((kernel, initrd)) = common::linux_assets(test, "storage-initrd.img") else {
        return;
    };
    let (Some(qemu_img), Some(debugfs), Some(e2fsck)) = (
        common::tool_or_skip(test, "qemu-img"),
        common::tool_or_skip(test, "debugfs"),
        common::tool_or_skip(test, "e2fsck"),
    ) else {
        return;
    };
    let dir = common::temp_dir("storage-linux");
    let root = dir.join("cdroot");
    std::fs::create_dir_all(&root).unwrap();
    let payload: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("payload.bin"), &payload).unwrap();
    let want_cd = format!(
        "{SAY}cd file payload.bin {}",
        sha256(&root.join("payload.bin"))
    );
    let iso = dir.join("cd.iso");
    if common::make_iso(test, &root, &iso, "VMDESKLINUX", None).is_none() {
        return;
    }

    for format in ["raw", "qcow2"] {
        let disk = dir.join(format!("disk.{format}"));
        vmm::disk::create_image(&disk, format.parse().unwrap(), 64 << 20, true).unwrap();
        let serial = dir.join(format!("com1-{format}.txt"));
        let args = guest_args(&kernel, &initrd, &iso, &disk, format, &serial);
        let mut child = Command::new(common::vmm_bin())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start vmdesk-vmm");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > TIMEOUT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let console = std::fs::read_to_string(&serial).unwrap_or_default();
        let Some(status) = status else {
            common::stop(&mut child);
            panic!("{format}: the guest did not power off in time:\n{console}");
        };
        assert_eq!(status.code(), Some(0), "{format}:\n{console}");
        let said: Vec<&str> = console
            .lines()
            .map(str::trim_end)
            .filter(|l| l.starts_with(SAY))
            .collect();
        assert!(said.contains(&want_cd.as_str()), "{format}: {said:#?}");
        assert!(said.contains(&"vmdesk-storage: disk written"), "{said:#?}");
        assert!(!said.iter().any(|l| l.contains("failed")), "{said:#?}");

        // The host's view of what the guest wrote.
        let raw = if format == "qcow2" {
            let out = common::run(Command::new(&qemu_img).arg("check").arg(&disk));
            assert!(out.contains("No errors were found"), "{out}");
            let raw = dir.join("from-qcow2.raw");
            common::run(
                Command::new(&qemu_img)
                    .args(["convert", "-f", "qcow2", "-O", "raw"])
                    .arg(&disk)
                    .arg(&raw),
            );
            raw
        } else {
            disk.clone()
        };
        common::run(Command::new(&e2fsck).arg("-fn").arg(&raw));
        let text = common::run(
            Command::new(&debugfs)
                .args(["-R", "cat /hello.txt"])
                .arg(&raw),
        );
        assert_eq!(text, "written by vmdesk's Linux guest\n", "{format}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
