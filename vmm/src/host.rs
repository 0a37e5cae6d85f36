//! Facts about the host that decide what a VM here can do: which KVM backs /dev/kvm,
//! how much RAM there is, and a report for `vmdesk-vmm --check-host`.

use std::path::Path;

/// The kernel module behind /dev/kvm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmFlavor {
    /// VT-x or AMD-V: every guest runs.
    Hardware(&'static str),
    /// `kvm_pvm`: KVM without hardware virtualisation. Guest ring-3 code runs natively,
    /// but real mode and kernel mode go through KVM's instruction emulator, which cannot
    /// run protected-mode guest kernels (it stops on `iret` and others).
    Pvm,
    Unknown,
}

impl KvmFlavor {
    pub fn detect() -> KvmFlavor {
        Self::detect_in(Path::new("/sys/module"))
    }

    fn detect_in(modules: &Path) -> KvmFlavor {
        if modules.join("kvm_pvm").exists() {
            KvmFlavor::Pvm
        } else if modules.join("kvm_intel").exists() {
            KvmFlavor::Hardware("kvm_intel (Intel VT-x)")
        } else if modules.join("kvm_amd").exists() {
            KvmFlavor::Hardware("kvm_amd (AMD-V)")
        } else {
            KvmFlavor::Unknown
        }
    }

    /// Whether guest kernels (Linux, installers) can run.
    pub fn runs_guest_kernels(self) -> bool {
        !matches!(self, KvmFlavor::Pvm)
    }

    /// The one-line warning printed at start on a KVM that cannot run guest kernels.
    pub fn warning(self) -> Option<&'static str> {
        (self == KvmFlavor::Pvm).then_some(
            "warning: /dev/kvm here is kvm_pvm (no hardware virtualisation): firmware and real-mode boot code run, slowly, but protected-mode guest kernels (Linux, installers) will stop with an emulation failure",
        )
    }
}

/// Total host RAM in bytes, from /proc/meminfo.
pub fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&info)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What `--check-host` prints: one fact per line, then what will run.
pub fn report() -> (String, bool) {
    let mut out = String::new();
    let flavor = KvmFlavor::detect();
    let mut ok = true;
    match crate::kvm::open() {
        Ok(kvm) => {
            out += &format!(
                "/dev/kvm: accessible, API version {}\n",
                kvm.get_api_version()
            );
            match crate::kvm::check_required(&kvm) {
                Ok(()) => {
                    out += "KVM capabilities: irqchip, PIT, user memory, CPUID: all present\n"
                }
                Err(e) => {
                    ok = false;
                    out += &format!("KVM capabilities: {e}\n");
                }
            }
            out += &format!("max vCPUs per VM: {}\n", crate::kvm::max_vcpus(&kvm));
        }
        Err(e) => {
            ok = false;
            out += &format!("/dev/kvm: {e}\n");
        }
    }
    out += &match flavor {
        KvmFlavor::Hardware(m) => format!("KVM module: {m}\n"),
        KvmFlavor::Pvm => "KVM module: kvm_pvm (software-assisted, no VT-x/AMD-V)\n".into(),
        KvmFlavor::Unknown => {
            "KVM module: unknown (no kvm_intel, kvm_amd or kvm_pvm in /sys/module)\n".into()
        }
    };
    if let Some(ram) = total_ram() {
        out += &format!("host RAM: {} MiB\n", ram >> 20);
    }
    let fw = std::path::Path::new(crate::firmware::DEFAULT_FIRMWARE);
    out += &if fw.exists() {
        format!("firmware: {} present\n", fw.display())
    } else {
        ok = false;
        format!(
            "firmware: {} missing (sudo apt-get install seabios)\n",
            fw.display()
        )
    };
    // UEFI is optional: BIOS VMs run without it.
    out += &if crate::firmware::uefi::available() {
        format!(
            "UEFI firmware: {} present\n",
            crate::firmware::uefi::OVMF_CODE
        )
    } else {
        format!(
            "UEFI firmware: {} missing (sudo apt-get install ovmf; BIOS VMs run without it)\n",
            crate::firmware::uefi::OVMF_CODE
        )
    };
    out += "can run: ";
    out += match (ok, flavor.runs_guest_kernels()) {
        (false, _) => "nothing until the problems above are fixed\n",
        (true, true) => "firmware, boot loaders, Linux kernels and installers\n",
        (true, false) => {
            "SeaBIOS and real-mode boot code (slowly, through KVM's emulator); NOT protected-mode guest kernels (Linux, installers)\n"
        }
    };
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_from_module_dirs() {
        let d = std::env::temp_dir().join(format!("vmdesk-mods-{}", std::process::id()));
        std::fs::create_dir_all(d.join("kvm_intel")).unwrap();
        assert!(KvmFlavor::detect_in(&d).runs_guest_kernels());
        std::fs::create_dir_all(d.join("kvm_pvm")).unwrap();
        assert_eq!(KvmFlavor::detect_in(&d), KvmFlavor::Pvm);
        assert!(KvmFlavor::Pvm.warning().unwrap().contains("kvm_pvm"));
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(KvmFlavor::detect_in(&d), KvmFlavor::Unknown);
    }

    #[test]
    fn meminfo_parse() {
        let m = "MemTotal:       24590100 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_mem_total(m), Some(24590100 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
    }
}
