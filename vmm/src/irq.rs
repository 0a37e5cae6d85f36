//! How devices raise interrupts and ask the machine to reset or power off, without
//! knowing about KVM. The VMM implements [`IrqLine`] with KVM_IRQ_LINE; tests record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One interrupt input of the platform's interrupt controllers (a GSI).
pub trait IrqLine: Send + Sync {
    /// Drives the line (level-triggered devices hold it high while they need service).
    fn set_level(&self, high: bool);

    /// An edge: high then low (ISA devices such as the 16550 and the RTC).
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// A line that only remembers its level and how many rising edges it saw: for tests and
/// for devices whose interrupt is not wired.
#[derive(Default)]
pub struct RecordingIrq {
    level: AtomicBool,
    edges: std::sync::atomic::AtomicUsize,
}

impl RecordingIrq {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn level(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }
    pub fn edges(&self) -> usize {
        self.edges.load(Ordering::SeqCst)
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, high: bool) {
        if high && !self.level.swap(true, Ordering::SeqCst) {
            self.edges.fetch_add(1, Ordering::SeqCst);
        }
        if !high {
            self.level.store(false, Ordering::SeqCst);
        }
    }
}

/// What a device may ask of the whole machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineRequest {
    /// Restart through the firmware (keyboard controller, port 0xCF9, port 0x92, triple fault).
    Reset,
    /// The guest turned itself off (ACPI S5).
    PowerOff,
}

/// Where devices send [`MachineRequest`]s; the VMM's run loop receives them.
pub type MachineRequests = crossbeam_channel::Sender<MachineRequest>;
