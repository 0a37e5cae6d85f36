//! Linux drives our screen and input devices: the Debian cloud kernel boots straight into
//! `input-initrd.img` (resources/scripts/test-assets.sh builds it from the same kernel
//! package: busybox, evdev and virtio_pci + virtio_input in load order, an /init), which
//! reports the input devices it finds, the i8042's serio ports, the framebuffer devices and
//! the VGA's framebuffer BAR on COM1, draws a white band over the top 8 rows of the screen,
//! and then prints every event the keyboard and the tablet deliver. The test sends a key and
//! pointer moves over VNC with vncdotool, checks that the guest read an EV_KEY with KEY_A
//! from "AT Translated Set 2 keyboard" and EV_ABS positions from "vmdesk tablet" (scaled as
//! the tablet scales them), and that a VNC capture is 1024x768 with the guest's band on it.
//!
//! What the cloud kernel (6.1, linux-image-cloud-amd64) cannot show, and so what is not
//! tested here: it has no DRM at all (`# CONFIG_DRM is not set`), so no bochs-drm mode set;
//! no PS/2 mouse driver (`# CONFIG_INPUT_MOUSE is not set`), so psmouse never probes our
//! mouse and only the i8042's AUX serio port is checked; and of the firmware framebuffer
//! drivers only efifb (`CONFIG_SYSFB=y` without SYSFB_SIMPLEFB, no FB_VESA, no FB_SIMPLE).
//! Direct boot describes the 1024x768x32 screen in `screen_info` as a VESA linear
//! framebuffer (VIDEO_TYPE_VLFB), so sysfb registers a `vesa-framebuffer.0` device that no
//! driver binds and there is no /dev/fb0: the guest writes its pixels at the VGA's BAR 0
//! through /dev/mem instead (busybox devmem, which maps it: /dev/mem's read and write stop
//! at the end of RAM), and the test sees them over VNC. The same test with a kernel that
//! has DRM_BOCHS or FB_VESA would see /sys/class/drm/card0 or fb0 reported.
//!
//! The guest test needs hardware-backed KVM (kvm_pvm cannot run a guest kernel) and skips
//! here with one tallied line. What can run anywhere does: the initrd's contents (every
//! module there, dependencies first, built for exactly the kernel in vmlinuz, an /init
//! busybox accepts) and the command line the guest test uses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const INPUT_TIMEOUT: Duration = Duration::from_secs(40);
const SAY: &str = "vmdesk-input: ";
/// The screen direct boot leaves (vmm::boot::linux::set_framebuffer).
const SCREEN: (usize, usize) = (1024, 768);
/// The rows the guest's /init paints white.
const BAND_ROWS: usize = 8;
/// The modules the guest needs, each after everything it depends on.
const LOAD_BEFORE: &[(&str, &str)] = &[
    ("virtio_ring", "virtio_pci"),
    ("virtio", "virtio_pci"),
    ("virtio_pci_modern_dev", "virtio_pci"),
    ("virtio", "virtio_input"),
    ("virtio_ring", "virtio_input"),
];
/// Loaded although nothing depends on it: the /dev/input/eventN nodes /init reads.
const ALSO: &[&str] = &["evdev"];
/// Built into the cloud kernel: no file in the initrd.
const BUILT_IN: &[&str] = &["i8042", "atkbd"];

