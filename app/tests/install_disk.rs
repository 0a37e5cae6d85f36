//! Install to a disk and boot from it, as a person does with `vmdesk` (issue 14, item 2).
//!
//! The installer CD is made here: Debian's isolinux boots the cloud kernel with
//! `install-initrd.img` (resources/scripts/test-assets.sh: busybox, the disk modules and
//! Debian's extlinux), whose /init partitions the VM's first disk with fdisk, makes an ext2
//! filesystem, copies the CD's kernel and initrd to it, installs extlinux there and its
//! MBR code in the first sector, and powers off. Then the VM starts again and must boot
//! from its disk: SeaBIOS reads the MBR, which loads extlinux's boot sector from the
//! active partition, which loads the kernel and initrd through the BIOS; the installed
//! system mounts its filesystem and says what the installer left there. On the host,
//! `e2fsck -fn` must find the filesystem clean.
//!
//! Each VM is made and run with `vmdesk` only (create, start, eject, list), in four
//! variants, one after another in one nested host:
//! - **raw** and **qcow2** virtio disks: after the install, `vmdesk eject` takes the CD
//!   out of the definition and the VM boots without it;
//! - **ide**: a raw disk on the IDE controller (`--disk …,bus=ide`: /dev/sda, and SeaBIOS's
//!   ATA driver behind the boot loader's BIOS reads); the CD stays in, and the boot order
//!   vmdesk gives a VM with a CD and a disk (disk first, SeaBIOS going on to the CD while
//!   the disk has no boot signature) must boot the installed disk;
//! - **tiny**: a 16 MiB disk, too small: the installer says so in one line, powers off, and
//!   the disk is left as it was.
//!
//! A guest kernel needs hardware-backed KVM: on a kvm_pvm host the test runs in the nested
//! test host (`common::hardware_kvm_or_nested`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, ensure_vmm, text};

const SAY: &str = "vmdesk-install: ";
const INITRD: &str = "install-initrd.img";
const MEMORY: &str = "256M";
/// One run of a VM to its power-off. An install took 50-65 s in the nested host, a boot
/// from the IDE disk 95 s (SeaBIOS reads the 17 MB of kernel and initrd by PIO).
/// Generous: a slow run is no failure here.
const RUN_TIMEOUT: Duration = Duration::from_secs(400);

struct Variant {
    name: &'static str,
    disk: &'static str,
    /// `vmdesk eject` before the boot from the disk (else the CD stays in).
    eject: bool,
    /// The installer must refuse the disk as too small.
    too_small: bool,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "inst-raw",
        disk: "size=64M,format=raw",
        eject: true,
        too_small: false,
    },
    Variant {
        name: "inst-qcow2",
        disk: "size=64M,format=qcow2",
        eject: true,
        too_small: false,
    },
    Variant {
        name: "inst-ide",
        disk: "size=64M,format=raw,bus=ide",
        eject: false,
        too_small: false,
    },
    Variant {
        name: "inst-tiny",
        disk: "size=16M,format=raw",
        eject: false,
        too_small: true,
    },
];

