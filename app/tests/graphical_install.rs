//! Debian's graphical installer, driven as a person drives it (issue 14, item 1).
//!
//! The CD is `debian-installer-gtk.iso` (resources/scripts/test-assets.sh: Debian 12's gtk
//! installer kernel, initrd and boot menu from debian-installer-12-netboot-amd64, booted
//! by isolinux as the official images are). A VM made with `vmdesk create --cdrom` (the CD
//! on IDE, a virtio disk beside it) starts with `vmdesk start`; the installer's own menu
//! waits for a key, then its kernel boots, its X server draws on our std VGA and the
//! installer asks for a language, a location and a keyboard. One test each:
//! - **over VNC** (vncdotool, as any outside client): Return on the boot menu and on the
//!   language screen are VNC key events; Continue on the location screen is a VNC pointer
//!   click, which reaches the guest through the tablet;
//! - **in the console window** (`vmdesk console` on an Xvfb display, xdotool as the
//!   person's window manager): Return on the boot menu goes through `vmdesk send-key` (the
//!   scripts' way); the window, made as big as the display, shows the language screen,
//!   found in a screenshot of the display at the window's scale and read there; Return
//!   typed into the window and a click on Continue in it move the installer on, and the
//!   window shows each screen; made small (the screen drawn at about two thirds), a click
//!   on Continue still lands on it; past the network step, text on the host's clipboard
//!   typed with the toolbar's "Type clipboard" lands in the installer's hostname field.
//!
//! Also over VNC: Ctrl+Alt+Del on the boot menu reboots the VM; a VNC client connecting
//! after the installer's mode changes gets its 1024x768 screen; with the vCPUs stopped (a
//! hung installer) the last screen still shows and `vmdesk destroy` forces the VM off.
//!
//! Which screen is showing is read off the guest's screen by OCR (see
//! `common::installer`): a screen is reached when its title is on it and the previous
//! screen's title is not. The window's own pixels are read the same way, so the test also
//! sees that the window shows each screen.
//!
//! A guest kernel needs hardware-backed KVM: on a kvm_pvm host each test runs in the
//! nested test host (`common::hardware_kvm_or_nested`). There an installer takes about
//! two minutes from `vmdesk start` to its language screen.

mod common;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::installer::{self, BOOT_MENU, KEYBOARD, LANGUAGE, LOCATION, Screen};
use common::{Env, ensure_vmm, text};

const MEMORY: &str = "1024M";
/// From `vmdesk start` to the boot menu, and from the key there to the language screen.
/// Measured in the nested host: 10 s and 110 s. Generous: a slow run is no failure here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// From a key or click to the next screen: a few seconds in the nested host.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

struct Installer<'a> {
    env: &'a Env,
    name: &'static str,
    tesseract: PathBuf,
    start: Instant,
    n: usize,
    /// The last screen read: its pixels' hash, the fraction of it read, and its text.
    last: Option<(u64, f64, String)>,
}

