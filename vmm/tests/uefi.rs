//! UEFI end to end: OVMF from the host's `ovmf` package under the real `vmdesk-vmm`, with a
//! variable store of the test's own (`--firmware uefi --efi-vars`). OVMF runs in
//! protected and long mode, so on a kvm_pvm host these run in the nested test host.
//!
//! - An EFI GRUB CD (`grub-efi.iso`, grub-mkrescue) boots through El Torito's EFI image on
//!   the IDE CD-ROM to GRUB's menu on the screen (GOP on our std VGA); a reset from the
//!   control socket brings OVMF back, and Esc (typed as a VNC client types it) opens its
//!   setup.
//! - Linux boots through GRUB and its EFI stub from a GPT disk with an EFI system partition
//!   (`efi-disk.img`), on virtio-blk and on IDE, sees /sys/firmware/efi, SMBIOS and our
//!   ACPI tables (installed by OVMF from the `etc/table-loader` script), and sets an EFI
//!   variable; the variable is there in the next run even though the VMM was killed with
//!   SIGKILL right after the guest's write; in that next run the guest reboots itself
//!   (through the firmware's ResetSystem), finds its variables again after the reboot,
//!   and its own `poweroff -f` (ACPI S5) ends the VMM with status 0.
//! - fw_cfg `bootorder` picks the disk or the CD; GRUB's "Power off" turns the VM off
//!   through the firmware; a CD without an EFI boot image boots nothing and OVMF says why
//!   on the console.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// OVMF's start in the nested host takes 20-40 s; Linux after it a few more.
const TIMEOUT: Duration = Duration::from_secs(240);
/// What the EFI disk's /init prints before each line.
const SAY: &str = "vmdesk-efi: ";

/// Whether the test runs in this process: on a kvm_pvm host it runs in the nested host
/// instead (and this returns false once it passed there); without the ovmf package it
/// skips with one line (a failure under the test command, which installs the package).
fn runs_here(test: &str) -> bool {
    if !common::hardware_kvm_or_nested(test, "OVMF, and what it boots, runs in long mode") {
        return false;
    }
    if vmm::firmware::uefi::available() {
        return true;
    }
    let why =
        "the ovmf package is not installed (resources/scripts/install-deps.sh test installs it)";
    assert_ne!(
        std::env::var("VMDESK_REQUIRE_TOOLS").as_deref(),
        Ok("1"),
        "{test}: {why}"
    );
    eprintln!("SKIP {test}: {why}");
    false
}

/// A VM under test: killed when the test ends however it ends.
struct Vm {
    child: Child,
    serial: PathBuf,
    control: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    /// `vmdesk-vmm --firmware uefi --efi-vars VARS` with `args`, COM1 and the control
    /// socket in `dir` under `name`.
    fn start(dir: &Path, name: &str, vars: &Path, args: &[&str]) -> Vm {
        let serial = dir.join(format!("{name}.serial"));
        let control = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&control);
        let child = Command::new(common::vmm_bin())
            .args(["--firmware", "uefi", "--efi-vars"])
            .arg(vars)
            .args(if args.contains(&"--memory") {
                &[][..]
            } else {
                &["--memory", "512M"][..]
            })
            .args(["--vnc", "127.0.0.1:auto"])
            .arg("--serial")
            .arg(format!("file:{}", serial.display()))
            .arg("--control")
            .arg(&control)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmdesk-vmm");
        Vm {
            child,
            serial,
            control,
        }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits until COM1 shows `needle`; fails with the console when it does not in time.
    fn wait_console(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.console().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the VMM ended ({status}) before {needle:?}; COM1:\n{}",
                    self.console()
                );
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "no {needle:?} on COM1 in {TIMEOUT:?}; COM1:\n{}\nvCPUs:\n{}",
                self.console(),
                common::vcpu_states(&self.control)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn control(&self) -> common::ControlClient {
        common::ControlClient::connect(&self.control)
    }

