//! The device's side of interrupt delivery, shared between the transport and the device
//! (which may signal from any thread: a device thread, host input, the network).
//!
//! Two ways out, as virtio-pci has them (virtio 1.0, 4.1.4.5 and 4.1.5.1.2):
//! - INTx: the ISR status byte records why (queue, configuration change), the
//!   level-triggered line stays high until the driver reads the ISR. Firmware and drivers
//!   that do not enable MSI-X (SeaBIOS) use it.
//! - MSI-X, once the driver enables it in the capability: each queue and the
//!   configuration change have a vector the driver chose (or none); a signal sends that
//!   vector's message, with no ISR read and no line. The table lives in [`Msix`].
//!
//! The DEVICE_NEEDS_RESET flag lives here too: a device sets it from wherever it found its
//! ring broken.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ISR_CONFIG, ISR_QUEUE};
use crate::irq::IrqLine;
use crate::pci::msix::Msix;

/// "No vector" in the vector registers: the event raises no interrupt under MSI-X.
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

pub struct Interrupt {
    isr: Mutex<u8>,
    line: Arc<dyn IrqLine>,
    needs_reset: AtomicBool,
    msix: Option<Vectors>,
}

/// The MSI-X table and which vector each event uses.
struct Vectors {
    table: Mutex<Msix>,
    config: AtomicU16,
    queues: Vec<AtomicU16>,
}

impl Interrupt {
    /// INTx only.
    pub fn new(line: Arc<dyn IrqLine>) -> Arc<Interrupt> {
        Self::build(line, None)
    }

    /// INTx until the driver enables `table`; then one vector per event, for `queues`
    /// queues.
    pub fn with_msix(line: Arc<dyn IrqLine>, table: Msix, queues: usize) -> Arc<Interrupt> {
        let vectors = Vectors {
            table: Mutex::new(table),
            config: AtomicU16::new(VIRTIO_MSI_NO_VECTOR),
            queues: (0..queues)
                .map(|_| AtomicU16::new(VIRTIO_MSI_NO_VECTOR))
                .collect(),
        };
        Self::build(line, Some(vectors))
    }

    fn build(line: Arc<dyn IrqLine>, msix: Option<Vectors>) -> Arc<Interrupt> {
        Arc::new(Interrupt {
            isr: Mutex::new(0),
            line,
            needs_reset: AtomicBool::new(false),
            msix,
        })
    }

