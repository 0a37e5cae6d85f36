//! The framebuffer's KVM memory slot: guest writes land in the device's host memory with
//! no exit and show in KVM's dirty log; once unmapped, the same addresses exit as MMIO.

mod common;

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, VolatileMemory};
use vmm::bus::{Bus, BusDevice};
use vmm::kvm::slots::KvmRamMapper;
use vmm::kvm::{KvmVm, ring3, vcpu};
use vmm::memory_slots::{RamMapper, alloc_host_ram, page_is_dirty};

struct Recorder(Vec<(u64, Vec<u8>)>);

impl BusDevice for Recorder {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.push((offset, data.to_vec()));
    }
}

#[test]
fn guest_writes_hit_the_slot_and_its_dirty_log() {
    if !common::kvm_or_skip("guest_writes_hit_the_slot_and_its_dirty_log") {
        return;
    }
    const FB: u64 = 0x20_0000;
    let kvm = vmm::kvm::open().unwrap();
    let vm = KvmVm::new(&kvm).unwrap();
    // mov byte [FB+0x1234], 0xab ; mov byte [FB+0x5000], 1 ; out dx, al
    // mov byte [FB+0x1234], 0xcd ; out dx, al ; ud2
    let code = [
        0xc6, 0x04, 0x25, 0x34, 0x12, 0x20, 0x00, 0xab, //
        0xc6, 0x04, 0x25, 0x00, 0x50, 0x20, 0x00, 0x01, //
        0xee, //
        0xc6, 0x04, 0x25, 0x34, 0x12, 0x20, 0x00, 0xcd, //
        0xee, 0x0f, 0x0b,
    ];
    let (mut fd, mem) = ring3::setup(&kvm, &vm, &code, 0x80).unwrap();
    // A second 2 MiB page, user-writable, for the framebuffer at FB.
    mem.write_obj(FB | 0x87, GuestAddress(0x3000 + 8)).unwrap();
    let fb = alloc_host_ram(2 << 20).unwrap();
    let mapper = KvmRamMapper::new(&vm);
    let slot = mapper.map(FB, &fb, true).unwrap();
    let pio = Bus::new();
    let mmio = Bus::new();
    let rec = Arc::new(Mutex::new(Recorder(Vec::new())));
    mmio.insert(FB, 2 << 20, rec.clone()).unwrap();
    let port = Arc::new(Mutex::new(Recorder(Vec::new())));
    pio.insert(0x80, 1, port.clone()).unwrap();

    // Up to the first `out`: both stores go straight to host memory.
    while port.lock().unwrap().0.is_empty() {
        assert_eq!(vcpu::run_once(&mut fd, &pio, &mmio), Ok(None));
    }
    let vs = fb.as_volatile_slice();
    assert_eq!(vs.read_obj::<u8>(0x1234).unwrap(), 0xab);
    assert_eq!(vs.read_obj::<u8>(0x5000).unwrap(), 1);
    assert!(
        rec.lock().unwrap().0.is_empty(),
        "no MMIO exits while mapped"
    );
    let dirty = mapper.dirty_pages(slot).unwrap();
    let pages: Vec<usize> = (0..512).filter(|&p| page_is_dirty(&dirty, p)).collect();
    assert_eq!(pages, vec![1, 5]);
    assert!(
        mapper.dirty_pages(slot).unwrap().iter().all(|&w| w == 0),
        "reading the log clears it"
    );

    // Unmapped: the next store is an MMIO exit.
    mapper.unmap(slot).unwrap();
    while port.lock().unwrap().0.len() < 2 {
        assert_eq!(vcpu::run_once(&mut fd, &pio, &mmio), Ok(None));
    }
    assert_eq!(rec.lock().unwrap().0, vec![(0x1234, vec![0xcd])]);
    assert_eq!(vs.read_obj::<u8>(0x1234).unwrap(), 0xab);
}