    /// The screen's text as tesseract reads it, through the control socket's screendump.
    fn screen_text(&self, tesseract: &Path, dir: &Path) -> String {
        let png = dir.join("screen.png");
        let _ = std::fs::remove_file(&png);
        let reply = self.control().call(&format!(
            r#"{{"execute":"screendump","path":"{}"}}"#,
            png.display()
        ));
        assert!(reply.get("return").is_some(), "screendump: {reply}");
        let (w, h, px) = common::png_pixels(&png);
        common::installer::read_text(tesseract, &px, w, (0, 0, w, h), &dir.join("ocr.png"))
    }

    /// Waits until the screen shows `needle` (as OCR reads it); returns how long it took.
    fn wait_screen(&mut self, tesseract: &Path, dir: &Path, needle: &str) -> Duration {
        let start = Instant::now();
        loop {
            let text = self.screen_text(tesseract, dir);
            if text.contains(needle) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the screen never showed {needle:?}; it reads {text:?}; COM1:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits for the VMM to exit by itself (the guest powered off); its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        common::wait_exit(&mut self.child, TIMEOUT)
            .unwrap_or_else(|| panic!("the VMM did not exit; COM1:\n{}", self.console()))
    }
}

/// A fresh copy of OVMF's variable store template.
fn fresh_vars(dir: &Path, name: &str) -> PathBuf {
    let vars = dir.join(name);
    let _ = std::fs::remove_file(&vars);
    vmm::firmware::uefi::create_vars(&vars).expect("copy OVMF's variable store");
    vars
}

#[test]
fn ovmf_boots_an_efi_cd_to_grub_and_opens_its_setup_on_esc() {
    let test = "ovmf_boots_an_efi_cd_to_grub_and_opens_its_setup_on_esc";
    if !runs_here(test) {
        return;
    }
    let (Some(iso), Some(tesseract)) = (
        common::asset_or_skip(test, "grub-efi.iso"),
        common::tool_or_skip(test, "tesseract"),
    ) else {
        return;
    };
    let dir = common::temp_dir("uefi-grub");
    let vars = fresh_vars(&dir, "VARS.fd");
    let mut vm = Vm::start(&dir, "grub", &vars, &["--cdrom", iso.to_str().unwrap()]);
    // OCR reads the "v" of "vmdesk" as "u" now and then.
    let took = vm.wait_screen(&tesseract, &dir, "UEFI GRUB test");
    eprintln!("{test}: GRUB's menu after {took:?}");
    // OVMF's boot manager said which device it started, on COM1 as well.
    assert!(vm.console().contains("DVD-ROM"), "{}", vm.console());

    // A reset from outside: OVMF starts over, and Esc during its start opens the setup.
    // Esc goes in every 300 ms from a thread of its own: OVMF looks for it only in the
    // second or so between its keyboard coming up and its boot, and reading the screen
    // takes longer than that here.
    let reply = vm.control().call(r#"{"execute":"reset"}"#);
    assert!(reply.get("return").is_some(), "reset: {reply}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let presser = {
        let (stop, mut control) = (stop.clone(), vm.control());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                control.call(r#"{"execute":"send-key","keys":["Escape"],"hold-time":50}"#);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let start = Instant::now();
    let text = loop {
        let text = vm.screen_text(&tesseract, &dir);
        if text.contains("Device Manager") && text.contains("Boot Manager") {
            break text;
        }
        if start.elapsed() > TIMEOUT {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    presser.join().unwrap();
    assert!(
        text.contains("Device Manager") && text.contains("Boot Manager"),
        "Esc never opened OVMF's setup; the screen reads {text:?}; COM1:\n{}",
        vm.console()
    );
}

#[test]
fn linux_boots_through_efi_and_keeps_its_variable_across_a_sigkill() {
    let test = "linux_boots_through_efi_and_keeps_its_variable_across_a_sigkill";
    if !runs_here(test) {
        return;
    }
    let Some(disk) = common::asset_or_skip(test, "efi-disk.img") else {
        return;
    };
    let dir = common::temp_dir("uefi-linux");
    let image = dir.join("efi-disk.img");
    std::fs::copy(&disk, &image).unwrap();
    let vars = fresh_vars(&dir, "VARS.fd");
    let image_arg = format!("{},format=raw", image.display());

    // First run, virtio-blk: no variable yet; the guest sets it. The VMM is killed once
    // the guest has said its write is done (and the interrupts it used), before it powers
    // off: what the guest wrote is in the store without any orderly end.
    let mut vm = Vm::start(&dir, "first", &vars, &["--disk", &image_arg]);
    vm.wait_console(&format!("{SAY}SMBIOS:"));
    let _ = vm.child.kill();
    let _ = vm.child.wait();
    let said = common::guest_said(&vm.serial, SAY);
    assert!(said.iter().any(|l| l == "EFI: yes"), "{said:?}");
    assert!(said.iter().any(|l| l == "VAR: none"), "{said:?}");
    assert!(said.iter().any(|l| l == "VAR-SET: done"), "{said:?}");
    assert!(said.iter().any(|l| l == "SMBIOS: yes"), "{said:?}");
    assert_acpi_tables(&said);
    // Linux's virtio_blk bound with MSI-X: per-queue vectors.
    assert!(
        said.iter()
            .any(|l| l.contains("PCI-MSI") && l.contains("virtio0-req.0")),
        "{said:?}"
    );
    drop(vm);

    // Second run, the same disk on IDE: the variable is there; the guest sets a second
    // one and reboots itself (Linux under UEFI resets through the firmware's
    // ResetSystem); OVMF, GRUB and Linux come up again in the same VMM and find both;
    // then the guest's own `poweroff -f` goes through the FADT's PM1a control block
    // (ACPI S5, as the DSDT's \_S5 says) and ends the VMM with status 0.
    let ide = format!("{image_arg},if=ide");
    let mut vm = Vm::start(&dir, "second", &vars, &["--disk", &ide]);
    vm.wait_console(&format!("{SAY}done"));
    let status = vm.wait_exit();
    assert!(status.success(), "{status}; COM1:\n{}", vm.console());
    let said = common::guest_said(&vm.serial, SAY);
    let reboot = said
        .iter()
        .position(|l| l == "REBOOT: now")
        .unwrap_or_else(|| panic!("the guest did not reboot: {said:?}"));
    for boot in [&said[..reboot], &said[reboot..]] {
        assert!(boot.iter().any(|l| l == "EFI: yes"), "{said:?}");
        assert!(boot.iter().any(|l| l == "VAR: vmdesk-42"), "{said:?}");
        assert!(boot.iter().any(|l| l == "SMBIOS: yes"), "{said:?}");
        assert_acpi_tables(boot);
    }
    assert_eq!(said.last().map(String::as_str), Some("done"), "{said:?}");
    assert_eq!(
        said.iter().filter(|l| *l == "REBOOT: now").count(),
        1,
        "the second boot found the variable it set before the reboot: {said:?}"
    );
}

/// The guest's "ACPI:" line names our tables: OVMF ran the `etc/table-loader` script and
/// installed what it points at (it adds its own BGRT, and builds its own RSDT/XSDT).
fn assert_acpi_tables(said: &[String]) {
    let line = said
        .iter()
        .find_map(|l| l.strip_prefix("ACPI:"))
        .unwrap_or_else(|| panic!("no ACPI line: {said:?}"));
    let tables: Vec<&str> = line.split_whitespace().collect();
    for want in ["APIC", "DSDT", "FACP", "FACS"] {
        assert!(
            tables.contains(&want),
            "{want} missing from the guest's ACPI tables {tables:?}"
        );
    }
}

#[test]
fn bootorder_picks_the_disk_or_the_cd_and_a_bios_only_cd_is_refused() {
    let test = "bootorder_picks_the_disk_or_the_cd_and_a_bios_only_cd_is_refused";
    if !runs_here(test) {
        return;
    }
    let (Some(disk), Some(iso)) = (
        common::asset_or_skip(test, "efi-disk.img"),
        common::asset_or_skip(test, "grub-efi.iso"),
    ) else {
        return;
    };
    let dir = common::temp_dir("uefi-order");
    let image = dir.join("efi-disk.img");
    std::fs::copy(&disk, &image).unwrap();
    let disk_arg = format!("{},format=raw", image.display());
    let both = ["--disk", &disk_arg, "--cdrom", iso.to_str().unwrap()];

    // The disk first: Linux comes up.
    let vars = fresh_vars(&dir, "VARS.fd");
    let mut args = both.to_vec();
    args.extend(["--boot", "disk,cdrom"]);
    let mut vm = Vm::start(&dir, "disk-first", &vars, &args);
    vm.wait_console(&format!("{SAY}EFI: yes"));
    drop(vm);

    // The CD first, with the same store (which now has boot entries for both): GRUB.
    let mut args = both.to_vec();
    args.extend(["--boot", "cdrom,disk"]);
    let mut vm = Vm::start(&dir, "cd-first", &vars, &args);
    vm.wait_console("Power off");
    let console = vm.console();
    let loading: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("BdsDxe: loading"))
        .collect();
    assert!(
        loading.first().is_some_and(|l| l.contains("DVD-ROM")),
        "OVMF did not start with the CD: {loading:?}"
    );
    // GRUB's "Power off" asks the firmware to turn the machine off (EFI ResetSystem), which
    // OVMF does through the PIIX4 PM block where it placed it: the VMM ends with 0.
    let reply = vm
        .control()
        .call(r#"{"execute":"send-key","keys":["Down","Return"]}"#);
    assert!(reply.get("return").is_some(), "send-key: {reply}");
    let status = vm.wait_exit();
    assert!(status.success(), "{status}; COM1:\n{}", vm.console());
    drop(vm);

    // A CD that only BIOS can boot (isolinux, no EFI image) and nothing else: OVMF says
    // on the console that it could not load it.
    let Some((kernel, initrd)) = common::linux_assets(test, "initrd.img") else {
        return;
    };
    let Some(bios_cd) = common::isolinux_cd(test, &dir, "bios-only", &kernel, &initrd, "") else {
        return;
    };
    let vars = fresh_vars(&dir, "VARS2.fd");
    let mut vm = Vm::start(
        &dir,
        "bios-cd",
        &vars,
        &["--cdrom", bios_cd.to_str().unwrap()],
    );
    vm.wait_console("failed to load");
    let console = vm.console();
    assert!(
        console
            .lines()
            .any(|l| l.contains("failed to load") && l.contains("DVD-ROM")),
        "{console}"
    );
}

#[test]
fn the_installer_cd_boots_through_uefi_to_its_first_screen() {
    let test = "the_installer_cd_boots_through_uefi_to_its_first_screen";
    if !runs_here(test) {
        return;
    }
    let (Some(iso), Some(tesseract)) = (
        common::asset_or_skip(test, common::installer::ISO),
        common::tool_or_skip(test, "tesseract"),
    ) else {
        return;
    };
    let dir = common::temp_dir("uefi-installer");
    let vars = fresh_vars(&dir, "VARS.fd");
    let mut vm = Vm::start(
        &dir,
        "installer",
        &vars,
        &["--memory", "1G", "--cdrom", iso.to_str().unwrap()],
    );
    // The CD's EFI image: GRUB with the installer's entry (drawn on COM1 as well).
    vm.wait_console("installer menu (UEFI mode)");
    let start = Instant::now();
    let reply = vm
        .control()
        .call(r#"{"execute":"send-key","keys":["Return"]}"#);
    assert!(reply.get("return").is_some(), "send-key: {reply}");
    // Its kernel and initrd from the CD, then the gtk frontend's first screen, at OVMF's
    // 1280x800.
    let took = vm.wait_screen(&tesseract, &dir, common::installer::LANGUAGE.title);
    eprintln!(
        "{test}: the installer's language screen {:?} after Return",
        start.elapsed().max(took)
    );
}
