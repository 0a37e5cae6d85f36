//! The `vmdesk` CLI end to end, with the real `vmdesk` and `vmdesk-vmm` binaries and temp
//! XDG dirs: the library commands without KVM, and a VM's whole life with KVM (skipped
//! with one loud line, and tallied in $VMDESK_KVM_TALLY, where /dev/kvm is not usable).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tally(line: &str) {
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

fn kvm_or_skip(test: &str) -> bool {
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

/// Temp XDG config, data and runtime dirs for one test; removed on drop.
struct Env {
    root: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
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

    fn vmdesk(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_vmdesk"))
            .args(args)
            .env("XDG_CONFIG_HOME", self.root.join("cfg"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .output()
            .unwrap();
        eprintln!(
            "$ vmdesk {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn vms_dir(&self) -> PathBuf {
        self.root.join("cfg/vmdesk/vms")
    }
    fn images_dir(&self) -> PathBuf {
        self.root.join("data/vmdesk/images")
    }
    fn run_dir(&self) -> PathBuf {
        self.root.join("run/vmdesk")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a VMM behind: kill the ones it started.
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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn list_state(env: &Env, name: &str) -> String {
    let o = env.vmdesk(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    stdout(&o)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("absent")
        .to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `vmdesk-vmm` must sit next to `vmdesk`, where a packaged install puts it. A workspace
/// test run builds it there; a `cargo test -p vmdesk` alone may not have, so build it.
fn ensure_vmm() {
    let exe = Path::new(env!("CARGO_BIN_EXE_vmdesk"));
    let vmm = exe.with_file_name("vmdesk-vmm");
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
}

#[test]
fn create_validates_and_list_survives_a_corrupt_file() {
    let env = Env::new("lib");
    let o = env.vmdesk(&["create", "--name", "big", "--memory", "100000G"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("'big'") && text(&o).contains("host's"),
        "{}",
        text(&o)
    );
    assert!(files_in(&env.vms_dir()).is_empty());

    let o = env.vmdesk(&["create", "--name", "../evil"]);
    assert_eq!(o.status.code(), Some(2));

    let o = env.vmdesk(&["create", "--name", "a", "--disk", "size=1M,format=raw"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(env.images_dir().join("a.raw").is_file());
    // The name is taken: bad usage, and the first VM's disk is untouched.
    let o = env.vmdesk(&["create", "--name", "a", "--disk", "size=2M,format=raw"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("'a' already exists"), "{}", text(&o));
    assert_eq!(
        std::fs::metadata(env.images_dir().join("a.raw"))
            .unwrap()
            .len(),
        1 << 20
    );
    // A bad --disk creates nothing.
    let o = env.vmdesk(&["create", "--name", "b", "--disk", "size=1M,format=vmdk"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(files_in(&env.images_dir()), ["a.raw"]);

    std::fs::write(env.vms_dir().join("broken.toml"), "this is [not toml").unwrap();
    let o = env.vmdesk(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(list_state(&env, "a"), "stopped");
    assert_eq!(list_state(&env, "broken"), "error");
    assert!(text(&o).contains("broken.toml"), "{}", text(&o));

    for cmd in ["start", "shutdown", "vncdisplay"] {
        let o = env.vmdesk(&[cmd, "nosuchvm"]);
        assert_ne!(o.status.code(), Some(0), "{cmd}");
        assert!(text(&o).contains("nosuchvm"), "{cmd}: {}", text(&o));
    }
    let o = env.vmdesk(&["shutdown", "a"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("'a' is not running"), "{}", text(&o));

    let o = env.vmdesk(&["delete", "a", "--delete-disks"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(files_in(&env.images_dir()).is_empty());
    assert_eq!(files_in(&env.vms_dir()), ["broken.toml"]);
}

#[test]
fn a_vm_lives_and_dies_through_the_cli() {
    if !kvm_or_skip("a_vm_lives_and_dies_through_the_cli") {
        return;
    }
    ensure_vmm();
    let env = Env::new("life");
    let o = env.vmdesk(&[
        "create", "--name", "e2e", "--memory", "64M", "--disk", "size=64M",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(env.images_dir().join("e2e.qcow2").is_file());

    let o = env.vmdesk(&["start", "e2e"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("vncviewer 127.0.0.1:"), "{}", text(&o));
    assert_eq!(list_state(&env, "e2e"), "running");

    let o = env.vmdesk(&["vncdisplay", "e2e"]);
    assert_eq!(o.status.code(), Some(0));
    let display = stdout(&o).trim().to_string();
    let n: u16 = display
        .strip_prefix("127.0.0.1:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("vncdisplay printed {display:?}"));
    // The port it names is a VNC server.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", 5900 + n)).unwrap();
    let mut banner = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut banner).unwrap();
    assert!(banner.starts_with(b"RFB 003."), "{banner:?}");
    drop(s);

    let o = env.vmdesk(&["start", "e2e"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("'e2e' is already running"),
        "{}",
        text(&o)
    );
    let o = env.vmdesk(&["delete", "e2e"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("'e2e' is running"), "{}", text(&o));

    assert_eq!(env.vmdesk(&["pause", "e2e"]).status.code(), Some(0));
    assert_eq!(list_state(&env, "e2e"), "paused");
    assert_eq!(env.vmdesk(&["resume", "e2e"]).status.code(), Some(0));
    assert_eq!(list_state(&env, "e2e"), "running");

    let shot = env.root.join("shot.png");
    let o = env.vmdesk(&["screenshot", "e2e", shot.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert!(w >= 320 && h >= 200, "{w}x{h}");

    assert_eq!(env.vmdesk(&["reset", "e2e"]).status.code(), Some(0));
    assert_eq!(list_state(&env, "e2e"), "running");

    let pid: i32 = std::fs::read_to_string(env.run_dir().join("e2e.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The power button: SeaBIOS with nothing to boot does not act on it, so the VM stays
    // up, and destroy forces it off.
    assert_eq!(env.vmdesk(&["shutdown", "e2e"]).status.code(), Some(0));
    let o = env.vmdesk(&["destroy", "e2e", "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM is gone"
    );
    assert_eq!(list_state(&env, "e2e"), "stopped");
    assert_eq!(env.vmdesk(&["destroy", "e2e"]).status.code(), Some(1));

    let o = env.vmdesk(&["delete", "e2e", "--delete-disks"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(files_in(&env.vms_dir()).is_empty());
    assert!(files_in(&env.images_dir()).is_empty());
    assert!(
        files_in(&env.run_dir()).is_empty(),
        "{:?}",
        files_in(&env.run_dir())
    );
}

#[test]
fn a_vmm_that_dies_shows_as_crashed_with_its_log() {
    if !kvm_or_skip("a_vmm_that_dies_shows_as_crashed_with_its_log") {
        return;
    }
    ensure_vmm();
    let env = Env::new("crash");
    let o = env.vmdesk(&[
        "create", "--name", "c", "--memory", "64M", "--disk", "size=1M",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The image vanishes behind the app's back: the VMM refuses to start.
    std::fs::remove_file(env.images_dir().join("c.qcow2")).unwrap();
    let o = env.vmdesk(&["start", "c"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("'c' failed to start") && text(&o).contains("c.qcow2"),
        "{}",
        text(&o)
    );
    assert_eq!(list_state(&env, "c"), "crashed");

    // A running VMM killed from outside: crashed too.
    let o = env.vmdesk(&["create", "--name", "k", "--memory", "64M"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(env.vmdesk(&["start", "k"]).status.code(), Some(0));
    let pid = std::fs::read_to_string(env.run_dir().join("k.pid")).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while list_state(&env, "k") != "crashed" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = env.vmdesk(&["list"]);
    assert!(text(&o).contains("'k' crashed"), "{}", text(&o));
    assert!(text(&o).contains("signal 9"), "{}", text(&o));
    // It can be started again.
    assert_eq!(env.vmdesk(&["start", "k"]).status.code(), Some(0));
    assert_eq!(list_state(&env, "k"), "running");
    assert_eq!(env.vmdesk(&["destroy", "k"]).status.code(), Some(0));
}

#[test]
fn reinstall_gives_fresh_disks_and_boots_the_cd_again() {
    // The checks that come before anything is touched need no KVM.
    let env = Env::new("reinst");
    let extra = env.root.join("extra.raw");
    std::fs::write(&extra, vec![0xCDu8; 65536]).unwrap();
    let o = env.vmdesk(&[
        "create",
        "--name",
        "r",
        "--memory",
        "64M",
        "--disk",
        "size=1M,format=raw",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let disk = env.images_dir().join("r.raw");
    std::fs::write(&disk, vec![0xABu8; 1 << 20]).unwrap();
    let o = env.vmdesk(&["reinstall", "r"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("'r' has no installer ISO"),
        "{}",
        text(&o)
    );
    assert_eq!(
        env.vmdesk(&["delete", "r", "--delete-disks"]).status.code(),
        Some(0)
    );

    let iso = env.root.join("inst.iso");
    std::fs::write(&iso, vec![0u8; 64 * 2048]).unwrap();
    let o = env.vmdesk(&[
        "create",
        "--name",
        "r",
        "--memory",
        "64M",
        "--cdrom",
        iso.to_str().unwrap(),
        "--disk",
        "size=1M,format=raw",
        "--disk",
        &format!("path={}", extra.display()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::write(&disk, vec![0xABu8; 1 << 20]).unwrap();
    // An image the user brought is not ours to wipe: refused, nothing touched.
    let o = env.vmdesk(&["reinstall", "r"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for part in ["'r'", "extra.raw", "--force", "--keep-existing"] {
        assert!(text(&o).contains(part), "{part}: {}", text(&o));
    }
    assert_eq!(std::fs::read(&disk).unwrap(), vec![0xAB; 1 << 20]);
    let o = env.vmdesk(&["reinstall", "r", "--force", "--keep-existing"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    if !kvm_or_skip("reinstall_gives_fresh_disks_and_boots_the_cd_again") {
        return;
    }
    ensure_vmm();
    let o = env.vmdesk(&["reinstall", "r", "--keep-existing"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("vncviewer 127.0.0.1:"), "{}", text(&o));
    assert_eq!(list_state(&env, "r"), "running");
    // A fresh disk of the same size and format; the user's image as it was.
    assert_eq!(std::fs::read(&disk).unwrap(), vec![0u8; 1 << 20]);
    assert_eq!(std::fs::read(&extra).unwrap(), vec![0xCD; 65536]);
    // It boots the CD first.
    let pid = std::fs::read_to_string(env.run_dir().join("r.pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let boot = args.iter().position(|a| a == "--boot").expect("--boot");
    assert_eq!(args[boot + 1], "cdrom,disk", "{args:?}");
    // Not while it runs.
    let o = env.vmdesk(&["reinstall", "r", "--keep-existing"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("'r' is running"), "{}", text(&o));
    assert_eq!(env.vmdesk(&["destroy", "r"]).status.code(), Some(0));
    // --force wipes the user's image too, keeping its size.
    let o = env.vmdesk(&["reinstall", "r", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read(&extra).unwrap(), vec![0u8; 65536]);
    assert_eq!(env.vmdesk(&["destroy", "r"]).status.code(), Some(0));
}
