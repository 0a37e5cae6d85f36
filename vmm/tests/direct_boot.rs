//! End to end: `vmdesk-vmm --kernel … --initrd … --cmdline …` boots a real Debian kernel
//! straight into its initramfs, and the kernel's own messages come out of COM1 on stdout.
//!
//! Needs hardware-backed KVM (kvm_intel / kvm_amd): under `kvm_pvm` guest kernels cannot
//! run, so there the test runs in the nested test host (`common::hardware_kvm_or_nested`).
//! It skips when the kernel asset is missing (`resources/scripts/test-assets.sh` fetches it
//! into `target/assets/`; `VMDESK_ASSETS` points elsewhere).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NAME: &str = "direct_boot";
/// All must appear: the first proves our entry state and zero page worked, the second
/// that the kernel found its memory map and unpacked our initrd, the third that /init
/// (busybox) ran; it then powers off, which must end the VMM with exit 0.
const WANT: [&str; 3] = [
    "Linux version",
    "Run /init as init process",
    "vmdesk-initrd: up",
];
const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn direct_boot_reaches_the_initramfs() {
    if !common::hardware_kvm_or_nested(NAME, "guest kernels cannot run") {
        return;
    }
    let Some((kernel, initrd)) = common::linux_assets(NAME, "initrd.img") else {
        return;
    };

    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--cmdline")
        .arg("console=ttyS0 panic=-1 loglevel=7")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmdesk-vmm");

    // Serial (stdout) and the VMM's log (stderr) are read on their own threads so a full
    // pipe never stalls the guest.
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let tx_out = tx.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx_out.send(line).is_err() {
                break;
            }
        }
    });
    let err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            log.push(line);
        }
        log
    });
    drop(tx);

    let start = Instant::now();
    let mut seen = [false; WANT.len()];
    let mut transcript = Vec::new();
    while !seen.iter().all(|&s| s) {
        let left = TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                for (i, w) in WANT.iter().enumerate() {
                    seen[i] |= line.contains(w);
                }
                transcript.push(line);
            }
            // Timed out, or the VMM exited and closed stdout.
            Err(_) => break,
        }
    }

    // /init powers off right after its line: the VMM should end by itself, with 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while seen.iter().all(|&s| s) && Instant::now() < deadline {
        status = child.try_wait().ok().flatten();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stop the VMM we started (by its own handle) if it is still there, then collect
    // what it said.
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = reader.join();
    let log = err_reader.join().unwrap_or_default();

    let ok = seen.iter().all(|&s| s);
    assert!(
        ok,
        "did not see {:?} on serial within {:?} (vmm exit: {status:?})\n--- serial ---\n{}\n--- vmm log ---\n{}",
        WANT.iter()
            .zip(seen)
            .filter(|(_, s)| !s)
            .map(|(w, _)| *w)
            .collect::<Vec<_>>(),
        TIMEOUT,
        transcript.join("\n"),
        log.join("\n")
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the guest powered off but the VMM did not end with exit 0 within 30 s ({status:?})\n--- vmm log ---\n{}",
        log.join("\n")
    );
}
