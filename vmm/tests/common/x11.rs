//! An X server of the test's own and its clipboard, for the tests that run X clients
//! (the guest agent's, and TigerVNC's viewer in the display crate's tests, which include
//! this file by path).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Xvfb on a display it picks itself (`-displayfd`), stopped on drop.
pub struct Xvfb {
    child: Child,
    /// ":N", for DISPLAY.
    pub display: String,
}

impl Xvfb {
    /// `None` when Xvfb is missing or does not say its display.
    pub fn start() -> Option<Xvfb> {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp"])
            .args(["-screen", "0", "800x600x24"])
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
