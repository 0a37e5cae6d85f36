//! The host check: can this machine run VMs, and if not, the exact fix. One implementation
//! for `vmdesk doctor` (which prints it) and the window's Host page (which draws it).
//!
//! What is checked: the CPU's virtualisation flags (vmx/svm), /dev/kvm (present, ours to
//! open, with the capabilities the VMM needs), which KVM module backs it and so what
//! guests can run, host RAM, the SeaBIOS firmware package, OVMF (UEFI firmware: only UEFI
//! VMs need it, so its absence is a warning), and the `vmdesk-vmm` binary.
//! Not checked: nested-virtualisation settings of an outer hypervisor, or whether a given
//! guest OS will boot (only trying it tells).

use vmm::host::KvmFlavor;
use vmm::kvm::KvmError;

/// How one fact bears on running VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Good,
    /// VMs run, but with a limit worth knowing.
    Warn,
    /// No VM runs until this is fixed.
    Fail,
}

/// One line of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub what: &'static str,
    pub status: Status,
    pub detail: String,
    /// The exact command or step that fixes it.
    pub fix: Option<String>,
}

/// Everything the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCheck {
    pub items: Vec<Item>,
    /// What this host can run, in one honest sentence.
    pub can_run: String,
}

/// The fix for a /dev/kvm the user may not open.
pub const KVM_GROUP_FIX: &str =
    "sudo usermod -aG kvm $USER, then log out and log in again (group changes apply to new logins)";

