//! The real noVNC (the npm package @novnc/novnc) in headless Chromium (Debian's chromium),
//! connected straight to our VNC port over WebSocket: its canvas shows the server's
//! pixels, exactly, before and after the screen changes, and keys typed into the page
//! (key events dispatched through the DevTools protocol, as a person's would be) reach the
//! server's input sink as the right keysyms and scan codes, a click as a pointer event.
//!
//! `tests/novnc/driver.cjs` (Node with puppeteer-core) runs the browser and serves
//! `tests/novnc/page.html` with noVNC's modules; `resources/scripts/novnc-assets.sh` puts
//! both packages in target/assets/novnc. Without node, chromium or those packages the test
//! prints `SKIP novnc...: reason` and passes, unless VMDESK_REQUIRE_TOOLS=1.

mod rfb_support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use display::encoding::Rect;
use display::surface::Surface;
use rfb_support::{Harness, Input, skip};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The node_modules folder novnc-assets.sh fills.
fn node_modules() -> PathBuf {
    std::env::var_os("VMDESK_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/assets"))
        .join("novnc/node_modules")
}

/// A picture Tight sends losslessly to noVNC: 40 colours (so every piece goes as a
/// palette, never as JPEG, which noVNC allows), in 16x16 blocks with one-pixel detail (a
/// checkerboard and a diagonal), so a pixel out of place shows.
fn paint_flat(surface: &Surface, seed: u32) {
    let (w, h) = surface.size();
    let (w, h) = (usize::from(w), usize::from(h));
    let colour = |i: usize| -> u32 {
        let i = i as u32 % 40;
        // Distinct in every channel, so swapped channels show too.
        (((i * 53 + 17) % 256) << 16)
            | (((i * 97 + 101) % 256) << 8)
            | ((i * 31 + 7 + seed * 40) % 256)
    };
    let mut px = vec![0u32; w * h];
    for y in 0..h {
        for x in 0..w {
            let block = (x / 16) * 7 + (y / 16) * 13 + seed as usize * 5;
            px[y * w + x] = if x == y || x + 1 == y {
                colour(39)
            } else if (32..96).contains(&x) && (16..48).contains(&y) {
                colour((x + y) % 2 * 3)
            } else {
                colour(block)
            };
        }
    }
    surface.write_rect(Rect::new(0, 0, w as u16, h as u16), &px, w);
}

/// The Node driver: one command a line in, one answer a line out.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    log: PathBuf,
    /// Where the driver writes Chromium's pid.
    browser_pid: PathBuf,
}