    /// The MSI-X table, when the function has one (for the transport's BAR accesses and
    /// the capability's control word).
    pub fn msix(&self) -> Option<MutexGuard<'_, Msix>> {
        self.msix
            .as_ref()
            .map(|v| v.table.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The driver wrote the MSI-X capability's message control. Enabling MSI-X takes the
    /// INTx line down: a function uses one or the other.
    pub fn write_msix_control(&self, control: u16) {
        let Some(mut table) = self.msix() else { return };
        table.write_control(control);
        if table.enabled() {
            self.line.set_level(false);
        }
    }

    /// Sets the vector of queue `queue` (`None`: the configuration change) to what the
    /// driver wrote, and returns what it reads back: the vector, or
    /// [`VIRTIO_MSI_NO_VECTOR`] when the function has no such vector (which is how the
    /// driver learns it was refused).
    pub fn set_vector(&self, queue: Option<u16>, vector: u16) -> u16 {
        let Some(v) = &self.msix else {
            return VIRTIO_MSI_NO_VECTOR;
        };
        let valid = vector == VIRTIO_MSI_NO_VECTOR
            || v.table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_valid_vector(vector);
        let stored = if valid { vector } else { VIRTIO_MSI_NO_VECTOR };
        if let Some(slot) = v.slot(queue) {
            slot.store(stored, Ordering::SeqCst);
        }
        self.vector(queue)
    }

    /// The vector of queue `queue` (`None`: the configuration change).
    pub fn vector(&self, queue: Option<u16>) -> u16 {
        self.msix
            .as_ref()
            .and_then(|v| v.slot(queue))
            .map_or(VIRTIO_MSI_NO_VECTOR, |s| s.load(Ordering::SeqCst))
    }

    /// Sends the event's vector if MSI-X is on; `false` if the event must go through INTx.
    fn send_msix(&self, queue: Option<u16>) -> bool {
        let Some(v) = &self.msix else { return false };
        let mut table = v.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.enabled() {
            return false;
        }
        let vector = v
            .slot(queue)
            .map_or(VIRTIO_MSI_NO_VECTOR, |s| s.load(Ordering::SeqCst));
        if vector != VIRTIO_MSI_NO_VECTOR {
            table.notify(vector);
        }
        true
    }

    fn raise_intx(&self, bit: u8) {
        let mut isr = self.isr.lock().unwrap_or_else(|e| e.into_inner());
        *isr |= bit;
        self.line.set_level(true);
    }

    /// Used buffers were added to queue `queue`.
    pub fn signal_used_queue(&self, queue: u16) {
        if !self.send_msix(Some(queue)) {
            self.raise_intx(ISR_QUEUE);
        }
    }

    /// Used buffers were added to some of the device's queues: for devices that serve
    /// several queues in one pass without tracking which. Under MSI-X every queue's vector
    /// fires once (the driver finds nothing new on the others and moves on).
    pub fn signal_used_queues(&self) {
        let Some(v) = &self.msix else {
            return self.raise_intx(ISR_QUEUE);
        };
        let mut table = v.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.enabled() {
            drop(table);
            return self.raise_intx(ISR_QUEUE);
        }
        let mut sent: Vec<u16> = Vec::with_capacity(v.queues.len());
        for slot in &v.queues {
            let vector = slot.load(Ordering::SeqCst);
            if vector != VIRTIO_MSI_NO_VECTOR && !sent.contains(&vector) {
                table.notify(vector);
                sent.push(vector);
            }
        }
    }

    /// The device configuration changed (or the device needs a reset). The ISR's
    /// configuration bit is set under MSI-X too, as the specification asks.
    pub fn signal_config(&self) {
        if self.send_msix(None) {
            *self.isr.lock().unwrap_or_else(|e| e.into_inner()) |= ISR_CONFIG;
        } else {
            self.raise_intx(ISR_CONFIG);
        }
    }

    /// The device hit an inconsistency it cannot recover from without a reset
    /// (virtio 1.0, 2.1.2): the status shows DEVICE_NEEDS_RESET and the driver is told
    /// through a configuration change interrupt.
    pub fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            self.signal_config();
        }
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// A driver read of the ISR: returns the bits and clears them, which lowers the line.
    pub fn read_and_clear(&self) -> u8 {
        let mut isr = self.isr.lock().unwrap_or_else(|e| e.into_inner());
        let v = std::mem::take(&mut *isr);
        self.line.set_level(false);
        v
    }

