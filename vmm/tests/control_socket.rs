//! The control socket on a running VM: status, pause/resume, reset through the firmware,
//! errors as JSON, and quit ending the process with exit code 0.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn control_socket_drives_the_vm() {
    let test = "control_socket_drives_the_vm";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("control");
    let sock = dir.join("vm.sock");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "control",
        &[
            "--memory",
            "128M",
            "--cpus",
            "2",
            "--serial",
            "none",
            "--control",
            sock.to_str().unwrap(),
        ],
    );
    let mut c = common::ControlClient::connect(&sock);

    let s = c.call(r#"{"execute":"status"}"#);
    assert_eq!(s["return"]["status"], "running", "{s}");
    assert_eq!(s["return"]["memory"], 128 << 20);

    assert_eq!(
        c.call(r#"{"execute":"pause"}"#)["return"],
        serde_json::json!({})
    );
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["status"],
        "paused"
    );
    // Paused means the guest makes no progress: its log stops growing.
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default().len(),
        before,
        "guest ran while paused"
    );
    assert_eq!(
        c.call(r#"{"execute":"resume"}"#)["return"],
        serde_json::json!({})
    );
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["status"],
        "running"
    );

    // Errors are JSON and the VM goes on.
    assert_eq!(
        c.call(r#"{"execute":"fly"}"#)["error"]["class"],
        "CommandNotFound"
    );
    assert_eq!(c.call("garbage")["error"]["class"], "GenericError");
    assert_eq!(
        c.call(r#"{"execute":"eject"}"#)["error"]["class"],
        "DeviceNotFound"
    );

    // The screen as PNG: SeaBIOS's text mode is 720x400.
    let text = common::wait_for_log(
        &mut child,
        &log,
        "No bootable device.",
        Duration::from_secs(90),
    );
    assert!(text.contains("No bootable device."), "{text}");
    // Where each vCPU is, for finding hangs: SeaBIOS's boot CPU waits in its idle loop
    // after "No bootable device." (between HLTs or in one), the other has been in HLT
    // since POST counted it.
    let q = c.call(r#"{"execute":"query-vcpus"}"#);
    let cpus = q["return"].as_array().unwrap_or_else(|| panic!("{q}"));
    assert_eq!(cpus.len(), 2, "{q}");
    for (i, cpu) in cpus.iter().enumerate() {
        assert_eq!(cpu["cpu"], i, "{q}");
        assert!(
            cpu["rip"].as_str().is_some_and(|r| r.starts_with("0x")),
            "{q}"
        );
    }
    assert!(
        ["halted", "runnable"].contains(&cpus[0]["state"].as_str().unwrap_or("")),
        "{q}"
    );
    assert_eq!(cpus[1]["state"], "halted", "{q}");
    assert!(cpus[0]["exits"].as_u64() > Some(1000), "POST exits: {q}");
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["status"],
        "running",
        "query-vcpus leaves a running VM running"
    );
    let png_path = dir.join("screen.png");
    let req = format!(
        r#"{{"execute":"screendump","path":"{}"}}"#,
        png_path.display()
    );
    let shot = c.call(&req);
    assert_eq!(
        (
            shot["return"]["width"].as_u64(),
            shot["return"]["height"].as_u64()
        ),
        (Some(720), Some(400)),
        "{shot}"
    );
    let png = std::fs::read(&png_path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[16..24], &[0, 0, 2, 208, 0, 0, 1, 144], "IHDR 720x400");
    let bad = c.call(r#"{"execute":"screendump","path":"/nonexistent/dir/x.png"}"#);
    assert_eq!(bad["error"]["class"], "GenericError", "{bad}");

    // Reset: the firmware starts again.
    let text = common::wait_for_log(
        &mut child,
        &log,
        "No bootable device.",
        Duration::from_secs(90),
    );
    let banners = text.matches("SeaBIOS (version").count();
    assert_eq!(
        c.call(r#"{"execute":"reset"}"#)["return"],
        serde_json::json!({})
    );
    let start = Instant::now();
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("SeaBIOS (version")
        .count()
        <= banners
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no POST after reset"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A second client can talk at the same time.
    let mut c2 = common::ControlClient::connect(&sock);
    assert_eq!(
        c2.call(r#"{"execute":"status"}"#)["return"]["status"],
        "running"
    );

    assert_eq!(
        c.call(r#"{"execute":"quit"}"#)["return"],
        serde_json::json!({})
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "quit did not end the VMM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn control_socket_changes_cd_media() {
    let test = "control_socket_changes_cd_media";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("control-media");
    let (one, two) = (dir.join("one.iso"), dir.join("two.iso"));
    std::fs::write(&one, vec![1u8; 2048 * 16]).unwrap();
    std::fs::write(&two, vec![2u8; 2048 * 32]).unwrap();
    let sock = dir.join("vm.sock");
    let (mut child, _log) = common::spawn_vmm(
        &dir,
        "media",
        &[
            "--memory",
            "64M",
            "--serial",
            "none",
            "--vnc",
            "none",
            "--control",
            sock.to_str().unwrap(),
            "--cdrom",
            one.to_str().unwrap(),
        ],
    );
    let mut c = common::ControlClient::connect(&sock);
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["cdrom"],
        one.to_str().unwrap()
    );
    assert_eq!(
        c.call(r#"{"execute":"eject"}"#)["return"],
        serde_json::json!({})
    );
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["cdrom"],
        Value::Null
    );
    let again = c.call(r#"{"execute":"eject"}"#);
    assert!(
        again["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("no medium"),
        "{again}"
    );
    let missing = c.call(r#"{"execute":"change-media","path":"/nonexistent.iso"}"#);
    assert_eq!(missing["error"]["class"], "GenericError", "{missing}");
    let req = format!(r#"{{"execute":"change-media","path":"{}"}}"#, two.display());
    assert_eq!(c.call(&req)["return"], serde_json::json!({}));
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["cdrom"],
        two.to_str().unwrap()
    );
    // The new medium survives a guest reset (the machine is rebuilt from the updated config).
    assert_eq!(
        c.call(r#"{"execute":"reset"}"#)["return"],
        serde_json::json!({})
    );
    assert_eq!(
        c.call(r#"{"execute":"status"}"#)["return"]["cdrom"],
        two.to_str().unwrap()
    );
    assert_eq!(common::stop(&mut child).code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn control_socket_in_use_is_bad_input() {
    let test = "control_socket_in_use_is_bad_input";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("control-busy");
    let sock = dir.join("vm.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = std::process::Command::new(common::vmm_bin())
        .args(["--control", sock.to_str().unwrap(), "--serial", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Open file descriptors and threads of process `pid`.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let count = |d: String| std::fs::read_dir(d).map_or(0, |d| d.count());
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

/// Every reset builds the machine anew: the old one's virtio doorbell eventfds, their
/// threads and its KVM VM must go with it. 100 resets later the VMM holds as many file
/// descriptors and threads as after the first.
#[test]
fn a_hundred_resets_leak_no_descriptor_or_thread() {
    let test = "a_hundred_resets_leak_no_descriptor_or_thread";
    if !common::kvm_or_skip(test) || !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        return;
    }
    let dir = common::temp_dir("resets");
    let sock = dir.join("vm.sock");
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let (mut child, _log) = common::spawn_vmm(
        &dir,
        "resets",
        &[
            "--memory",
            "64M",
            "--serial",
            "none",
            "--disk",
            disk.to_str().unwrap(),
            "--control",
            sock.to_str().unwrap(),
        ],
    );
    let mut c = common::ControlClient::connect(&sock);
    let reset = |c: &mut common::ControlClient| {
        let r = c.call(r#"{"execute":"reset"}"#);
        assert_eq!(r["return"], serde_json::json!({}), "{r}");
    };
    // Counted once the machine after a reset is running (its threads started).
    let settled = |pid| {
        std::thread::sleep(Duration::from_millis(500));
        fds_and_threads(pid)
    };
    reset(&mut c);
    let first = settled(child.id());
    for _ in 0..100 {
        reset(&mut c);
    }
    let last = settled(child.id());
    assert_eq!(
        last, first,
        "(file descriptors, threads) after 101 resets vs after 1"
    );
    assert!(child.try_wait().unwrap().is_none(), "the VMM ended");
    assert_eq!(common::stop(&mut child).code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
