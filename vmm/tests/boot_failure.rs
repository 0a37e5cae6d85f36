//! A machine with nothing to boot says so: SeaBIOS, given an empty disk and an ISO made
//! without an El Torito boot image (`--boot disk,cdrom`, the app's order), tries both and
//! halts at "No bootable device."; the VMM reads that from the firmware's log, and its
//! control socket's `status` reports `boot` failed with each device's reason, and its
//! stderr (the app's VM log) has one warning line saying the same. A bootable ISO put in
//! with `change-media` and a `reset` boot, and the failure is gone.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);
const CD_MSG: &str = "VMDESK CD BOOT";

/// Polls `status` until its `boot.state` is `want`; returns the `boot` object.
fn wait_boot(
    child: &mut std::process::Child,
    ctl: &mut common::ControlClient,
    want: &str,
) -> Value {
    let start = Instant::now();
    loop {
        let v = ctl.call(r#"{"execute":"status"}"#);
        let boot = v["return"]["boot"].clone();
        if boot["state"] == want {
            return boot;
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("vmdesk-vmm exited with {s}; last boot status {boot}");
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "boot state {want:?} not reached in {TIMEOUT:?}: {boot}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_data_cd_and_an_empty_disk_report_no_bootable_device() {
    let test = "a_data_cd_and_an_empty_disk_report_no_bootable_device";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("boot-fail");
    let root = dir.join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("readme.txt"), "just data\n").unwrap();
    let data_iso = dir.join("data.iso");
    let Some(()) = common::make_iso(test, &root, &data_iso, "DATA", None) else {
        return;
    };
    let boot_root = dir.join("bootroot");
    std::fs::create_dir_all(boot_root.join("boot")).unwrap();
    std::fs::write(
        boot_root.join("boot/boot.img"),
        common::boot_sector(CD_MSG, 2048),
    )
    .unwrap();
    let boot_iso = dir.join("boot.iso");
    common::make_iso(test, &boot_root, &boot_iso, "BOOT", Some("boot/boot.img")).unwrap();
    let disk = dir.join("empty.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();

    let sock = dir.join("ctl.sock");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "fail",
        &[
            "--memory",
            "128M",
            "--serial",
            "none",
            "--vnc",
            "none",
            "--control",
            sock.to_str().unwrap(),
            "--cdrom",
            data_iso.to_str().unwrap(),
            "--disk",
            &format!("{},format=raw", disk.display()),
            "--boot",
            "disk,cdrom",
        ],
    );
    let mut ctl = common::ControlClient::connect(&sock);
    let boot = wait_boot(&mut child, &mut ctl, "failed");
    let firmware_log = std::fs::read_to_string(&log).unwrap_or_default();
    let msg = boot["message"].as_str().unwrap_or_default().to_string();
    let (iso_s, disk_s) = (data_iso.display().to_string(), disk.display().to_string());
    assert_eq!(
        msg,
        format!(
            "No bootable device: the disk {disk_s} is empty (no boot signature: nothing is \
             installed on it); the CD {iso_s} is not bootable (no El Torito boot record: a \
             data disc, or an ISO made without a boot image)"
        ),
        "{boot}\n{firmware_log}"
    );
    let tried: Vec<(&str, &str)> = boot["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["device"].as_str().unwrap(),
                t["path"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [("disk", disk_s.as_str()), ("cdrom", iso_s.as_str())],
        "{boot}"
    );
    // The firmware's log is still all there, unchanged by the reading.
    for line in [
        "Booting from Hard Disk...",
        "Boot failed: not a bootable disk",
        "Booting from DVD/CD...",
        "Boot failed: Could not read from CDROM (code 0004)",
        "No bootable device.",
    ] {
        assert!(
            firmware_log.lines().any(|l| l == line),
            "{line:?}:\n{firmware_log}"
        );
    }

    // The way out: a bootable ISO and the reset button. The failure goes with the reset.
    let v = ctl.call(&format!(
        r#"{{"execute":"change-media","path":"{}"}}"#,
        boot_iso.display()
    ));
    assert!(v.get("return").is_some(), "{v}");
    // Still the failure as it was, naming the ISO that failed, not the new one.
    let v = ctl.call(r#"{"execute":"status"}"#);
    assert_eq!(v["return"]["boot"]["message"], msg.as_str(), "{v}");
    let v = ctl.call(r#"{"execute":"reset"}"#);
    assert!(v.get("return").is_some(), "{v}");
    let boot = wait_boot(&mut child, &mut ctl, "booted");
    assert!(boot.get("message").is_none(), "{boot}");
    assert_eq!(boot["tried"][1]["device"], "cdrom", "{boot}");
    assert_eq!(boot["tried"][1]["error"], Value::Null, "{boot}");
    let text = common::wait_for_log(&mut child, &log, CD_MSG, TIMEOUT);
    assert!(text.contains(CD_MSG), "{text}");

    assert_eq!(common::stop(&mut child).code(), Some(0));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("No bootable device"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{stderr}");
    assert!(warnings[0].ends_with(&msg), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
