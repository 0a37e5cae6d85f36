//! Linux drives our screen and input devices with its own drivers: the generic Debian kernel
//! (`vmlinuz-generic`) boots straight into `display-initrd.img` (resources/scripts/
//! test-assets.sh builds both from the same package: busybox; bochs with drm,
//! drm_kms_helper, ttm, drm_ttm_helper and drm_vram_helper; psmouse; virtio_pci,
//! virtio_input and evdev, in load order; an /init). The guest reports on COM1 the DRM card
//! bochs-drm made of our stdvga (1234:1111), its connector and modes, fb0 (DRM's fbdev
//! emulation, "bochs-drmdrmfb"), every input device and serio port; draws through /dev/fb0
//! (the top 8 rows white, the rest black); and prints every event the AT keyboard, the
//! virtio tablet and the PS/2 mouse deliver. The tests send keys and pointer moves over VNC
//! with vncdotool and check what the guest read, and that a VNC capture has the size of
//! bochs-drm's mode with the guest's drawing on it.
//!
//! Why the generic kernel: the cloud kernel the storage and direct-boot tests use has no DRM
//! at all and no PS/2 mouse driver (`# CONFIG_DRM is not set`, `# CONFIG_INPUT_MOUSE is not
//! set`); the generic one has DRM_BOCHS, DRM_FBDEV_EMULATION, MOUSE_PS2 and VIRTIO_INPUT as
//! modules, SERIO_I8042 and KEYBOARD_ATKBD built in. It also has FB_VESA built in, so the
//! VESA framebuffer our direct boot describes in `screen_info` becomes a vesafb fb0 ("VESA
//! VGA") first, and bochs-drm must take the hardware over from it (it unregisters vesafb,
//! and its own fbdev becomes fb0): both are checked. Our EDID area reads zero, so bochs-drm
//! falls back to its default mode, 1024x768.
//!
//! Which pointing device: our VMM sends the VNC pointer to the virtio tablet once its driver
//! set DRIVER_OK and to the PS/2 mouse until then (vmm::input), as QEMU does. So there are
//! two guest runs: the default, where virtio_input drives the tablet and the pointer must
//! arrive as absolute EV_ABS positions (and never as PS/2 motion); and `vmdesk.mouse=ps2`
//! on the kernel command line, where /init leaves virtio_input out, the tablet never gets a
//! driver, and the same pointer must arrive through psmouse as EV_REL motion and BTN_LEFT.
//! psmouse probes our mouse in both runs.
//!
//! Drawing: /init writes the whole frame in one write(2) to /dev/fb0. The fbdev emulation
//! keeps a shadow buffer and copies to the VRAM only what a write covered, and 6.1 takes a
//! write within one scanline to cover only the columns between its start and end offsets
//! in that line, so writing line by line (`dd bs=stride`) would put nothing on the screen.
//!
//! The guest tests need hardware-backed KVM (kvm_pvm cannot run a guest kernel) and skip
//! here with one tallied line each. What can run anywhere does: the initrd's contents (every
//! module there, dependencies first, built for exactly the kernel in vmlinuz-generic, an
//! /init busybox accepts) and the command lines the guest tests use. The guest side was
//! checked under QEMU TCG (`-M pc -vga std -device virtio-tablet-pci`, whose EDID makes
//! it 1280x800 there) in both modes, and with `vga=0x318` for the vesafb handover.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const INPUT_TIMEOUT: Duration = Duration::from_secs(40);
const SAY: &str = "vmdesk-input: ";
/// The kernel and initrd test-assets.sh builds for this test.
const KERNEL: &str = "vmlinuz-generic";
const INITRD: &str = "display-initrd.img";
/// bochs-drm's mode on our stdvga: its default, as our EDID area is empty.
const SCREEN: (usize, usize) = (1024, 768);
/// The rows the guest's /init paints white.
const BAND_ROWS: usize = 8;
/// The modules the guest needs, each after everything it depends on.
const LOAD_BEFORE: &[(&str, &str)] = &[
    ("drm", "drm_kms_helper"),
    ("drm", "ttm"),
    ("ttm", "drm_ttm_helper"),
    ("drm_ttm_helper", "drm_vram_helper"),
    ("drm_kms_helper", "drm_vram_helper"),
    ("drm_vram_helper", "bochs"),
    ("drm_kms_helper", "bochs"),
    ("virtio_ring", "virtio_pci"),
    ("virtio", "virtio_pci"),
    ("virtio_pci_modern_dev", "virtio_pci"),
    ("virtio", "virtio_input"),
    ("virtio_ring", "virtio_input"),
];
/// Loaded although nothing depends on them: the /dev/input/eventN nodes /init reads, and
/// the PS/2 mouse driver.
const ALSO: &[&str] = &["evdev", "psmouse"];
/// Built into the generic kernel: no file in the initrd.
const BUILT_IN: &[&str] = &["i8042", "atkbd"];

