//! Guest media and processes, shared by the vmm tests and (through `#[path]`) the app's
//! and the benchmarks: the assets test-assets.sh builds, ISO images made at test time
//! (an isolinux CD among them), a Linux guest's console lines, and the processes a test
//! starts. Nothing here names a crate's binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::tool_or_skip;

/// Waits up to `timeout` for `child` to exit: its status, or `None` while it still runs.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a host tool; panics with its output when it fails (the inputs are ours). Returns
/// its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `program --version` (a path inside the unpacked initrd `root`) with the initrd's
/// own loader and libraries alone, as the guest will (a library test-assets.sh forgot
/// fails here, not in the guest); returns what it printed.
pub fn version_with_initrd_libraries(root: &Path, program: &str) -> String {
    let libs = root.join("lib/x86_64-linux-gnu");
    assert_eq!(
        std::fs::read_link(root.join("lib64/ld-linux-x86-64.so.2")).unwrap(),
        Path::new("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    );
    run(Command::new(libs.join("ld-linux-x86-64.so.2"))
        .arg("--inhibit-cache")
        .arg("--library-path")
        .arg(&libs)
        .arg(root.join(program))
        .arg("--version"))
}

/// Makes an ISO 9660 image of the directory `root` with xorriso, labelled `volume`; with
/// `boot`, that file (relative to `root`, 2048 bytes) is an El Torito no-emulation boot
/// image loaded at 0x7c00. `None` (after one SKIP line) without xorriso.
pub fn make_iso(
    test: &str,
    root: &Path,
    iso: &Path,
    volume: &str,
    boot: Option<&str>,
) -> Option<()> {
    let xorriso = tool_or_skip(test, "xorriso")?;
    let mut cmd = Command::new(xorriso);
    cmd.args(["-as", "mkisofs", "-quiet", "-V", volume, "-o"])
        .arg(iso);
    if let Some(image) = boot {
        cmd.args(["-b", image, "-c", "boot/boot.cat", "-no-emul-boot"])
            .args(["-boot-load-size", "4"]);
    }
    run(cmd.arg(root));
    Some(())
}

/// Where resources/scripts/test-assets.sh puts the guest kernel and initrds
/// (`target/assets/`; VMDESK_ASSETS overrides).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("VMDESK_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/assets"))
}

/// `name` from [`assets_dir`], or `None` after one SKIP line; a failure instead under
/// VMDESK_REQUIRE_TOOLS=1 (the test command builds the assets first).
pub fn asset_or_skip(test: &str, name: &str) -> Option<PathBuf> {
    let path = assets_dir().join(name);
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} is missing (resources/scripts/test-assets.sh builds it)",
        path.display()
    );
    assert_ne!(
        std::env::var("VMDESK_REQUIRE_TOOLS").as_deref(),
        Ok("1"),
        "{test}: {why}"
    );
    eprintln!("SKIP {test}: {why}");
    None
}

/// The kernel and a module initrd from [`assets_dir`], or `None` after a SKIP line (a
/// failure when VMDESK_REQUIRE_TOOLS=1: the test command builds them first).
pub fn linux_assets(test: &str, initrd: &str) -> Option<(PathBuf, PathBuf)> {
    Some((
        asset_or_skip(test, "vmlinuz")?,
        asset_or_skip(test, initrd)?,
    ))
}

/// What a Linux test guest said so far: the complete lines of its console log `serial` that
/// start with `prefix` (its /init's say()), without the prefix. A last line without its
/// newline is still being written (the VMM writes the console as the guest sends it) and
/// is left for the next look. A carriage return at a line's start is not part of it: GRUB
/// ends its lines with "\n\r", so the first line a guest booted by GRUB says starts with
/// GRUB's "\r" when no kernel message comes between them.
pub fn guest_said(serial: &Path, prefix: &str) -> Vec<String> {
    let text = std::fs::read_to_string(serial).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('\r')
                .trim_end()
                .strip_prefix(prefix)
                .map(str::to_owned)
        })
        .collect()
}

/// The Linux guests' kernel command line: the console on COM1 (the tests read it), and a
/// panic ends the VM instead of hanging it.
pub const LINUX_CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4";

/// Processes a test started, killed when it ends however it ends (a failed assert too).
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Children {
    pub fn add(&mut self, what: &str, cmd: &mut Command) -> &mut Child {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        self.0.push(child);
        self.0.last_mut().unwrap()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The median of `v` (the upper one of an even count), or `None` when it is empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// An isolinux CD made in `dir` (as `NAME.iso`, its tree in `NAME.cd/`): Debian's
/// isolinux.bin and ldlinux.c32 from the assets, `kernel` as /vmlinuz and `initrd` as
/// /initrd.img, booted with the command line `append`; isolinux talks on COM1 as well
/// (its banner shows there, so a test can tell a CD boot from another). `None` after one
/// SKIP line when an asset or xorriso is missing.
pub fn isolinux_cd(
    test: &str,
    dir: &Path,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    append: &str,
) -> Option<PathBuf> {
    let isolinux = asset_or_skip(test, "isolinux/isolinux.bin")?;
    let ldlinux = asset_or_skip(test, "isolinux/ldlinux.c32")?;
    // isolinux finds itself through the El Torito spec packet: make_iso's image needs no
    // boot info table.
    let root = dir.join(format!("{name}.cd"));
    std::fs::create_dir_all(root.join("isolinux")).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::copy(&isolinux, root.join("isolinux/isolinux.bin")).unwrap();
    std::fs::copy(&ldlinux, root.join("isolinux/ldlinux.c32")).unwrap();
    std::fs::copy(kernel, root.join("vmlinuz")).unwrap();
    std::fs::copy(initrd, root.join("initrd.img")).unwrap();
    std::fs::write(
        root.join("isolinux/isolinux.cfg"),
        format!(
            "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  \
             KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND {append}\n"
        ),
    )
    .unwrap();
    let iso = dir.join(format!("{name}.iso"));
    let volume = name.to_ascii_uppercase().replace(['-', '.'], "_");
    make_iso(test, &root, &iso, &volume, Some("isolinux/isolinux.bin"))?;
    Some(iso)
}
