//! The cost of one port-I/O exit round trip through vmdesk's vCPU loop and bus, beside
//! a bare KVM_RUN loop that does nothing but re-enter the guest (the floor).
//!
//! The guest is 64-bit ring-3 code started directly at CPL 3 with IOPL 3, so every
//! `out` exits to us and nothing else does; such code runs natively even on a
//! software-assisted KVM. `cargo bench -p vmm --bench pio_exit` prints medians.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::VcpuExit;
use vmm::bus::{Bus, BusDevice};
use vmm::kvm::{KvmVm, ring3, vcpu};

const PORT: u16 = 0x80;
const EXITS: usize = 100_000;
const ROUNDS: usize = 11;

/// Counts writes, as a trivial device would.
struct Sink(u64);

impl BusDevice for Sink {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        self.0 += 1;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let kvm = match vmm::kvm::open() {
        Ok(k) => k,
        Err(e) => {
            println!("pio_exit: skipped: {e}");
            return;
        }
    };
    let vm = KvmVm::new(&kvm).unwrap();
    // loop: out dx, al ; jmp loop
    let (mut fd, _mem) = ring3::setup(&kvm, &vm, &[0xee, 0xeb, 0xfd], u64::from(PORT)).unwrap();
    let pio = Bus::new();
    let sink = Arc::new(Mutex::new(Sink(0)));
    pio.insert(u64::from(PORT), 1, sink.clone()).unwrap();
    let mmio = Bus::new();

    let mut bare = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..EXITS {
            match fd.run() {
                Ok(VcpuExit::IoOut(..)) => {}
                other => panic!("unexpected exit {other:?}"),
            }
        }
        bare.push(t.elapsed().as_nanos() as f64 / EXITS as f64);

        let t = Instant::now();
        for _ in 0..EXITS {
            if let Err(e) = vcpu::run_once(&mut fd, &pio, &mmio) {
                panic!("{e}");
            }
        }
        ours.push(t.elapsed().as_nanos() as f64 / EXITS as f64);
    }
    assert_eq!(sink.lock().unwrap().0, (EXITS * ROUNDS) as u64);
    let (b, o) = (median(bare), median(ours));
    println!("port-I/O exit round trip, median of {ROUNDS} rounds of {EXITS} exits:");
    println!("  bare KVM_RUN loop (floor)      {b:8.0} ns");
    println!("  vmdesk vCPU loop + bus + device {o:7.0} ns");
    println!(
        "  ratio                          {:8.3}x (target <= 1.3x)",
        o / b
    );
}
