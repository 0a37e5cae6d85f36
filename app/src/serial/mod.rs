//! The serial console: a running VM's COM1 through the socket its VMM serves
//! (`vmdesk-vmm --serial-socket`, at [`Runtime::serial_socket_path`]). The VMM sends each
//! viewer the recent output first, then the output as it comes, and takes what a viewer
//! sends as COM1's input; several viewers may be attached at once.
//!
//! - [`terminal`]: `vmdesk serial NAME`, this terminal attached in raw mode;
//! - [`view`]: the window's serial console, a VT100 screen (`vt100`) drawn with egui;
//! - [`keys`]: egui's keys as the bytes a VT100 terminal sends.

pub mod keys;
pub mod terminal;
pub mod view;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use thiserror::Error;

use crate::runtime::{Runtime, VmState};

#[derive(Debug, Error)]
pub enum SerialError {
    #[error("'{0}' is not running")]
    NotRunning(String),
    #[error("'{name}' is not running: it crashed: {why}")]
    Crashed { name: String, why: String },
    #[error(
        "'{0}' has no serial console socket (its VMM was started by an older vmdesk): restart the VM to get one"
    )]
    NoSocket(String),
    #[error("'{name}': serial console socket {}: {why}", path.display())]
    Connect {
        name: String,
        path: PathBuf,
        why: std::io::Error,
    },
}

/// Connects to the serial console of the running VM `name`.
pub fn connect(rt: &Runtime, name: &str) -> Result<UnixStream, SerialError> {
    match rt.state(name) {
        s if s.is_live() => {}
        VmState::Crashed { why, .. } => {
            return Err(SerialError::Crashed {
                name: name.into(),
                why,
            });
        }
        _ => return Err(SerialError::NotRunning(name.into())),
    }
    let path = rt.serial_socket_path(name);
    if !path.exists() {
        return Err(SerialError::NoSocket(name.into()));
    }
    UnixStream::connect(&path).map_err(|why| SerialError::Connect {
        name: name.into(),
        path,
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_says_why_it_cannot() {
        let dir = std::env::temp_dir().join(format!("vmdesk-serial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rt = Runtime::at(&dir);
        let e = connect(&rt, "off").unwrap_err();
        assert_eq!(e.to_string(), "'off' is not running");

        // A running VMM (a stand-in) without the socket: started by an older vmdesk.
        let mut vmm = crate::runtime::fake_vmm(&rt, "old");
        let e = connect(&rt, "old").unwrap_err();
        assert!(matches!(e, SerialError::NoSocket(_)), "{e}");
        assert!(e.to_string().contains("restart the VM"), "{e}");

        // With a socket that answers: connected.
        let listener =
            std::os::unix::net::UnixListener::bind(rt.serial_socket_path("old")).unwrap();
        assert!(connect(&rt, "old").is_ok());
        drop(listener);
        // A socket file nothing listens on.
        let e = connect(&rt, "old").unwrap_err();
        assert!(matches!(e, SerialError::Connect { .. }), "{e}");
        let _ = vmm.kill();
        let _ = vmm.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
