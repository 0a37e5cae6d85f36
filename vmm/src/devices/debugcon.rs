//! The debug console at port 0x402 that SeaBIOS writes its log to (QEMU's
//! `isa-debugcon`). Reading the port returns 0xE9, which is how firmware probes for it.
//! Every byte goes to the log unchanged; with a boot watch, the lines also go through a
//! [`BootWatch`], whose events (what the boot tried, why it failed) go to the run loop.

use std::io::Write;

use crossbeam_channel::Sender;

use crate::bus::BusDevice;
use crate::devices::boot_watch::{BootEvent, BootWatch};

pub const DEBUGCON_PORT: u64 = 0x402;
const PROBE_VALUE: u8 = 0xe9;

pub struct DebugCon {
    out: Box<dyn Write + Send>,
    watch: Option<(BootWatch, Sender<BootEvent>)>,
}

impl DebugCon {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        DebugCon { out, watch: None }
    }

    /// Also reads the log as SeaBIOS's boot messages and sends what they say to `events`.
    pub fn with_boot_watch(out: Box<dyn Write + Send>, events: Sender<BootEvent>) -> Self {
        DebugCon {
            out,
            watch: Some((BootWatch::new(), events)),
        }
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
        if let Some((watch, events)) = &mut self.watch
            && let Some(event) = watch.push(data[0])
        {
            let _ = events.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_sink::Sink;

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

    #[test]
    fn the_boot_watch_sees_the_lines_and_the_log_is_unchanged() {
        let sink = Sink::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut dev = DebugCon::with_boot_watch(Box::new(sink.clone()), tx);
        let log = b"Booting from DVD/CD...\nBoot failed: Could not read from CDROM (code 0004)\n";
        for &c in log {
            dev.write(0, &[c]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), log);
        use crate::devices::boot_watch::{BootError, BootTarget};
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            [
                BootEvent::Trying(BootTarget::Cdrom),
                BootEvent::Failed(BootTarget::Cdrom, BootError::Cdrom(4)),
            ]
        );
    }
}
