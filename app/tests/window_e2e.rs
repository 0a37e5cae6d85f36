//! The demo VM end to end, with the real `vmdesk` and `vmdesk-vmm` binaries and KVM:
//!
//! - `demo_echoes_keys_follows_the_pointer_and_powers_off`: the demo's boot image on a bare
//!   `vmdesk-vmm`, driven by vncdotool (a real VNC client): typed keys come back on the
//!   debug console, pointer motion moves its cursor by the motion (PS/2, relative), and the
//!   power button ends the VMM with exit status 0.
//! - `the_demo_in_the_app_window_under_xvfb`: `vmdesk demo`, then `vmdesk console demo` on
//!   an Xvfb display; screenshots of the display (ImageMagick's `import`) show the guest's
//!   colours and the keys typed into the window (xdotool); closing the window leaves the VM
//!   running; `vmdesk shutdown` powers it off through the demo's ACPI poll; `vmdesk delete
//!   --delete-disks` leaves no file behind.
//!
//! Without KVM, or without a tool, each test is skipped with one loud line and tallied in
//! $VMDESK_KVM_TALLY; with VMDESK_REQUIRE_TOOLS=1 (the test command) a missing tool fails.

mod common;

use common::{Env, files_in, text};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Real-mode code is emulated here (kvm_pvm): SeaBIOS's POST and the demo's first screen
/// take tens of seconds on a busy 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const READY: &str = "vmdesk demo: ready, mouse on";

