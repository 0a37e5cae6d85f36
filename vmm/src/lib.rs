//! vmdesk's virtual machine monitor. The machine model (guest memory, buses, devices) is
//! plain Rust that tests drive without KVM; KVM is only the CPU.

pub mod bus;
pub mod devices;
pub mod irq;
pub mod kvm;
pub mod memory;
pub mod pci;
