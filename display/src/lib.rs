//! The display side of vmdesk: a framebuffer surface that a producer (the VMM's
//! emulated graphics card, or a demo) writes, and an RFB (VNC) server that any
//! standard client reads it through. Nothing here knows about KVM.
//!
//! - [`surface`]: the shared framebuffer, per-consumer change tracking, CopyRect moves.
//! - [`rfb`]: the VNC server ([`rfb::VncServer`]), its wire format, authentication,
//!   clipboard, and the [`rfb::InputSink`] through which input leaves.
//! - [`encoding`]: rectangle encoders, one per connection and encoding.
//! - [`client`]: a small blocking RFB client for tests, benchmarks and tools.

pub mod client;
pub mod decode;
pub mod encoding;
pub mod keymap;
pub mod pixel;
pub mod rfb;
pub mod surface;
