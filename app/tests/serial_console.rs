//! `vmdesk serial NAME` end to end: one-line errors for a VM that is not there or not
//! running; then the demo VM (which echoes what COM1 receives as keys) under a real
//! pseudo-terminal, beside a second viewer on the socket: the recent output first, typed
//! keys reach the guest, its echo reaches both viewers, Ctrl+] detaches, a VM that stops
//! ends the attachment, and the terminal's settings come back each time.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::termios::{self, LocalFlags};

#[test]
fn serial_refuses_a_vm_that_is_not_there_or_not_running() {
    let env = Env::new("serial-bad");
    let o = env.vmdesk(&["serial", "nosuchvm"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nosuchvm"), "{}", text(&o));
    assert_eq!(text(&o).lines().count(), 1, "{}", text(&o));
    env.ok(&[
        "create",
        "--name",
        "off",
        "--memory",
        "64M",
        "--network",
        "none",
    ]);
    let o = env.vmdesk(&["serial", "off"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(text(&o).trim(), "vmdesk: 'off' is not running");
}

/// A pseudo-terminal's master side, read by a thread into a buffer.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn open() -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once no one has the slave open.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave: pty.slave,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, want: &str, timeout: Duration) -> bool {
        let t = Instant::now();
        while !self.text().contains(want) {
            if t.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `vmdesk serial NAME` with this terminal as its stdin, stdout and stderr.
    fn spawn_serial(&self, env: &Env, name: &str) -> Child {
        let fd = || Stdio::from(self.slave.try_clone().unwrap());
        env.command(&["serial", name])
            .stdin(fd())
            .stdout(fd())
            .stderr(fd())
            .spawn()
            .unwrap()
    }

    fn settings(&self) -> termios::Termios {
        termios::tcgetattr(self.slave.as_fd()).unwrap()
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn same_settings(a: &termios::Termios, b: &termios::Termios) -> bool {
    a.input_flags == b.input_flags
        && a.output_flags == b.output_flags
        && a.local_flags == b.local_flags
        && a.control_flags == b.control_flags
}

#[test]
fn serial_attaches_a_terminal_to_the_demo_vms_com1() {
    let test = "serial_attaches_a_terminal_to_the_demo_vms_com1";
    if !kvm_or_skip(test) {
        return;
    }
    ensure_vmm();
    let env = Env::new("serial");
    env.ok(&["demo"]);
    let serial_file = env.run_dir().join("demo.serial");
    let ready = "vmdesk demo: ready";
    let t = Instant::now();
    while !std::fs::read_to_string(&serial_file)
        .unwrap_or_default()
        .contains(ready)
    {
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "the demo did not start; COM1: {:?}",
            std::fs::read_to_string(&serial_file)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let pty = Pty::open();
    let before = pty.settings();
    assert!(
        before.local_flags.contains(LocalFlags::ICANON),
        "a cooked terminal to start"
    );
    let mut viewer = pty.spawn_serial(&env, "demo");
    assert!(
        pty.wait_for("Escape character is ^] (Ctrl+])", Duration::from_secs(10)),
        "{:?}",
        pty.text()
    );
    // The VMM's scrollback: the demo's start, printed long before this viewer came.
    assert!(
        pty.wait_for(ready, Duration::from_secs(10)),
        "{:?}",
        pty.text()
    );
    // Raw while attached.
    assert!(!pty.settings().local_flags.contains(LocalFlags::ICANON));

    // A second viewer on the socket, at the same time.
    let mut other = UnixStream::connect(env.run_dir().join("demo.serial-sock")).unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // Typed in the terminal: Ctrl+C goes to the guest too (raw mode), as byte 3.
    (&pty.master).write_all(b"hi\x03\r").unwrap();
    let echo = "vmdesk demo: key h\r\nvmdesk demo: key i\r\nvmdesk demo: key 3\r\nvmdesk demo: key enter\r\n";
    assert!(
        pty.wait_for(echo, Duration::from_secs(60)),
        "the terminal shows {:?}",
        pty.text()
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while !String::from_utf8_lossy(&seen).contains(echo) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the other viewer got {:?}",
            String::from_utf8_lossy(&seen)
        );
        if let Ok(n) = other.read(&mut buf) {
            assert!(n > 0, "the other viewer was disconnected");
            seen.extend_from_slice(&buf[..n]);
        }
    }
    assert!(
        std::fs::read_to_string(&serial_file)
            .unwrap()
            .contains(echo),
        "the serial file has it too"
    );
    assert!(viewer.try_wait().unwrap().is_none(), "still attached");

    // Ctrl+] detaches; the terminal is as it was.
    (&pty.master).write_all(b"\x1d").unwrap();
    let status = wait_exit(&mut viewer, Duration::from_secs(10)).expect("vmdesk serial ends");
    assert_eq!(status.code(), Some(0), "{:?}", pty.text());
    assert!(pty.wait_for(
        "Detached from the serial console of 'demo'",
        Duration::from_secs(5)
    ));
    assert!(
        same_settings(&before, &pty.settings()),
        "the terminal is restored"
    );

    // Attached when the VM is forced off: the attachment ends, the terminal restored.
    let pty = Pty::open();
    let mut viewer = pty.spawn_serial(&env, "demo");
    assert!(
        pty.wait_for(ready, Duration::from_secs(10)),
        "{:?}",
        pty.text()
    );
    env.ok(&["destroy", "demo"]);
    let status = wait_exit(&mut viewer, Duration::from_secs(10)).expect("vmdesk serial ends");
    assert_eq!(status.code(), Some(0), "{:?}", pty.text());
    assert!(
        pty.wait_for(
            "'demo' stopped: its serial console closed.",
            Duration::from_secs(5)
        ),
        "{:?}",
        pty.text()
    );
    assert!(same_settings(&before, &pty.settings()));
    assert!(
        !env.run_dir().join("demo.serial-sock").exists(),
        "the socket goes with the VM"
    );
    let o = env.vmdesk(&["serial", "demo"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o).trim(), "vmdesk: 'demo' is not running");
}
