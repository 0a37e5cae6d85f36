//! Skipping with one loud line: a test that needs KVM, hardware-backed KVM, an outside
//! tool or a built asset says why it cannot run here, and tallies what ran and what was
//! skipped in $VMDESK_KVM_TALLY for the test command's summary. Shared by the vmm tests
//! and, through `#[path]`, the app's (so it must not name a crate's binaries).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends `line` to the file the test command named in VMDESK_KVM_TALLY.
pub fn tally(line: &str) {
    if let Ok(path) = std::env::var("VMDESK_KVM_TALLY")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write per line: parallel tests append to the same file.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// Whether a KVM test can run here. If not, prints one loud line and tallies the skip.
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => {
            tally(&format!("ran {test}"));
            true
        }
        Err(e) => {
            let why = format!("/dev/kvm is not usable here ({e})");
            eprintln!("SKIP {test}: {why}");
            tally(&format!("skipped {test}: {why}"));
            false
        }
    }
}

/// Whether a test that needs hardware-backed KVM can run here; `what` says what kvm_pvm
/// cannot do for it.
pub fn hardware_kvm_or_skip(test: &str, what: &str) -> bool {
    if Path::new("/sys/module/kvm_pvm").exists() {
        let why = format!(
            "KVM here is kvm_pvm (software-assisted): {what}; this test runs on hardware-backed KVM"
        );
        eprintln!("SKIP {test}: {why}");
        tally(&format!("skipped {test}: {why}"));
        return false;
    }
    kvm_or_skip(test)
}

/// Whether an outside tool is present. Missing tools skip the test with one line,
/// unless VMDESK_REQUIRE_TOOLS=1 (the test command sets it after installing them).
pub fn tool_or_skip(test: &str, tool: &str) -> Option<PathBuf> {
    // The test command's venv (vncdotool) counts as installed even when not on PATH.
    let venv = std::env::var_os("VMDESK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"))
        .join("bin");
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(std::iter::once(venv))
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test}: {tool} is not installed (run resources/scripts/install-deps.sh test)");
        }
        eprintln!(
            "SKIP {test}: {tool} is not installed (resources/scripts/install-deps.sh test installs it)"
        );
    }
    found
}
