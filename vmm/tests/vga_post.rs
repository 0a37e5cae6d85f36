//! Real SeaBIOS with its real VGA BIOS on the machine with a display: the VGA option ROM
//! runs from the ROM BAR, sets text mode, and the surface (what VNC clients see) shows
//! SeaBIOS's banner, read back from the pixels with the font in the VGA BIOS image.

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use display::surface::Surface;
use vmm::devices::vga::VGABIOS_PATH;
use vmm::devices::vga::render::read_text;
use vmm::firmware::{DEFAULT_FIRMWARE, Firmware};
use vmm::machine::{Boot, MachineConfig, Outputs, Sink};
use vmm::vm::{self, Outcome, SerialSlot};

const TIMEOUT: Duration = Duration::from_secs(90);

fn tools_or_skip(test: &str) -> bool {
    for f in [DEFAULT_FIRMWARE, VGABIOS_PATH] {
        if !Path::new(f).exists() {
            if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{test}: {f} missing (apt-get install seabios)");
            }
            eprintln!("SKIP {test}: {f} missing (apt-get install seabios)");
            return false;
        }
    }
    true
}

#[test]
fn seabios_vgabios_shows_its_banner_on_the_surface() {
    let test = "seabios_vgabios_shows_its_banner_on_the_surface";
    // RUST_LOG=vmm=debug shows the device's view (BARs mapped, the framebuffer slot).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    if !common::kvm_or_skip(test) || !tools_or_skip(test) {
        return;
    }
    let dir = common::temp_dir("vga-post");
    let log_path = dir.join("debugcon.log");
    let log = Arc::new(std::fs::File::create(&log_path).unwrap());
    let surface = Surface::new(640, 480);
    let mut cfg = MachineConfig {
        display: Some(surface.clone()),
        ..MachineConfig::new(256 << 20, 1, Boot::Firmware(Firmware::load(None).unwrap()))
    };
    let outputs = Outputs {
        serial: Sink::None,
        debugcon: Sink::File(log),
        ..Outputs::default()
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let runner = std::thread::spawn(move || {
        let kvm = vmm::kvm::open().unwrap();
        let slot: SerialSlot = Arc::new(Mutex::new(None));
        let (_control_tx, control_rx) = crossbeam_channel::unbounded();
        let input = vmm::input::GuestInput::new(Surface::new(1, 1));
        let inputs = vm::Inputs {
            stop: &stop_rx,
            control: &control_rx,
            serial_slot: &slot,
            input: &input,
        };
        vm::run_once(&kvm, &mut cfg, &outputs, &inputs)
    });

    let font = common::vga_font();
    let start = Instant::now();
    let (mut text, mut screen) = (String::new(), Vec::new());
    while start.elapsed() < TIMEOUT && !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        text.clear();
        if let Ok(mut f) = std::fs::File::open(&log_path) {
            let _ = f.read_to_string(&mut text);
        }
        let (w, h, pixels) = surface.snapshot();
        screen = if (w, h) == (720, 400) {
            read_text(&pixels, 720, 400, &font, 9, 16)
        } else {
            Vec::new()
        };
        // The log line comes before the same line reaches the screen: wait for both.
        if text.contains("No bootable device.")
            && screen.iter().any(|l| l.contains("SeaBIOS"))
            && screen.iter().any(|l| l.starts_with("No bootable device."))
        {
            break;
        }
    }
    let _ = stop_tx.send(());
    let outcome = runner.join().unwrap().unwrap();
    assert_eq!(outcome, Outcome::Stopped, "log:\n{text}");
    assert!(
        text.contains("Running option rom at c000:0003"),
        "the VGA BIOS did not run from the ROM BAR:\n{text}"
    );
    assert!(
        text.contains("PCI: init bdf=00:02.0 id=1234:1111"),
        "{text}"
    );
    assert!(
        screen.iter().any(|l| l.starts_with("SeaBIOS (version")),
        "no SeaBIOS banner on the surface: {:?} ({:?})\nlog:\n{text}",
        screen,
        surface.size()
    );
    // For holding the screen against QEMU's `screendump` of the same POST.
    if let Ok(path) = std::env::var("VMDESK_VGA_DUMP") {
        let (w, h, pixels) = surface.snapshot();
        let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
        for p in pixels {
            ppm.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
        }
        std::fs::write(path, ppm).unwrap();
    }

    // QEMU with the same SeaBIOS and VGA BIOS draws the same lines with the same pixels.
    if let Some(qemu) = common::tool_or_skip(test, "qemu-system-x86_64") {
        let (qw, qh, qpixels) = qemu_post_screen(&qemu, &dir);
        assert_eq!((qw, qh), (720, 400));
        let qscreen = read_text(&qpixels, 720, 400, &font, 9, 16);
        let (_, _, pixels) = surface.snapshot();
        for needle in ["SeaBIOS (version", "No bootable device."] {
            let row = |s: &[String]| {
                s.iter()
                    .position(|l| l.starts_with(needle))
                    .unwrap_or_else(|| panic!("'{needle}' not on the screen: {s:?}"))
            };
            let (ours, theirs) = (row(&screen), row(&qscreen));
            let band = |px: &[u32], r: usize| px[r * 16 * 720..(r + 1) * 16 * 720].to_vec();
            assert!(
                band(&pixels, ours) == band(&qpixels, theirs),
                "the line '{needle}' differs from QEMU's pixels"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// QEMU's screen at the end of the same POST, from its monitor's `screendump` (PPM).
fn qemu_post_screen(qemu: &Path, dir: &Path) -> (usize, usize, Vec<u32>) {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let log = dir.join("qemu-debugcon.log");
    let sock = dir.join("qemu-monitor.sock");
    let shot = dir.join("qemu.ppm");
    let child = std::process::Command::new(qemu)
        .args(["-M", "pc", "-enable-kvm", "-cpu", "host,-arch-capabilities"])
        .args(["-m", "256", "-smp", "1", "-display", "none", "-net", "none"])
        .arg("-debugcon")
        .arg(format!("file:{}", log.display()))
        .args(["-global", "isa-debugcon.iobase=0x402", "-monitor"])
        .arg(format!("unix:{},server,nowait", sock.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start qemu");
    let mut child = KillOnDrop(Some(child));
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("No bootable device.")
    {
        assert!(start.elapsed() < TIMEOUT, "QEMU did not finish its POST");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let QEMU's display refresh catch up with the last line.
    std::thread::sleep(Duration::from_millis(500));
    let mut mon = UnixStream::connect(&sock).expect("QEMU monitor");
    writeln!(mon, "screendump {}", shot.display()).unwrap();
    let mut image = Vec::new();
    while start.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(200));
        image = std::fs::read(&shot).unwrap_or_default();
        if image.len() >= 720 * 400 * 3 {
            break;
        }
    }
    let _ = writeln!(mon, "quit");
    if let Some(mut c) = child.0.take() {
        let _ = c.wait();
    }
    parse_ppm(&image).expect("QEMU's screendump is a PPM")
}

/// Stops QEMU (the process this test started) if the test fails midway.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn parse_ppm(b: &[u8]) -> Option<(usize, usize, Vec<u32>)> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while b.get(i)?.is_ascii_whitespace() {
            i += 1;
        }
        let s = i;
        while !b.get(i)?.is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&b[s..i]).ok()?.to_string());
    }
    i += 1;
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let (w, h): (usize, usize) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    let px = b.get(i..i + w * h * 3)?;
    Some((
        w,
        h,
        px.chunks_exact(3)
            .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
            .collect(),
    ))
}