/// vmdesk-vmm's arguments for the guest: direct kernel boot, VNC on the first free
/// display, COM1 to `serial`. [`common::spawn_vmm`] adds the debug console.
fn guest_args(kernel: &Path, initrd: &Path, serial: &Path) -> Vec<String> {
    [
        "--memory",
        "256M",
        "--vnc",
        "127.0.0.1:auto",
        "--kernel",
        &kernel.display().to_string(),
        "--initrd",
        &initrd.display().to_string(),
        "--cmdline",
        common::LINUX_CMDLINE,
        "--serial",
        &format!("file:{}", serial.display()),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The tablet's ABS value for pixel `v` of `size` (vmm::virtio::input scales so that the
/// last pixel is 32767).
fn abs_of(v: u32, size: u32) -> u32 {
    v * 32767 / (size - 1)
}

/// The "vmdesk-input: " lines of the console so far.
fn said(serial: &Path) -> Vec<String> {
    std::fs::read_to_string(serial)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(SAY).map(str::to_string))
        .collect()
}

#[test]
fn input_initrd_holds_the_modules_in_load_order() {
    let test = "input_initrd_holds_the_modules_in_load_order";
    let Some((kernel, initrd)) = common::linux_assets(test, "input-initrd.img") else {
        return;
    };
    if common::tool_or_skip(test, "cpio").is_none() {
        return;
    }
    let dir = common::temp_dir("input-initrd");
    common::unpack_initrd(&initrd, &dir);
    let order = common::checked_module_order(&kernel, &dir, LOAD_BEFORE);
    for m in ALSO {
        assert!(
            order.iter().any(|x| x == m),
            "{m} is not in the load order {order:?}"
        );
    }
    for m in BUILT_IN {
        assert!(
            !order.iter().any(|x| x == m),
            "{m} is built in, not loaded: {order:?}"
        );
    }
    // The /init busybox runs is valid shell, and it looks for what the guest test sends.
    common::run(
        Command::new(dir.join("bin/busybox"))
            .args(["sh", "-n"])
            .arg(dir.join("init")),
    );
    let init = std::fs::read_to_string(dir.join("init")).unwrap();
    for want in [
        "AT Translated Set 2 keyboard",
        "vmdesk tablet",
        "/proc/bus/input/devices",
        "/sys/class/graphics/fb",
        "/sys/class/drm/card",
        "/dev/mem",
        "ready for input",
        "poweroff -f",
    ] {
        assert!(init.contains(want), "init lacks {want}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_command_line() {
    let args = guest_args(
        Path::new("/a/vmlinuz"),
        Path::new("/a/input-initrd.img"),
        Path::new("/t/com1"),
    );
    let cmdline = common::LINUX_CMDLINE.to_string();
    assert!(cmdline.split(' ').any(|w| w == "console=ttyS0"));
    assert!(cmdline.split(' ').any(|w| w == "panic=-1"));
    use clap::Parser;
    let cli =
        vmm::config::Cli::try_parse_from(std::iter::once("vmdesk-vmm".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cli.kernel.as_deref(), Some(Path::new("/a/vmlinuz")));
    assert_eq!(
        cli.initrd.as_deref(),
        Some(Path::new("/a/input-initrd.img"))
    );
    assert_eq!(cli.cmdline.as_deref(), Some(cmdline.as_str()));
    assert_eq!(
        cli.serial,
        vmm::config::OutputSpec::File(PathBuf::from("/t/com1"))
    );
    // VNC on, on loopback: the test drives the guest through it.
    assert_eq!(
        cli.vnc,
        vmm::config::VncSpec::Auto("127.0.0.1".parse().unwrap())
    );
}

#[test]
fn linux_reads_our_keyboard_and_tablet_and_draws_on_our_screen() {
    let test = "linux_reads_our_keyboard_and_tablet_and_draws_on_our_screen";
    if !common::hardware_kvm_or_skip(test, "a guest kernel cannot run") {
        return;
    }
    let Some((kernel, initrd)) = common::linux_assets(test, "input-initrd.img") else {
        return;
    };
    let Some(vncdo_bin) = common::tool_or_skip(test, "vncdo") else {
        return;
    };
    let dir = common::temp_dir("display-linux");
    let serial = dir.join("com1.txt");
    let args = guest_args(&kernel, &initrd, &serial);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, _log) = common::spawn_vmm(&dir, "display-linux", &args);
    let port = common::vnc_port(&mut child);

    let console = common::wait_for_log(
        &mut child,
        &serial,
        "vmdesk-input: ready for input",
        BOOT_TIMEOUT,
    );
    if !console.contains("vmdesk-input: ready for input") {
        common::stop(&mut child);
        panic!("the guest did not get ready:\n{console}");
    }
    let lines = said(&serial);
    let has = |l: &str| lines.iter().any(|x| x == l);
    assert!(!lines.iter().any(|l| l.contains("failed")), "{lines:#?}");
    assert!(
        has("input device AT Translated Set 2 keyboard"),
        "{lines:#?}"
    );
    assert!(has("input device vmdesk tablet"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("keyboard event")
            && l.contains(" tablet event")
            && !l.contains("none")),
        "an event node for each: {lines:#?}"
    );
    // The i8042's second port (our PS/2 mouse); this kernel has no psmouse to bind it.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("serio ") && l.contains("i8042 AUX")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("serio ") && l.contains("i8042 KBD port driver atkbd")),
        "{lines:#?}"
    );
    // What screen_info made of our screen: sysfb's device for a VESA framebuffer.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("sysfb vesa-framebuffer")),
        "{lines:#?}"
    );
    // Our stdvga with its framebuffer BAR, where the guest drew.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vga ") && l.contains(" 0x1234:0x1111 bar0 0x")),
        "{lines:#?}"
    );
    assert!(has("drew 8 white rows"), "{lines:#?}");

    // The screen over VNC: the direct-boot mode, with the guest's band on it once the
    // display has refreshed from the framebuffer (a few frames).
    let png = dir.join("screen.png");
    let start = Instant::now();
    let (w, px) = loop {
        common::vncdo(&vncdo_bin, port, &["capture", png.to_str().unwrap()]);
        let (w, h, px) = common::png_pixels(&png);
        assert_eq!((w, h), SCREEN);
        if px[..BAND_ROWS * w].iter().all(|&p| p == 0xff_ffff) {
            break (w, px);
        }
        if start.elapsed() > Duration::from_secs(5) {
            common::stop(&mut child);
            panic!("the guest's white band never showed over VNC");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        px[BAND_ROWS * w..].iter().any(|&p| p != 0xff_ffff),
        "the rest of the screen is white too: not the guest's band"
    );

    // A key and pointer moves until the guest has read both (it may lose events while it
    // opens its nodes, so they are sent again).
    let (x, y) = (700u32, 500u32);
    let want_key = "keyboard event type 1 code 30 value 1"; // EV_KEY KEY_A pressed
    let want_x = format!("tablet event type 3 code 0 value {}", abs_of(x, 1024));
    let want_y = format!("tablet event type 3 code 1 value {}", abs_of(y, 768));
    let start = Instant::now();
    loop {
        // Whether it has exited first, then what it said: it powers off soon after.
        let exited = child.try_wait().unwrap().is_some();
        let lines = said(&serial);
        let has = |l: &str| lines.iter().any(|x| x == l);
        if has(want_key) && has(&want_x) && has(&want_y) {
            break;
        }
        if exited || start.elapsed() > INPUT_TIMEOUT {
            common::stop(&mut child);
            panic!("the guest did not read {want_key:?}, {want_x:?}, {want_y:?}:\n{lines:#?}");
        }
        common::vncdo(
            &vncdo_bin,
            port,
            &[
                "key",
                "a",
                "move",
                "100",
                "100",
                "move",
                &x.to_string(),
                &y.to_string(),
            ],
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Then the guest powers off by itself.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            common::stop(&mut child);
            panic!("the guest did not power off:\n{:#?}", said(&serial));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert!(said(&serial).iter().any(|l| l == "done"));
    let _ = std::fs::remove_dir_all(dir);
}