/// Processes this test started: killed (by pid) and reaped when it ends, pass or fail.
#[derive(Default)]
struct Children(Vec<(&'static str, Child)>);

impl Children {
    fn add(&mut self, what: &'static str, c: Child) -> u32 {
        let pid = c.id();
        self.0.push((what, c));
        pid
    }
    fn get(&mut self, what: &str) -> &mut Child {
        &mut self.0.iter_mut().find(|c| c.0 == what).expect("started").1
    }
    fn kill(&mut self, what: &str) {
        if let Some(i) = self.0.iter().position(|c| c.0 == what) {
            let (_, mut c) = self.0.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 200 ms until it gives `Some` or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the text file `log` has `lines` in this order (each after the one before);
/// returns the text, which the caller's assertion shows when it does not.
fn wait_lines(log: &Path, lines: &[&str], timeout: Duration) -> (bool, String) {
    let has = |t: &str| {
        let mut rest = t;
        lines.iter().all(|l| match rest.find(l) {
            Some(i) => {
                rest = &rest[i + l.len()..];
                true
            }
            None => false,
        })
    };
    let found = wait_for(timeout, || {
        let t = std::fs::read_to_string(log).unwrap_or_default();
        has(&t).then_some(t)
    });
    match found {
        Some(t) => (true, t),
        None => (false, std::fs::read_to_string(log).unwrap_or_default()),
    }
}

/// A decoded PNG as 0xRRGGBB pixels.
struct Picture {
    width: usize,
    height: usize,
    pixels: Vec<u32>,
}

impl Picture {
    fn load(path: &Path) -> Picture {
        let (width, height, pixels) = common::png_pixels(path);
        Picture {
            width,
            height,
            pixels,
        }
    }

    fn at(&self, x: usize, y: usize) -> u32 {
        self.pixels[y * self.width + x]
    }

    /// How many pixels are within `tolerance` of `colour` on every channel.
    fn count(&self, colour: u32, tolerance: u32) -> usize {
        self.pixels
            .iter()
            .filter(|&&p| near(p, colour, tolerance))
            .count()
    }
}

fn near(a: u32, b: u32, tolerance: u32) -> bool {
    (0..3).all(|i| {
        let (x, y) = ((a >> (8 * i)) & 0xff, (b >> (8 * i)) & 0xff);
        x.abs_diff(y) <= tolerance
    })
}

/// The demo's screen in mode 13h as the VGA shows it (640x400: each pixel two dots wide and
/// two high): the rainbow's 24 bands, 8 dots high each, start at dot row 96.
fn band_colours(screen: &Picture) -> Vec<u32> {
    assert_eq!(
        (screen.width, screen.height),
        (640, 400),
        "mode 13h as 640x400"
    );
    // At x 100: left of where the mouse cursor starts (the middle).
    let mut colours: Vec<u32> = (0..24).map(|i| screen.at(100, 96 + 8 * i + 4)).collect();
    colours.dedup();
    colours
}

#[test]
fn demo_echoes_keys_follows_the_pointer_and_powers_off() {
    let test = "demo_echoes_keys_follows_the_pointer_and_powers_off";
    if !common::kvm_or_skip(test) {
        return;
    }
    let Some(vncdo) = common::tool_or_skip(test, "vncdo") else {
        return;
    };
    let vmm = common::ensure_vmm();
    let env = Env::new("demo-vnc");
    let disk = env.root.join("demo.raw");
    let mut img = vmdesk::demo::IMAGE.to_vec();
    img.resize(vmdesk::demo::DISK_SIZE as usize, 0);
    std::fs::write(&disk, img).unwrap();
    let log = env.root.join("debugcon.log");
    let control = env.root.join("c.sock");
    let mut children = Children::default();
    let child = Command::new(&vmm)
        .args([
            "--memory",
            "64M",
            "--serial",
            "none",
            "--vnc",
            "127.0.0.1:auto",
        ])
        .arg("--disk")
        .arg(format!("{},format=raw", disk.display()))
        .arg("--debugcon")
        .arg(format!("file:{}", log.display()))
        .arg("--control")
        .arg(&control)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmdesk-vmm");
    children.add("vmm", child);

    // The VMM prints where its VNC server listens on stderr.
    let stderr = children.get("vmm").stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("vmm: {line}");
            if let Some(a) = line.strip_prefix("vnc: listening on ") {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr: std::net::SocketAddr = rx
        .recv_timeout(STEP_TIMEOUT)
        .expect("a 'vnc: listening on' line")
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback(), "the VMM listens on {addr}");

    let (ok, t) = wait_lines(&log, &[READY], BOOT_TIMEOUT);
    assert!(ok, "the demo did not start; debug console:\n{t}");
    let vnc = |args: &[&str]| common::vncdo(&vncdo, addr.port(), args);

    // Keys, each on a line of its own; Enter too.
    vnc(&["type", "Hi!", "key", "enter"]);
    let (ok, t) = wait_lines(
        &log,
        &[
            READY,
            "vmdesk demo: key H\r\n",
            "vmdesk demo: key i\r\n",
            "vmdesk demo: key !\r\n",
            "vmdesk demo: key enter\r\n",
        ],
        STEP_TIMEOUT,
    );
    assert!(ok, "the keys did not come back; debug console:\n{t}");

    // The pointer: the machine has a virtio tablet, but a BIOS program has no driver for
    // it, so the VMM sends PS/2 motion. The first position only sets where motion counts
    // from; then +100,+60 dots (640x400) move the cursor +50,+30 pixels from the middle
    // of 320x200.
    vnc(&["move", "100", "100", "move", "200", "160"]);
    let (ok, t) = wait_lines(
        &log,
        &[READY, "vmdesk demo: pointer 210,130 buttons 0\r\n"],
        STEP_TIMEOUT,
    );
    assert!(
        ok,
        "the cursor did not follow the pointer; debug console:\n{t}"
    );
    // A button held, and motion far past the corner: clamped to the screen. Each vncdo
    // run is a new client whose pointer starts at 0,0 with no button, so this is one run
    // that starts where the last one ended; the pauses let the demo report each state
    // (it reports the newest position when it gets to it, not every packet).
    vnc(&[
        "move",
        "200",
        "160",
        "mousedown",
        "1",
        "pause",
        "1",
        "move",
        "639",
        "399",
        "pause",
        "1",
        "mouseup",
        "1",
    ]);
    let (ok, t) = wait_lines(
        &log,
        &[
            "vmdesk demo: pointer 210,130 buttons 0\r\n",
            " buttons 1\r\n",
            "vmdesk demo: pointer 319,199 buttons 0\r\n",
        ],
        STEP_TIMEOUT,
    );
    assert!(ok, "button and clamping; debug console:\n{t}");

    // The power button (the app's Shut down): the demo powers off, the VMM exits 0.
    let mut s = std::os::unix::net::UnixStream::connect(&control).expect("control socket");
    s.write_all(b"{\"execute\":\"powerdown\"}\n").unwrap();
    let status = wait_for(STEP_TIMEOUT, || {
        children.get("vmm").try_wait().ok().flatten()
    });
    let t = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        t.contains("vmdesk demo: power button: powering off"),
        "debug console:\n{t}"
    );
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "the VMM ends with status 0 when the guest powers off"
    );
}

#[test]
fn the_demo_in_the_app_window_under_xvfb() {
    let test = "the_demo_in_the_app_window_under_xvfb";
    if !common::kvm_or_skip(test) {
        return;
    }
    let (Some(_), Some(import), Some(xdotool)) = (
        common::tool_or_skip(test, "Xvfb"),
        common::tool_or_skip(test, "import"),
        common::tool_or_skip(test, "xdotool"),
    ) else {
        return;
    };
    common::ensure_vmm();
    let env = Env::new("demo-win");
    let mut children = Children::default();

    // `vmdesk demo` creates and starts the VM and says how to see it.
    let o = env.vmdesk(&["demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("started 'demo': vncviewer 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("vmdesk console demo"), "{out}");
    assert!(env.images_dir().join("demo.raw").is_file());
    assert!(env.vms_dir().join("demo.toml").is_file());
    let serial = env.run_dir().join("demo.serial");
    let (ok, t) = wait_lines(&serial, &[READY], BOOT_TIMEOUT);
    assert!(ok, "the demo did not start; COM1:\n{t}");
    // Asked again while it runs: the same VM, nothing restarted.
    let o = env.vmdesk(&["demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("'demo' is already running"),
        "{}",
        text(&o)
    );

    // What the guest shows, from the VMM: the reference for the window's pixels.
    let shot = |name: &str| -> Picture {
        let p = env.root.join(name);
        let o = env.vmdesk(&["screenshot", "demo", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        Picture::load(&p)
    };
    let guest = shot("guest.png");
    let bands = band_colours(&guest);
    assert!(
        bands.len() >= 12,
        "a rainbow of distinct colours, got {bands:06x?}"
    );

    // An X display of our own.
    let x = common::x11::Xvfb::with_screen("1280x800x24").expect("Xvfb did not start");
    let display = x.display.clone();

    let console = env
        .command(&["console", "demo"])
        .env("DISPLAY", &display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vmdesk console");
    children.add("console", console);

    let root_shot = |name: &str| -> Picture {
        let p = env.root.join(name);
        let out = Command::new(&import)
            .args(["-display", &display, "-window", "root"])
            .arg(&p)
            .output()
            .expect("run import");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Picture::load(&p)
    };
    // Each band is 640x8 dots on the guest's screen; the window shows it about 1:1, so a
    // few hundred pixels of each colour mean the bands are there, not a stray pixel.
    let shows_bands = |p: &Picture| bands.iter().all(|&c| p.count(c, 8) >= 400);
    let window = wait_for(STEP_TIMEOUT, || {
        let p = root_shot("window.png");
        shows_bands(&p).then_some(p)
    });
    let Some(window) = window else {
        let p = root_shot("window.png");
        panic!(
            "the window does not show the guest's colours: {:?}",
            bands
                .iter()
                .map(|&c| (c, p.count(c, 8)))
                .collect::<Vec<_>>()
        );
    };
    // The bands are in the window's area, not the whole screen: the X root is 1280x800.
    assert_eq!((window.width, window.height), (1280, 800));

    // Keys typed into the window: the console sends them, the demo echoes them on its
    // screen (light green in the bottom panel) and on COM1.
    let xdo = |args: &[&str]| common::x11::xdotool(&xdotool, &display, args);
    let wid = xdo(&["search", "--sync", "--name", "demo - vmdesk"]);
    let wid = wid
        .lines()
        .next()
        .expect("the console window")
        .trim()
        .to_string();
    let geometry = xdo(&["getwindowgeometry", "--shell", &wid]);
    let get = |k: &str| -> i64 {
        geometry
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{k} in {geometry}"))
    };
    let (wx, wy, ww, wh) = (get("X"), get("Y"), get("WIDTH"), get("HEIGHT"));
    // Give the window the X input focus (what a window manager does on a click; Xvfb
    // has none), then click into the guest's screen, where the console takes the keys.
    // The window reads input once a frame: a click as slow as a person's, and a frame to
    // take focus.
    xdo(&["windowfocus", &wid]);
    xdo(&[
        "mousemove",
        &(wx + ww / 2).to_string(),
        &(wy + wh / 2).to_string(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    xdo(&["mousedown", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    xdo(&["mouseup", "1"]);
    std::thread::sleep(Duration::from_secs(1));
    xdo(&["type", "--delay", "150", "vmdesk"]);
    let keys: Vec<String> = "vmdesk"
        .chars()
        .map(|c| format!("vmdesk demo: key {c}\r\n"))
        .collect();
    let mut want: Vec<&str> = vec![READY];
    want.extend(keys.iter().map(String::as_str));
    let (ok, t) = wait_lines(&serial, &want, STEP_TIMEOUT);
    assert!(
        ok,
        "the keys typed into the window did not reach the guest; COM1:\n{t}"
    );
    // The pointer moved over the window moves the guest's cursor.
    xdo(&["mousemove_relative", "--", "40", "20"]);
    let (ok, t) = wait_lines(
        &serial,
        &[want[want.len() - 1], "vmdesk demo: pointer "],
        STEP_TIMEOUT,
    );
    assert!(ok, "no pointer motion after the keys; COM1:\n{t}");

    // The echoed keys' colour, from the guest's own screen (the bottom panel, dot rows
    // 304..400, had none before), shows in the window.
    let echo = wait_for(STEP_TIMEOUT, || {
        let g = shot("guest-keys.png");
        (304..400)
            .flat_map(|y| (0..640).map(move |x| (x, y)))
            .map(|(x, y)| g.at(x, y))
            .find(|&c| c != 0 && guest.count(c, 0) == 0)
    })
    .expect("the typed keys on the guest's screen, in a colour new to it");
    let before = window.count(echo, 8);
    let shown = wait_for(STEP_TIMEOUT, || {
        let p = root_shot("window-keys.png");
        (p.count(echo, 8) >= before + 100).then_some(())
    });
    assert!(
        shown.is_some(),
        "the window does not show the echoed keys (colour {echo:06x})"
    );

    // The VM restarted on another display (its old port taken meanwhile): the open window
    // greys its last frame, then finds the new address and takes keys again.
    let old_display = text(&env.vmdesk(&["vncdisplay", "demo"]))
        .trim()
        .to_string();
    let old_port: u16 = old_display
        .rsplit_once(':')
        .and_then(|(_, n)| n.parse::<u16>().ok())
        .map(|n| 5900 + n)
        .unwrap_or_else(|| panic!("vncdisplay printed {old_display:?}"));
    let o = env.vmdesk(&["destroy", "demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _hold = std::net::TcpListener::bind(("127.0.0.1", old_port))
        .unwrap_or_else(|e| panic!("hold the old VNC port {old_port}: {e}"));
    assert!(
        wait_for(STEP_TIMEOUT, || (!shows_bands(&root_shot(
            "window-off.png"
        )))
        .then_some(()))
        .is_some(),
        "the window still shows the guest after it was stopped"
    );
    let o = env.vmdesk(&["start", "demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let new_display = text(&env.vmdesk(&["vncdisplay", "demo"]))
        .trim()
        .to_string();
    assert_ne!(new_display, old_display, "the old port was held");
    let (ok, t) = wait_lines(&serial, &[READY], BOOT_TIMEOUT);
    assert!(ok, "the demo did not start again; COM1:\n{t}");
    assert!(
        wait_for(STEP_TIMEOUT, || shows_bands(&root_shot("window-again.png"))
            .then_some(()))
        .is_some(),
        "the window did not reconnect to the VM on {new_display}"
    );
    // A click first, in case the window let the keyboard go while it was disconnected.
    xdo(&["mousedown", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    xdo(&["mouseup", "1"]);
    std::thread::sleep(Duration::from_secs(1));
    xdo(&["type", "--delay", "150", "z"]);
    let (ok, t) = wait_lines(&serial, &[READY, "vmdesk demo: key z\r\n"], STEP_TIMEOUT);
    assert!(
        ok,
        "no key from the window after the reconnection; COM1:\n{t}"
    );

    // Closing the window leaves the VM running.
    children.kill("console");
    let o = env.vmdesk(&["list"]);
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with("demo "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains(" running "), "{}", text(&o));

    // Shut down: the power button, which the demo polls, then ACPI S5.
    let o = env.vmdesk(&["shutdown", "demo", "--wait", "60"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("'demo' powered off"), "{}", text(&o));
    let t = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        t.contains("vmdesk demo: power button: powering off"),
        "COM1:\n{t}"
    );
    let o = env.vmdesk(&["list"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with("demo ") && l.contains(" stopped ")),
        "{}",
        text(&o)
    );

    // Delete with its disk: no definition, no image, no runtime file left.
    let o = env.vmdesk(&["delete", "demo", "--delete-disks"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        files_in(&env.vms_dir()).is_empty(),
        "{:?}",
        files_in(&env.vms_dir())
    );
    assert!(
        files_in(&env.images_dir()).is_empty(),
        "{:?}",
        files_in(&env.images_dir())
    );
    assert!(
        files_in(&env.run_dir()).is_empty(),
        "{:?}",
        files_in(&env.run_dir())
    );
}
