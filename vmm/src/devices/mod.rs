//! Devices of the PC we model. Each sits on a [`crate::bus::Bus`] and is driven in tests
//! without a vCPU.

pub mod boot_watch;
pub mod cmos;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod ide;
pub mod pflash;
pub mod ps2_keyboard;
pub mod ps2_mouse;
pub mod reset;
pub mod serial;
pub mod vga;
