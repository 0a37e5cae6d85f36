//! The guest agent's clipboard against the real SPICE agent, with no VM: Debian's
//! spice-vdagentd (the daemon that owns the virtio port in a guest) and spice-vdagent (its
//! X11 session agent) run on this host against our end of the protocol (`vmm::vdagent`).
//! The virtio port is a pseudo-terminal in raw mode here, a byte stream both ways as the
//! port is; the guest's desktop is an Xvfb whose CLIPBOARD selection xclip sets and reads.
//! The device under the port (virtio-serial) has its own tests; with a Linux guest on
//! hardware-backed KVM the same agent opens /dev/virtio-ports/com.redhat.spice.0.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use vmm::vdagent::VdAgent;

/// Our end of the port: the agent behind the pty's master, its replies written back, the
/// guest's clipboard texts sent to the returned channel.
fn serve(master: File, agent: Arc<Mutex<VdAgent>>) -> Receiver<String> {
    let (tx, rx) = unbounded();
    let mut writer = master.try_clone().unwrap();
    let mut reader = master;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut reply = Vec::new();
            let text = agent.lock().unwrap().guest_wrote(&buf[..n], &mut reply);
            if !reply.is_empty() && writer.write_all(&reply).is_err() {
                return;
            }
            if let Some(t) = text {
                let _ = tx.send(t);
            }
        }
    });
    rx
}

/// Whether `ready` became true within 10 s (asked every 50 ms).
fn within_10s(mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while !ready() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn the_spice_agent_shares_the_clipboard_both_ways() {
    let test = "the_spice_agent_shares_the_clipboard_both_ways";
    let (Some(_), Some(_)) = (
        common::tool_or_skip(test, "Xvfb"),
        common::tool_or_skip(test, "xclip"),
    ) else {
        return;
    };
    let Some(daemon) = common::asset_or_skip(test, "spice-vdagent/usr/sbin/spice-vdagentd") else {
        return;
    };
    let session = common::assets_dir().join("spice-vdagent/usr/bin/spice-vdagent");
    let dir = common::temp_dir("guest-agent");

    // The port: a raw pty (no echo, no line discipline), as the virtio port is.
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut t = tcgetattr(&pty.slave).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
    let port = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();

    let agent = Arc::new(Mutex::new(VdAgent::new(1 << 20)));
    let mut to_guest = Vec::new();
    agent.lock().unwrap().guest_open(true, &mut to_guest);
    let mut master = File::from(pty.master);
    master.write_all(&to_guest).unwrap();
    let from_guest = serve(master.try_clone().unwrap(), agent.clone());

    let mut children = common::Children::default();
    let x = common::x11::Xvfb::start().expect("Xvfb did not start");
    let display = x.display.clone();
    let socket = dir.join("vdagent.sock");
    let uinput = dir.join("uinput");
    File::create(&uinput).unwrap();
    let log = |name: &str| File::create(dir.join(name)).unwrap();
    // -X: no logind/ConsoleKit (any session agent is the active one); -f/-u: a file, not
    // /dev/uinput (its mouse is not used here).
    children.add(
        "spice-vdagentd",
        Command::new(&daemon)
            .args(["-x", "-X", "-d", "-f", "-u"])
            .arg(&uinput)
            .arg("-s")
            .arg(&port)
            .arg("-S")
            .arg(&socket)
            .stderr(log("vdagentd.log")),
    );
    assert!(within_10s(|| socket.exists()), "no spice-vdagentd socket");
    children.add(
        "spice-vdagent",
        Command::new(&session)
            .args(["-x", "-d", "--display", &display])
            .arg("-s")
            .arg(&port)
            .arg("-S")
            .arg(&socket)
            .env("DISPLAY", &display)
            .stderr(log("vdagent.log")),
    );
    let logs = || {
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        format!(
            "--- spice-vdagentd ---\n{}\n--- spice-vdagent ---\n{}",
            read("vdagentd.log"),
            read("vdagent.log")
        )
    };
    assert!(
        within_10s(|| agent.lock().unwrap().sharing()),
        "the agent never announced itself\n{}",
        logs()
    );

    // Guest -> host: an application in the guest copies; the text reaches us.
    let copied = "copied in the guest: héllo € ünïcode\nsecond line";
    children.0.push(common::x11::x_copy(&display, copied));
    let got = from_guest
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the guest's copy never reached the host\n{}", logs()));
    assert_eq!(got, copied);

    // Host -> guest: a VNC client's text becomes the guest's clipboard.
    let pasted = "from the VNC client: ✓ 日本語";
    let mut to_guest = Vec::new();
    agent
        .lock()
        .unwrap()
        .host_clipboard(pasted.to_owned(), &mut to_guest);
    assert!(!to_guest.is_empty(), "no grab sent to the guest");
    master.write_all(&to_guest).unwrap();
    assert!(
        within_10s(|| common::x11::x_clipboard(&display).as_deref() == Some(pasted)),
        "the guest's X clipboard never got the host's text (has {:?})\n{}",
        common::x11::x_clipboard(&display),
        logs()
    );
    drop(pty.slave);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
