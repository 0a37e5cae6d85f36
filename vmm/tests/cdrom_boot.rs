//! SeaBIOS boots an El Torito ISO (made with xorriso around a real-mode program) from
//! vmdesk-vmm's IDE CD-ROM, `--cdrom ISO`. The program reads sectors through the BIOS
//! (SeaBIOS's own ATAPI driver does the I/O on our controller) and prints their checksum,
//! which must match the host's. The same ISO under QEMU gives the same drive line (but for
//! the model name) and the same checksum.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
const DONE: &str = "VMDESK CD END";

/// Prints a start line, reads 4 CD sectors from LBA 16 with int 13h AH=42h into 0:8000,
/// checks the "CD001" volume descriptor signature, prints the 32-bit sum of the bytes.
const PROG: &str = r#"
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov %dl, drive
    mov $m_start, %si
    call print
    mov $dap, %si
    mov drive, %dl
    mov $0x42, %ah
    int $0x13
    jc fail
    cmpl $0x30304443, 0x8001
    jne fail
    mov $m_ok, %si
    call print
    xor %ebx, %ebx
    mov $0x8000, %si
    mov $8192, %cx
1:  movzbl (%si), %eax
    add %eax, %ebx
    inc %si
    loop 1b
    mov $m_sum, %si
    call print
    mov $8, %cx
2:  rol $4, %ebx
    mov %bl, %al
    and $0x0f, %al
    add $0x30, %al
    cmp $0x39, %al
    jbe 3f
    add $7, %al
3:  mov $0x402, %dx
    outb %al, %dx
    loop 2b
    mov $m_nl, %si
    call print
    jmp done
fail:
    mov $m_fail, %si
    call print
done:
    mov $m_end, %si
    call print
    cli
4:  hlt
    jmp 4b
print:
    lodsb
    test %al, %al
    jz 5f
    mov $0x402, %dx
    outb %al, %dx
    jmp print
5:  ret
drive: .byte 0
.align 4
dap: .byte 16, 0
     .word 4
     .word 0x8000, 0
     .quad 16
m_start: .asciz "VMDESK CD BOOT\n"
m_ok: .asciz "VMDESK CD PVD OK\n"
m_sum: .asciz "VMDESK CD SUM "
m_nl: .asciz "\n"
m_fail: .asciz "VMDESK CD READ FAILED\n"
m_end: .asciz "VMDESK CD END\n"
"#;

/// The ISO: the program as its El Torito boot image, and some data so the sectors we sum
/// are not all zero. `None` without binutils or xorriso (after a SKIP line).
fn make_iso(test: &str, dir: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(dir.join("root/boot")).unwrap();
    std::fs::write(dir.join("prog.S"), PROG).unwrap();
    let mut img = common::assemble(test, &dir.join("prog.S"), 0x7c00, dir)?;
    img.resize(2048, 0);
    std::fs::write(dir.join("root/boot/prog.img"), img).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("root/data.bin"), data).unwrap();
    let iso = dir.join("t.iso");
    common::make_iso(
        test,
        &dir.join("root"),
        &iso,
        "VMDESKCD",
        Some("boot/prog.img"),
    )?;
    Some(iso)
}

fn host_sum(iso: &Path) -> String {
    let bytes = std::fs::read(iso).unwrap();
    let sum: u32 = bytes[16 * 2048..20 * 2048]
        .iter()
        .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    format!("VMDESK CD SUM {sum:08X}")
}

fn drive_line(log: &str) -> Option<&str> {
    log.lines()
        .map(str::trim)
        .find(|l| l.starts_with("DVD/CD ["))
}

#[test]
fn seabios_boots_an_el_torito_iso_from_the_ide_cdrom() {
    let test = "seabios_boots_an_el_torito_iso_from_the_ide_cdrom";
    if !Path::new(vmm::firmware::DEFAULT_FIRMWARE).exists() {
        assert_ne!(
            std::env::var("VMDESK_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "{test}: SeaBIOS is not installed"
        );
        eprintln!("SKIP {test}: SeaBIOS is not installed");
        return;
    }
    if !common::kvm_or_skip(test) {
        return;
    }
    let dir = common::temp_dir("cdrom-boot");
    let Some(iso) = make_iso(test, &dir) else {
        return;
    };
    let want_sum = host_sum(&iso);

    let (mut child, log) = common::spawn_vmm(
        &dir,
        "ours",
        &[
            "--memory",
            "256M",
            "--serial",
            "none",
            "--cdrom",
            iso.to_str().unwrap(),
        ],
    );
    let ours = common::wait_for_log(&mut child, &log, DONE, TIMEOUT);
    let status = common::stop(&mut child);
    assert!(
        ours.contains(DONE),
        "the boot program did not finish:\n{ours}"
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        drive_line(&ours),
        Some("DVD/CD [ata1-0: vmdesk DVD-ROM ATAPI-4 DVD/CD]"),
        "{ours}"
    );
    assert!(ours.contains("Booting from DVD/CD..."), "{ours}");
    assert!(ours.contains("VMDESK CD PVD OK"), "{ours}");
    assert!(ours.contains(&want_sum), "want {want_sum}:\n{ours}");

    if common::tool_or_skip(test, "qemu-system-x86_64").is_some() {
        let qlog = dir.join("qemu.log");
        let mut q = Command::new("qemu-system-x86_64")
            .args(["-M", "pc", "-enable-kvm", "-cpu", "host,-arch-capabilities"])
            .args([
                "-nodefaults",
                "-m",
                "256",
                "-display",
                "none",
                "-vga",
                "none",
            ])
            .args(["-net", "none", "-serial", "null", "-boot", "d"])
            .args(["-cdrom", iso.to_str().unwrap()])
            .arg("-debugcon")
            .arg(format!("file:{}", qlog.display()))
            .args(["-global", "isa-debugcon.iobase=0x402"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu");
        let qemu = common::wait_for_log(&mut q, &qlog, DONE, TIMEOUT);
        common::stop(&mut q);
        // Same drive, same place, same ATAPI version; only the model name is ours.
        assert_eq!(
            drive_line(&qemu).map(|l| l.replace("QEMU DVD-ROM", "vmdesk DVD-ROM")),
            drive_line(&ours).map(str::to_owned),
            "{qemu}"
        );
        assert!(qemu.contains(&want_sum), "QEMU: want {want_sum}:\n{qemu}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
