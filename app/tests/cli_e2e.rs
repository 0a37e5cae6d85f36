//! The `vmdesk` CLI end to end, with the real `vmdesk` and `vmdesk-vmm` binaries and temp
//! XDG dirs: the library commands without KVM, and a VM's whole life with KVM (skipped
//! with one loud line, and tallied in $VMDESK_KVM_TALLY, where /dev/kvm is not usable).
//! The VMs these tests start have no network (`--network none`): what they test does not
//! need one, and passt cannot run in the nested test host. The network settings are tested
//! here up to the VMM's command line (a stand-in VMM records it).

mod common;

use common::{Env, ensure_vmm, files_in, kvm_or_skip, text};
use std::path::Path;
use std::process::{Command, Output};

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
        "create",
        "--name",
        "e2e",
        "--memory",
        "64M",
        "--disk",
        "size=64M",
        "--network",
        "none",
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
        "create",
        "--name",
        "c",
        "--memory",
        "64M",
        "--disk",
        "size=1M",
        "--network",
        "none",
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
    let o = env.vmdesk(&[
        "create",
        "--name",
        "k",
        "--memory",
        "64M",
        "--network",
        "none",
    ]);
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
        "size=1M,format=raw,preallocation=full",
        "--disk",
        &format!("path={}", extra.display()),
        "--network",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let toml = std::fs::read_to_string(env.vms_dir().join("r.toml")).unwrap();
    assert!(toml.contains("preallocated = true"), "{toml}");
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
    // A fresh disk of the same size and format, its space reserved again as when it was
    // made; the user's image as it was.
    assert_eq!(std::fs::read(&disk).unwrap(), vec![0u8; 1 << 20]);
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(&disk).unwrap().blocks() * 512 >= 1 << 20);
    assert_eq!(std::fs::read(&extra).unwrap(), vec![0xCD; 65536]);
    // It boots the CD first, once; after the installer's reboot, the disk first.
    let pid = std::fs::read_to_string(env.run_dir().join("r.pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let value = |opt: &str| {
        let at = args.iter().position(|a| a == opt);
        at.map(|i| args[i + 1].as_str())
    };
    assert_eq!(value("--boot-once"), Some("cdrom"), "{args:?}");
    assert_eq!(value("--boot"), Some("disk,cdrom"), "{args:?}");
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

#[test]
fn send_key_types_into_a_running_vm_and_refuses_bad_input() {
    // Bad input is refused before any VM is looked at; no KVM needed for that.
    let env = Env::new("sendkey");
    let o = env.vmdesk(&["send-key", "nosuchvm", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("nosuchvm"), "{}", text(&o));
    let o = env.vmdesk(&["create", "--name", "off", "--memory", "64M"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.vmdesk(&["send-key", "off", "Return"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("'off' is not running"), "{}", text(&o));
    for (args, says) in [
        (
            &["send-key", "off", "a", "ctrl-Retrun"][..],
            "unknown key 'Retrun' in 'ctrl-Retrun'",
        ),
        (&["send-key", "off", "ctrl-"], "an empty key name"),
        (
            &["send-key", "off", "--hold-time", "20000", "a"],
            "at most 10000 ms",
        ),
    ] {
        let o = env.vmdesk(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let t = text(&o);
        assert!(t.contains(says), "{args:?}: {t}");
        assert_eq!(t.lines().count(), 1, "{args:?}: one line: {t}");
    }
    let o = env.vmdesk(&["send-key", "off"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("<KEY>"), "{}", text(&o));

    if !kvm_or_skip("send_key_types_into_a_running_vm_and_refuses_bad_input") {
        return;
    }
    ensure_vmm();
    // The demo VM echoes each key it reads through the BIOS to COM1, one line a key.
    let o = env.vmdesk(&["demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let serial = env.run_dir().join("demo.serial");
    let wait_for = |want: &str, secs: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let t = std::fs::read_to_string(&serial).unwrap_or_default();
            if t.contains(want) || std::time::Instant::now() > deadline {
                return t;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let ready = "vmdesk demo: ready, mouse on";
    let t = wait_for(ready, 240);
    assert!(t.contains(ready), "the demo did not start; COM1:\n{t}");

    // An unknown key while it runs: bad input, and nothing typed.
    let o = env.vmdesk(&["send-key", "demo", "H", "Retrun"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown key 'Retrun'"), "{}", text(&o));

    let o = env.vmdesk(&["send-key", "demo", "shift-h", "i", "exclam", "Return"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        stdout(&o).contains("sent shift-h i exclam Return to 'demo'"),
        "{}",
        text(&o)
    );
    let want = "vmdesk demo: key H\r\nvmdesk demo: key i\r\nvmdesk demo: key !\r\nvmdesk demo: key enter\r\n";
    let t = wait_for(want, 60);
    let after = t.split(ready).nth(1).unwrap_or_default();
    assert!(after.contains(want), "COM1 after the ready line: {after:?}");
    assert_eq!(after.matches("vmdesk demo: key").count(), 4, "{after:?}");

    assert_eq!(env.vmdesk(&["destroy", "demo"]).status.code(), Some(0));
}

#[test]
fn eject_and_insert_change_a_stopped_vms_cd_with_one_line_errors() {
    let env = Env::new("media");
    let iso = env.root.join("inst.iso");
    std::fs::write(&iso, vec![0u8; 16 * 2048]).unwrap();
    let o = env.vmdesk(&["create", "--name", "m", "--memory", "64M"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let toml = || std::fs::read_to_string(env.vms_dir().join("m.toml")).unwrap();
    for (args, code, says) in [
        (vec!["eject", "nosuch"], 2, "no VM named 'nosuch'"),
        (vec!["eject", "m"], 2, "'m' has no CD in its drive"),
        (vec!["insert", "m", "/nonexistent/x.iso"], 2, "no such file"),
    ] {
        let o = env.vmdesk(&args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert_eq!(text(&o).trim().lines().count(), 1, "{}", text(&o));
    }
    assert!(!toml().contains("cdrom"), "{}", toml());
    let o = env.vmdesk(&["insert", "m", iso.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(toml().contains("inst.iso"), "{}", toml());
    let o = env.vmdesk(&["eject", "m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("ejected the CD of 'm'"), "{}", text(&o));
    assert!(!toml().contains("cdrom"), "{}", toml());
}

#[test]
fn list_says_when_a_running_vm_found_nothing_to_boot() {
    let test = "list_says_when_a_running_vm_found_nothing_to_boot";
    if !kvm_or_skip(test) {
        return;
    }
    ensure_vmm();
    let env = Env::new("noboot");
    // A data CD (xorriso without a boot image) and a new, empty disk: SeaBIOS tries the
    // disk, then the CD, and stops at "No bootable device.".
    let root = env.root.join("cd");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("readme.txt"), "only data\n").unwrap();
    let iso = env.root.join("data.iso");
    let Some(()) = common::make_iso(test, &root, &iso, "DATA", None) else {
        return;
    };
    let o = env.vmdesk(&[
        "create",
        "--name",
        "nb",
        "--memory",
        "64M",
        "--cdrom",
        iso.to_str().unwrap(),
        "--disk",
        "size=1M,format=raw",
        "--network",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.vmdesk(&["start", "nb"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let o = loop {
        let o = env.vmdesk(&["list"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        if stdout(&o).contains("no bootable device") {
            break o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no note in 120 s:\n{}",
            text(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with("nb "))
        .unwrap()
        .to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "running", "{row}");
    assert!(row.ends_with("  no bootable device"), "{row}");
    // The why and the way out, on stderr.
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let disk = env.images_dir().join("nb.raw");
    for part in [
        "vmdesk: 'nb' found nothing to boot: No bootable device: ".to_string(),
        format!("the disk {} is empty", disk.display()),
        format!(
            "the CD {} is not bootable (no El Torito boot record",
            iso.display()
        ),
        "\n  to fix it, put an installer ISO in its CD drive and restart the boot: vmdesk insert \
         nb ISO; vmdesk reset nb\n"
            .to_string(),
    ] {
        assert!(err.contains(&part), "{part:?} in:\n{err}");
    }
    // The VM's log has the VMM's one warning line.
    let log = std::fs::read_to_string(env.run_dir().join("nb.log")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("No bootable device"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(env.vmdesk(&["destroy", "nb"]).status.code(), Some(0));
    let o = env.vmdesk(&["list"]);
    assert!(!stdout(&o).contains("no bootable device"), "{}", text(&o));
}

/// The row of `vmdesk list` for `name`.
fn list_row(env: &Env, name: &str) -> String {
    let o = env.vmdesk(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    stdout(&o)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{}", text(&o)))
        .to_string()
}

fn definition(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.vms_dir().join(format!("{name}.toml"))).unwrap()
}

/// The `mac = "…"` of a definition file.
fn mac_in(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("mac = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no mac in:\n{toml}"))
        .to_string()
}

#[test]
fn create_stores_the_network_and_list_shows_how_to_reach_the_vm() {
    let env = Env::new("net");
    let o = env.vmdesk(&[
        "create",
        "--name",
        "web",
        "--memory",
        "64M",
        "--forward",
        "tcp::2222-:22",
        "--forward",
        "udp:0.0.0.0:5353-:53",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let toml = definition(&env, "web");
    let mac = mac_in(&toml);
    assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
    for line in [
        "network = \"user\"",
        "\"tcp:127.0.0.1:2222-:22\"",
        "\"udp:0.0.0.0:5353-:53\"",
    ] {
        assert!(toml.contains(line), "{line} in:\n{toml}");
    }
    assert!(
        stdout(&o).contains(&format!(
            "network nat, MAC {mac}, forwards 127.0.0.1:2222→22, 0.0.0.0:5353→53/udp"
        )),
        "{}",
        text(&o)
    );

    // nat is user; the default is user too; each VM gets its own MAC.
    for (name, extra) in [("nat", &["--network", "nat"][..]), ("dflt", &[][..])] {
        let mut args = vec!["create", "--name", name, "--memory", "64M"];
        args.extend(extra);
        let o = env.vmdesk(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let toml = definition(&env, name);
        assert!(toml.contains("network = \"user\""), "{toml}");
        assert_ne!(mac_in(&toml), mac, "{name}: a MAC of its own");
    }
    let o = env.vmdesk(&[
        "create",
        "--name",
        "lan",
        "--memory",
        "64M",
        "--network",
        "tap:vmtap0",
        "--mac",
        "52:54:00:AA:bb:0c",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let toml = definition(&env, "lan");
    assert!(toml.contains("network = \"tap:vmtap0\""), "{toml}");
    assert_eq!(mac_in(&toml), "52:54:00:aa:bb:0c");
    assert!(!toml.contains("forwards"), "{toml}");
    let o = env.vmdesk(&[
        "create",
        "--name",
        "off",
        "--memory",
        "64M",
        "--network",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("  network none"), "{}", text(&o));
    assert!(definition(&env, "off").contains("network = \"none\""));

    // The list: the network and the forwards, in columns as wide as their widest cell.
    let o = env.vmdesk(&["list"]);
    let out = stdout(&o);
    let header = out.lines().next().unwrap();
    let col = |h: &str| header.find(h).unwrap_or_else(|| panic!("{h} in {header}"));
    let (net, fwd, note) = (col("NET"), col("FORWARDS"), col("NOTE"));
    let cells = |name: &str| {
        let row = list_row(&env, name);
        let chars: Vec<char> = row.chars().collect();
        let cell = |from: usize, to: usize| -> String {
            chars[from.min(chars.len())..to.min(chars.len())]
                .iter()
                .collect::<String>()
                .trim()
                .to_string()
        };
        // Column offsets in characters: a forward's arrow is one character, three bytes.
        let at = |byte: usize| header[..byte].chars().count();
        (cell(at(net), at(fwd)), cell(at(fwd), at(note)))
    };
    assert_eq!(
        cells("web"),
        (
            "nat".to_string(),
            "127.0.0.1:2222→22, 0.0.0.0:5353→53/udp".to_string()
        )
    );
    assert_eq!(cells("lan"), ("tap:vmtap0".to_string(), "-".to_string()));
    assert_eq!(cells("off"), ("-".to_string(), "-".to_string()));
    assert_eq!(cells("dflt"), ("nat".to_string(), "-".to_string()));
    assert_eq!(list_state(&env, "web"), "stopped");
}

#[test]
fn bad_network_options_are_one_line_and_create_nothing() {
    let env = Env::new("badnet");
    for (args, says) in [
        (
            &["--network", "bridge"][..],
            "unknown network mode 'bridge': use user (NAT, the default), tap:NAME or none",
        ),
        (&["--network", "tap:"], "is not a network interface name"),
        (
            &["--forward", "tcp::99999-:22"],
            "the host port must be a number from 1 to 65535",
        ),
        (&["--forward", "2222:22"], "the protocol must be tcp or udp"),
        (
            &["--network", "none", "--forward", "tcp::2222-:22"],
            "port forwards need the user-mode network (NAT), not 'none'",
        ),
        (
            &["--network", "tap:vmtap0", "--forward", "tcp::2222-:22"],
            "not 'tap:vmtap0'",
        ),
        (
            &[
                "--forward",
                "tcp::2222-:22",
                "--forward",
                "tcp:127.0.0.1:2222-:23",
            ],
            "port forwards tcp:127.0.0.1:2222-:22 and tcp:127.0.0.1:2222-:23 both want host port 2222/tcp",
        ),
        (&["--mac", "01:00:5e:00:00:01"], "multicast MAC address"),
        (&["--mac", "52:54:00:zz:00:01"], "is not a MAC address"),
    ] {
        let mut all = vec![
            "create",
            "--name",
            "bad",
            "--memory",
            "64M",
            "--disk",
            "size=1M,format=raw",
        ];
        all.extend(args);
        let o = env.vmdesk(&all);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(says), "{args:?}: {says:?} in {t}");
        assert_eq!(t.trim().lines().count(), 1, "{args:?}: one line: {t}");
        assert!(t.starts_with("vmdesk: "), "{args:?}: {t}");
        assert!(files_in(&env.vms_dir()).is_empty(), "{args:?}");
        assert!(files_in(&env.images_dir()).is_empty(), "{args:?}");
    }
}

#[test]
fn an_old_definition_loads_as_nat_with_a_mac_that_is_saved() {
    let env = Env::new("oldnet");
    std::fs::create_dir_all(env.vms_dir()).unwrap();
    // As vmdesk wrote it before it had networking.
    let old = "name = \"old\"\nmemory_mib = 64\ncpus = 1\nvnc = \"127.0.0.1:auto\"\n";
    std::fs::write(env.vms_dir().join("old.toml"), old).unwrap();
    let row = list_row(&env, "old");
    assert_eq!(row.split_whitespace().nth(1), Some("stopped"), "{row}");
    assert!(row.contains(" nat "), "{row}");
    let toml = definition(&env, "old");
    let mac = mac_in(&toml);
    assert!(mac.starts_with("52:54:00:"), "{mac}");
    assert!(toml.contains("network = \"user\""), "{toml}");
    assert!(toml.contains("memory_mib = 64"), "{toml}");
    // Kept: the next command sees the same card.
    list_row(&env, "old");
    assert_eq!(mac_in(&definition(&env, "old")), mac);
    let o = env.vmdesk(&["set", "old", "--forward", "tcp::2222-:22"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(mac_in(&definition(&env, "old")), mac);
    assert_eq!(files_in(&env.vms_dir()), ["old.toml"], "no temp files left");
}

#[test]
fn set_changes_a_stopped_vms_network() {
    let env = Env::new("setnet");
    let o = env.vmdesk(&["create", "--name", "s", "--memory", "64M"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mac = mac_in(&definition(&env, "s"));
    let o = env.vmdesk(&["set", "s", "--forward", "tcp::2222-:22"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("'s': network nat, MAC {mac}, forwards 127.0.0.1:2222→22")
    );
    let o = env.vmdesk(&["set", "s", "--forward", "tcp::8080-:80"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        stdout(&o).contains("forwards 127.0.0.1:2222→22, 127.0.0.1:8080→80"),
        "added: {}",
        text(&o)
    );
    // Refused, one line each, and the definition is as it was.
    let before = definition(&env, "s");
    for (args, says) in [
        (
            &["set", "s", "--forward", "tcp:0.0.0.0:2222-:23"][..],
            "both want host port 2222/tcp",
        ),
        (
            &["set", "s", "--network", "none"],
            "port forwards need the user-mode network (NAT), not 'none'",
        ),
        (&["set", "s"], "'s': nothing to change"),
        (
            &["set", "nosuch", "--network", "none"],
            "no VM named 'nosuch'",
        ),
        (
            &["set", "s", "--network", "slirp"],
            "unknown network mode 'slirp'",
        ),
    ] {
        let o = env.vmdesk(args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(says), "{args:?}: {says:?} in {t}");
        assert_eq!(t.trim().lines().count(), 1, "{args:?}: {t}");
        assert_eq!(definition(&env, "s"), before, "{args:?}");
    }
    // --no-forwards with a new mode; then forwards replaced in one go.
    let o = env.vmdesk(&["set", "s", "--network", "tap:vmtap0", "--no-forwards"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let toml = definition(&env, "s");
    assert!(toml.contains("network = \"tap:vmtap0\""), "{toml}");
    assert!(!toml.contains("forwards"), "{toml}");
    assert_eq!(mac_in(&toml), mac, "the card is kept");
    let o = env.vmdesk(&[
        "set",
        "s",
        "--network",
        "user",
        "--no-forwards",
        "--forward",
        "tcp::2200-:22",
        "--mac",
        "52:54:00:00:00:02",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let toml = definition(&env, "s");
    assert!(toml.contains("\"tcp:127.0.0.1:2200-:22\""), "{toml}");
    assert_eq!(mac_in(&toml), "52:54:00:00:00:02");

    // Another VM on the same host port, or on a TAP device with the same card: created,
    // with a warning.
    let o = env.vmdesk(&[
        "create",
        "--name",
        "t",
        "--memory",
        "64M",
        "--forward",
        "tcp::2200-:22",
        "--mac",
        "52:54:00:00:00:02",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        err.trim(),
        "vmdesk: warning: 't': 's' forwards host port 2200/tcp too: the two cannot run at the same time",
        "NAT VMs' MACs do not meet"
    );
    let o = env.vmdesk(&["set", "s", "--network", "tap:vmtap0", "--no-forwards"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.vmdesk(&["set", "t", "--network", "tap:vmtap1", "--no-forwards"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("vmdesk: warning: 't': 's' has the same MAC address 52:54:00:00:00:02"),
        "{err}"
    );
}

/// A copy of `vmdesk` in a directory of its own, beside a stand-in `vmdesk-vmm` (a shell
/// script) that records its command line and exits 2 with one line, as vmdesk-vmm does
/// when passt is missing: the app's side of a VMM that cannot set up the network.
#[test]
fn start_passes_the_network_and_shows_why_the_vmm_refused() {
    let env = Env::new("netstart");
    let bin = env.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("vmdesk");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_vmdesk"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_vmdesk"), &exe).unwrap();
    }
    let args_file = env.root.join("vmm-args");
    let vmm = bin.join("vmdesk-vmm");
    std::fs::write(
        &vmm,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n\
             echo 'vmdesk-vmm: --net user: passt is not installed (install the passt package)' >&2\n\
             exit 2\n",
            args_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        // The env's XDG dirs, the copy's binary.
        let c = env.command(args);
        let o = Command::new(&exe)
            .args(args)
            .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .output()
            .unwrap();
        eprintln!("$ {} {args:?}\n{}", exe.display(), text(&o));
        o
    };
    let o = run(&[
        "create",
        "--name",
        "n",
        "--memory",
        "64M",
        "--mac",
        "52:54:00:01:02:03",
        "--forward",
        "tcp::2222-:22",
        "--forward",
        "udp:0.0.0.0:5353-:53",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["start", "n"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("'n' failed to start"), "{t}");
    assert!(t.contains("status 2"), "{t}");
    assert!(
        t.contains("vmdesk-vmm: --net user: passt is not installed (install the passt package)"),
        "the VMM's own line: {t}"
    );
    let args = std::fs::read_to_string(&args_file).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let values = |opt: &str| -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1])
            .collect()
    };
    assert_eq!(values("--net"), ["user"], "{args:?}");
    assert_eq!(values("--mac"), ["52:54:00:01:02:03"], "{args:?}");
    assert_eq!(
        values("--forward"),
        ["tcp:127.0.0.1:2222-:22", "udp:0.0.0.0:5353-:53"],
        "{args:?}"
    );
    assert_eq!(list_state(&env, "n"), "crashed");

    // No network: no network options at all.
    let o = run(&["set", "n", "--network", "none", "--no-forwards"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _ = run(&["start", "n"]);
    let args = std::fs::read_to_string(&args_file).unwrap();
    assert!(
        !args
            .lines()
            .any(|a| a == "--net" || a == "--mac" || a == "--forward"),
        "{args}"
    );
}
