//! End to end: `vmdesk-vmm --kernel … --initrd … --cmdline …` boots a real Debian kernel
//! straight into its initramfs, and the kernel's own messages come out of COM1 on stdout.
//!
//! Needs hardware-backed KVM (kvm_intel / kvm_amd): under `kvm_pvm` guest kernels cannot
//! run, so the test skips with one loud line. It also skips when the kernel asset is
//! missing (`resources/scripts` fetches it into `target/assets/`; `VMDESK_ASSETS` points
//! elsewhere). With `VMDESK_KVM_TALLY` set, it appends `ran direct_boot` or
//! `skipped direct_boot: <reason>` to that file, so a test run can say what it covered.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NAME: &str = "direct_boot";
/// Both must appear: the first proves our entry state and zero page worked, the second
/// that the kernel found its memory map and unpacked our initrd.
const WANT: [&str; 2] = ["Linux version", "Run /init as init process"];
const TIMEOUT: Duration = Duration::from_secs(180);

fn tally(line: &str) {
    if let Some(path) = std::env::var_os("VMDESK_KVM_TALLY") {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        match f {
            Ok(mut f) => {
                let _ = writeln!(f, "{line}");
            }
            Err(e) => eprintln!("cannot append to {}: {e}", PathBuf::from(path).display()),
        }
    }
}

fn skip(reason: &str) {
    eprintln!("SKIP {NAME}: {reason}");
    tally(&format!("skipped {NAME}: {reason}"));
}

fn assets_dir() -> PathBuf {
    match std::env::var_os("VMDESK_ASSETS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("assets"),
    }
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

#[test]
fn direct_boot_reaches_the_initramfs() {
    if Path::new("/sys/module/kvm_pvm").exists() {
        skip(
            "KVM here is kvm_pvm (software-assisted): guest kernels cannot run; runs on hardware-backed KVM",
        );
        return;
    }
    if !Path::new("/dev/kvm").exists() {
        skip("no /dev/kvm on this host");
        return;
    }
    let dir = assets_dir();
    let Some(kernel) = first_existing(&dir, &["vmlinuz"]) else {
        skip(&format!(
            "kernel asset {} is missing (fetch it with the script under resources/scripts)",
            dir.join("vmlinuz").display()
        ));
        return;
    };
    let Some(initrd) = first_existing(&dir, &["initrd.img", "initrd"]) else {
        skip(&format!(
            "initrd asset {} is missing (fetch it with the script under resources/scripts)",
            dir.join("initrd.img").display()
        ));
        return;
    };

    let mut child = Command::new(env!("CARGO_BIN_EXE_vmdesk-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--cmdline")
        .arg("console=ttyS0 panic=-1 loglevel=7 rdinit=/bin/sh")
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

    // Stop the VMM we started (by its own handle), then collect what it said.
    let status = child.try_wait().ok().flatten();
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = reader.join();
    let log = err_reader.join().unwrap_or_default();

    let ok = seen.iter().all(|&s| s);
    if ok {
        tally(&format!("ran {NAME}"));
    }
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
}
