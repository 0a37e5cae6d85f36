//! The vCPU loop on real KVM, with 64-bit ring-3 guests (which run natively on every KVM):
//! port I/O reaches the bus in both directions, and a triple fault becomes a reset.

mod common;

use std::sync::{Arc, Mutex};

use vmm::bus::{Bus, BusDevice};
use vmm::kvm::vcpu::{self, VcpuEvent};
use vmm::kvm::{KvmVm, ring3};

/// Remembers writes; reads return a fixed byte.
struct Port {
    written: Vec<u8>,
}

impl BusDevice for Port {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0x5a);
    }
    fn write(&mut self, _: u64, data: &[u8]) {
        self.written.extend_from_slice(data);
    }
}

#[test]
fn port_io_reaches_the_bus() {
    if !common::kvm_or_skip("port_io_reaches_the_bus") {
        return;
    }
    let kvm = vmm::kvm::open().unwrap();
    let vm = KvmVm::new(&kvm).unwrap();
    // in al, dx ; inc al ; out dx, al ; ud2 (ends the test with a fault)
    let code = [0xec, 0xfe, 0xc0, 0xee, 0x0f, 0x0b];
    let (mut fd, _mem) = ring3::setup(&kvm, &vm, &code, 0x123).unwrap();
    let pio = Bus::new();
    let port = Arc::new(Mutex::new(Port { written: vec![] }));
    pio.insert(0x123, 1, port.clone()).unwrap();
    let mmio = Bus::new();
    assert_eq!(vcpu::run_once(&mut fd, &pio, &mmio), Ok(None)); // in
    assert_eq!(vcpu::run_once(&mut fd, &pio, &mmio), Ok(None)); // out
    assert_eq!(port.lock().unwrap().written, vec![0x5b]);
}

#[test]
fn triple_fault_is_a_reset() {
    if !common::kvm_or_skip("triple_fault_is_a_reset") {
        return;
    }
    let kvm = vmm::kvm::open().unwrap();
    let vm = KvmVm::new(&kvm).unwrap();
    // ud2 with no IDT: #UD → #GP → #DF → shutdown.
    let (mut fd, _mem) = ring3::setup(&kvm, &vm, &[0x0f, 0x0b], 0).unwrap();
    let (pio, mmio) = (Bus::new(), Bus::new());
    let mut outcome = Ok(None);
    for _ in 0..10 {
        outcome = vcpu::run_once(&mut fd, &pio, &mmio);
        if outcome != Ok(None) {
            break;
        }
    }
    assert_eq!(outcome, Ok(Some(VcpuEvent::Reset)));
}