    /// The ISR without clearing it (for the PCI interrupt status, and tests).
    pub fn peek(&self) -> u8 {
        *self.isr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device reset (the driver wrote 0 to the status): nothing pending, line low,
    /// needs-reset cleared, no vectors chosen. The MSI-X table is the PCI function's and
    /// stays (see [`Interrupt::reset_function`]).
    pub fn reset(&self) {
        let mut isr = self.isr.lock().unwrap_or_else(|e| e.into_inner());
        *isr = 0;
        self.line.set_level(false);
        self.needs_reset.store(false, Ordering::SeqCst);
        if let Some(v) = &self.msix {
            v.config.store(VIRTIO_MSI_NO_VECTOR, Ordering::SeqCst);
            for q in &v.queues {
                q.store(VIRTIO_MSI_NO_VECTOR, Ordering::SeqCst);
            }
        }
    }

    /// A reset of the whole PCI function (machine reset): [`Interrupt::reset`] and the
    /// MSI-X table back to power-on state.
    pub fn reset_function(&self) {
        self.reset();
        if let Some(mut table) = self.msix() {
            table.reset();
        }
    }
}

impl Vectors {
    fn slot(&self, queue: Option<u16>) -> Option<&AtomicU16> {
        match queue {
            None => Some(&self.config),
            Some(q) => self.queues.get(usize::from(q)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingIrq;

    use crate::pci::msix::RecordingMsi as Sent;

    #[test]
    fn intx_isr_is_read_to_clear_and_drives_the_line() {
        let irq = RecordingIrq::new();
        let i = Interrupt::new(irq.clone());
        i.signal_used_queue(0);
        assert!(irq.level());
        assert_eq!(i.read_and_clear(), ISR_QUEUE);
        assert!(!irq.level());
        assert_eq!(i.read_and_clear(), 0);
        i.set_needs_reset();
        assert!(i.needs_reset());
        assert_eq!(i.peek(), ISR_CONFIG);
        i.reset();
        assert!(!i.needs_reset());
        assert!(!irq.level());
        // Without a table no vector sticks.
        assert_eq!(i.set_vector(Some(0), 0), VIRTIO_MSI_NO_VECTOR);
    }

    /// Three vectors, each entry's data its own number, unmasked; MSI-X enabled.
    fn enabled(irq: Arc<RecordingIrq>, sent: Arc<Sent>) -> Arc<Interrupt> {
        let mut table = Msix::new(3, sent);
        for v in 0..3u64 {
            table.table_write(v * 16, &0xfee0_0000u32.to_le_bytes());
            table.table_write(v * 16 + 8, &(v as u32).to_le_bytes());
            table.table_write(v * 16 + 12, &0u32.to_le_bytes());
        }
        let i = Interrupt::with_msix(irq, table, 2);
        i.write_msix_control(1 << 15);
        i
    }

    #[test]
    fn under_msix_each_event_sends_its_own_vector_and_leaves_the_line_alone() {
        let (irq, sent) = (RecordingIrq::new(), Arc::new(Sent::default()));
        let i = enabled(irq.clone(), sent.clone());
        assert_eq!(i.set_vector(None, 2), 2);
        assert_eq!(i.set_vector(Some(0), 0), 0);
        assert_eq!(i.set_vector(Some(1), 1), 1);
        i.signal_used_queue(1);
        i.signal_used_queue(0);
        i.signal_config();
        assert_eq!(sent.take_data(), [1, 0, 2]);
        assert!(!irq.level());
        assert_eq!(irq.edges(), 0);
        // The configuration bit is still recorded in the ISR; the queue bit is not.
        assert_eq!(i.peek(), ISR_CONFIG);
        // A vector the table does not have reads back as none; no vector, no message.
        assert_eq!(i.set_vector(Some(0), 3), VIRTIO_MSI_NO_VECTOR);
        i.signal_used_queue(0);
        assert_eq!(sent.take_data(), Vec::<u32>::new());
        assert!(!irq.level());
        // A queue the device does not have: nothing, and no panic.
        i.signal_used_queue(7);
        assert_eq!(i.set_vector(Some(7), 1), VIRTIO_MSI_NO_VECTOR);
    }

    #[test]
    fn all_queues_fire_each_vector_once() {
        let (irq, sent) = (RecordingIrq::new(), Arc::new(Sent::default()));
        let i = enabled(irq, sent.clone());
        i.set_vector(Some(0), 1);
        i.set_vector(Some(1), 1);
        i.signal_used_queues();
        assert_eq!(sent.take_data(), [1]);
        i.set_vector(Some(1), 0);
        i.signal_used_queues();
        assert_eq!(sent.take_data(), [1, 0]);
    }

    #[test]
    fn intx_until_msix_is_enabled_and_a_device_reset_forgets_the_vectors() {
        let (irq, sent) = (RecordingIrq::new(), Arc::new(Sent::default()));
        let i = Interrupt::with_msix(irq.clone(), Msix::new(3, sent.clone()), 2);
        i.set_vector(Some(0), 0);
        i.signal_used_queue(0);
        assert!(irq.level(), "MSI-X is not enabled yet");
        assert!(sent.take_data().is_empty());
        // Enabling lowers the line the INTx path left high.
        i.write_msix_control(1 << 15);
        assert!(!irq.level());
        i.reset();
        assert_eq!(i.vector(Some(0)), VIRTIO_MSI_NO_VECTOR);
        assert_eq!(i.vector(None), VIRTIO_MSI_NO_VECTOR);
        assert!(i.msix().unwrap().enabled(), "the table is the function's");
        i.reset_function();
        assert!(!i.msix().unwrap().enabled());
    }
}
