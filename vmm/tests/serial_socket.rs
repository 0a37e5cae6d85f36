//! COM1 through `--serial-socket`, end to end: the real `vmdesk-vmm` on KVM with SeaBIOS
//! booting `tests/guests/serialecho.S`, which prints a prompt and echoes what COM1
//! receives. Two clients see the prompt (one live, one from the scrollback), one types,
//! the guest's echo reaches both, and the `--serial` file has it all; the clients stay
//! connected across a guest reset. Bad socket paths are bad input. And a Linux shell on
//! COM1 answers a command typed through the socket (in the nested host here).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::guests;

/// SeaBIOS's POST runs in KVM's instruction emulator here: allow it time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const PROMPT: &str = "vmdesk-guest serialecho: type> ";

/// A socket client that keeps everything it has read.
struct Viewer {
    stream: UnixStream,
    seen: Vec<u8>,
}

impl Viewer {
    fn connect(path: &Path) -> Viewer {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Viewer {
            stream,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads until `want` occurs `times` times in all it has read (false on timeout).
    fn wait_for(&mut self, want: &str, times: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while self.text().matches(want).count() < times {
            if start.elapsed() > timeout {
                return false;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        true
    }
}

/// The VMM, stopped when the test ends, a failed assertion included.
struct Vmm(std::process::Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            common::stop(&mut self.0);
        }
    }
}

fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn two_viewers_share_com1_through_the_socket() {
    let test = "two_viewers_share_com1_through_the_socket";
    if !common::kvm_or_skip(test) {
        return;
    }
    let Some(rom) = guests::option_rom(test, "serialecho", &[]) else {
        return;
    };
    let dir = common::temp_dir("serial-socket");
    let serial = dir.join("com1.txt");
    let sock = dir.join("com1.sock");
    let control = dir.join("vm.sock");
    let (child, log) = common::spawn_vmm(
        &dir,
        "serialecho",
        &[
            "--vnc",
            "none",
            "--serial",
            &format!("file:{}", serial.display()),
            "--serial-socket",
            sock.to_str().unwrap(),
            "--control",
            control.to_str().unwrap(),
            "--option-rom",
            rom.to_str().unwrap(),
        ],
    );
    let mut vmm = Vmm(child);
    let child = &mut vmm.0;
    assert!(
        wait_for_file(&sock, Duration::from_secs(30)),
        "no serial socket"
    );
    // Connected before the guest printed anything: it sees the prompt as it comes.
    let mut early = Viewer::connect(&sock);
    let text = common::wait_for_log(child, &log, PROMPT, BOOT_TIMEOUT);
    if !text.contains(PROMPT) {
        panic!("the program did not start; log:\n{text}");
    }
    assert!(
        early.wait_for(PROMPT, 1, Duration::from_secs(10)),
        "the early viewer got {:?}",
        early.text()
    );
    // Connected after: the scrollback brings the prompt.
    let mut late = Viewer::connect(&sock);
    assert!(
        late.wait_for(PROMPT, 1, Duration::from_secs(10)),
        "the late viewer got {:?}",
        late.text()
    );

    // One types; the guest echoes it to both.
    late.stream.write_all(b"hello, guest\r").unwrap();
    let echo = format!("{PROMPT}hello, guest\r\n");
    for (who, v) in [("early", &mut early), ("late", &mut late)] {
        assert!(
            v.wait_for(&echo, 1, Duration::from_secs(30)),
            "the {who} viewer got {:?}",
            v.text()
        );
    }
    // The other one types too, a line longer than the UART's FIFO (64 bytes): nothing is
    // lost while the guest catches up.
    let long: String = (0..150)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    early
        .stream
        .write_all(format!("{long}\r").as_bytes())
        .unwrap();
    let echo2 = format!("{echo}{long}\r\n");
    for (who, v) in [("early", &mut early), ("late", &mut late)] {
        assert!(
            v.wait_for(&echo2, 1, Duration::from_secs(60)),
            "the {who} viewer got {:?}",
            v.text()
        );
    }
    // The serial file is still the VM's whole COM1 log.
    let file = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(file.contains(&echo2), "COM1 file: {file:?}");

    // A guest reset rebuilds the machine; the viewers stay and see it boot again, and
    // their input reaches the new machine's UART.
    let mut c = common::ControlClient::connect(&control);
    assert_eq!(
        c.call(r#"{"execute":"reset"}"#)["return"],
        serde_json::json!({})
    );
    for (who, v) in [("early", &mut early), ("late", &mut late)] {
        assert!(
            v.wait_for(PROMPT, 2, BOOT_TIMEOUT),
            "after the reset the {who} viewer got {:?}",
            v.text()
        );
    }
    late.stream.write_all(b"again\r").unwrap();
    assert!(
        early.wait_for(&format!("{PROMPT}again\r\n"), 1, Duration::from_secs(30)),
        "after the reset: {:?}",
        early.text()
    );

    let status = common::stop(child);
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the VMM removes its serial socket");
    // The viewers see the end of the stream.
    let mut buf = [0u8; 64];
    early
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match early.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("the viewer's connection is still open after the VMM ended: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_serial_socket_path_is_bad_input() {
    if !common::kvm_or_skip("a_bad_serial_socket_path_is_bad_input") {
        return;
    }
    common::assert_usage_error(
        &[
            "--serial",
            "none",
            "--serial-socket",
            "/nonexistent/dir/com1.sock",
        ],
        &[],
        &[
            "--serial-socket",
            "/nonexistent/dir/com1.sock",
            "No such file",
        ],
    );
    let long = format!("/tmp/{}.sock", "x".repeat(120));
    common::assert_usage_error(
        &["--serial", "none", "--serial-socket", &long],
        &[],
        &["--serial-socket", "serial socket"],
    );
}

/// A Linux shell on COM1, through the socket as `vmdesk serial` and the Serial window use
/// it: the Debian cloud kernel with `console=ttyS0` runs busybox's shell as its init, a
/// viewer connected late gets the boot from the scrollback and the shell's prompt, and a
/// command typed as a terminal sends it (CR at the end, the tty's line discipline echoing
/// and answering) comes back with its output. Needs a guest kernel: hardware-backed KVM,
/// else the nested test host.
#[test]
fn a_linux_shell_on_com1_answers_through_the_socket() {
    let test = "a_linux_shell_on_com1_answers_through_the_socket";
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let (Some(kernel), Some(initrd)) = (
        common::asset_or_skip(test, "vmlinuz"),
        common::asset_or_skip(test, "initrd.img"),
    ) else {
        return;
    };
    let dir = common::temp_dir("serial-linux");
    let serial = dir.join("com1.txt");
    let sock = dir.join("com1.sock");
    let cmdline = format!("{} rdinit=/bin/sh", common::LINUX_CMDLINE);
    let (child, _log) = common::spawn_vmm(
        &dir,
        "serial-linux",
        &[
            "--memory",
            "256M",
            "--vnc",
            "none",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--serial",
            &format!("file:{}", serial.display()),
            "--serial-socket",
            sock.to_str().unwrap(),
        ],
    );
    let _vmm = Vmm(child);
    assert!(
        wait_for_file(&sock, Duration::from_secs(30)),
        "no serial socket"
    );
    // Until the shell is up (its prompt ends "# "): then a viewer that comes now gets all
    // of COM1's output so far from the scrollback.
    let start = Instant::now();
    while !std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .contains("# ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no shell prompt on COM1: {}",
            std::fs::read_to_string(&serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut v = Viewer::connect(&sock);
    assert!(
        v.wait_for("# ", 1, Duration::from_secs(10)),
        "the viewer got {:?}",
        v.text()
    );
    // The scrollback starts where COM1's output did.
    let file = std::fs::read(&serial).unwrap_or_default();
    let head = &file[..file.len().min(40)];
    assert!(
        v.seen.starts_with(head),
        "the replay {:?} does not start as COM1's output {:?}",
        v.text(),
        String::from_utf8_lossy(head)
    );
    // Typed as a terminal sends it. The answer is computed by the guest's shell, so it
    // cannot be the echo of what was typed.
    v.stream.write_all(b"echo $((6*7))-serial-ok\r").unwrap();
    assert!(
        v.wait_for("42-serial-ok", 1, Duration::from_secs(60)),
        "the shell's answer: {:?}",
        v.text()
    );
    let _ = std::fs::remove_dir_all(dir);
}
