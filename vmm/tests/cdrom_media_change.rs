//! Eject and change media on a running VM, seen by the firmware: a real-mode program
//! (tests/guests/cdread.S, booted from an option ROM so the CD is only read, never booted
//! from) reads the CD's sector 16 through SeaBIOS's int 13h (its own ATAPI driver on our
//! IDE controller) about four times a second and prints the sector's checksum or the BIOS
//! status. The test swaps ISOs with `change-media` and takes the disc out with `eject` on
//! the control socket.
//!
//! What SeaBIOS does, read from its source: it caches no sectors and no medium state for a
//! CD it did not boot (an El Torito *emulated* drive would be another matter); each int 13h
//! read is a fresh ATAPI READ(10). Any failed packet command comes back as status 0Ch
//! (DISK_RET_EBADTRACK, from ata_atapi_process_op): SeaBIOS has no distinct "no medium"
//! code (its int 13h AH=46h even says so in a FIXME). So the checks are:
//! - after a change, the first read meets UNIT ATTENTION (06/28, medium changed) and fails
//!   with 0Ch exactly once; the next read returns the new disc's checksum;
//! - after an eject, every read fails with 0Ch (02/3A, no medium): several in a row, where
//!   a unit attention gives one;
//! - a disc inserted again is read again.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);
const PREFIX: &str = "vmdesk-guest cdread: ";

/// An ISO without a boot image whose primary volume descriptor (LBA 16) differs from the
/// other one's: another label, another file.
fn iso(test: &str, dir: &Path, label: &str) -> Option<(PathBuf, String)> {
    let root = dir.join(format!("root-{label}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join(format!("{label}.txt")), label.repeat(1000)).unwrap();
    let path = dir.join(format!("{label}.iso"));
    common::make_iso(test, &root, &path, label, None)?;
    let bytes = std::fs::read(&path).unwrap();
    let sum = bytes[16 * 2048..17 * 2048]
        .iter()
        .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    Some((path, format!("sum {sum:08X}")))
}

/// The program's result lines (without the prefix) from the log, in order.
fn results(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(PREFIX))
        .filter(|l| l.starts_with("sum ") || l.starts_with("error "))
        .map(str::to_owned)
        .collect()
}

/// Waits until the result lines after the first `from` satisfy `done`; returns them.
fn wait_results(
    child: &mut std::process::Child,
    log: &Path,
    from: usize,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let all = results(log);
        let new = all.get(from..).unwrap_or_default().to_vec();
        if done(&new) {
            return new;
        }
        if start.elapsed() > TIMEOUT {
            panic!("{what}: not seen in time; results since: {new:?}");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what}: vmdesk-vmm exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines from `from` on, up to and including the first that is `want`.
fn upto<'a>(lines: &'a [String], want: &str) -> Option<&'a [String]> {
    lines.iter().position(|l| l == want).map(|i| &lines[..=i])
}

#[test]
fn firmware_sees_changed_and_ejected_media() {
    let test = "firmware_sees_changed_and_ejected_media";
    if !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        assert_ne!(
            std::env::var("VMDESK_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "{test}: SeaBIOS is not installed"
        );
        eprintln!("SKIP {test}: SeaBIOS is not installed");
        return;
    }
    if !common::kvm_or_skip(test) {
        return;
    }
    let dir = common::temp_dir("cdrom-media");
    let (Some((iso_a, sum_a)), Some((iso_b, sum_b))) =
        (iso(test, &dir, "VMDESKA"), iso(test, &dir, "VMDESKB"))
    else {
        return;
    };
    assert_ne!(sum_a, sum_b);
    let Some(rom) = common::guests::option_rom(test, "cdread", &[]) else {
        return;
    };
    let sock = dir.join("vm.sock");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "media",
        &[
            "--memory",
            "128M",
            "--serial",
            "none",
            "--vnc",
            "none",
            "--cdrom",
            iso_a.to_str().unwrap(),
            "--option-rom",
            rom.to_str().unwrap(),
            "--control",
            sock.to_str().unwrap(),
        ],
    );
    let mut control = common::ControlClient::connect(&sock);

    // Disc A is read.
    wait_results(&mut child, &log, 0, "disc A's checksum", |r| {
        r.contains(&sum_a)
    });

    // Change to B: one unit attention, then B.
    let from = results(&log).len();
    let reply = control.call(&format!(
        r#"{{"execute":"change-media","path":{}}}"#,
        json!(iso_b)
    ));
    assert_eq!(reply, json!({"return": {}}), "change-media");
    let seen = wait_results(&mut child, &log, from, "disc B's checksum", |r| {
        upto(r, &sum_b).is_some()
    });
    let seen = upto(&seen, &sum_b).unwrap();
    // Reads already under way may still show A; then the medium-changed error, once.
    let after_a: Vec<&String> = seen.iter().skip_while(|l| **l == sum_a).collect();
    assert_eq!(
        after_a,
        [&"error 0C".to_string(), &sum_b],
        "after change-media: {seen:?}"
    );
    assert_eq!(
        control.call(r#"{"execute":"status"}"#)["return"]["cdrom"],
        json!(iso_b)
    );

    // Eject: no medium, read after read.
    let from = results(&log).len();
    assert_eq!(
        control.call(r#"{"execute":"eject"}"#),
        json!({"return": {}}),
        "eject"
    );
    let seen = wait_results(&mut child, &log, from, "three failed reads", |r| {
        r.iter().filter(|l| *l == "error 0C").count() >= 3
    });
    let after_b: Vec<&String> = seen.iter().skip_while(|l| **l == sum_b).collect();
    assert!(
        after_b.iter().all(|l| *l == "error 0C"),
        "after eject: {seen:?}"
    );
    assert_eq!(
        control.call(r#"{"execute":"status"}"#)["return"]["cdrom"],
        json!(null)
    );

    // Disc A again: read again.
    let from = results(&log).len();
    let reply = control.call(&format!(
        r#"{{"execute":"change-media","path":{}}}"#,
        json!(iso_a)
    ));
    assert_eq!(reply, json!({"return": {}}), "change-media again");
    let seen = wait_results(&mut child, &log, from, "disc A again", |r| {
        upto(r, &sum_a).is_some()
    });
    let seen = upto(&seen, &sum_a).unwrap();
    assert!(
        seen[..seen.len() - 1].iter().all(|l| l == "error 0C"),
        "{seen:?}"
    );

    assert_eq!(common::stop(&mut child).code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
