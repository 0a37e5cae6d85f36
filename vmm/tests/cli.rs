//! Every bad input gets one line on stderr naming the problem, and exit code 2.

mod common;

use std::process::Command;

use common::assert_usage_error;

#[test]
fn bad_sizes_and_counts() {
    assert_usage_error(&["--memory", "0"], &[], &["--memory", "more than 0"]);
    assert_usage_error(&["--memory", "1048576G"], &[], &["host", "RAM"]);
    assert_usage_error(&["--memory", "lots"], &[], &["'lots'", "K, M or G"]);
    assert_usage_error(&["--cpus", "0"], &[], &["--cpus", "at least 1"]);
    assert_usage_error(
        &["--cpus", "100000"],
        &[],
        &["--cpus", "more than KVM allows"],
    );
    assert_usage_error(&["--cpus", "two"], &[], &["two"]);
    assert_usage_error(&["--no-such-option"], &[], &["--no-such-option"]);
    assert_usage_error(&["--serial", "tcp:1"], &[], &["file:PATH"]);
}

#[test]
fn bad_files() {
    let dir = common::temp_dir("cli-files");
    let odd = dir.join("odd.bin");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let odd = odd.to_str().unwrap();
    assert_usage_error(
        &["--firmware", odd],
        &[],
        &["1000 bytes", "multiple of 4 KiB"],
    );
    assert_usage_error(
        &["--firmware", "/nonexistent/bios.bin"],
        &[],
        &["/nonexistent/bios.bin", "No such file"],
    );
    assert_usage_error(
        &["--kernel", "/nonexistent/vmlinuz"],
        &[],
        &["kernel", "/nonexistent/vmlinuz"],
    );
    let kernel = dir.join("k");
    std::fs::write(&kernel, b"x").unwrap();
    assert_usage_error(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            "/nonexistent/initrd",
        ],
        &[],
        &["initrd", "/nonexistent/initrd"],
    );
    assert_usage_error(&["--initrd", "/x"], &[], &["--kernel"]);
    std::fs::write(&kernel, vec![0x41u8; 8192]).unwrap();
    assert_usage_error(&["--kernel", kernel.to_str().unwrap()], &[], &["kernel"]);
    assert_usage_error(
        &["--debugcon", "file:/nonexistent/dir/log"],
        &[],
        &["debugcon", "/nonexistent/dir/log"],
    );
    let unreadable = dir.join("unreadable.bin");
    std::fs::create_dir(&unreadable).unwrap();
    assert_usage_error(
        &["--firmware", unreadable.to_str().unwrap()],
        &[],
        &["firmware", "directory"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_option_roms() {
    let dir = common::temp_dir("cli-roms");
    assert_usage_error(
        &["--option-rom", "/nonexistent/x.rom"],
        &[],
        &["option ROM", "/nonexistent/x.rom", "No such file"],
    );
    let not_rom = dir.join("not.rom");
    std::fs::write(&not_rom, vec![0x90u8; 512]).unwrap();
    assert_usage_error(
        &["--option-rom", not_rom.to_str().unwrap()],
        &[],
        &["not.rom", "0x55 0xAA"],
    );
    let mut big = vec![0u8; 256 * 1024];
    big[..3].copy_from_slice(&[0x55, 0xAA, 0xff]);
    let big_path = dir.join("big.rom");
    std::fs::write(&big_path, big).unwrap();
    assert_usage_error(
        &["--option-rom", big_path.to_str().unwrap()],
        &[],
        &["big.rom", "262144 bytes", "at most 131072"],
    );
    // Says 4 blocks (2048 bytes) but holds 512.
    let mut short = vec![0u8; 512];
    short[..3].copy_from_slice(&[0x55, 0xAA, 4]);
    let short_path = dir.join("short.rom");
    std::fs::write(&short_path, short).unwrap();
    assert_usage_error(
        &["--option-rom", short_path.to_str().unwrap()],
        &[],
        &["short.rom", "2048", "512"],
    );
    // Two ROMs with one name would be one fw_cfg file.
    let good = vmm::option_rom::wrap_program(&[0xf4], "x").unwrap();
    std::fs::create_dir(dir.join("other")).unwrap();
    for p in ["a.rom", "other/a.rom"] {
        std::fs::write(dir.join(p), &good).unwrap();
    }
    assert_usage_error(
        &[
            "--option-rom",
            dir.join("a.rom").to_str().unwrap(),
            "--option-rom",
            dir.join("other/a.rom").to_str().unwrap(),
        ],
        &[],
        &["other/a.rom", "same file name"],
    );
    assert_usage_error(
        &["--option-rom", dir.to_str().unwrap()],
        &[],
        &["option ROM", "directory"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_vnc_options() {
    assert_usage_error(&["--vnc", "bogus"], &[], &["'bogus'", "ADDR:N"]);
    assert_usage_error(
        &["--vnc", "0.0.0.0:1"],
        &[],
        &["non-loopback", "--vnc-password-file"],
    );
    assert_usage_error(
        &["--vnc-password-file", "/nonexistent/pw"],
        &[],
        &["/nonexistent/pw"],
    );
    // A display whose port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    if let Some(n) = port.checked_sub(5900) {
        assert_usage_error(&["--vnc", &format!("127.0.0.1:{n}")], &[], &["in use"]);
    }
}

#[test]
fn no_kvm_says_how_to_fix() {
    assert_usage_error(
        &[],
        &[("VMDESK_KVM_DEVICE", "/nonexistent/kvm")],
        &["does not exist", "kvm_intel"],
    );
}

#[test]
fn help_and_check_host_exit_cleanly() {
    let (code, _) = common::run_vmm_to_refusal(&["--help"], &[]);
    assert_eq!(code, 0);
    let out = Command::new(common::vmm_bin())
        .arg("--check-host")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("can run:"), "{text}");
    assert!(text.contains("/dev/kvm"), "{text}");
}

#[test]
fn a_disk_in_use_is_refused() {
    // The lock is checked after KVM is opened, like every other input.
    if !common::kvm_or_skip("a_disk_in_use_is_refused") {
        return;
    }
    let dir = common::temp_dir("cli-locked");
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    // Another process's lock, as qemu-img or a second VM would hold it.
    let _held = vmm::disk::ImageLock::acquire(&disk, false).unwrap();
    let disk = disk.to_str().unwrap();
    assert_usage_error(
        &["--disk", disk, "--vnc", "none"],
        &[],
        &[disk, "in use by another process"],
    );
}

#[test]
fn more_disks_than_bus_slots_are_refused() {
    // The count is checked after KVM is opened, with the disks.
    if !common::kvm_or_skip("more_disks_than_bus_slots_are_refused") {
        return;
    }
    let dir = common::temp_dir("cli-many-disks");
    let mut args = Vec::new();
    for i in 0..=vmm::machine::MAX_DISKS {
        let disk = dir.join(format!("d{i}.raw"));
        std::fs::write(&disk, vec![0u8; 4096]).unwrap();
        args.push("--disk".to_string());
        args.push(disk.display().to_string());
    }
    args.extend(["--vnc", "none"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_usage_error(&args, &[], &["27 virtio disks given", "at most 26"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_efi_variable_stores_are_refused() {
    let test = "bad_efi_variable_stores_are_refused";
    // The firmware is chosen after KVM is opened.
    if !common::kvm_or_skip(test) {
        return;
    }
    assert_usage_error(
        &["--efi-vars", "/tmp/v.fd", "--vnc", "none"],
        &[],
        &["--efi-vars goes with --firmware uefi"],
    );
    if !vmm::firmware::uefi::available() {
        eprintln!("SKIP {test}: the ovmf package is not installed");
        return;
    }
    let uefi =
        |vars: &str| ["--firmware", "uefi", "--efi-vars", vars, "--vnc", "none"].map(String::from);
    let dir = common::temp_dir("cli-efi-vars");
    let missing = dir.join("none.fd").display().to_string();
    let args = uefi(&missing);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_usage_error(&args, &[], &[&missing, "does not exist", "OVMF_VARS_4M.fd"]);
    let args = uefi("/etc/hostname");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_usage_error(&args, &[], &["/etc/hostname", "not a UEFI variable store"]);
    // The 2 MiB build's store: a variable store, but not the size this firmware's is.
    let small = "/usr/share/OVMF/OVMF_VARS.fd";
    if std::path::Path::new(small).is_file() {
        let args = uefi(small);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_usage_error(&args, &[], &[small, "is 131072 bytes", "540672"]);
    }
    // A store in use by a running VM (its lock) is refused, as disks are.
    let vars = dir.join("VARS.fd");
    vmm::firmware::uefi::create_vars(&vars).unwrap();
    let _held = vmm::disk::ImageLock::acquire(&vars, true).unwrap();
    let vars = vars.display().to_string();
    let args = uefi(&vars);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_usage_error(&args, &[], &[&vars, "in use by another process"]);
    let _ = std::fs::remove_dir_all(dir);
}