impl Driver {
    fn start(node: &Path, chromium: &Path, vnc_port: u16, dir: &Path) -> (Driver, String) {
        let log = dir.join("driver.log");
        let mut child = Command::new(node)
            .arg(workspace_root().join("display/tests/novnc/driver.cjs"))
            .arg(node_modules())
            .arg(chromium)
            .arg(vnc_port.to_string())
            .arg(dir.join("profile"))
            .arg(dir.join("browser.pid"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Driver {
            child,
            stdin,
            answers,
            log,
            browser_pid: dir.join("browser.pid"),
        };
        // Chromium's start on a busy 2-core machine takes seconds; allow for it.
        let first = d.answer(Duration::from_secs(120));
        (d, first)
    }

    fn answer(&mut self, limit: Duration) -> String {
        match self.answers.recv_timeout(limit) {
            Ok(line) => line,
            Err(e) => panic!(
                "no answer from the noVNC driver ({e}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.answer(Duration::from_secs(60))
    }

    /// The canvas's pixels as 0x00RRGGBB.
    fn canvas(&mut self, file: &Path) -> (usize, usize, Vec<u32>) {
        let answer = self.ask(&format!("canvas {}", file.display()));
        let dims: Vec<usize> = answer
            .strip_prefix("canvas ")
            .unwrap_or_else(|| panic!("driver answered {answer:?}"))
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        let rgba = std::fs::read(file).unwrap();
        let px = rgba
            .chunks_exact(4)
            .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
            .collect();
        (dims[0], dims[1], px)
    }

    /// Asks for the canvas until it equals the surface; panics with the last difference.
    fn wait_for_surface(&mut self, h: &Harness, file: &Path, what: &str) {
        let (sw, sh, want) = h.surface.snapshot();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (w, hh, got) = self.canvas(file);
            let differing = if (w, hh) == (usize::from(sw), usize::from(sh)) {
                got.iter().zip(&want).filter(|(a, b)| a != b).count()
            } else {
                usize::MAX
            };
            if differing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: noVNC's canvas ({w}x{hh}) never equalled the surface ({sw}x{sh}): \
                 {differing} pixels differ"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Node did not close Chromium in time (it may still be waiting for the page).
        // Killing node alone would leave Chromium running: puppeteer started it as the
        // leader of a process group of its own, so end that group.
        if let Some(pid) = std::fs::read_to_string(&self.browser_pid)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key events the sink got, in order.
fn keys(got: &[Input]) -> Vec<(u32, bool, Option<u16>)> {
    got.iter()
        .filter_map(|i| match i {
            Input::Key(k, d, s) => Some((*k, *d, *s)),
            _ => None,
        })
        .collect()
}

#[test]
fn novnc_in_chromium_shows_the_screen_and_types() {
    let name = "novnc_in_chromium_shows_the_screen_and_types";
    let Some(node) = which("node") else {
        return skip(name, "node not found (install-deps.sh test)");
    };
    let Some(chromium) = which("chromium") else {
        return skip(name, "chromium not found (install-deps.sh test)");
    };
    if !node_modules().join("@novnc/novnc/core/rfb.js").is_file()
        || !node_modules().join("puppeteer-core/package.json").is_file()
    {
        return skip(
            name,
            "noVNC or puppeteer-core not in target/assets/novnc (resources/scripts/novnc-assets.sh)",
        );
    }
    let h = Harness::new(320, 240);
    paint_flat(&h.surface, 1);
    let dir = std::env::temp_dir().join(format!("vmdesk-novnc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let canvas = dir.join("canvas.rgba");

    let (mut driver, first) = Driver::start(&node, &chromium, h.addr().port(), &dir);
    let at: Vec<i32> = first
        .strip_prefix("connected ")
        .unwrap_or_else(|| panic!("noVNC did not connect: {first:?}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(h.server.client_count(), 1);

    // (a) The screen, and the screen after it changed (updates keep coming over frames).
    driver.wait_for_surface(&h, &canvas, "first picture");
    paint_flat(&h.surface, 2);
    h.surface
        .fill_rect(Rect::new(200, 100, 50, 40), 0x00ff_8000);
    driver.wait_for_surface(&h, &canvas, "changed picture");

    // (b) Keys: noVNC sends QEMU extended key events (we offer them), so each key comes
    // with its XT scan code as well as its keysym.
    h.input.0.lock().unwrap().clear();
    assert_eq!(driver.ask("type vmdesk"), "typed");
    assert_eq!(driver.ask("press Enter"), "pressed");
    assert_eq!(driver.ask("down Shift"), "down");
    assert_eq!(driver.ask("press KeyV"), "pressed");
    assert_eq!(driver.ask("up Shift"), "up");
    let mut want = Vec::new();
    for (keysym, scancode) in [
        (0x76, 0x2f),   // v
        (0x6d, 0x32),   // m
        (0x64, 0x20),   // d
        (0x65, 0x12),   // e
        (0x73, 0x1f),   // s
        (0x6b, 0x25),   // k
        (0xff0d, 0x1c), // Return
    ] {
        want.push((keysym, true, Some(scancode)));
        want.push((keysym, false, Some(scancode)));
    }
    want.extend([
        (0xffe1, true, Some(0x2a)), // Shift_L
        (0x56, true, Some(0x2f)),   // V
        (0x56, false, Some(0x2f)),
        (0xffe1, false, Some(0x2a)),
    ]);
    let got = h.input.wait_for(want.len());
    assert_eq!(keys(&got), want, "all input: {got:?}");

    // A click at canvas (10, 20).
    assert_eq!(
        driver.ask(&format!("click {} {}", at[0] + 10, at[1] + 20)),
        "clicked"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let released = loop {
        let got = h.input.0.lock().unwrap().clone();
        let pressed = got.iter().position(|i| *i == Input::Pointer(10, 20, 1));
        if let Some(p) = pressed
            && got[p..].contains(&Input::Pointer(10, 20, 0))
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        released,
        "no press and release at (10, 20): {:?}",
        h.input.0.lock().unwrap()
    );

    // A picture of the page for people to look at.
    let png = workspace_root().join(format!("target/{name}.png"));
    assert_eq!(driver.ask(&format!("shot {}", png.display())), "shot");
    drop(driver);
    std::fs::remove_dir_all(&dir).ok();
}
