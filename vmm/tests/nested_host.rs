//! The nested test host itself (resources/scripts/nested-host.sh), the place where every
//! test that needs hardware-backed KVM runs on kvm_pvm machines: what it promises those
//! tests. A command inside sees a hardware-backed /dev/kvm (kvm_amd, not kvm_pvm), this
//! machine's files at their paths, a root whose writes stay inside (and which is no chroot:
//! the command may make a user namespace, as passt does), and a share whose writes come back; its output and exit status come out here. A command that does not end is
//! stopped at --timeout with the outer guest's console shown, never a hang.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scripts/nested-host.sh")
}

/// Whether the nested host can start here: QEMU and its kernel and initrd.
fn nested_or_skip(test: &str) -> bool {
    if common::tool_or_skip(test, "qemu-system-x86_64").is_none() {
        return false;
    }
    ["vmlinuz-generic", "nested-initrd.img"]
        .iter()
        .all(|f| common::asset_or_skip(test, f).is_some())
}

fn nested(args: &[&str], cmd: &str) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(script())
        .args(args)
        .args(["--", "bash", "-c", cmd])
        .stdin(Stdio::null())
        .output()
        .expect("run nested-host.sh");
    (out, start.elapsed())
}

#[test]
fn a_command_gets_hardware_kvm_the_host_files_and_its_status_back() {
    let test = "a_command_gets_hardware_kvm_the_host_files_and_its_status_back";
    if !nested_or_skip(test) {
        return;
    }
    let keep = common::temp_dir("nested-share");
    // A file on this machine's disk, read inside at the same path (not under /tmp: the
    // nested host has a fresh /tmp).
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/vmdesk-nested-probe-{}",
        std::process::id()
    ));
    std::fs::write(&probe, "seen from the nested host").unwrap();
    let script = format!(
        r#"set -e
echo "modules: $(cut -d' ' -f1 /proc/modules | grep -E '^kvm(_amd|_pvm)?$' | sort | tr '\n' ' ')"
test -c /dev/kvm && echo "kvm device: yes"
unshare --user true && echo "user namespace: yes"
echo "probe: $(cat {probe})"
echo "cwd: $PWD"
echo "nested: $VMDESK_NESTED"
echo changed > {probe}
echo "result" > "$VMDESK_NESTED_SHARE/out.txt"
echo "to stderr" >&2
exit 7"#,
        probe = probe.display()
    );
    let (out, took) = nested(
        &["--timeout", "300", "--keep", keep.to_str().unwrap()],
        &script,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n--- stderr ---\n{stderr}");
    eprintln!("nested run took {took:?}");
    assert_eq!(out.status.code(), Some(7), "{all}");
    // kvm_amd is hardware-backed as far as the guest can tell; kvm_pvm is not there.
    assert!(stdout.contains("modules: kvm kvm_amd \n"), "{all}");
    assert!(stdout.contains("kvm device: yes"), "{all}");
    // passt sandboxes itself in one: the command's root is no chroot (which the kernel
    // refuses a new user namespace).
    assert!(stdout.contains("user namespace: yes"), "{all}");
    assert!(stdout.contains("probe: seen from the nested host"), "{all}");
    assert!(
        stdout.contains(&format!(
            "cwd: {}",
            std::env::current_dir().unwrap().display()
        )),
        "{all}"
    );
    assert!(stdout.contains("nested: 1"), "{all}");
    assert!(stdout.contains("to stderr"), "{all}");
    // The root's writes stayed inside; the share's came back.
    assert_eq!(
        std::fs::read_to_string(&probe).unwrap(),
        "seen from the nested host"
    );
    assert_eq!(
        std::fs::read_to_string(keep.join("out.txt")).unwrap(),
        "result\n"
    );
    let _ = std::fs::remove_file(probe);
    let _ = std::fs::remove_dir_all(keep);
}

#[test]
fn a_command_that_does_not_end_is_stopped_at_the_timeout() {
    let test = "a_command_that_does_not_end_is_stopped_at_the_timeout";
    if !nested_or_skip(test) {
        return;
    }
    // Long enough for the outer guest to boot under TCG on a busy machine, short enough
    // for a test.
    let (out, _) = nested(&["--timeout", "60"], "echo started; sleep 1000");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n--- stderr ---\n{stderr}");
    assert_eq!(out.status.code(), Some(124), "{all}");
    // Its own count, from the outer guest's start (a wait for another nested host's lock
    // comes before it).
    let secs: u64 = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("nested-host: ")?
                .strip_suffix(" s in the nested host")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time reported:\n{all}"));
    assert!((60..=70).contains(&secs), "stopped after {secs} s\n{all}");
    assert!(
        stderr.contains("had not ended after 60s"),
        "no timeout message:\n{all}"
    );
    // The outer guest's console is shown: its /init said what it ran.
    assert!(stderr.contains("vmdesk-nested: running"), "{all}");
}
