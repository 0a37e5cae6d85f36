//! SeaBIOS (Debian's `seabios` package) on virtio-blk disks behind our virtio-pci
//! transport, in-process on KVM with the machine model (no vmdesk-vmm disk option is
//! needed): it finds two disks (and passes over the virtio tablet), logs the same drive
//! lines as QEMU 7.2 does for the same images, and boots the first disk's MBR; a boot
//! sector built from source at test time writes and reads sectors through int 13h (SeaBIOS's
//! own virtio driver does the I/O), and the image holds what it wrote.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm::firmware::Firmware;
use vmm::kvm::{KvmVm, vcpu};
use vmm::machine::{Boot, Machine, MachineConfig, Outputs, Sink};
use vmm::virtio::block::VirtioBlock;

const SLOT: u8 = 4;
const MBR_MESSAGE: &str = "vmdesk virtio-blk MBR";
const TIMEOUT: Duration = Duration::from_secs(120);

fn firmware_or_skip(name: &str) -> Option<Firmware> {
    if !common::kvm_or_skip(name) {
        return None;
    }
    match Firmware::load(None) {
        Ok(fw) => Some(fw),
        Err(e) => {
            if std::env::var("VMDESK_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{name}: SeaBIOS is not installed: {e}");
            }
            eprintln!("SKIP {name}: SeaBIOS is not installed ({e})");
            None
        }
    }
}

/// A 22-byte real-mode program (cli; ds=0; print a string to port 0x402; hlt) as the MBR.
fn mbr_image(path: &Path, size: usize) {
    std::fs::write(path, common::boot_sector(MBR_MESSAGE, size)).unwrap();
}

/// Boots SeaBIOS with virtio-blk disks in slots 4, 5, ... (`(path, read_only)`) and the
/// tablet after them, until the debug log shows one of `until`; returns the log.
fn boot(fw: Firmware, dir: &Path, disks: &[(PathBuf, bool)], until: &[&str]) -> String {
    let log_path = dir.join("seabios.log");
    let log = Arc::new(std::fs::File::create(&log_path).unwrap());
    let kvm = vmm::kvm::open().unwrap();
    let vm = KvmVm::new(&kvm).unwrap();
    let cfg = MachineConfig::new(512 << 20, 1, Boot::Firmware(fw));
    let outputs = Outputs {
        serial: Sink::None,
        debugcon: Sink::File(log),
        ..Outputs::default()
    };
    let irq_vm = vm.fd.clone();
    // The VMM's own wiring: SeaBIOS notifies through KVM's doorbells and, not enabling
    // MSI-X, is answered on INTx.
    let fast = vmm::kvm::fast_paths(&kvm, &vm.fd);
    let wiring = vmm::machine::Wiring {
        lines: Arc::new(move |gsi| vmm::kvm::irq_line(&irq_vm, gsi)),
        fast: fast.clone(),
    };
    let machine = Machine::new(&cfg, wiring, &outputs).unwrap();
    let mut slot = SLOT;
    let mut functions = Vec::new();
    for (i, (path, ro)) in disks.iter().enumerate() {
        let backend = vmm::disk::raw::RawImage::open(path, *ro).unwrap();
        let serial = format!("vmdesk-test-{i}");
        let blk = Arc::new(Mutex::new(VirtioBlock::new(Box::new(backend), &serial)));
        functions.push(vmm::virtio::pci::attach(
            &machine.chipset,
            slot,
            blk,
            &machine.mem,
            &fast,
        ));
        slot += 1;
    }
    let tablet = Arc::new(Mutex::new(vmm::virtio::input::VirtioTablet::new()));
    vmm::virtio::pci::attach(&machine.chipset, slot, tablet, &machine.mem, &fast);
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
        if until.iter().any(|u| text.contains(u)) {
            break;
        }
        if let Ok(e) = events.try_recv() {
            panic!("the vCPU stopped: {e:?}\nlog:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    control.stop();
    t.join();
    // SeaBIOS placed the disks' BARs and the doorbells followed: its notifications went
    // through KVM's ioeventfds to the devices' threads.
    if fast.doorbells.is_some() {
        for f in &functions {
            let f = f.lock().unwrap();
            assert!(f.bar_base().is_some(), "a disk's BAR was never placed");
            assert_eq!(f.doorbells_at(), f.bar_base(), "doorbells not at the BAR");
        }
    } else {
        eprintln!("KVM here has no ioeventfd: SeaBIOS's notifications were trapped MMIO");
    }
    text
}

fn assert_log(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(
            text.contains(want),
            "'{want}' missing from the SeaBIOS log:\n{text}"
        );
    }
}

fn cleanup(dir: PathBuf) {
    if std::env::var_os("VMDESK_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn seabios_finds_two_disks_and_boots_the_mbr() {
    let name = "seabios_finds_two_disks_and_boots_the_mbr";
    let Some(fw) = firmware_or_skip(name) else {
        return;
    };
    let dir = common::temp_dir(name);
    let disk = dir.join("disk.raw");
    mbr_image(&disk, 4 << 20);
    // A second, read-only disk without a boot sector.
    let data = dir.join("data.raw");
    std::fs::write(&data, vec![0u8; 8 << 20]).unwrap();
    let text = boot(
        fw,
        &dir,
        &[(disk, false), (data, true)],
        &[MBR_MESSAGE, "No bootable device"],
    );
    assert_log(
        &text,
        &[
            "PCI: init bdf=00:04.0 id=1af4:1042",
            "PCI: init bdf=00:05.0 id=1af4:1042",
            "PCI: init bdf=00:06.0 id=1af4:1052",
            "found virtio-blk at 00:04.0",
            "virtio cap at 0x40 type 1 bar 0",
            "using modern (1.0) virtio mode",
            "found virtio-blk at 00:05.0",
            // QEMU 7.2 prints the same lines for the same 4 MiB and 8 MiB images.
            "PCHS=8/16/63 translation=none LCHS=8/16/63 s=8192",
            "PCHS=16/16/63 translation=none LCHS=16/16/63 s=16384",
            "Booting from Hard Disk...",
            MBR_MESSAGE,
        ],
    );
    cleanup(dir);
}

#[test]
fn boot_sector_writes_and_reads_through_int13() {
    let name = "boot_sector_writes_and_reads_through_int13";
    let Some(fw) = firmware_or_skip(name) else {
        return;
    };
    let dir = common::temp_dir(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asm/virtio_blk_rw.S");
    let Some(mbr) = common::assemble(name, &src, 0x7c00, &dir) else {
        return;
    };
    assert_eq!(mbr.len(), 512);

    let disk = dir.join("disk.raw");
    let mut img = vec![0u8; 4 << 20];
    img[..512].copy_from_slice(&mbr);
    let sector6: Vec<u8> = (0..512u32).map(|i| (i * 13 + 7) as u8).collect();
    img[6 * 512..7 * 512].copy_from_slice(&sector6);
    std::fs::write(&disk, img).unwrap();
    let sum = sector6.iter().map(|&b| u32::from(b)).sum::<u32>() & 0xffff;

    let text = boot(
        fw,
        &dir,
        &[(disk.clone(), false)],
        &["rw ok", "rw failed", "No bootable device"],
    );
    assert_log(&text, &[&format!("sum={sum:04X}"), "rw ok"]);
    // QEMU 7.2 with the same image prints sum=FF00 too.
    assert_eq!(sum, 0xff00);
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(
        &after[5 * 512..6 * 512],
        &[b'W'; 512][..],
        "LBA 5 holds the write"
    );
    assert_eq!(&after[6 * 512..7 * 512], &sector6[..]);
    cleanup(dir);
}
