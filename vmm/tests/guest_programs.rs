//! Real-mode programs from `tests/guests/`, built at test time and booted by SeaBIOS
//! from an option ROM (`--option-rom`): end-to-end proofs that a guest's ACPI poweroff
//! ends the VM, that each reset path restarts it through the firmware, that keys typed by
//! a VNC client reach a program reading them through the BIOS, and that keys sent with the
//! control socket's `send-key` reach the keyboard as the right scan codes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::guests;

/// SeaBIOS's POST runs in KVM's instruction emulator here: allow it time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits for the child to exit by itself.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Waits until `needle` occurs `times` times in `log` (or the child exits, or time runs
/// out); returns the count seen and the log.
fn wait_for_count(
    child: &mut Child,
    log: &Path,
    needle: &str,
    times: usize,
    timeout: Duration,
) -> (usize, String) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let n = text.matches(needle).count();
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if n >= times || exited || start.elapsed() > timeout {
            return (n, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `log` contains any of `needles` (or the child exits, or time runs out).
fn wait_for_any(child: &mut Child, log: &Path, needles: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if needles.iter().any(|n| text.contains(n)) || exited || start.elapsed() > timeout {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

#[test]
fn acpi_poweroff_from_a_guest_ends_the_vm() {
    let test = "acpi_poweroff_from_a_guest_ends_the_vm";
    if !common::kvm_or_skip(test) {
        return;
    }
    let Some(rom) = guests::option_rom(test, "poweroff", &[]) else {
        return;
    };
    let dir = common::temp_dir("guest-poweroff");
    let serial = dir.join("com1.txt");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "poweroff",
        &[
            "--vnc",
            "none",
            "--serial",
            &format!("file:{}", serial.display()),
            "--option-rom",
            rom.to_str().unwrap(),
        ],
    );
    let status = wait_exit(&mut child, BOOT_TIMEOUT);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        common::stop(&mut child);
        panic!("the VM did not power off within {BOOT_TIMEOUT:?}; log:\n{text}");
    };
    let err = stderr_of(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; stderr:\n{err}\nlog:\n{text}"
    );
    let banner = "vmdesk-guest poweroff: powering off through ACPI";
    // SeaBIOS found the ROM in fw_cfg, listed it and booted it.
    assert!(
        text.contains("genroms/poweroff"),
        "fw_cfg file missing from the log:\n{text}"
    );
    assert!(
        text.contains(banner),
        "the program's line is not in the log:\n{text}"
    );
    assert!(!text.contains("still running after SLP_EN"), "{text}");
    let com1 = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(com1.contains(banner), "COM1 got: {com1:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Boots `reset.S` built for one reset path and checks that the machine went through the
/// firmware again and rebooted the program.
fn reset_reboots(test: &str, method: i64, banner: &str, needs_hardware_kvm: bool) {
    let usable = if needs_hardware_kvm {
        common::hardware_kvm_or_nested(
            test,
            "its instruction emulator does not check the IDT limit, so no triple fault",
        )
    } else {
        common::kvm_or_skip(test)
    };
    if !usable {
        return;
    }
    let Some(rom) = guests::option_rom(test, "reset", &[("METHOD", method)]) else {
        return;
    };
    let dir = common::temp_dir(&format!("guest-reset{method}"));
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "reset",
        &[
            "--vnc",
            "none",
            "--serial",
            "none",
            "--option-rom",
            rom.to_str().unwrap(),
        ],
    );
    let (boots, text) = wait_for_count(&mut child, &log, banner, 2, BOOT_TIMEOUT * 2);
    let still_running = matches!(child.try_wait(), Ok(None));
    let status = common::stop(&mut child);
    let err = stderr_of(&mut child);
    assert!(
        boots >= 2,
        "saw the banner {boots} time(s), want 2; running: {still_running}; stderr:\n{err}\nlog:\n{text}"
    );
    assert!(
        still_running,
        "the VMM exited by itself: {status:?}; stderr:\n{err}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends it cleanly; stderr:\n{err}"
    );
    assert!(!text.contains("still running after the reset"), "{text}");
    // The second boot went through POST again, not straight back into the ROM.
    let second = text.match_indices(banner).nth(1).unwrap().0;
    let first = text.find(banner).unwrap();
    let between = &text[first..second];
    assert!(
        between.contains("SeaBIOS (version"),
        "no firmware start between the two boots:\n{between}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reset_through_keyboard_controller_reboots() {
    reset_reboots(
        "reset_through_keyboard_controller_reboots",
        1,
        "resetting through the keyboard controller",
        false,
    );
}

#[test]
fn reset_through_port_cf9_reboots() {
    reset_reboots(
        "reset_through_port_cf9_reboots",
        2,
        "resetting through port 0xcf9",
        false,
    );
}

/// Needs a CPU that checks the IDT limit: KVM's instruction emulator (all there is on
/// kvm_pvm hosts) does not, so the fault never happens there (see reset.S).
#[test]
fn triple_fault_reboots() {
    reset_reboots("triple_fault_reboots", 3, "resetting by triple fault", true);
}

/// vncdotool's `vncdo` from the test venv (or PATH); `None` after a SKIP line when it is
/// missing, unless VMDESK_REQUIRE_TOOLS=1.
fn vncdo_or_skip(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("VMDESK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"));
    let p = venv.join("bin/vncdo");
    if p.is_file() {
        return Some(p);
    }
    common::tool_or_skip(test, "vncdo")
}

/// Reads the VMM's stderr in the background and hands over the VNC address from its
/// `vnc: listening on ADDR` line.
fn vnc_address(child: &mut Child) -> Option<String> {
    let stderr = child.stderr.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("vnc: listening on ") {
                let _ = tx.send(addr.trim().to_string());
            } else {
                eprintln!("{line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

#[test]
fn keys_typed_over_vnc_reach_a_bios_program() {
    let test = "keys_typed_over_vnc_reach_a_bios_program";
    if !common::kvm_or_skip(test) {
        return;
    }
    let Some(vncdo) = vncdo_or_skip(test) else {
        return;
    };
    let Some(rom) = guests::option_rom(test, "keyecho", &[]) else {
        return;
    };
    let dir = common::temp_dir("guest-keyecho");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "keyecho",
        &[
            "--vnc",
            "127.0.0.1:auto",
            "--serial",
            "none",
            "--option-rom",
            rom.to_str().unwrap(),
        ],
    );
    let Some(addr) = vnc_address(&mut child) else {
        common::stop(&mut child);
        panic!("no 'vnc: listening on' line");
    };
    let addr: std::net::SocketAddr = addr.parse().expect("vnc address");
    let prompt = "vmdesk-guest keyecho: type> ";
    let text = common::wait_for_log(&mut child, &log, prompt, BOOT_TIMEOUT);
    if !text.contains(prompt) {
        common::stop(&mut child);
        panic!("the program did not start; log:\n{text}");
    }
    common::vncdo(&vncdo, addr.port(), &["type", "hello"]);
    let want = format!("{prompt}hello");
    let text = common::wait_for_log(&mut child, &log, &want, Duration::from_secs(30));
    let status = common::stop(&mut child);
    let after = text.split(prompt).nth(1).unwrap_or_default();
    assert!(
        text.contains(&want),
        "the echo after the prompt is {after:?}"
    );
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn keys_sent_over_the_control_socket_reach_a_bios_program() {
    let test = "keys_sent_over_the_control_socket_reach_a_bios_program";
    if !common::kvm_or_skip(test) {
        return;
    }
    let Some(rom) = guests::option_rom(test, "keyecho", &[("SCANCODES", 1)]) else {
        return;
    };
    let dir = common::temp_dir("guest-sendkey");
    let sock = dir.join("vm.sock");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "sendkey",
        &[
            "--serial",
            "none",
            "--control",
            sock.to_str().unwrap(),
            "--option-rom",
            rom.to_str().unwrap(),
        ],
    );
    let prompt = "vmdesk-guest keyecho: type> ";
    let text = common::wait_for_log(&mut child, &log, prompt, BOOT_TIMEOUT);
    if !text.contains(prompt) {
        common::stop(&mut child);
        panic!("the program did not start; log:\n{text}");
    }
    let mut c = common::ControlClient::connect(&sock);
    // One unknown name fails the request, and nothing of it is typed.
    let e = c.call(r#"{"execute":"send-key","keys":["a","ctrl-Retrun"]}"#);
    let desc = e["error"]["desc"].as_str().unwrap_or_default();
    assert!(desc.contains("unknown key 'Retrun'"), "{e}");

    let t = Instant::now();
    let r =
        c.call(r#"{"execute":"send-key","keys":["ctrl-alt-Delete","Return","a","shift-a","A"]}"#);
    let took = t.elapsed();
    assert_eq!(r["return"], serde_json::json!({}), "{r}");
    // Five chords, each held 100 ms, 100 ms apart: the answer comes once all are up.
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    // Set 1, as the guest reads it: presses in order, releases (0x80 set) in reverse.
    let want = [
        "1d 38 e0 53 e0 d3 b8 9d ", // ctrl-alt-Delete
        "1c 9c ",                   // Return
        "1e 9e ",                   // a
        "2a 1e 9e aa ",             // shift-a
        "2a 1e 9e aa ",             // A: Shift comes with it
    ]
    .concat();
    let text = common::wait_for_log(
        &mut child,
        &log,
        &format!("{prompt}{want}"),
        Duration::from_secs(30),
    );
    // Anything more would show within a moment (a stray byte, a key typed twice).
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    let status = common::stop(&mut child);
    let after = text.split(prompt).nth(1).unwrap_or_default();
    assert_eq!(after, want, "the bytes the guest read");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// What `vbe.S` draws at (x, y): eight 128-pixel bars, reversed on the bottom half.
fn vbe_expected(x: usize, y: usize) -> u32 {
    const BARS: [u32; 8] = [
        0xff0000, 0x00ff00, 0x0000ff, 0xffffff, 0xffff00, 0x00ffff, 0xff00ff, 0x808080,
    ];
    let flip = if y < 384 { 0 } else { 7 };
    BARS[(x / 128) ^ flip]
}

#[test]
fn vbe_mode_set_by_a_guest_reaches_a_vnc_client() {
    use display::client::{Client, ClientOptions};
    use display::encoding::number;
    use display::pixel::PixelFormat;

    let test = "vbe_mode_set_by_a_guest_reaches_a_vnc_client";
    // Whether this machine has VBE shows only once the program runs: check /dev/kvm
    // without tallying, and tally below.
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        common::kvm_or_skip(test);
        return;
    }
    let Some(rom) = guests::option_rom(test, "vbe", &[]) else {
        return;
    };
    let dir = common::temp_dir("guest-vbe");
    let (mut child, log) = common::spawn_vmm(
        &dir,
        "vbe",
        &[
            "--vnc",
            "127.0.0.1:auto",
            "--serial",
            "none",
            "--option-rom",
            rom.to_str().unwrap(),
        ],
    );
    let Some(addr) = vnc_address(&mut child) else {
        common::stop(&mut child);
        panic!("no 'vnc: listening on' line");
    };
    // Connect during POST, so the mode change has to reach this client as a resize.
    let mut client = Client::connect(addr.parse().unwrap(), &ClientOptions::default())
        .expect("connect to the VMM's VNC server");
    client.set_pixel_format(PixelFormat::NATIVE).unwrap();
    client
        .set_encodings(&[number::RAW, number::DESKTOP_SIZE])
        .unwrap();
    client.update(false).expect("first update");
    let before = (client.fb.width, client.fb.height);

    // Every way the program ends prints one of these.
    let ends = [
        "vbe: drawn",
        "vbe: no VBE",
        "padded scan lines",
        "failed\r\n",
    ];
    let text = wait_for_any(&mut child, &log, &ends, BOOT_TIMEOUT);
    if text.contains("vmdesk-guest vbe: no VBE") {
        common::stop(&mut child);
        let why = "this machine has no VGA device with VBE (the VGA BIOS did not answer int 10h AX=4F01h)";
        eprintln!("SKIP {test}: {why}");
        common::tally(&format!("skipped {test}: {why}"));
        return;
    }
    common::tally(&format!("ran {test}"));
    if !text.contains("vmdesk-guest vbe: drawn 1024x768") {
        common::stop(&mut child);
        panic!("the program did not finish drawing; log:\n{text}");
    }

    // Updates until the client holds the whole picture (the VMM refreshes from the
    // framebuffer's dirty pages on its own clock).
    let mut resized = false;
    let start = Instant::now();
    let mut wrong = usize::MAX;
    while start.elapsed() < Duration::from_secs(20) {
        let rects = client.update(true).expect("update");
        resized |= rects.iter().any(|(_, e)| *e == number::DESKTOP_SIZE);
        if (client.fb.width, client.fb.height) == (1024, 768) {
            wrong = (0..768)
                .flat_map(|y| (0..1024).map(move |x| (x, y)))
                .filter(|&(x, y)| client.fb.pixels[y * 1024 + x] != vbe_expected(x, y))
                .count();
            if wrong == 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = common::stop(&mut child);
    assert_eq!(
        (client.fb.width, client.fb.height),
        (1024, 768),
        "screen size after the mode set (was {before:?})"
    );
    assert!(
        resized || before == (1024, 768),
        "no DesktopSize reached the client"
    );
    assert_eq!(wrong, 0, "pixels that differ from the pattern");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// The same ROM under QEMU (the reference, same SeaBIOS): proves the program itself, so a
/// failure of ours above is ours and not the program's.
fn spawn_qemu(dir: &Path, name: &str, rom: &Path) -> (Child, PathBuf) {
    let log = dir.join(format!("qemu-{name}.log"));
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "pc", "-enable-kvm", "-cpu", "host,-arch-capabilities"])
        .args(["-m", "512", "-display", "none", "-net", "none"])
        .args(["-serial", "null"])
        .arg("-debugcon")
        .arg(format!("file:{}", log.display()))
        .args(["-global", "isa-debugcon.iobase=0x402"])
        .arg("-option-rom")
        .arg(rom)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn qemu");
    (child, log)
}

#[test]
fn qemu_runs_the_same_programs() {
    let test = "qemu_runs_the_same_programs";
    if !common::kvm_or_skip(test) || common::tool_or_skip(test, "qemu-system-x86_64").is_none() {
        return;
    }
    let Some(poweroff) = guests::option_rom(test, "poweroff", &[]) else {
        return;
    };
    let Some(reset) = guests::option_rom(test, "reset", &[("METHOD", 2)]) else {
        return;
    };
    let dir = common::temp_dir("guest-qemu");

    let (mut child, log) = spawn_qemu(&dir, "poweroff", &poweroff);
    let status = wait_exit(&mut child, BOOT_TIMEOUT);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        common::stop(&mut child);
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "QEMU did not power off; log:\n{text}"
    );
    assert!(
        text.contains("vmdesk-guest poweroff: powering off through ACPI"),
        "{text}"
    );

    let banner = "resetting through port 0xcf9";
    let (mut child, log) = spawn_qemu(&dir, "reset", &reset);
    let (boots, text) = wait_for_count(&mut child, &log, banner, 2, BOOT_TIMEOUT);
    common::stop(&mut child);
    assert!(
        boots >= 2,
        "QEMU booted the reset program {boots} time(s):\n{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