/// The VM's state as `vmdesk list` says it.
fn state(env: &Env, name: &str) -> String {
    env.ok(&["list"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("absent")
        .to_string()
}

/// Starts the VM with `vmdesk start` and waits until it has powered off (its supervisor's
/// exit record, then `vmdesk list` saying stopped). Returns its COM1 and its log.
fn run_to_power_off(env: &Env, name: &str) -> (String, String) {
    let exit = env.run_dir().join(format!("{name}.exit"));
    env.ok(&["start", name]);
    let start = Instant::now();
    while !exit.exists() {
        if start.elapsed() > RUN_TIMEOUT {
            let _ = env.vmdesk(&["destroy", name]);
            panic!(
                "'{name}' did not power off within {RUN_TIMEOUT:?}; COM1:\n{}",
                com1(env, name)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(env.run_dir().join(format!("{name}.log"))).unwrap();
    assert_eq!(
        std::fs::read_to_string(&exit).unwrap().trim(),
        "exit 0",
        "'{name}' did not power off cleanly; its log:\n{log}\nCOM1:\n{}",
        com1(env, name)
    );
    assert_eq!(state(env, name), "stopped");
    eprintln!("{name}: ran {:.1} s", start.elapsed().as_secs_f64());
    (com1(env, name), log)
}

fn com1(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.run_dir().join(format!("{name}.serial"))).unwrap_or_default()
}

/// What the guest said (its lines after "vmdesk-install: ").
fn said(com1: &str) -> Vec<&str> {
    com1.lines()
        .filter_map(|l| l.trim_end().strip_prefix(SAY))
        .collect()
}

/// The bytes the VMM's exit line says disk 0 got written.
fn bytes_written(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with("vmdesk-vmm: disk 0 "))
        .unwrap_or_else(|| panic!("no disk line in the VMM's log:\n{log}"));
    let n = line.split(", wrote ").nth(1).expect("wrote N bytes");
    n.split_whitespace().next().unwrap().parse().unwrap()
}

/// Checks the installed disk's MBR and copies its first partition out of the image (raw or
/// qcow2, read through vmdesk's own image code) into `out`.
fn first_partition(image: &Path, out: &Path) {
    let disk = vmm::disk::open_image(image, None, true).unwrap();
    let mut mbr = [0u8; 512];
    disk.read_at(0, &mut mbr).unwrap();
    assert_eq!(mbr[510..], [0x55, 0xaa], "no MBR signature");
    assert!(mbr[..440].iter().any(|&b| b != 0), "no MBR code");
    let entry = &mbr[446..462];
    assert_eq!(entry[0], 0x80, "partition 1 is not the active one");
    assert_eq!(entry[4], 0x83, "partition 1 is not a Linux one");
    let lba = u64::from(u32::from_le_bytes(entry[8..12].try_into().unwrap()));
    let sectors = u64::from(u32::from_le_bytes(entry[12..16].try_into().unwrap()));
    assert_eq!(lba, 2048, "partition 1 does not start at 1 MiB");
    let mut part = vec![0u8; (sectors * 512) as usize];
    disk.read_at(lba * 512, &mut part).unwrap();
    std::fs::write(out, part).unwrap();
}

/// One variant, start to end; returns a line for the test's summary.
fn install_and_boot(env: &Env, iso: &Path, v: &Variant, e2fsck: &Path) -> String {
    let name = v.name;
    env.ok(&[
        "create",
        "--name",
        name,
        "--memory",
        MEMORY,
        "--vnc",
        "none",
        // The installer needs no network, and passt cannot run in the nested host.
        "--network",
        "none",
        "--cdrom",
        iso.to_str().unwrap(),
        "--disk",
        v.disk,
    ]);
    let image: PathBuf = std::fs::read_dir(env.images_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_stem().is_some_and(|s| s == name))
        .expect("the VM's new disk image");

    // The install: the empty disk does not boot, SeaBIOS goes on to the CD.
    let (console, log) = run_to_power_off(env, name);
    assert!(
        console.contains("ISOLINUX"),
        "{name}: not booted from the CD:\n{console}"
    );
    let dev = if v.disk.contains("bus=ide") {
        "sda"
    } else {
        "vda"
    };
    if v.too_small {
        let need = said(&console)
            .into_iter()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "failed: disk /dev/{dev} is 16 MiB; the system needs "
                ))
            })
            .unwrap_or_else(|| panic!("{name}: no 'too small' message:\n{console}"));
        // Nothing was written: the image reads back as zeroes.
        let disk = vmm::disk::open_image(&image, None, true).unwrap();
        let mut all = vec![0u8; 16 << 20];
        disk.read_at(0, &mut all).unwrap();
        assert!(all.iter().all(|&b| b == 0), "{name}: the disk was written");
        return format!("{name}: refused, the system needs {need}");
    }
    assert_eq!(
        said(&console),
        [
            format!("installing to /dev/{dev} (64 MiB)").as_str(),
            "installed"
        ],
        "{name}: COM1:\n{console}"
    );
    let written = bytes_written(&log);
    // The kernel and initrd at least.
    assert!(written > 16 << 20, "{name}: only {written} bytes written");

    if v.eject {
        let out = env.ok(&["eject", name]);
        assert!(out.contains("ejected the CD of"), "{out}");
        let toml = std::fs::read_to_string(env.vms_dir().join(format!("{name}.toml"))).unwrap();
        assert!(!toml.contains("cdrom"), "{toml}");
    }

    // The installed system, booted from the disk by SeaBIOS and extlinux.
    let (console, _) = run_to_power_off(env, name);
    assert_eq!(
        said(&console),
        [format!("booted from disk: installed on {dev} by vmdesk's installer").as_str()],
        "{name}: COM1:\n{console}"
    );
    // extlinux's banner is SYSLINUX's ("SYSLINUX 6.04 …"); the CD's says ISOLINUX.
    assert!(
        console.contains("SYSLINUX") && !console.contains("ISOLINUX"),
        "{name}: not booted by extlinux from the disk:\n{console}"
    );

    // The filesystem the guest made and used is clean to the host's e2fsck.
    let part = env.root.join(format!("{name}.part"));
    first_partition(&image, &part);
    let o = std::process::Command::new(e2fsck)
        .arg("-fn")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name}: e2fsck -fn found problems:\n{}",
        text(&o)
    );
    let _ = std::fs::remove_file(&part);
    format!(
        "{name}: installed ({written} bytes written), booted from the disk{}, e2fsck clean",
        if v.eject {
            " after vmdesk eject"
        } else {
            " with the CD still in"
        }
    )
}

#[test]
fn an_installer_cd_installs_to_raw_qcow2_and_ide_disks_that_then_boot() {
    let test = "an_installer_cd_installs_to_raw_qcow2_and_ide_disks_that_then_boot";
    // Here, before a nested run, which finds it built.
    ensure_vmm();
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let (Some((kernel, initrd)), Some(e2fsck)) = (
        common::linux_assets(test, INITRD),
        common::tool_or_skip(test, "e2fsck"),
    ) else {
        return;
    };
    let env = Env::new("inst");
    let append = format!("{} vmdesk.mode=install", common::LINUX_CMDLINE);
    let Some(iso) = common::isolinux_cd(test, &env.root, "installer", &kernel, &initrd, &append)
    else {
        return;
    };
    // One after another: side by side, four VMs on the nested host's two CPUs took longer
    // than the sum (630 s against about 400 s).
    let start = Instant::now();
    for v in VARIANTS {
        let line = install_and_boot(&env, &iso, v, &e2fsck);
        eprintln!("{test}: {line}");
    }
    eprintln!(
        "{test}: {} variants in {:.1} s",
        VARIANTS.len(),
        start.elapsed().as_secs_f64()
    );
}