impl Installer<'_> {
    /// Creates and starts the VM with `vmdesk`.
    fn start<'a>(
        env: &'a Env,
        name: &'static str,
        tesseract: PathBuf,
        iso: &Path,
    ) -> Installer<'a> {
        env.ok(&[
            "create",
            "--name",
            name,
            "--memory",
            MEMORY,
            "--cdrom",
            iso.to_str().unwrap(),
            "--disk",
            "size=4G",
            // No network card: passt cannot run in the nested host, and the
            // installer's network step then asks for the hostname at once.
            "--network",
            "none",
        ]);
        let start = Instant::now();
        // At info, the VMM's log says when the guest resets.
        let o = env
            .command(&["start", name])
            .env("VMDESK_LOG", "info")
            .output()
            .unwrap();
        assert!(o.status.success(), "vmdesk start {name}: {}", text(&o));
        Installer {
            env,
            name,
            tesseract,
            start,
            n: 0,
            last: None,
        }
    }

    /// The VM's VNC port, from `vmdesk vncdisplay`.
    fn vnc_port(&self) -> u16 {
        let d = self.env.ok(&["vncdisplay", self.name]);
        d.trim()
            .rsplit_once(':')
            .and_then(|(_, n)| n.parse::<u16>().ok())
            .map(|n| 5900 + n)
            .unwrap_or_else(|| panic!("vncdisplay printed {d:?}"))
    }

    /// A screenshot of the guest's screen (`vmdesk screenshot`) and the text on its top
    /// part (read again only when the screen changed: OCR is the slow part).
    fn look(&mut self) -> (PathBuf, String) {
        self.look_at(installer::READ_FRACTION)
    }

    /// The text on the whole of the guest's screen (slower to read than its top).
    fn read_all(&mut self) -> String {
        self.look_at(1.0).1
    }

    /// A screenshot and the text on the top `fraction` of it.
    fn look_at(&mut self, fraction: f64) -> (PathBuf, String) {
        self.n += 1;
        let png = self.env.root.join(format!("{}-{}.png", self.name, self.n));
        let o = self
            .env
            .command(&["screenshot", self.name, png.to_str().unwrap()])
            .output()
            .unwrap();
        if !o.status.success() {
            let log =
                std::fs::read_to_string(self.env.run_dir().join(format!("{}.log", self.name)))
                    .unwrap_or_default();
            panic!(
                "vmdesk screenshot {}: {}\nits log:\n{log}",
                self.name,
                text(&o)
            );
        }
        let (w, h, px) = common::png_pixels(&png);
        let mut hasher = DefaultHasher::new();
        (w, h, &px).hash(&mut hasher);
        let hash = hasher.finish();
        if self
            .last
            .as_ref()
            .is_none_or(|(h, f, _)| (*h, *f) != (hash, fraction))
        {
            let rows = (h as f64 * fraction) as usize;
            let t = installer::read_text(
                &self.tesseract,
                &px,
                w,
                (0, 0, w, rows),
                &self.env.root.join("ocr.png"),
            );
            eprintln!(
                "{}: {:.1} s: {w}x{h} reads {:?}",
                self.name,
                self.start.elapsed().as_secs_f64(),
                t.chars().take(80).collect::<String>()
            );
            self.last = Some((hash, fraction, t));
        }
        let _ = std::fs::remove_file(self.env.root.join(format!(
            "{}-{}.png",
            self.name,
            self.n - 1
        )));
        (png, self.last.as_ref().unwrap().2.clone())
    }

    /// Waits until the guest shows `screen` (and no longer `before`); returns its screenshot.
    fn wait(&mut self, screen: Screen, before: Option<Screen>, timeout: Duration) -> PathBuf {
        let since = Instant::now();
        loop {
            let (png, t) = self.look();
            if installer::shows(&t, screen, before) {
                eprintln!(
                    "{}: the {} screen at {:.1} s",
                    self.name,
                    screen.name,
                    self.start.elapsed().as_secs_f64()
                );
                return png;
            }
            if since.elapsed() > timeout {
                panic!(
                    "{}: no {} screen ({:?}) after {timeout:?}; the screen reads: {t:?}",
                    self.name, screen.name, screen.title
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// The tools and the CD, or `None` after a SKIP line.
fn prerequisites(test: &str, tools: &[&str]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let iso = common::asset_or_skip(test, installer::ISO)?;
    let found: Option<Vec<PathBuf>> = tools
        .iter()
        .map(|t| common::tool_or_skip(test, t))
        .collect();
    Some((iso, found?))
}

#[test]
fn the_graphical_installer_is_driven_over_vnc() {
    let test = "the_graphical_installer_is_driven_over_vnc";
    ensure_vmm();
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some((iso, tools)) = prerequisites(test, &["tesseract", "vncdo"]) else {
        return;
    };
    let (tesseract, vncdo) = (tools[0].clone(), &tools[1]);
    let env = Env::new("gi-vnc");
    let mut vm = Installer::start(&env, "di-vnc", tesseract, &iso);
    let port = vm.vnc_port();

    vm.wait(BOOT_MENU, None, BOOT_TIMEOUT);
    // Ctrl+Alt+Del on the boot menu reboots the machine (SeaBIOS's keyboard handler resets
    // it, as a PC's BIOS does), and the menu comes back. (Under the installer's X server
    // the keys go to X, as on any PC: the kernel's Ctrl+Alt+Del is off there.)
    let log = env.run_dir().join("di-vnc.log");
    common::vncdo(vncdo, port, &["key", "ctrl-alt-del"]);
    let since = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("guest reset")
    {
        assert!(
            since.elapsed() < STEP_TIMEOUT,
            "Ctrl+Alt+Del did not reset the VM; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{test}: Ctrl+Alt+Del reset the VM");
    vm.last = None;
    vm.wait(BOOT_MENU, None, BOOT_TIMEOUT);
    common::vncdo(vncdo, port, &["key", "enter"]);
    vm.wait(LANGUAGE, Some(BOOT_MENU), BOOT_TIMEOUT);
    // English is preselected: Return takes it.
    common::vncdo(vncdo, port, &["key", "enter"]);
    let png = vm.wait(LOCATION, Some(LANGUAGE), STEP_TIMEOUT);
    let (w, h, _) = common::png_pixels(&png);
    let (x, y) = installer::continue_button(w, h);
    common::vncdo(
        vncdo,
        port,
        &["move", &x.to_string(), &y.to_string(), "click", "1"],
    );
    vm.wait(KEYBOARD, Some(LOCATION), STEP_TIMEOUT);

    // The resolution changes (VGA text, the boot menu's 640x480, the kernel's 800x600,
    // the installer's 1024x768) reached VNC clients: a client connecting now gets the
    // installer's screen at its size.
    let capture = env.root.join("vnc-capture.png");
    common::vncdo(vncdo, port, &["capture", capture.to_str().unwrap()]);
    let (w, h, _) = common::png_pixels(&capture);
    assert_eq!((w, h), (1024, 768), "the VNC client's screen");
    let t = installer::read_screen(&vm.tesseract, &capture);
    assert!(
        installer::shows(&t, KEYBOARD, Some(LOCATION)),
        "a VNC client sees: {t:?}"
    );

    // An installer that hangs: with its vCPUs stopped (`vmdesk pause`, as a guest that no
    // longer runs), the screen still shows its last picture to VNC clients, and `vmdesk
    // destroy` forces the VM off at once.
    env.ok(&["pause", "di-vnc"]);
    common::vncdo(vncdo, port, &["capture", capture.to_str().unwrap()]);
    let t = installer::read_screen(&vm.tesseract, &capture);
    assert!(
        installer::shows(&t, KEYBOARD, Some(LOCATION)),
        "a paused VM's screen reads {t:?}"
    );
    let off = Instant::now();
    env.ok(&["destroy", "di-vnc"]);
    let list = env.ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("di-vnc ") && l.contains(" stopped ")),
        "{list}"
    );
    eprintln!(
        "{test}: a paused installer forced off in {:.1} s",
        off.elapsed().as_secs_f64()
    );
}

#[test]
fn the_graphical_installer_shows_in_the_console_window() {
    let test = "the_graphical_installer_shows_in_the_console_window";
    ensure_vmm();
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some((iso, tools)) = prerequisites(test, &["tesseract", "Xvfb", "import", "xdotool"])
    else {
        return;
    };
    let (tesseract, import, xdotool) = (tools[0].clone(), tools[2].clone(), tools[3].clone());
    let env = Env::new("gi-win");
    let name = "di-win";
    let mut vm = Installer::start(&env, name, tesseract.clone(), &iso);

    // The scripts' way first: `vmdesk send-key` through the control socket.
    vm.wait(BOOT_MENU, None, BOOT_TIMEOUT);
    env.ok(&["send-key", name, "Return"]);
    let guest = vm.wait(LANGUAGE, Some(BOOT_MENU), BOOT_TIMEOUT);
    let (gw, gh, _) = common::png_pixels(&guest);

    // The person's way: the console window on an X display of the test's own.
    let x = common::x11::Xvfb::with_screen("1280x1024x24").expect("Xvfb did not start");
    let display = x.display.clone();
    let mut children = common::Children::default();
    // The console's own account of clicks, grabs and keys, shown when a key seems lost.
    let console_log = env.root.join("console.log");
    children.add(
        "vmdesk console",
        env.command(&["console", name])
            .env("DISPLAY", &display)
            .env("VMDESK_LOG", "vmdesk::console=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&console_log).unwrap()),
    );
    let console_said = || {
        let t = std::fs::read_to_string(&console_log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    let xdo = |args: &[&str]| common::x11::xdotool(&xdotool, &display, args);
    let mut shots = 0;
    let mut window_shot = || -> PathBuf {
        shots += 1;
        let p = env.root.join(format!("window-{shots}.png"));
        common::run(
            Command::new(&import)
                .args(["-display", &display, "-window", "root"])
                .arg(&p),
        );
        p
    };
    // The window shows the installer's screen: where, and its title there.
    let window_shows = |png: &Path, screen: Screen, before: Option<Screen>| {
        let (w, h, px) = common::png_pixels(png);
        let place = installer::find_installer_screen(&px, w, gw, gh);
        let Some((left, top, scale)) = place else {
            return (None, false, String::new());
        };
        // The title line alone: in the window the screen is drawn bigger, and OCR of more
        // took minutes in the nested host.
        let rows = installer::TITLE_ROWS;
        let x = left.max(0.0) as usize;
        let y = (top + rows.start as f64 * scale).max(0.0) as usize;
        let rw = ((gw as f64 * scale) as usize).min(w - x);
        let rh = ((rows.len() as f64 * scale) as usize).min(h - y);
        let t = installer::read_text(
            &tesseract,
            &px,
            w,
            (x, y, rw, rh),
            &env.root.join("ocr-window.png"),
        );
        (place, installer::shows(&t, screen, before), t)
    };
    // The window's place once it shows `screen` (and not `before`), or None after `timeout`.
    let try_window = |shot: &mut dyn FnMut() -> PathBuf,
                      screen: Screen,
                      before: Option<Screen>,
                      timeout: Duration| {
        let since = Instant::now();
        loop {
            let png = shot();
            let (place, shown, t) = window_shows(&png, screen, before);
            if let (Some(place), true) = (place, shown) {
                return Ok(place);
            }
            if since.elapsed() > timeout {
                return Err(format!(
                    "the console window does not show the {} screen; it reads: {t:?} \
                     (installer's screen found at {place:?})",
                    screen.name
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    };
    let wait_window =
        |shot: &mut dyn FnMut() -> PathBuf, screen: Screen, before: Option<Screen>| {
            try_window(shot, screen, before, STEP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
        };
    let wid = xdo(&["search", "--sync", "--name", &format!("{name} - vmdesk")]);
    let wid = wid
        .lines()
        .next()
        .expect("the console window")
        .trim()
        .to_string();
    // As big as the screen, as a person makes it for an installer (it opens smaller: at
    // its first size the guest's screen is drawn at under half scale, too small to read).
    xdo(&["windowsize", &wid, "1280", "1024"]);
    let (left, top, scale) = wait_window(&mut window_shot, LANGUAGE, Some(BOOT_MENU));
    eprintln!("{test}: the window shows the guest's screen at ({left}, {top}), scale {scale:.3}");
    // The person's keys and clicks, into the window. X input focus to the window (what a
    // window manager does on a click; Xvfb has none), then a click into the guest's screen
    // (on the installer's banner, where a click does nothing) so the console takes the
    // keys; clicks as slow as a person's, each half a second after the pointer got there:
    // in the nested host the window draws a frame in well under that.
    let click = |(left, top, scale): (f64, f64, f64), gx: f64, gy: f64| {
        let (x, y) = ((left + gx * scale) as i64, (top + gy * scale) as i64);
        // A pixel beside first: a move to where the pointer already is makes no motion
        // event, and the window must see the pointer arrive (egui takes a press only where
        // it knows the pointer to be).
        xdo(&["mousemove", &(x - 1).to_string(), &y.to_string()]);
        std::thread::sleep(Duration::from_millis(100));
        xdo(&["mousemove", &x.to_string(), &y.to_string()]);
        std::thread::sleep(Duration::from_millis(500));
        xdo(&["mousedown", "1"]);
        std::thread::sleep(Duration::from_millis(300));
        xdo(&["mouseup", "1"]);
        std::thread::sleep(Duration::from_secs(1));
    };
    let big = (left, top, scale);
    xdo(&["windowfocus", "--sync", &wid]);
    // English is preselected: Return takes it. The click before it takes the keyboard
    // grab on the button's press: here the window's frames come about half a second apart,
    // so press and release land in frames more than 0.8 s apart, which egui does not call
    // a click (CI lost every Return this way until the console grabbed on the press).
    click(big, gw as f64 / 2.0, 30.0);
    xdo(&["key", "--delay", "150", "Return"]);
    if let Err(e) = try_window(&mut window_shot, LOCATION, Some(LANGUAGE), STEP_TIMEOUT) {
        panic!(
            "Return typed into the window: {e}; the console's log ends:\n{}",
            console_said()
        );
    }
    eprintln!("{test}: Return typed into the window took the installer to the location screen");
    let (cx, cy) = installer::continue_button(gw, gh);
    click(big, cx as f64, cy as f64);
    wait_window(&mut window_shot, KEYBOARD, Some(LOCATION));
    eprintln!("{test}: a click on Continue at scale {scale:.3} took it to the keyboard screen");

    // At another scale: the window made small, as a person keeps it beside others (the
    // guest's screen drawn at about two thirds). Too small for OCR of the window, so the
    // guest's own screen tells that the click on Continue moved the installer on.
    xdo(&["windowsize", &wid, "800", "640"]);
    let since = Instant::now();
    let small = loop {
        let (w, _, px) = common::png_pixels(&window_shot());
        match installer::find_installer_screen(&px, w, gw, gh) {
            Some(place) if place.2 < 0.9 => break place,
            place => assert!(
                since.elapsed() < STEP_TIMEOUT,
                "the small window does not show the installer's screen ({place:?})"
            ),
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    click(small, cx as f64, cy as f64);
    let since = Instant::now();
    loop {
        let (_, t) = vm.look();
        if !t.contains(KEYBOARD.title) && !t.trim().is_empty() {
            eprintln!(
                "{test}: a click on Continue at scale {:.3} left the keyboard screen for {:?}",
                small.2,
                t.chars().take(60).collect::<String>()
            );
            break;
        }
        assert!(
            since.elapsed() < STEP_TIMEOUT,
            "a click on Continue at scale {:.3} did not leave the keyboard screen: {t:?}",
            small.2
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // "Type clipboard" into an installer field: the hostname, which the installer asks for
    // after its network step (with no network card, as here, it first asks for a driver
    // and then says it found no interface; Continue on both). The text is on the host's clipboard (xclip owns the selection on
    // the display); the window's toolbar button types it as key presses.
    let since = Instant::now();
    let mut continued = Vec::new();
    loop {
        let t = vm.read_all();
        if t.contains(HOSTNAME_PROMPT) {
            break;
        }
        // Each of the network step's two questions once: Continue takes their defaults.
        for said in [NO_ETHERNET_CARD, NO_NETWORK_CARD] {
            if t.contains(said) && !continued.contains(&said) {
                eprintln!("{test}: Continue on {said:?}");
                click(small, cx as f64, cy as f64);
                continued.push(said);
            }
        }
        assert!(
            since.elapsed() < 2 * STEP_TIMEOUT,
            "no hostname screen after the network step; the screen reads: {t:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // The field as the installer filled it: the check that the field can be read at all.
    // What was read, kept where a person can look after a failure: in the nested host,
    // its share (kept with VMDESK_NESTED_KEEP=DIR), else the target's tmp folder.
    let keep = |vm: &Installer, png: &Path| {
        let dir = std::env::var_os("VMDESK_NESTED_SHARE")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
        let _ = std::fs::copy(png, dir.join("graphical_install-screen.png"));
        let _ = std::fs::copy(
            vm.env.root.join("ocr-field.png"),
            dir.join("graphical_install-field.png"),
        );
        dir.display().to_string()
    };
    let field = |vm: &mut Installer| {
        let (png, _) = vm.look();
        let (w, h, px) = common::png_pixels(&png);
        let t = installer::read_field(&vm.tesseract, &px, w, h, &vm.env.root.join("ocr-field.png"));
        (t, png)
    };
    let (before, png) = field(&mut vm);
    eprintln!("{test}: the installer asks for the hostname; its field reads {before:?}");
    assert!(
        before
            .as_deref()
            .is_some_and(|t| t.contains(DEFAULT_HOSTNAME)),
        "the hostname field reads {before:?}, not the installer's {DEFAULT_HOSTNAME:?} \
         (screen and field in {})",
        keep(&vm, &png)
    );
    let mut owner = common::x11::x_copy(&display, TYPED_HOSTNAME);
    let shot = window_shot();
    let (w, _, px) = common::png_pixels(&shot);
    // The toolbar is above the guest's screen in the window.
    let toolbar = (0, 0, w, small.1.max(1.0) as usize);
    let button = installer::find_word(
        &tesseract,
        &px,
        w,
        toolbar,
        "Type",
        &env.root.join("ocr-toolbar.png"),
    )
    .unwrap_or_else(|| panic!("no \"Type clipboard\" button read in the toolbar ({shot:?})"));
    let at = |v: usize| v.to_string();
    xdo(&["mousemove", &at(button.0 - 1), &at(button.1)]);
    std::thread::sleep(Duration::from_millis(100));
    xdo(&["mousemove", &at(button.0), &at(button.1)]);
    std::thread::sleep(Duration::from_millis(500));
    xdo(&["click", "1"]);
    let since = Instant::now();
    loop {
        let (t, png) = field(&mut vm);
        if t.as_deref().is_some_and(|t| t.contains(TYPED_HOSTNAME)) {
            break;
        }
        assert!(
            since.elapsed() < STEP_TIMEOUT,
            "\"Type clipboard\" did not put {TYPED_HOSTNAME:?} in the hostname field; it \
             reads {t:?} (screen and field in {}); the console's log ends:\n{}",
            keep(&vm, &png),
            console_said()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("{test}: \"Type clipboard\" typed {TYPED_HOSTNAME:?} into the hostname field");
    let _ = owner.kill();
    let _ = owner.wait();
    drop(children);
    env.ok(&["destroy", name]);
}

/// What the installer's network step says when it finds no network card: hw-detect asks
/// for a driver ("no ethernet card" is the default), then netcfg says it has no interface
/// (no_interfaces); then the question of the hostname screen.
const NO_ETHERNET_CARD: &str = "No Ethernet card was detected";
const NO_NETWORK_CARD: &str = "No network interfaces";
const HOSTNAME_PROMPT: &str = "enter the hostname";
/// What the installer puts in its hostname field.
const DEFAULT_HOSTNAME: &str = "debian";
/// Typed with "Type clipboard": capitals (Shift), digits and hyphens, all a hostname may
/// hold, and nothing the installer puts in the field itself.
const TYPED_HOSTNAME: &str = "Typed-by-vmdesk-42";
