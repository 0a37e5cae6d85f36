//! An X server of the test's own and its clipboard, for the tests that run X clients (the
//! guest agent's; the display crate's TigerVNC tests and the app's window test and console
//! benchmark include this file by path).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Xvfb on a display it picks itself (`-displayfd`), stopped on drop.
pub struct Xvfb {
    child: Child,
    /// ":N", for DISPLAY.
    pub display: String,
}

impl Xvfb {
    /// An 800x600 screen; `None` when Xvfb is missing or does not say its display.
    pub fn start() -> Option<Xvfb> {
        Xvfb::with_screen("800x600x24")
    }

    /// A screen of `geometry` ("WxHxDEPTH").
    pub fn with_screen(geometry: &str) -> Option<Xvfb> {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp"])
            .args(["-screen", "0", geometry])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let said = BufReader::new(child.stdout.take()?).read_line(&mut line);
        let x = Xvfb {
            child,
            display: format!(":{}", line.trim()),
        };
        (said.is_ok() && !line.trim().is_empty()).then_some(x)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM first, so Xvfb removes its lock file and socket (after a SIGKILL they
        // stay in /tmp, and tools that pick a display by looking there run out of them).
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..40 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An X application that copied `text` to the CLIPBOARD selection on `display`: xclip,
/// which owns the selection (and answers for it) until it is killed.
pub fn x_copy(display: &str, text: &str) -> Child {
    let mut owner = Command::new("xclip")
        .args(["-quiet", "-selection", "clipboard", "-i"])
        .env("DISPLAY", display)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run xclip");
    let mut input = owner.stdin.take().expect("xclip's stdin");
    std::io::Write::write_all(&mut input, text.as_bytes()).expect("write to xclip");
    owner
}

/// The CLIPBOARD selection's text on `display` (xclip, at most 5 s), or `None`: no
/// owner, no answer, or no xclip.
pub fn x_clipboard(display: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args(["5", "xclip", "-selection", "clipboard", "-o"])
        .env("DISPLAY", display)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `xdotool` (at `xdotool`) with `args` on `display`; fails the test if it fails.
/// Returns its standard output.
pub fn xdotool(xdotool: &std::path::Path, display: &str, args: &[&str]) -> String {
    let out = Command::new(xdotool)
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("run xdotool");
    assert!(
        out.status.success(),
        "xdotool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
