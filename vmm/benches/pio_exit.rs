//! The cost of one port-I/O exit round trip through vmdesk's vCPU loop and bus, beside
//! a bare KVM_RUN loop that does nothing but re-enter the guest (the floor).
//!
//! The guest is 64-bit ring-3 code started directly at CPL 3 with IOPL 3, so every
//! `out` exits to us and nothing else does; such code runs natively even on a
//! software-assisted KVM. `cargo bench -p vmm --bench pio_exit` prints medians.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::kvm_segment;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress};
use vmm::bus::{Bus, BusDevice};
use vmm::kvm::{KvmVm, vcpu};
use vmm::memory::GuestMem;

const PORT: u16 = 0x80;
const CODE: u64 = 0x10000;
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

fn seg(selector: u16, type_: u8, code64: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db: u8::from(!code64),
        s: 1,
        l: u8::from(code64),
        g: 1,
        ..Default::default()
    }
}

fn ring3_guest(vm: &KvmVm, kvm: &kvm_ioctls::Kvm) -> (VcpuFd, GuestMem) {
    let mem = GuestMem::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
    // Identity-map the first 2 MiB with one user-accessible large page.
    mem.write_obj(0x2000u64 | 0x7, GuestAddress(0x1000))
        .unwrap(); // PML4 → PDPT
    mem.write_obj(0x3000u64 | 0x7, GuestAddress(0x2000))
        .unwrap(); // PDPT → PD
    mem.write_obj(0x87u64, GuestAddress(0x3000)).unwrap(); // 2 MiB page, U/W/P
    // loop: out dx, al ; jmp loop
    mem.write_slice(&[0xee, 0xeb, 0xfd], GuestAddress(CODE))
        .unwrap();
    vm.map_memory(&mem, |_| false).unwrap();

    let fd = vcpu::create(kvm, vm, 0, 1).unwrap();
    let mut s = fd.get_sregs().unwrap();
    s.cs = seg(0x33, 0xb, true);
    let data = seg(0x2b, 0x3, false);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.cr3 = 0x1000;
    s.cr4 = 1 << 5; // PAE
    s.cr0 = 0x8000_0001 | 0x10 | 0x20; // PG | PE | ET | NE
    s.efer = (1 << 8) | (1 << 10); // LME | LMA
    fd.set_sregs(&s).unwrap();
    let mut r = fd.get_regs().unwrap();
    r.rip = CODE;
    r.rdx = u64::from(PORT);
    r.rflags = 0x2 | (3 << 12); // IOPL 3: ring 3 may use `out`
    fd.set_regs(&r).unwrap();
    (fd, mem)
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
    let (mut fd, _mem) = ring3_guest(&vm, &kvm);
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