/// Where the VNC pointer goes in a guest run (see the module doc).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Pointer {
    /// virtio_input loaded: the tablet.
    Tablet,
    /// `vmdesk.mouse=ps2`: no tablet driver, so the PS/2 mouse.
    Ps2,
}

/// The kernel command line of a guest run.
fn cmdline(pointer: Pointer) -> String {
    match pointer {
        Pointer::Tablet => common::LINUX_CMDLINE.to_string(),
        Pointer::Ps2 => format!("{} vmdesk.mouse=ps2", common::LINUX_CMDLINE),
    }
}

/// vmdesk-vmm's arguments for the guest: direct kernel boot, VNC on the first free
/// display, COM1 to `serial`. [`common::spawn_vmm`] adds the debug console.
fn guest_args(kernel: &Path, initrd: &Path, serial: &Path, pointer: Pointer) -> Vec<String> {
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
        &cmdline(pointer),
        "--serial",
        &format!("file:{}", serial.display()),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The generic kernel and the display initrd, or `None` after one SKIP line.
fn assets(test: &str) -> Option<(PathBuf, PathBuf)> {
    Some((
        common::asset_or_skip(test, KERNEL)?,
        common::asset_or_skip(test, INITRD)?,
    ))
}

/// What both guest tests send with vncdo: KEY_A, the pointer to (100,100) and then to
/// [`POINTER_TO`], a left click. The pauses let the guest drain the motion packets first:
/// while the PS/2 mouse's queue is full the device keeps only the latest button state (as
/// QEMU's does), so a press and release that both wait behind a long motion become no
/// click at all (seen under QEMU TCG).
const INPUT: &[&str] = &[
    "key",
    "a",
    "move",
    "100",
    "100",
    "move",
    "700",
    "500",
    "pause",
    "0.3",
    "mousedown",
    "1",
    "pause",
    "0.3",
    "mouseup",
    "1",
];
/// Where [`INPUT`] leaves the pointer.
const POINTER_TO: (u32, u32) = (700, 500);

/// The tablet's ABS value for pixel `v` of `size` (vmm::virtio::input scales so that the
/// last pixel is 32767).
fn abs_of(v: u32, size: u32) -> u32 {
    v * 32767 / (size - 1)
}

/// The "vmdesk-input: " lines of the console so far.
fn said(serial: &Path) -> Vec<String> {
    common::guest_said(serial, SAY)
}

/// The value of an input event line "`dev` event type `t` code `c` value V" as the signed
/// 16-bit number the guest's od printed unsigned.
fn event_value(line: &str, dev: &str, t: u16, c: u16) -> Option<i16> {
    let v = line.strip_prefix(&format!("{dev} event type {t} code {c} value "))?;
    v.parse::<u16>().ok().map(|v| v as i16)
}

/// Width and height from "fb fb0 name N virtual_size W,H bpp B stride S".
fn fb0_size(lines: &[String]) -> Option<(usize, usize)> {
    let l = lines.iter().find(|l| l.starts_with("fb fb0 "))?;
    let size = l.split_once(" virtual_size ")?.1.split(' ').next()?;
    let (w, h) = size.split_once(',')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

#[test]
fn display_initrd_holds_the_modules_in_load_order() {
    let test = "display_initrd_holds_the_modules_in_load_order";
    let Some((kernel, initrd)) = assets(test) else {
        return;
    };
    if common::tool_or_skip(test, "cpio").is_none() {
        return;
    }
    let dir = common::temp_dir("display-initrd");
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
    // The /init busybox runs is valid shell, and it looks for what the guest tests send.
    let init = common::checked_init(&dir);
    for want in [
        "vmdesk.mouse=ps2",
        "virtio_input.ko",
        "/proc/bus/input/devices",
        "/serio0/",
        "/serio1/",
        "/virtio",
        "/sys/class/drm/card",
        "card0-Virtual-1/status",
        "/sys/class/graphics/fb",
        "/sys/class/vtconsole/",
        "/dev/fb0",
        "ready for input",
        "poweroff -f",
    ] {
        assert!(init.contains(want), "init lacks {want}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_command_lines() {
    use clap::Parser;
    for pointer in [Pointer::Tablet, Pointer::Ps2] {
        let args = guest_args(
            Path::new("/a/vmlinuz-generic"),
            Path::new("/a/display-initrd.img"),
            Path::new("/t/com1"),
            pointer,
        );
        let cmdline = cmdline(pointer);
        assert!(cmdline.split(' ').any(|w| w == "console=ttyS0"));
        assert!(cmdline.split(' ').any(|w| w == "panic=-1"));
        assert_eq!(
            cmdline.split(' ').any(|w| w == "vmdesk.mouse=ps2"),
            pointer == Pointer::Ps2
        );
        let cli =
            vmm::config::Cli::try_parse_from(std::iter::once("vmdesk-vmm".to_string()).chain(args))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.kernel.as_deref(), Some(Path::new("/a/vmlinuz-generic")));
        assert_eq!(
            cli.initrd.as_deref(),
            Some(Path::new("/a/display-initrd.img"))
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
}

#[test]
fn event_lines_parse() {
    let l = "mouse event type 2 code 0 value 65535";
    assert_eq!(event_value(l, "mouse", 2, 0), Some(-1));
    assert_eq!(event_value(l, "mouse", 2, 1), None);
    assert_eq!(event_value(l, "tablet", 2, 0), None);
    assert_eq!(
        event_value("mouse event type 2 code 1 value 127", "mouse", 2, 1),
        Some(127)
    );
    let lines = vec![
        "drew 8 white rows on fb0 bochs-drmdrmfb".to_string(),
        "fb fb0 name bochs-drmdrmfb virtual_size 1024,768 bpp 32 stride 4096".to_string(),
    ];
    assert_eq!(fb0_size(&lines), Some((1024, 768)));
    assert_eq!(fb0_size(&lines[..1]), None);
}

/// A running guest: the VMM, its VNC port, vncdo, its COM1 file and the test's temp dir.
struct Guest {
    child: Child,
    port: u16,
    vncdo: PathBuf,
    serial: PathBuf,
    dir: PathBuf,
}

impl Guest {
    /// Boots the display guest in `pointer` mode and waits for "ready for input"; `None`
    /// after one SKIP line when this host cannot run it.
    fn boot(test: &str, pointer: Pointer) -> Option<Guest> {
        if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
            return None;
        }
        let (kernel, initrd) = assets(test)?;
        let vncdo = common::tool_or_skip(test, "vncdo")?;
        let dir = common::temp_dir(test);
        let serial = dir.join("com1.txt");
        let args = guest_args(&kernel, &initrd, &serial, pointer);
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
        Some(Guest {
            child,
            port,
            vncdo,
            serial,
            dir,
        })
    }

    fn said(&self) -> Vec<String> {
        said(&self.serial)
    }

    fn vncdo(&self, args: &[&str]) {
        common::vncdo(&self.vncdo, self.port, args);
    }

    /// Stops the VMM and fails the test with `msg` and what the guest said.
    fn fail(&mut self, msg: &str) -> ! {
        common::stop(&mut self.child);
        panic!("{msg}:\n{:#?}", self.said());
    }

    /// Checks what the guest reported about its drivers (both modes).
    fn check_drivers(&mut self, pointer: Pointer) {
        let lines = self.said();
        let has = |l: &str| lines.iter().any(|x| x == l);
        let any = |f: &dyn Fn(&str) -> bool| lines.iter().any(|l| f(l));
        let mode = match pointer {
            Pointer::Tablet => "mouse mode tablet",
            Pointer::Ps2 => "mouse mode ps2",
        };
        let checks: &[(&str, bool)] = &[
            (mode, has(mode)),
            (
                "vesafb drove our screen_info framebuffer before bochs-drm",
                has("before bochs fb0 VESA VGA"),
            ),
            ("nothing failed", !any(&|l| l.contains("failed"))),
            (
                "bochs-drm bound our stdvga",
                any(&|l| {
                    l.starts_with("drm card0 driver bochs-drm pci 0000:00:")
                        && l.ends_with(" 0x1234:0x1111")
                }),
            ),
            (
                "card0-Virtual-1 connected, enabled, 1024x768 preferred",
                any(&|l| {
                    l.starts_with("connector card0-Virtual-1 connected enabled modes 1024x768")
                }),
            ),
            (
                "fb0 is bochs-drm's fbdev emulation",
                any(&|l| l.starts_with("fb fb0 name bochs-drmdrmfb ")),
            ),
            ("fb0 is 1024x768", fb0_size(&lines) == Some(SCREEN)),
            (
                "drawn on fb0",
                has("drew 8 white rows on fb0 bochs-drmdrmfb"),
            ),
            (
                "the AT keyboard",
                has("input device AT Translated Set 2 keyboard"),
            ),
            (
                "psmouse probed our mouse",
                any(&|l| {
                    l.strip_prefix("input device ")
                        .is_some_and(|n| n.contains("PS/2 Generic") && n.ends_with(" Mouse"))
                }),
            ),
            (
                "psmouse bound the AUX port",
                has("serio serio1 i8042 AUX port driver psmouse"),
            ),
            (
                "atkbd bound the KBD port",
                has("serio serio0 i8042 KBD port driver atkbd"),
            ),
            (
                "the tablet only with virtio_input",
                has("input device vmdesk tablet") == (pointer == Pointer::Tablet),
            ),
            (
                "an event node for each device",
                any(&|l| {
                    l.starts_with("keyboard event")
                        && l.contains(" mouse event")
                        && (l.contains(" tablet event") == (pointer == Pointer::Tablet))
                }),
            ),
        ];
        for (what, ok) in checks {
            if !ok {
                self.fail(what);
            }
        }
    }

    /// The screen over VNC: bochs-drm's mode, with the guest's band on top and black below
    /// once the display has refreshed from the framebuffer (a few frames).
    fn check_screen(&mut self) {
        let png = self.dir.join("screen.png");
        let start = Instant::now();
        loop {
            self.vncdo(&["capture", png.to_str().unwrap()]);
            let (w, h, px) = common::png_pixels(&png);
            if (w, h) == SCREEN
                && px[..BAND_ROWS * w].iter().all(|&p| p == 0xff_ffff)
                && px[BAND_ROWS * w..].iter().all(|&p| p == 0)
            {
                return;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let white = px.iter().filter(|&&p| p == 0xff_ffff).count();
                self.fail(&format!(
                    "the guest's drawing never showed over VNC (screen {w}x{h}, {white} white pixels)"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `input` over VNC until `done` holds for what the guest said (it may lose
    /// events while it opens its nodes, so they are sent again).
    fn send_until(&mut self, input: &[&str], done: impl Fn(&[String]) -> bool, what: &str) {
        let start = Instant::now();
        loop {
            // Whether it has exited first, then what it said: it powers off soon after.
            let exited = self.child.try_wait().unwrap().is_some();
            if done(&self.said()) {
                return;
            }
            if exited || start.elapsed() > INPUT_TIMEOUT {
                self.fail(&format!("the guest did not read {what}"));
            }
            self.vncdo(input);
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The guest powers off by itself once it has what it waits for.
    fn wait_poweroff(mut self) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                self.fail("the guest did not power off");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(status.code(), Some(0));
        assert!(self.said().iter().any(|l| l == "done"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A test that fails anywhere (a vncdo call, an assertion) leaves no VMM running.
impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            common::stop(&mut self.child);
        }
    }
}

#[test]
fn linux_drives_our_stdvga_keyboard_and_tablet() {
    let test = "linux_drives_our_stdvga_keyboard_and_tablet";
    let Some(mut guest) = Guest::boot(test, Pointer::Tablet) else {
        return;
    };
    guest.check_drivers(Pointer::Tablet);
    guest.check_screen();
    let (x, y) = POINTER_TO;
    let want_key = "keyboard event type 1 code 30 value 1"; // EV_KEY KEY_A pressed
    let want_x = format!("tablet event type 3 code 0 value {}", abs_of(x, 1024));
    let want_y = format!("tablet event type 3 code 1 value {}", abs_of(y, 768));
    let want_btn = "tablet event type 1 code 272 value 1"; // BTN_LEFT pressed
    guest.send_until(
        INPUT,
        |lines| {
            let has = |l: &str| lines.iter().any(|x| x == l);
            has(want_key) && has(&want_x) && has(&want_y) && has(want_btn)
        },
        &format!("{want_key:?}, {want_x:?}, {want_y:?}, {want_btn:?}"),
    );
    // With the tablet's driver up, the PS/2 mouse gets no motion.
    if guest
        .said()
        .iter()
        .any(|l| l.starts_with("mouse event type 2 "))
    {
        guest.fail("PS/2 motion although the tablet has a driver");
    }
    guest.wait_poweroff();
}

#[test]
fn linux_reads_our_ps2_mouse_without_the_tablet_driver() {
    let test = "linux_reads_our_ps2_mouse_without_the_tablet_driver";
    let Some(mut guest) = Guest::boot(test, Pointer::Ps2) else {
        return;
    };
    guest.check_drivers(Pointer::Ps2);
    guest.check_screen();
    // Right and down (our VMM sends the difference to the last position; psmouse turns
    // the PS/2 Y axis so that down is positive), then a left click.
    let want_key = "keyboard event type 1 code 30 value 1";
    guest.send_until(
        INPUT,
        |lines| {
            let any = |f: &dyn Fn(&str) -> bool| lines.iter().any(|l| f(l));
            any(&|l| l == want_key)
                && any(&|l| event_value(l, "mouse", 2, 0).is_some_and(|v| v > 0))
                && any(&|l| event_value(l, "mouse", 2, 1).is_some_and(|v| v > 0))
                && any(&|l| event_value(l, "mouse", 1, 272) == Some(1))
        },
        "a key, REL_X and REL_Y motion right and down, and BTN_LEFT from the PS/2 mouse",
    );
    guest.wait_poweroff();
}
