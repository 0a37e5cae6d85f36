//! COM1: a 16550 UART at 0x3F8, IRQ 4, from vm-superio. Output goes to a writer (stdout,
//! a file, or nowhere); input is whatever the host pushes with [`Serial16550::push_input`].

use std::io::Write;
use std::sync::Arc;

use vm_superio::{Serial, Trigger};

use crate::bus::BusDevice;
use crate::irq::IrqLine;

pub const COM1_BASE: u64 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const UART_PORTS: u64 = 8;

/// vm-superio raises its interrupt as an event; an ISA UART line is an edge.
pub struct IrqTrigger(pub Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.pulse();
        Ok(())
    }
}

pub struct Serial16550 {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
}

impl Serial16550 {
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Serial16550 {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queues bytes for the guest to read; returns how many fit in the FIFO.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for Serial16550 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            // The only error is a failing output writer; the guest must not notice.
            if let Err(e) = self.uart.write(offset as u8, b) {
                tracing::debug!("serial output: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingIrq;

    use crate::test_sink::Sink;

    #[test]
    fn transmits_and_receives_like_a_16550() {
        let irq = RecordingIrq::new();
        let sink = Sink::default();
        let mut uart = Serial16550::new(irq.clone(), Box::new(sink.clone()));
        for &b in b"ok\n" {
            uart.write(0, &[b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"ok\n");
        // Enable the received-data interrupt (IER bit 0), then feed a byte.
        uart.write(1, &[0x01]);
        uart.push_input(b"x");
        assert!(irq.edges() >= 1);
        let mut lsr = [0];
        uart.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0];
        uart.read(0, &mut rbr);
        assert_eq!(rbr, *b"x");
    }
}
