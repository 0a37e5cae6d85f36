//! vmdesk's virtual machine monitor. The machine model (guest memory, buses, devices) is
//! plain Rust that tests drive without KVM; KVM is only the CPU.

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod clipboard;
pub mod config;
pub mod control;
pub mod devices;
pub mod disk;
pub mod doorbell;
pub mod firmware;
pub mod host;
pub mod input;
pub mod iov;
pub mod irq;
pub mod kvm;
pub mod machine;
pub mod memory;
pub mod memory_slots;
pub mod net;
#[cfg(test)]
mod noise;
pub mod option_rom;
pub mod pause;
pub mod pci;
pub mod serial_console;
pub mod smbios;
#[cfg(test)]
mod test_sink;
pub mod vdagent;
pub mod virtio;
pub mod vm;
