//! The display side of vmdesk: a framebuffer surface that a producer (the VMM's
//! emulated graphics card, or a demo) writes, and an RFB (VNC) server that any
//! standard client reads it through. Nothing here knows about KVM.

pub mod client;
pub mod decode;
pub mod encoding;
pub mod pixel;
pub mod rfb;
pub mod surface;
