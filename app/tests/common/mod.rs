//! Shared by the app's end-to-end tests: the skip-and-tally, media and screen helpers the
//! vmm tests use (their files, included by path), temp XDG dirs for a `vmdesk` run, and `vmdesk-vmm`
//! beside `vmdesk`.
#![allow(dead_code)]

#[path = "../../../vmm/tests/common/installer.rs"]
pub mod installer;
#[path = "../../../vmm/tests/common/media.rs"]
mod media;
#[path = "../../../vmm/tests/common/screen.rs"]
mod screen;
#[path = "../../../vmm/tests/common/skip.rs"]
mod skip;
#[path = "../../../vmm/tests/common/x11.rs"]
pub mod x11;

// Not every test boots media or looks at the screen.
#[allow(unused_imports)]
pub use media::*;
#[allow(unused_imports)]
pub use screen::*;
pub use skip::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Temp XDG config, data and runtime dirs; removed on drop, with any VMM left running.
pub struct Env {
    pub root: PathBuf,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        // Short: the control socket's path must fit in sun_path (108 bytes).
        let root = std::env::temp_dir().join(format!("vd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["cfg", "data", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        Env { root }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmdesk"));
        c.args(args)
            .env("XDG_CONFIG_HOME", self.root.join("cfg"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"));
        c
    }

    pub fn vmdesk(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        eprintln!(
            "$ vmdesk {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `vmdesk ARGS`, which must succeed; its standard output.
    #[allow(dead_code)]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.vmdesk(args);
        assert_eq!(o.status.code(), Some(0), "vmdesk {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("cfg/vmdesk/vms")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("data/vmdesk/images")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run/vmdesk")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.run_dir()) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid")
                    && let Ok(t) = std::fs::read_to_string(e.path())
                    && let Ok(pid) = t.trim().parse::<i32>()
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("vmdesk-vmm"))
                {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `vmdesk-vmm` next to `vmdesk`, where a packaged install puts it; built if this test
/// run did not build it.
pub fn ensure_vmm() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_vmdesk"));
    let vmm = exe.with_file_name("vmdesk-vmm");
    // Inside the nested test host the test ran here first and built it; cargo's freshness
    // check alone takes minutes under TCG.
    if std::env::var_os("VMDESK_NESTED_SHARE").is_some() && vmm.is_file() {
        return vmm;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "vmm", "--bin", "vmdesk-vmm"]);
    if exe.parent().is_some_and(|d| d.ends_with("release")) {
        cmd.arg("--release");
    }
    if let Some(target) = exe.parent().and_then(Path::parent) {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd.status();
    assert!(
        vmm.is_file(),
        "{} is missing and building it failed ({status:?}): cargo build -p vmm",
        vmm.display()
    );
    vmm
}