impl HostCheck {
    /// No item failed: VMs can start here.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.status != Status::Fail)
    }

    /// Something is wrong or limited: the window shows the page by itself then.
    pub fn needs_attention(&self) -> bool {
        !self.ok()
    }

    /// Looks at this host.
    pub fn detect() -> HostCheck {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kvm = vmm::kvm::open();
        let flavor = KvmFlavor::detect();
        let firmware = std::path::Path::new(vmm::firmware::DEFAULT_FIRMWARE);
        let vmm_bin = crate::runtime::find_vmm().map_err(|e| e.to_string());
        HostCheck::from_facts(Facts {
            cpu_flags: cpu_flags(&cpuinfo),
            kvm: kvm.as_ref().ok().map(|k| KvmFacts {
                api: k.get_api_version(),
                caps: vmm::kvm::check_required(k).map_err(|e| e.to_string()),
                max_vcpus: vmm::kvm::max_vcpus(k),
            }),
            kvm_error: kvm.as_ref().err().map(classify),
            flavor,
            ram_mib: vmm::host::total_ram().map(|r| r >> 20),
            firmware: firmware
                .exists()
                .then(|| firmware.display().to_string())
                .ok_or_else(|| firmware.display().to_string()),
            uefi: vmm::firmware::uefi::require()
                .map(|()| vmm::firmware::uefi::OVMF_CODE.to_string())
                .map_err(|_| vmm::firmware::uefi::OVMF_CODE.to_string()),
            vmm: vmm_bin.map(|p| p.display().to_string()),
        })
    }

    /// The check from facts gathered elsewhere (tests play any host through this).
    pub fn from_facts(f: Facts) -> HostCheck {
        let mut items = Vec::new();
        let cpu = if f.cpu_flags.iter().any(|x| x == "vmx") {
            Some("vmx (Intel VT-x)")
        } else if f.cpu_flags.iter().any(|x| x == "svm") {
            Some("svm (AMD-V)")
        } else {
            None
        };
        items.push(match cpu {
            Some(c) => Item {
                what: "CPU virtualisation",
                status: Status::Good,
                detail: c.into(),
                fix: None,
            },
            None => Item {
                what: "CPU virtualisation",
                // kvm_pvm runs without the flags; elsewhere their absence is the cause.
                status: if f.flavor == KvmFlavor::Pvm {
                    Status::Warn
                } else {
                    Status::Fail
                },
                detail: "no vmx or svm flag in /proc/cpuinfo".into(),
                fix: Some(
                    "enable VT-x / AMD-V (\"virtualization technology\", SVM) in the firmware setup; inside a VM, turn on nested virtualisation in the outer hypervisor"
                        .into(),
                ),
            },
        });
        match (&f.kvm, &f.kvm_error) {
            (Some(k), _) => {
                items.push(Item {
                    what: "/dev/kvm",
                    status: Status::Good,
                    detail: format!("present and usable (API version {})", k.api),
                    fix: None,
                });
                items.push(match &k.caps {
                    Ok(()) => Item {
                        what: "KVM capabilities",
                        status: Status::Good,
                        detail: format!(
                            "irqchip, PIT, user memory, CPUID: all present; up to {} vCPUs per VM",
                            k.max_vcpus
                        ),
                        fix: None,
                    },
                    Err(e) => Item {
                        what: "KVM capabilities",
                        status: Status::Fail,
                        detail: e.clone(),
                        fix: Some("a newer host kernel".into()),
                    },
                });
            }
            (None, err) => {
                let (detail, fix) = match err {
                    Some(KvmProblem::NoAccess) => (
                        "present, but you may not open it".to_string(),
                        KVM_GROUP_FIX.to_string(),
                    ),
                    Some(KvmProblem::Missing) | None => (
                        "missing: this host has no KVM".to_string(),
                        "sudo modprobe kvm_intel (or kvm_amd), after enabling virtualisation in the firmware setup".to_string(),
                    ),
                    Some(KvmProblem::Other(e)) => (e.clone(), KVM_GROUP_FIX.to_string()),
                };
                items.push(Item {
                    what: "/dev/kvm",
                    status: Status::Fail,
                    detail,
                    fix: Some(fix),
                });
            }
        }
        items.push(match f.flavor {
            KvmFlavor::Hardware(m) => Item {
                what: "KVM module",
                status: Status::Good,
                detail: m.into(),
                fix: None,
            },
            KvmFlavor::Pvm => Item {
                what: "KVM module",
                status: Status::Warn,
                detail: "kvm_pvm: KVM without hardware virtualisation. Firmware and real-mode boot code run (slowly, through KVM's instruction emulator), but protected-mode guest kernels (Linux, installers) stop with an emulation failure".into(),
                fix: Some("run vmdesk on a host with VT-x or AMD-V (kvm_intel or kvm_amd) to install and run operating systems".into()),
            },
            KvmFlavor::Unknown => Item {
                what: "KVM module",
                status: if f.kvm.is_some() { Status::Warn } else { Status::Fail },
                detail: "none of kvm_intel, kvm_amd or kvm_pvm is loaded".into(),
                fix: Some("sudo modprobe kvm_intel (or kvm_amd)".into()),
            },
        });
        if let Some(ram) = f.ram_mib {
            items.push(Item {
                what: "host RAM",
                status: Status::Good,
                detail: format!("{ram} MiB"),
                fix: None,
            });
        }
        items.push(match &f.firmware {
            Ok(p) => Item {
                what: "firmware",
                status: Status::Good,
                detail: format!("SeaBIOS at {p}"),
                fix: None,
            },
            Err(p) => Item {
                what: "firmware",
                status: Status::Fail,
                detail: format!("SeaBIOS is missing ({p})"),
                fix: Some("sudo apt-get install seabios".into()),
            },
        });
        items.push(match &f.uefi {
            Ok(p) => Item {
                what: "UEFI firmware",
                status: Status::Good,
                detail: format!("{p} present"),
                fix: None,
            },
            // BIOS VMs run without it: new VMs get BIOS, and UEFI ones do not start.
            Err(p) => Item {
                what: "UEFI firmware",
                status: Status::Warn,
                detail: format!("missing ({p}): new VMs get BIOS firmware, UEFI VMs do not start"),
                fix: Some("sudo apt-get install ovmf".into()),
            },
        });
        items.push(match &f.vmm {
            Ok(p) => Item {
                what: "vmdesk-vmm",
                status: Status::Good,
                detail: p.clone(),
                fix: None,
            },
            Err(e) => Item {
                what: "vmdesk-vmm",
                status: Status::Fail,
                detail: e.clone(),
                fix: Some("install vmdesk-vmm beside vmdesk (cargo build -p vmm)".into()),
            },
        });
        let ok = items.iter().all(|i| i.status != Status::Fail);
        let can_run = match (ok, f.flavor) {
            (false, _) => "Nothing yet: fix the problems marked above.".to_string(),
            (true, KvmFlavor::Pvm) => "This host's KVM (kvm_pvm) runs SeaBIOS and real-mode boot code, slowly, but NOT protected-mode guest kernels: Linux and OS installers will stop with an emulation failure.".to_string(),
            (true, _) => "Firmware, boot loaders, Linux kernels and OS installers.".to_string(),
        };
        HostCheck { items, can_run }
    }

    /// The check as `vmdesk doctor` prints it: one fact a line, each fix below its fact.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            let mark = match i.status {
                Status::Good => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            out += &format!("[{mark}] {}: {}\n", i.what, i.detail);
            if let Some(fix) = &i.fix
                && i.status != Status::Good
            {
                out += &format!("       fix: {fix}\n");
            }
        }
        out += &format!("can run: {}\n", self.can_run);
        out
    }
}

impl Item {
    /// The shell command in the fix, to copy and paste: the fix up to its first comma or
    /// parenthesis, when it starts with `sudo`.
    pub fn command(&self) -> Option<&str> {
        let fix = self.fix.as_deref()?;
        if !fix.starts_with("sudo ") {
            return None;
        }
        let end = fix.find([',', '(']).unwrap_or(fix.len());
        Some(fix[..end].trim_end())
    }
}

/// What [`HostCheck::from_facts`] works from.
#[derive(Clone, Debug)]
pub struct Facts {
    pub cpu_flags: Vec<String>,
    pub kvm: Option<KvmFacts>,
    pub kvm_error: Option<KvmProblem>,
    pub flavor: KvmFlavor,
    pub ram_mib: Option<u64>,
    /// The firmware's path: Ok when present, Err when missing.
    pub firmware: Result<String, String>,
    /// OVMF's code (with its variables template): Ok when both are there.
    pub uefi: Result<String, String>,
    pub vmm: Result<String, String>,
}

