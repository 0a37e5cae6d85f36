//! The `vmdesk` app as a library: the VM library on disk, the VMM processes it runs, and
//! the command line, so the binary, the GUI and the tests share one implementation.

pub mod cli;
pub mod clone;
pub mod console;
pub mod demo;
pub mod desktop;
pub mod disk;
pub mod gui;
pub mod host_check;
pub mod library;
pub mod linked_clone;
pub mod nvram;
pub mod osinfo;
pub mod runtime;
pub mod serial;
pub mod service;
