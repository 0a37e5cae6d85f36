//! Linux finds the guest agent's port and the clipboard crosses it, both ways, to a VNC
//! client speaking the Extended Clipboard: the Debian cloud kernel boots straight into
//! `agent-initrd.img` (resources/scripts/test-assets.sh: busybox, virtio_pci and
//! virtio_console in load order, an /init), whose /init finds the virtio-serial port named
//! com.redhat.spice.0 through sysfs and plays spice-vdagentd's part on it with prepared
//! messages: it announces itself, takes the host's text when the host grabs the clipboard
//! and prints it on COM1, then grabs the clipboard with its own text and gives it when the
//! host asks. The VNC client here offers its text (notify, then provide on request) and
//! fetches the guest's (request on notify).
//!
//! The same guest and client run against QEMU (TCG, its virtio-serial-pci with a
//! `qemu-vdagent` chardev, its VNC server) here, as the reference; against vmdesk-vmm they
//! need hardware-backed KVM (kvm_pvm cannot run a guest kernel) and skip with one tallied
//! line. The real spice-vdagent against our end of the protocol is vmm/tests/guest_agent.rs.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use display::client::{Client, ClientOptions, ServerEvent};
use display::encoding::number;
use display::rfb::clipboard::{self, ExtClipboard};
use display::rfb::protocol::ClientMessage;

const SAY: &str = "vmdesk-agent: ";
const INITRD: &str = "agent-initrd.img";
/// Boot, modules and the exchange; QEMU's TCG is the slow one.
const TIMEOUT: Duration = Duration::from_secs(120);
const HOST_TEXT: &str = "from the VNC client: ünïcode ✓";
/// What test-assets.sh put in the guest's data.bin.
const GUEST_TEXT: &str = "copied in the linux guest: héllo ✓";

fn said(serial: &Path) -> Vec<String> {
    common::guest_said(serial, SAY)
}

fn wait_said(serial: &Path, line: &str, child: &mut Child, end: Instant) {
    loop {
        if said(serial).iter().any(|l| l == line) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the VM ended ({status}) before the guest said {line:?}:\n{}",
                std::fs::read_to_string(serial).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < end,
            "the guest never said {line:?}:\n{}",
            std::fs::read_to_string(serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_ext(c: &mut Client, (flags, payload): (u32, Vec<u8>)) {
    c.send(&ClientMessage::ExtendedCutText { flags, payload })
        .unwrap();
}

/// The next extended clipboard message from the server (updates are asked for and
/// skipped, so the server never waits on us).
fn next_clipboard(c: &mut Client, end: Instant) -> ExtClipboard {
    loop {
        assert!(Instant::now() < end, "no clipboard message from the server");
        match c.read_event() {
            Ok(ServerEvent::ExtendedCutText { flags, payload }) => {
                return clipboard::parse(flags, &payload, 1 << 20);
            }
            Ok(ServerEvent::Update(_)) => c.request(true).unwrap(),
            Ok(_) => {}
            Err(e) => panic!("VNC: {e}"),
        }
    }
}

/// Runs the exchange against the VM whose VNC server is at `vnc` and whose COM1 goes to
/// `serial`, and checks that the guest then powers the VM off.
fn exchange(vnc: SocketAddr, serial: &Path, vm: &mut Child) {
    let end = Instant::now() + TIMEOUT;
    wait_said(serial, "agent announced", vm, end);
    let mut c = Client::connect(vnc, &ClientOptions::default()).expect("VNC connect");
    c.set_encodings(&[number::RAW, number::EXTENDED_CLIPBOARD])
        .unwrap();
    c.request(false).unwrap();
    // The server's capabilities, answered with ours; then ours is offered.
    let caps = next_clipboard(&mut c, end);
    assert!(matches!(caps, ExtClipboard::Caps { .. }), "{caps:?}");
    send_ext(&mut c, clipboard::caps(1 << 20));
    send_ext(&mut c, clipboard::notify());
    let mut got = None;
    while got.is_none() {
        match next_clipboard(&mut c, end) {
            ExtClipboard::Request { formats } if formats & clipboard::TEXT != 0 => {
                send_ext(&mut c, clipboard::provide(HOST_TEXT, 1 << 20))
            }
            ExtClipboard::Notify { formats } if formats & clipboard::TEXT != 0 => {
                send_ext(&mut c, clipboard::request())
            }
            ExtClipboard::Provide { text: Some(t) } => got = Some(t),
            _ => {}
        }
    }
    assert_eq!(got.as_deref(), Some(GUEST_TEXT));
    let lines = said(serial);
    assert!(
        lines.contains(&format!("got {HOST_TEXT}")),
        "the guest read: {lines:#?}"
    );
    wait_said(serial, "gave its text", vm, end);
    let start = Instant::now();
    while vm.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = vm.try_wait().unwrap();
    common::stop(vm);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the guest did not power off"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("failed") || l.starts_with("message")),
        "{lines:#?}"
    );
}

fn assets(test: &str) -> Option<(PathBuf, PathBuf)> {
    common::linux_assets(test, INITRD)
}

#[test]
fn qemu_reference_shares_the_clipboard_with_the_agent_guest() {
    let test = "qemu_reference_shares_the_clipboard_with_the_agent_guest";
    let Some(qemu) = common::tool_or_skip(test, "qemu-system-x86_64") else {
        return;
    };
    let Some((kernel, initrd)) = assets(test) else {
        return;
    };
    let dir = common::temp_dir("agent-qemu");
    let serial = dir.join("com1.txt");
    // A free display: bind port 0 and hand its number over (QEMU takes 5900 + N).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let display = port
        .checked_sub(5900)
        .expect("an ephemeral port above 5900");
    let mut children = common::Children::default();
    let vm = children.add(
        "qemu",
        Command::new(qemu)
            .args([
                "-M",
                "pc",
                "-accel",
                "tcg",
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
            ])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", common::LINUX_CMDLINE])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args(["-chardev", "qemu-vdagent,id=agent,clipboard=on"])
            .args(["-device", "virtio-serial-pci"])
            .args([
                "-device",
                "virtserialport,chardev=agent,name=com.redhat.spice.0",
            ])
            .args(["-vnc", &format!("127.0.0.1:{display}")])
            .args(["-trace", "vdagent*", "-trace", "vnc_*", "-D"])
            .arg(dir.join("qemu-trace.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    exchange(SocketAddr::from(([127, 0, 0, 1], port)), &serial, vm);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn linux_shares_the_clipboard_through_our_agent_port() {
    let test = "linux_shares_the_clipboard_through_our_agent_port";
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some((kernel, initrd)) = assets(test) else {
        return;
    };
    let dir = common::temp_dir("agent-linux");
    let serial = dir.join("com1.txt");
    let mut children = common::Children::default();
    let vm = children.add(
        "vmdesk-vmm",
        Command::new(common::vmm_bin())
            .args(["--memory", "256M", "--vnc", "127.0.0.1:auto"])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", common::LINUX_CMDLINE])
            .arg("--serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let port = common::vnc_port(vm);
    exchange(SocketAddr::from(([127, 0, 0, 1], port)), &serial, vm);
    let _ = std::fs::remove_dir_all(dir);
}
