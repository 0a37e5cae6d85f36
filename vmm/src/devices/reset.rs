//! The PC's reset lines that are ports of their own: port 0x92 (System Control Port A,
//! "fast reset" in bit 0, A20 gate in bit 1) and 0xCF9 (the PIIX reset control
//! register). The keyboard controller's pulse line lives with the i8042.

use crate::bus::BusDevice;
use crate::irq::{MachineRequest, MachineRequests};

pub const PORT_A: u64 = 0x92;
pub const RESET_CONTROL: u64 = 0xcf9;

/// Port 0x92. A20 is always enabled under KVM; the bit reads back as written.
pub struct SystemControlA {
    value: u8,
    requests: MachineRequests,
}

impl SystemControlA {
    pub fn new(requests: MachineRequests) -> Self {
        SystemControlA {
            value: 0x02,
            requests,
        }
    }
}

impl BusDevice for SystemControlA {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.value;
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let v = data[0];
        // Only a 0 → 1 transition of bit 0 resets.
        if v & 1 != 0 && self.value & 1 == 0 {
            let _ = self.requests.send(MachineRequest::Reset);
        }
        self.value = v & !1;
    }
}

/// Port 0xCF9: bit 2 (RST_CPU) rising resets; bit 1 (SYS_RST) selects a hard reset,
/// which for us is the same thing.
pub struct ResetControl {
    value: u8,
    requests: MachineRequests,
}

impl ResetControl {
    pub fn new(requests: MachineRequests) -> Self {
        ResetControl { value: 0, requests }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.value;
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        // Only byte accesses hit this register; wider ones at 0xCF8 belong to PCI.
        if data.len() != 1 {
            return;
        }
        let v = data[0];
        if v & 0x04 != 0 && self.value & 0x04 == 0 {
            let _ = self.requests.send(MachineRequest::Reset);
        }
        self.value = v & 0x02;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_92_fast_reset_on_rising_bit_0() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut p = SystemControlA::new(tx);
        p.write(0, &[0x02]);
        assert!(rx.try_recv().is_err());
        p.write(0, &[0x03]);
        assert_eq!(rx.try_recv(), Ok(MachineRequest::Reset));
        let mut b = [0];
        p.read(0, &mut b);
        assert_eq!(b[0] & 1, 0);
    }

    #[test]
    fn cf9_resets_on_rst_cpu() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut p = ResetControl::new(tx);
        p.write(0, &[0x02]);
        assert!(rx.try_recv().is_err());
        p.write(0, &[0x06]);
        assert_eq!(rx.try_recv(), Ok(MachineRequest::Reset));
        // A dword write is PCI's, not ours.
        p.write(0, &[0x06, 0, 0, 0]);
        assert!(rx.try_recv().is_err());
    }
}
