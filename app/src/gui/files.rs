//! File dialogs (rfd) for the path fields, the screenshot's destination and the CD.
//!
//! rfd is built with its XDG desktop portal backend only: it talks D-Bus to the desktop's
//! portal (libdbus is opened at run time, nothing links against GTK), and falls back to
//! `zenity` when there is no portal. Each dialog runs on its own thread, since the portal
//! call blocks until the user answers and the window must keep drawing meanwhile.
//!
//! When neither a D-Bus session nor zenity is there, rfd would just return "cancelled", so
//! we look first and say so instead: typing the path keeps working either way.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

/// What a chosen path is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Form(super::form::PathField),
    /// The ISO field of the CD dialog.
    Media,
    /// Where to save a VM's screenshot.
    Screenshot(String),
}

/// The dialogs in flight and their answers.
/// A dialog's answer: the path, None when cancelled, Err when the dialog itself failed.
pub type Answer = (Target, Result<Option<PathBuf>, String>);

pub struct Files {
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    /// Whether a dialog can be shown here (tests play a desktop without one).
    pub available: fn() -> Result<(), String>,
}

impl Default for Files {
    fn default() -> Self {
        let (tx, rx) = channel();
        Files {
            tx,
            rx,
            available: backend_available,
        }
    }
}

impl Files {
    /// Opens a dialog; its answer comes from [`Files::poll`]. Err: no dialog can be shown.
    pub fn open(
        &self,
        target: Target,
        title: &str,
        filter: Option<(&'static str, &'static [&'static str])>,
        save_name: Option<String>,
        ctx: &eframe::egui::Context,
    ) -> Result<(), String> {
        (self.available)()?;
        let tx = self.tx.clone();
        let title = title.to_string();
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            // A dialog backend that panics must not leave the field waiting forever.
            let chosen = std::panic::catch_unwind(move || {
                let mut d = rfd::FileDialog::new().set_title(&title);
                if let Some((name, exts)) = filter {
                    d = d.add_filter(name, exts).add_filter("All files", &["*"]);
                }
                match save_name {
                    Some(name) => d.set_file_name(&name).save_file(),
                    None => d.pick_file(),
                }
            })
            .map_err(|_| "the file dialog failed: type the path instead".to_string());
            let _ = tx.send((target, chosen));
            ctx.request_repaint();
        });
        Ok(())
    }

    /// A dialog's answer, if one came.
    pub fn poll(&self) -> Option<Answer> {
        self.rx.try_recv().ok()
    }
}

/// Whether rfd has something to show a dialog with: a D-Bus session (for the portal) or
/// zenity on PATH.
pub fn backend_available() -> Result<(), String> {
    let dbus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty())
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    let zenity = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("zenity").is_file()));
    if dbus || zenity {
        Ok(())
    } else {
        Err(NO_DIALOG.into())
    }
}

pub const NO_DIALOG: &str = "no file dialog on this desktop (it needs the XDG desktop portal over D-Bus, or zenity): type the path instead";

/// Where a screenshot goes when no dialog can ask: `$XDG_PICTURES_DIR`, else `~/Pictures`
/// if it exists, else the home directory; named after the VM and the time.
pub fn default_screenshot_path(vm: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let dir = std::env::var_os("XDG_PICTURES_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
        .or_else(|| {
            home.as_ref()
                .map(|h| h.join("Pictures"))
                .filter(|d| d.is_dir())
        })
        .or(home)
        .unwrap_or_else(std::env::temp_dir);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    dir.join(format!("{vm}-screen-{secs}.png"))
}

/// `path` with a `.png` ending, so the saved screenshot opens as what it is.
pub fn with_png_extension(path: PathBuf) -> PathBuf {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        path
    } else {
        let mut s = path.into_os_string();
        s.push(".png");
        PathBuf::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screenshots_end_in_png() {
        assert_eq!(with_png_extension("/a/b".into()), PathBuf::from("/a/b.png"));
        assert_eq!(
            with_png_extension("/a/b.PNG".into()),
            PathBuf::from("/a/b.PNG")
        );
        assert_eq!(
            with_png_extension("/a/b.jpg".into()),
            PathBuf::from("/a/b.jpg.png")
        );
    }
}
