//! SeaBIOS (Debian's `seabios` package) finds two virtio-blk disks (and passes over the
//! virtio tablet) on our virtio-pci transport, reads its geometry the way QEMU's log shows for the same image, and boots
//! its MBR: the boot sector is read through SeaBIOS's own virtio driver, and the test
//! program in it prints to the debug console. Runs in-process on KVM with the machine
//! model (no vmdesk-vmm option for disks is needed).
//!
//! The MBR is a 22-byte real-mode program written out below (cli; ds=0; print a string
//! to port 0x402; hlt), not a committed binary.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm::firmware::Firmware;
use vmm::kvm::{KvmVm, vcpu};
use vmm::machine::{Boot, Machine, MachineConfig, Outputs, Sink};
use vmm::virtio::block::VirtioBlock;

const SLOT: u8 = 4;
const MBR_MESSAGE: &str = "vmdesk virtio-blk MBR";
const TIMEOUT: Duration = Duration::from_secs(120);

fn mbr_image(path: &Path, size: usize) {
    #[rustfmt::skip]
    let code: [u8; 22] = [
        0xfa,                   // cli
        0x31, 0xc0,             // xor ax, ax
        0x8e, 0xd8,             // mov ds, ax
        0xbe, 0x16, 0x7c,       // mov si, 0x7c16 (the message)
        0xba, 0x02, 0x04,       // mov dx, 0x402
        0xac,                   // 0x0b: lodsb
        0x84, 0xc0,             // test al, al
        0x74, 0x03,             // jz 0x13
        0xee,                   // out dx, al
        0xeb, 0xf8,             // jmp 0x0b
        0xf4,                   // 0x13: hlt
        0xeb, 0xfd,             // jmp 0x13
    ];
    let mut img = vec![0u8; size];
    img[..22].copy_from_slice(&code);
    let msg = format!("{MBR_MESSAGE}\n\0");
    img[22..22 + msg.len()].copy_from_slice(msg.as_bytes());
    img[510] = 0x55;
    img[511] = 0xaa;
    std::fs::write(path, img).unwrap();
}

#[test]
fn seabios_boots_the_mbr_of_a_virtio_blk_disk() {
    let name = "seabios_boots_the_mbr_of_a_virtio_blk_disk";
    if !common::kvm_or_skip(name) {
        return;
    }
    let Ok(fw) = Firmware::load(None) else {
        if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{name}: SeaBIOS is not installed");
        }
        eprintln!("SKIP {name}: SeaBIOS is not installed");
        return;
    };
    let dir = common::temp_dir(name);
    let disk = dir.join("disk.raw");
    mbr_image(&disk, 4 << 20);
    let log_path = dir.join("seabios.log");
    let log = Arc::new(std::fs::File::create(&log_path).unwrap());

    let kvm = vmm::kvm::open().unwrap();
    let vm = KvmVm::new(&kvm).unwrap();
    let cfg = MachineConfig::new(512 << 20, 1, Boot::Firmware(fw));
    let outputs = Outputs {
        serial: Sink::None,
        debugcon: Sink::File(log),
    };
    let irq_vm = vm.fd.clone();
    let machine = Machine::new(
        &cfg,
        Arc::new(move |gsi| vmm::kvm::irq_line(&irq_vm, gsi)),
        &outputs,
    )
    .unwrap();
    let backend = vmm::disk::raw::RawImage::open(&disk, false).unwrap();
    let blk = Arc::new(Mutex::new(VirtioBlock::new(
        Box::new(backend),
        "vmdesk-test",
    )));
    vmm::virtio::pci::attach(&machine.chipset, SLOT, blk, &machine.mem);
    // A second, read-only disk without a boot sector, and the tablet, which SeaBIOS
    // passes over.
    let data = dir.join("data.raw");
    std::fs::write(&data, vec![0u8; 8 << 20]).unwrap();
    let backend = vmm::disk::raw::RawImage::open(&data, true).unwrap();
    let blk2 = Arc::new(Mutex::new(VirtioBlock::new(
        Box::new(backend),
        "vmdesk-data",
    )));
    vmm::virtio::pci::attach(&machine.chipset, SLOT + 1, blk2, &machine.mem);
    let tablet = Arc::new(Mutex::new(vmm::virtio::input::VirtioTablet::new()));
    vmm::virtio::pci::attach(&machine.chipset, SLOT + 2, tablet, &machine.mem);
    vm.map_memory(&machine.mem, |a| machine.is_rom(a)).unwrap();

    let fd = vcpu::create(&kvm, &vm, 0, 1).unwrap();
    let control = vcpu::RunControl::new();
    let (tx, events) = crossbeam_channel::unbounded();
    let t = vcpu::spawn(
        0,
        fd,
        machine.pio.clone(),
        machine.mmio.clone(),
        control.clone(),
        tx,
    )
    .unwrap();
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < TIMEOUT {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains(MBR_MESSAGE) || text.contains("No bootable device") {
            break;
        }
        if let Ok(e) = events.try_recv() {
            panic!("the vCPU stopped: {e:?}\nlog:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    control.stop();
    t.join();

    for want in [
        "PCI: init bdf=00:04.0 id=1af4:1042",
        "found virtio-blk at 00:04.0",
        "virtio cap at 0x40 type 1 bar 0",
        "using modern (1.0) virtio mode",
        // QEMU 7.2 prints the same line for the same 4 MiB image.
        "PCHS=8/16/63 translation=none LCHS=8/16/63 s=8192",
        "found virtio-blk at 00:05.0",
        "PCHS=16/16/63 translation=none LCHS=16/16/63 s=16384",
        "PCI: init bdf=00:06.0 id=1af4:1052",
        "Booting from Hard Disk...",
        MBR_MESSAGE,
    ] {
        assert!(
            text.contains(want),
            "'{want}' missing from the SeaBIOS log:\n{text}"
        );
    }
    if std::env::var_os("VMDESK_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
