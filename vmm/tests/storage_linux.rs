//! Linux drives our storage: the Debian cloud kernel boots straight into
//! `storage-initrd.img` (resources/scripts/test-assets.sh builds it from the same kernel
//! package: busybox, the storage modules in load order, an /init), which loads ata_piix,
//! sr_mod, isofs, virtio_pci and virtio_blk, checksums every file on the ISO through
//! /dev/sr0, makes an ext2 filesystem with one file on the virtio disk (/dev/vda), syncs and
//! powers off. The host then checks the checksums, `e2fsck` and the file in the image (raw,
//! and qcow2 through `qemu-img convert`, with `qemu-img check`).
//!
//! With `vmdesk.verify=256` the same initrd lists the virtio interrupts instead and writes,
//! rereads and checksums 256 MiB through ext2: Linux's virtio_blk and virtio_net bind
//! with an MSI-X vector per queue, with 1 and 4 vCPUs.
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
    ("virtio", "virtio_net"),
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

/// The lines the guest's /init said on COM1.
fn said(console: &str) -> Vec<&str> {
    console
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with(SAY))
        .collect()
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
fn storage_bench_initrd_is_the_storage_guest_with_a_working_fio() {
    let test = "storage_bench_initrd_is_the_storage_guest_with_a_working_fio";
    let Some((kernel, initrd)) = common::linux_assets(test, "storage-initrd.img") else {
        return;
    };
    let Some(bench) = common::asset_or_skip(test, "storage-bench-initrd.img") else {
        return;
    };
    if common::tool_or_skip(test, "cpio").is_none() {
        return;
    }
    let dir = common::temp_dir("storage-bench-initrd");
    let (plain, with_fio) = (dir.join("plain"), dir.join("bench"));
    common::unpack_initrd(&initrd, &plain);
    common::unpack_initrd(&bench, &with_fio);
    common::checked_module_order(&kernel, &with_fio, LOAD_BEFORE);
    let init = common::checked_init(&with_fio);
    assert_eq!(
        init,
        common::checked_init(&plain),
        "both initrds run one /init"
    );
    // The bench mode as vmm/benches/virtio_blk_guest.rs reads it.
    for want in [
        "vmdesk.bench=1",
        "vmdesk.bench_secs=",
        "/usr/bin/fio --name=",
        "--direct=1 --ioengine=libaio",
        "--output-format=terse --terse-version=3",
        "bench \"start $job\"",
        "bench \"end $job\"",
        "vmdesk-bench: result %s kib=%s ms=%s iops=%s err=%s",
    ] {
        assert!(init.contains(want), "init lacks {want}");
    }
    // fio runs with the initrd's own loader and libraries alone.
    let version = common::version_with_initrd_libraries(&with_fio, "usr/bin/fio");
    assert!(version.starts_with("fio-3."), "{version}");
    assert!(
        !plain.join("usr/bin/fio").exists(),
        "fio in storage-initrd.img"
    );
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
        let said = said(&console);
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

/// The virtio lines of the guest's /proc/interrupts: (interrupt name, whether MSI).
fn virtio_interrupts(said: &[&str]) -> Vec<(String, bool)> {
    said.iter()
        .filter_map(|l| l.strip_prefix("vmdesk-storage: irq "))
        .map(|l| {
            let name = l.split_whitespace().last().unwrap_or_default().to_owned();
            (name, l.contains("MSI"))
        })
        .collect()
}

/// Linux's virtio_blk and virtio_net bind with MSI-X, a vector per queue and one for
/// configuration changes (as under QEMU), and 256 MiB written through ext2 read back
/// intact after the page cache is dropped, with 1 and 4 vCPUs. The disk I/O then runs on
/// the device's doorbell and I/O threads and completes by message: the whole fast path.
/// Writeback and readahead queue many requests at once, and the VMM's exit line must show
/// that several were inside the image at the same moment.
#[test]
fn linux_binds_virtio_with_msix_and_256_mib_read_back_match() {
    let test = "linux_binds_virtio_with_msix_and_256_mib_read_back_match";
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some((kernel, initrd)) = common::linux_assets(test, "storage-initrd.img") else {
        return;
    };
    let Some(e2fsck) = common::tool_or_skip(test, "e2fsck") else {
        return;
    };
    if common::net::host_network_or_skip(test).is_none() {
        return;
    }
    let dir = common::temp_dir("storage-msix");
    for cpus in [1, 4] {
        let disk = dir.join(format!("disk-{cpus}.raw"));
        vmm::disk::create_image(&disk, "raw".parse().unwrap(), 512 << 20, true).unwrap();
        let serial = dir.join(format!("com1-{cpus}.txt"));
        let log = dir.join(format!("vmm-{cpus}.log"));
        let mut child = Command::new(common::vmm_bin())
            .args(["--memory", "512M", "--cpus", &cpus.to_string()])
            .args(["--vnc", "none", "--net", "user"])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args([
                "--cmdline",
                &format!("{} vmdesk.verify=256", common::LINUX_CMDLINE),
            ])
            .arg("--disk")
            .arg(format!("{},format=raw", disk.display()))
            .arg("--serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vmdesk-vmm");
        let status = common::wait_exit(&mut child, Duration::from_secs(300));
        let console = std::fs::read_to_string(&serial).unwrap_or_default();
        let vmm_log = std::fs::read_to_string(&log).unwrap_or_default();
        let Some(status) = status else {
            common::stop(&mut child);
            panic!("{cpus} vCPUs: the guest did not power off in time:\n{console}");
        };
        assert_eq!(status.code(), Some(0), "{cpus} vCPUs:\n{console}");
        let said = said(&console);
        assert!(
            said.contains(&format!("{SAY}cpus {cpus}").as_str()),
            "{said:#?}"
        );

        let irqs = virtio_interrupts(&said);
        let names: Vec<&str> = irqs.iter().map(|(n, _)| n.as_str()).collect();
        for queue in ["-req.0", "-input.0", "-output.0"] {
            assert_eq!(
                names.iter().filter(|n| n.ends_with(queue)).count(),
                1,
                "{cpus} vCPUs: one vector for {queue}: {said:#?}"
            );
        }
        assert!(
            names.iter().filter(|n| n.ends_with("-config")).count() >= 2,
            "{cpus} vCPUs: a configuration vector per device: {said:#?}"
        );
        assert!(
            irqs.iter().all(|(_, msi)| *msi),
            "{cpus} vCPUs: a virtio interrupt that is not MSI: {said:#?}"
        );

        let verify = said
            .iter()
            .find_map(|l| l.strip_prefix("vmdesk-storage: verify "))
            .unwrap_or_else(|| panic!("{cpus} vCPUs: no verify line: {said:#?}"));
        let words: Vec<&str> = verify.split_whitespace().collect();
        assert_eq!(words.len(), 6, "{verify}");
        assert_eq!(words[1], (256u64 << 20).to_string(), "{verify}");
        assert_eq!(words[3].len(), 64, "{verify}");
        assert_eq!(
            words[3], words[5],
            "{cpus} vCPUs: read back differs: {verify}"
        );
        common::run(Command::new(&e2fsck).arg("-fn").arg(&disk));

        // "vmdesk-vmm: disk 0 PATH: read … up to N in flight at once"
        let most: u64 = vmm_log
            .lines()
            .find(|l| l.starts_with("vmdesk-vmm: disk 0 "))
            .and_then(|l| l.rsplit_once("up to "))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{cpus} vCPUs: no disk line from the VMM:\n{vmm_log}"));
        assert!(
            most >= 2,
            "{cpus} vCPUs: never two requests in the image at once:\n{vmm_log}"
        );
        eprintln!("{cpus} vCPUs: up to {most} disk requests in flight at once");
    }
    let _ = std::fs::remove_dir_all(dir);
}
