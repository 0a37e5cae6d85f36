//! Bytes for COM1 to receive, from stdin or a socket client. The UART's receive FIFO is
//! small (64 bytes) and the guest empties it at its own pace, so a feeder waits for room
//! rather than drop what does not fit: a paste arrives whole.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::devices::serial::Serial16550;

/// How long a feeder waits before offering the rest again when the FIFO is full (or no
/// machine runs, between a reset and the next build).
pub const RETRY: Duration = Duration::from_millis(5);

/// Where received bytes go.
pub trait SerialInput: Send + Sync {
    /// Offers `bytes`; returns how many were taken (0 when there is no room, or no UART).
    fn offer(&self, bytes: &[u8]) -> usize;
}

/// The slot [`crate::vm::SerialSlot`] points at: the UART of whichever machine runs now,
/// so input survives guest resets.
impl SerialInput for Mutex<Option<Arc<Mutex<Serial16550>>>> {
    fn offer(&self, bytes: &[u8]) -> usize {
        let uart = self.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match uart {
            Some(serial) => serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_input(bytes),
            None => 0,
        }
    }
}

/// Hands all of `bytes` to `input`, waiting while it has no room; returns false, with the
/// rest not delivered, once `give_up` says so (checked between tries).
pub fn feed(input: &dyn SerialInput, mut bytes: &[u8], give_up: impl Fn() -> bool) -> bool {
    while !bytes.is_empty() {
        let taken = input.offer(bytes);
        bytes = &bytes[taken.min(bytes.len())..];
        if !bytes.is_empty() {
            if give_up() {
                return false;
            }
            std::thread::sleep(RETRY);
        }
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A UART stand-in: a FIFO of `room` bytes that a "guest" empties with `drain`.
    #[derive(Default)]
    pub struct FakeUart {
        pub fifo: Mutex<Vec<u8>>,
        pub received: Mutex<Vec<u8>>,
        pub room: usize,
    }

    impl FakeUart {
        pub fn new(room: usize) -> Arc<FakeUart> {
            Arc::new(FakeUart {
                room,
                ..Default::default()
            })
        }
        /// The guest reads everything waiting.
        pub fn drain(&self) {
            let mut fifo = self.fifo.lock().unwrap();
            self.received.lock().unwrap().append(&mut fifo);
        }
        pub fn received(&self) -> Vec<u8> {
            self.received.lock().unwrap().clone()
        }
    }

    impl SerialInput for FakeUart {
        fn offer(&self, bytes: &[u8]) -> usize {
            let mut fifo = self.fifo.lock().unwrap();
            let n = bytes.len().min(self.room - fifo.len());
            fifo.extend_from_slice(&bytes[..n]);
            n
        }
    }

    #[test]
    fn feed_waits_for_room_and_loses_nothing() {
        let uart = FakeUart::new(4);
        let guest = {
            let uart = uart.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    uart.drain();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let text: Vec<u8> = (0..100u8).collect();
        assert!(feed(&*uart, &text, || false));
        guest.join().unwrap();
        uart.drain();
        assert_eq!(uart.received(), text);
    }

    #[test]
    fn feed_gives_up_when_told() {
        let uart = FakeUart::new(2);
        let stop = AtomicBool::new(false);
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let done = feed(&*uart, b"abcdef", || {
            if tries.fetch_add(1, Ordering::Relaxed) == 3 {
                stop.store(true, Ordering::Relaxed);
            }
            stop.load(Ordering::Relaxed)
        });
        assert!(!done);
        assert_eq!(*uart.fifo.lock().unwrap(), b"ab");
    }

    #[test]
    fn the_slot_feeds_the_running_machines_uart_and_takes_nothing_without_one() {
        let slot: Mutex<Option<Arc<Mutex<Serial16550>>>> = Mutex::new(None);
        assert_eq!(slot.offer(b"x"), 0);
        let irq = crate::irq::RecordingIrq::new();
        let uart = Arc::new(Mutex::new(Serial16550::new(irq, Box::new(std::io::sink()))));
        *slot.lock().unwrap() = Some(uart.clone());
        assert_eq!(slot.offer(b"hi"), 2);
        use crate::bus::BusDevice;
        let mut rbr = [0];
        uart.lock().unwrap().read(0, &mut rbr);
        assert_eq!(rbr, *b"h");
    }
}
