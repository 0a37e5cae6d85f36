//! Skipping with one loud line: a test that needs KVM, an outside tool or a built asset
//! says why it cannot run here (a test that needs hardware-backed KVM runs in the nested
//! test host instead), and tallies what ran and what was
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

/// Whether a test that needs hardware-backed KVM runs here, in this process; `what` says
/// what kvm_pvm cannot do for it. On a host whose KVM is kvm_pvm the test runs in the nested
/// test host instead (resources/scripts/nested-host.sh: QEMU's TCG emulating AMD SVM, with
/// kvm_amd inside), as this same test binary with this one test selected, and this returns
/// false once it has passed there; it panics with the nested run's output when it failed.
/// Only where the nested host cannot be had (no QEMU, no assets) does the test skip, with
/// one line, and not even then under the test command (VMDESK_REQUIRE_TOOLS=1).
pub fn hardware_kvm_or_nested(test: &str, what: &str) -> bool {
    if !Path::new("/sys/module/kvm_pvm").exists() {
        return kvm_or_skip(test);
    }
    let Some(nested) = nested_host_or_skip(test, what) else {
        return false;
    };
    run_nested(test, &nested);
    false
}

/// The nested host's script when it can run here; otherwise one skip line (or a panic
/// under the test command, which installed everything it needs).
fn nested_host_or_skip(test: &str, what: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let assets = std::env::var_os("VMDESK_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/assets"));
    let missing: Vec<String> = ["vmlinuz-generic", "nested-initrd.img"]
        .iter()
        .map(|f| assets.join(f))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    let why = if tool_or_skip(test, "qemu-system-x86_64").is_none() {
        "qemu-system-x86_64 is missing".to_string()
    } else if !missing.is_empty() {
        format!(
            "{} missing (resources/scripts/test-assets.sh builds them)",
            missing.join(", ")
        )
    } else {
        return Some(root.join("resources/scripts/nested-host.sh"));
    };
    let why = format!("KVM here is kvm_pvm ({what}) and the nested test host cannot start: {why}");
    if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    tally(&format!("skipped {test}: {why}"));
    None
}

/// What the nested host script's output holds (status 125) when the outer guest's own
/// kernel failed, and what that is called: a fault of the emulated host, not of the test.
const OUTER_KERNEL_FAULTS: [(&str, &str); 2] = [
    (
        "a CPU of the outer guest's kernel has been stuck",
        "got stuck",
    ),
    ("Kernel panic - not syncing", "panicked"),
];

/// Runs the current test (by the name libtest gave its thread) in the nested host and
/// checks that it ran there and passed. Tallies `nested TEST SECONDS`.
///
/// Once in about twenty runs here, a CPU of the nested host's own kernel locked up
/// inside KVM_RUN (its soft-lockup watchdog names the VMM's thread) and never came back,
/// or that kernel panicked (a kernel stack overflow in its exception entry, on a vCPU
/// thread); the script stops such a run. That run says nothing about the test, so it is
/// run once more, loudly; a second failure of the nested host fails the test.
fn run_nested(test: &str, script: &Path) {
    let name = std::thread::current()
        .name()
        .expect("libtest names each test's thread after the test")
        .to_string();
    let exe = std::env::current_exe().expect("the test binary's path");
    let timeout = std::env::var("VMDESK_NESTED_TIMEOUT").unwrap_or_else(|_| "900".into());
    eprintln!("{test}: KVM here is kvm_pvm; running {name} in the nested test host");
    let start = std::time::Instant::now();
    // VMDESK_NESTED_KEEP=DIR keeps the share (DIR): what a test leaves in
    // $VMDESK_NESTED_SHARE in there (screenshots of a failure) is there afterwards.
    let keep: Vec<std::ffi::OsString> = std::env::var_os("VMDESK_NESTED_KEEP")
        .map(|d| vec!["--keep".into(), d])
        .unwrap_or_default();
    let run = || {
        std::process::Command::new(script)
            .args(&keep)
            .args(["--timeout", &timeout, "--"])
            .arg(&exe)
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{test}: cannot run {}: {e}", script.display()))
    };
    let text_of = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let mut out = run();
    let mut text = text_of(&out);
    let fault = OUTER_KERNEL_FAULTS
        .iter()
        .find(|(said, _)| text.contains(said))
        .map(|(_, what)| *what);
    if let (Some(125), Some(what)) = (out.status.code(), fault) {
        eprintln!(
            "{test}: the nested host's own kernel {what} (not the test); running it once more. That run:\n{text}"
        );
        tally(&format!("retried {test}: the nested host's kernel {what}"));
        out = run();
        text = text_of(&out);
    }
    let secs = start.elapsed().as_secs_f64();
    // Shown by libtest when this test fails, or with --nocapture.
    println!(
        "---- {name} in the nested host ({secs:.1} s) ----\n{text}---- end of the nested run ----"
    );
    let passed = text.contains("test result: ok. 1 passed");
    assert!(
        out.status.success() && passed,
        "{test} failed in the nested test host ({}; {secs:.1} s); its output is above",
        out.status
    );
    // A test that skipped inside did not run: say so rather than count it.
    if let Some(skip) = text.lines().find(|l| l.starts_with("SKIP ")) {
        if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test} skipped in the nested host: {skip}");
        }
        tally(&format!("skipped {test}: in the nested host: {skip}"));
        return;
    }
    tally(&format!("nested {test} {secs:.1}"));
}

/// resources/scripts/nested-host.sh.
pub fn nested_host_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scripts/nested-host.sh")
}

/// For benchmarks: runs this program with `args` in a nested host (bounded by
/// `timeout_secs`), its output passed on line by line as it comes; returns the lines and
/// whether the nested host itself failed (status 125: its kernel panicked or got stuck,
/// which ends everything inside).
pub fn in_nested_host(args: &[String], timeout_secs: u64) -> (Vec<String>, bool) {
    use std::io::BufRead;
    let exe = std::env::current_exe().expect("this benchmark's path");
    let mut child = std::process::Command::new(nested_host_script())
        .args(["--timeout", &timeout_secs.to_string(), "--"])
        .arg(exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the benchmark in the nested host");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        println!("{line}");
        lines.push(line);
    }
    let status = child.wait().expect("wait for the nested host");
    if !status.success() {
        println!("  the nested host ended with {status}");
    }
    (lines, status.code() == Some(125))
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

/// Which VMM a benchmark's run is of, and its name in the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Ours,
    Qemu,
}

impl Vmm {
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Ours => "vmdesk-vmm",
            Vmm::Qemu => "qemu",
        }
    }
}
