//! The debug console at port 0x402 that SeaBIOS writes its log to (QEMU's
//! `isa-debugcon`). Reading the port returns 0xE9, which is how firmware probes for it.

use std::io::Write;

use crate::bus::BusDevice;

pub const DEBUGCON_PORT: u64 = 0x402;
const PROBE_VALUE: u8 = 0xe9;

pub struct DebugCon {
    out: Box<dyn Write + Send>,
}

impl DebugCon {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        DebugCon { out }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = PROBE_VALUE;
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let _ = self.out.write_all(&data[..1]);
        if data[0] == b'\n' {
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_bytes_and_answers_the_probe() {
        let sink = Sink::default();
        let mut dev = DebugCon::new(Box::new(sink.clone()));
        let mut b = [0];
        dev.read(0, &mut b);
        assert_eq!(b, [0xe9]);
        for &c in b"SeaBIOS\n" {
            dev.write(0, &[c]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"SeaBIOS\n");
    }
}
