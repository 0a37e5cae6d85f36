//! The RFB (VNC) server: wire format, authentication, one session per client, and the
//! listener that owns them.

pub mod auth;
pub mod clipboard;
pub mod input;
pub mod protocol;
pub mod server;
mod session;

pub use auth::Password;
pub use input::{InputSink, NullInput};
pub use server::{VncConfig, VncError, VncServer, display_port, first_free_display, parse_listen};
