//! The RFB (VNC) server: wire format, authentication, one session per client, the
//! listener that owns them, and RFB over WebSocket on the same port for browsers.

pub mod auth;
pub mod clipboard;
pub mod input;
pub mod protocol;
pub mod server;
mod session;
mod websocket;

pub use auth::Password;
pub use input::{InputSink, NullInput};
pub use server::{
    DEFAULT_WEBSOCKET_WAIT, VncConfig, VncError, VncServer, display_port, first_free_display,
    parse_listen,
};