#[derive(Clone, Debug)]
pub struct KvmFacts {
    pub api: i32,
    pub caps: Result<(), String>,
    pub max_vcpus: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmProblem {
    Missing,
    NoAccess,
    Other(String),
}

fn classify(e: &KvmError) -> KvmProblem {
    match e {
        KvmError::Missing => KvmProblem::Missing,
        KvmError::NoAccess => KvmProblem::NoAccess,
        e => KvmProblem::Other(e.to_string()),
    }
}

fn cpu_flags(cpuinfo: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A host as the check sees it; tests change what they need.
    pub(crate) fn facts() -> Facts {
        Facts {
            cpu_flags: vec!["fpu".into(), "vmx".into()],
            kvm: Some(KvmFacts {
                api: 12,
                caps: Ok(()),
                max_vcpus: 240,
            }),
            kvm_error: None,
            flavor: KvmFlavor::Hardware("kvm_intel (Intel VT-x)"),
            ram_mib: Some(8192),
            firmware: Ok("/usr/share/seabios/bios-256k.bin".into()),
            uefi: Ok("/usr/share/OVMF/OVMF_CODE_4M.fd".into()),
            vmm: Ok("/usr/bin/vmdesk-vmm".into()),
        }
    }

    #[test]
    fn a_good_host_runs_everything() {
        let c = HostCheck::from_facts(facts());
        assert!(c.ok() && !c.needs_attention(), "{c:?}");
        assert!(c.can_run.contains("installers"));
        let text = c.to_text();
        assert!(
            text.contains("[ok  ] CPU virtualisation: vmx (Intel VT-x)"),
            "{text}"
        );
        assert!(!text.contains("fix:"), "{text}");
        assert!(
            text.contains("[ok  ] UEFI firmware: /usr/share/OVMF/OVMF_CODE_4M.fd present"),
            "{text}"
        );
    }

    #[test]
    fn missing_ovmf_is_a_warning_with_the_package_to_install() {
        let mut f = facts();
        f.uefi = Err("/usr/share/OVMF/OVMF_CODE_4M.fd".into());
        let c = HostCheck::from_facts(f);
        assert!(c.ok(), "BIOS VMs still run: {c:?}");
        let item = c.items.iter().find(|i| i.what == "UEFI firmware").unwrap();
        assert_eq!(item.status, Status::Warn);
        assert_eq!(item.command(), Some("sudo apt-get install ovmf"));
        let text = c.to_text();
        assert!(
            text.contains("[warn] UEFI firmware: missing (/usr/share/OVMF/OVMF_CODE_4M.fd)"),
            "{text}"
        );
        assert!(text.contains("fix: sudo apt-get install ovmf"), "{text}");
    }

    #[test]
    fn no_kvm_access_gives_the_group_fix() {
        let mut f = facts();
        f.kvm = None;
        f.kvm_error = Some(KvmProblem::NoAccess);
        let c = HostCheck::from_facts(f);
        assert!(!c.ok());
        let kvm = c.items.iter().find(|i| i.what == "/dev/kvm").unwrap();
        assert_eq!(kvm.status, Status::Fail);
        assert!(
            kvm.fix
                .as_deref()
                .unwrap()
                .starts_with("sudo usermod -aG kvm $USER")
        );
        assert!(c.to_text().contains("log out and log in again"));
        assert!(c.can_run.starts_with("Nothing"));
    }

    #[test]
    fn pvm_is_said_honestly_and_missing_firmware_names_the_package() {
        let mut f = facts();
        f.cpu_flags = vec!["fpu".into()];
        f.flavor = KvmFlavor::Pvm;
        let c = HostCheck::from_facts(f.clone());
        assert!(c.ok(), "kvm_pvm runs firmware: {c:?}");
        assert!(
            c.can_run.contains("NOT protected-mode guest kernels"),
            "{}",
            c.can_run
        );
        let cpu = &c.items[0];
        assert_eq!(cpu.status, Status::Warn);
        f.firmware = Err("/usr/share/seabios/bios-256k.bin".into());
        let c = HostCheck::from_facts(f);
        assert!(!c.ok());
        assert!(c.to_text().contains("fix: sudo apt-get install seabios"));
        // No flags and no pvm: the CPU is the cause.
        let mut f = facts();
        f.cpu_flags.clear();
        f.flavor = KvmFlavor::Unknown;
        f.kvm = None;
        f.kvm_error = Some(KvmProblem::Missing);
        let c = HostCheck::from_facts(f);
        assert_eq!(c.items[0].status, Status::Fail);
        assert!(c.to_text().contains("sudo modprobe kvm_intel"));
        let kvm = c.items.iter().find(|i| i.what == "/dev/kvm").unwrap();
        assert_eq!(kvm.command(), Some("sudo modprobe kvm_intel"));
        assert_eq!(c.items[0].command(), None);
    }

    #[test]
    fn cpu_flags_come_from_the_flags_line() {
        let info = "processor\t: 0\nflags\t\t: fpu vme svm sse\nbugs\t: x\n";
        assert_eq!(cpu_flags(info), ["fpu", "vme", "svm", "sse"]);
        assert!(cpu_flags("").is_empty());
    }
}
