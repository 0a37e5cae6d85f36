//! Where input from VNC clients goes: the VMM implements [`InputSink`] (PS/2 keyboard,
//! absolute pointer, clipboard); the demo draws what it gets.

/// Receives input from every connected client, in arrival order per client.
pub trait InputSink: Send + Sync {
    /// A key went down or up. `keysym` is the X11 keysym; `scancode` is the XT scan code
    /// from QEMU's extended key event when the client sent one (0xE0 prefix in the high
    /// byte, e.g. 0xE048 for cursor-up), so the guest sees the physical key whatever the
    /// client's keyboard layout.
    fn key(&self, keysym: u32, down: bool, scancode: Option<u16>);

    /// Absolute pointer position in surface pixels (clamped to the surface) and button
    /// mask (bit 0 left, 1 middle, 2 right, 3/4 wheel up/down).
    fn pointer(&self, x: u16, y: u16, buttons: u8);

    /// The client's clipboard changed to `text` (already size-limited).
    fn clipboard(&self, text: String) {
        let _ = text;
    }
}

/// An input sink that drops everything (a view-only display).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullInput;

impl InputSink for NullInput {
    fn key(&self, _keysym: u32, _down: bool, _scancode: Option<u16>) {}
    fn pointer(&self, _x: u16, _y: u16, _buttons: u8) {}
}
