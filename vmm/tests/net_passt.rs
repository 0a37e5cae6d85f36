//! The user-mode network's passt process over the VM's life, on this host's KVM with
//! SeaBIOS (no guest kernel needed: passt is the VMM's child whether or not the guest
//! drives the card): one passt per VM, named in the status; passt dying leaves the VM
//! running with its link down and the reason in the log; the VMM's exit, SIGKILL included,
//! leaves no passt behind.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::ControlClient;

fn alive(pid: u64) -> bool {
    // A zombie still has a /proc entry; passt's parent is gone, so init reaps it soon.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A VMM with a user-mode network and its control socket; `None` (after one SKIP line)
/// where this host cannot run it.
fn start(test: &str, dir: &Path) -> Option<(Child, ControlClient)> {
    if !common::kvm_or_skip(test) || common::tool_or_skip(test, "passt").is_none() {
        return None;
    }
    let sock = dir.join("vm.sock");
    let sock_arg = sock.to_string_lossy().into_owned();
    let (child, _log) = common::spawn_vmm(
        dir,
        test,
        &[
            "--net",
            "user",
            "--vnc",
            "none",
            "--serial",
            "none",
            "--control",
            &sock_arg,
        ],
    );
    Some((child, ControlClient::connect(&sock)))
}

fn passt_pid(control: &mut ControlClient) -> u64 {
    let status = control.call(r#"{"execute":"status"}"#);
    let net = &status["return"]["net"];
    assert_eq!(net["mode"], "user", "{status}");
    assert_eq!(net["mac"], "52:54:00:12:34:56", "{status}");
    net["passt_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no passt in {status}"))
}

#[test]
fn a_dead_passt_unplugs_the_card_and_the_vm_runs_on() {
    let test = "a_dead_passt_unplugs_the_card_and_the_vm_runs_on";
    let dir = common::temp_dir("net-passt-dies");
    let Some((mut child, mut control)) = start(test, &dir) else {
        return;
    };
    let pid = passt_pid(&mut control);
    assert!(alive(pid));
    let status = control.call(r#"{"execute":"status"}"#);
    assert_eq!(status["return"]["net"]["link"], "up", "{status}");

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("the link to go down", Duration::from_secs(10), || {
        control.call(r#"{"execute":"status"}"#)["return"]["net"]["link"] == "down"
    });
    let status = control.call(r#"{"execute":"status"}"#);
    assert_eq!(status["return"]["status"], "running", "{status}");
    assert!(child.try_wait().unwrap().is_none(), "the VMM runs on");

    common::stop(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains(&format!("passt (pid {pid}) stopped"))
            && stderr.contains("the VM keeps running with its network link down"),
        "the log says why: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_passt_outlives_its_vmm() {
    let test = "no_passt_outlives_its_vmm";
    let dir = common::temp_dir("net-passt-exit");
    // A clean stop (SIGTERM), then the VMM killed outright.
    for signal in ["-TERM", "-KILL"] {
        let Some((mut child, mut control)) = start(test, &dir) else {
            return;
        };
        let pid = passt_pid(&mut control);
        let sent = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child.wait().unwrap();
        wait_until(
            &format!("passt {pid} to go after kill {signal} of its VMM"),
            Duration::from_secs(5),
            || !alive(pid),
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
