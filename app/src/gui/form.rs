//! The VM form, shared by the create dialog and the edit dialog: every field checked as it
//! is typed, with the same rules `vmdesk create` applies, and the reason shown beside it.
//!
//! - Create hands the form to [`crate::service::VmService::create`] on a worker thread (a new disk may take a
//!   moment to make), showing a spinner until it answers; a failure is shown beside the
//!   field it concerns.
//! - Edit (a stopped VM only) changes memory, vCPUs, the firmware, ISO,
//!   kernel/initrd/cmdline, VNC, the password file and the network (mode, MAC address, port
//!   forwards), and may rename the VM; disks are not changed here (reinstall
//!   replaces them, delete removes them). It saves through [`crate::service::VmService::save_edit`],
//!   which refuses if the VM started meanwhile or its file changed since the dialog opened.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};

use eframe::egui;
use egui::Color32;

use super::VmdeskApp;
use super::files::Target;
use crate::library::{self, Firmware, Forward, HostFacts, MacAddr, NetMode, Protocol, VmDef};
use crate::nvram;
use crate::osinfo;
use crate::service::{DiskOpt, NewVm, parse_disk_opt};

const MIB: u64 = 1 << 20;

/// A path field a file dialog can fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathField {
    Cdrom,
    ExistingDisk,
    Kernel,
    Initrd,
    PasswordFile,
}

impl PathField {
    pub fn title(self) -> &'static str {
        match self {
            PathField::Cdrom => "Choose an installer ISO",
            PathField::ExistingDisk => "Choose an existing disk image",
            PathField::Kernel => "Choose a kernel",
            PathField::Initrd => "Choose an initrd",
            PathField::PasswordFile => "Choose the VNC password file",
        }
    }

    /// The dialog's file filter: a name and extensions (none: every file).
    pub fn filter(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            PathField::Cdrom => Some(("ISO images", &["iso", "ISO"])),
            PathField::ExistingDisk => Some(("Disk images", &["qcow2", "img", "raw"])),
            _ => None,
        }
    }
}

/// The network choice, as the form's radio buttons offer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetChoice {
    /// User-mode NAT through passt (`user`).
    Nat,
    /// An existing TAP device, named in [`VmForm::tap_name`].
    Tap,
    None,
}

/// One row of the port forwards table, as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRow {
    pub protocol: Protocol,
    /// Empty: 127.0.0.1 (only this machine may connect).
    pub host_addr: String,
    pub host_port: String,
    pub guest_port: String,
}

impl Default for ForwardRow {
    fn default() -> Self {
        ForwardRow {
            protocol: Protocol::Tcp,
            host_addr: String::new(),
            host_port: String::new(),
            guest_port: String::new(),
        }
    }
}

impl ForwardRow {
    fn of(f: &Forward) -> ForwardRow {
        ForwardRow {
            protocol: f.protocol,
            host_addr: f.host_addr.to_string(),
            host_port: f.host_port.to_string(),
            guest_port: f.guest_port.to_string(),
        }
    }

    /// Parsed by the same rules as `--forward` (it is written out in that form); the error
    /// is the part that says what is wrong, without the form's syntax.
    pub fn parse(&self) -> Result<Forward, String> {
        let spec = format!(
            "{}:{}:{}-:{}",
            self.protocol,
            self.host_addr.trim(),
            self.host_port.trim(),
            self.guest_port.trim()
        );
        spec.parse().map_err(|e| match e {
            vmm::net::SpecError::Forward { why, .. } => why.to_string(),
            e => e.to_string(),
        })
    }
}

/// What the user typed.
#[derive(Clone, Debug)]
pub struct VmForm {
    /// The definition being edited; `None` for a new VM.
    pub editing: Option<VmDef>,
    pub name: String,
    pub memory: String,
    pub cpus: String,
    pub firmware: Firmware,
    /// The person picked the firmware (or is editing a VM): OS detection leaves it alone.
    pub firmware_chosen: bool,
    /// This host has UEFI firmware (the ovmf package): UEFI may be chosen.
    pub ovmf: bool,
    /// A new disk's size; empty for none (create only).
    pub disk_size: String,
    pub disk_qcow2: bool,
    /// Reserve the new (raw) disk's space now.
    pub disk_preallocate: bool,
    /// An existing image to attach; empty for none (create only).
    pub existing_disk: String,
    pub cdrom: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub vnc: String,
    pub password_file: String,
    pub network: NetChoice,
    pub tap_name: String,
    /// Empty for a new VM: it gets a new address.
    pub mac: String,
    pub forwards: Vec<ForwardRow>,
    /// What OS detection found on the ISO named in `cdrom` (create only), and for which
    /// path.
    pub detected: Option<(String, osinfo::Detection)>,
    /// The name detection put in `name` (replaced by the next detection unless edited).
    pub auto_name: Option<String>,
}

impl Default for VmForm {
    fn default() -> Self {
        VmForm {
            editing: None,
            name: String::new(),
            memory: "1G".into(),
            cpus: "1".into(),
            firmware: Firmware::Bios,
            firmware_chosen: false,
            ovmf: vmm::firmware::uefi::available(),
            disk_size: "10G".into(),
            disk_qcow2: true,
            disk_preallocate: false,
            existing_disk: String::new(),
            cdrom: String::new(),
            kernel: String::new(),
            initrd: String::new(),
            cmdline: String::new(),
            vnc: "127.0.0.1:auto".into(),
            password_file: String::new(),
            network: NetChoice::Nat,
            tap_name: String::new(),
            mac: String::new(),
            forwards: Vec::new(),
            detected: None,
            auto_name: None,
        }
    }
}

/// The reason beside each field (None: the field is fine), and warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormCheck {
    pub name: Option<String>,
    pub memory: Option<String>,
    pub cpus: Option<String>,
    pub cpus_warning: Option<String>,
    /// UEFI chosen where there is none to make a store from.
    pub firmware: Option<String>,
    /// BIOS for an OS that needs UEFI.
    pub firmware_warning: Option<String>,
    pub disk: Option<String>,
    pub existing_disk: Option<String>,
    pub cdrom: Option<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub vnc: Option<String>,
    pub password_file: Option<String>,
    /// The mode (a missing or bad TAP device name).
    pub network: Option<String>,
    pub mac: Option<String>,
    /// The forwards table as a whole: forwards with a mode other than NAT.
    pub forwards_mode: Option<String>,
    /// One per row of the forwards table.
    pub forwards: Vec<Option<String>>,
}

impl FormCheck {
    pub fn ok(&self) -> bool {
        self.forwards.iter().all(|f| f.is_none())
            && [
                &self.name,
                &self.memory,
                &self.cpus,
                &self.firmware,
                &self.disk,
                &self.existing_disk,
                &self.cdrom,
                &self.kernel,
                &self.initrd,
                &self.cmdline,
                &self.vnc,
                &self.password_file,
                &self.network,
                &self.mac,
                &self.forwards_mode,
            ]
            .iter()
            .all(|f| f.is_none())
    }
}

fn opt_path(s: &str) -> Option<PathBuf> {
    Some(s.trim()).filter(|s| !s.is_empty()).map(PathBuf::from)
}

fn file_problem(s: &str) -> Option<String> {
    let p = opt_path(s)?;
    if p.is_file() {
        None
    } else if p.exists() {
        Some("not a regular file".into())
    } else {
        Some("no such file".into())
    }
}

/// A path as the definition keeps it: absolute, so the VMM finds it from any directory.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

impl VmForm {
    /// Follows the ISO field of a new VM: when it names another ISO file, detects the OS on
    /// it (`detect`) and fills the name, memory, vCPUs, disk size and firmware with what
    /// that OS recommends (the firmware by `vmdesk create`'s rule,
    /// [`nvram::default_firmware`]). A field changes only while it holds what the form or
    /// the previous detection put there: a figure the person typed stays.
    pub fn follow_iso(
        &mut self,
        taken: &dyn Fn(&str) -> bool,
        detect: &dyn Fn(&std::path::Path) -> osinfo::Detection,
    ) {
        let iso = self.cdrom.trim().to_string();
        if self.editing.is_some() {
            return;
        }
        let is_iso = !iso.is_empty() && std::path::Path::new(&iso).is_file();
        if !self.firmware_chosen {
            let need = match &self.detected {
                Some((p, found)) if is_iso && *p == iso => found.proposal().map(|p| p.firmware),
                _ => None,
            };
            self.firmware = nvram::default_firmware(self.ovmf, need);
        }
        if !is_iso || self.detected.as_ref().is_some_and(|(p, _)| *p == iso) {
            return;
        }
        let found = detect(std::path::Path::new(&iso));
        if let Some(p) = found.proposal() {
            let d = VmForm::default();
            let before = self.detected.as_ref().and_then(|(_, f)| f.proposal());
            let (old_memory, old_disk) = before
                .map(|b| (memory_text(b.memory_mib), size_text(b.disk_bytes)))
                .unwrap_or_default();
            let untouched = |now: &str, default: &str, old: &str| now == default || now == old;
            if self.name.trim().is_empty() || self.auto_name.as_ref() == Some(&self.name) {
                self.name = p.free_name(taken);
                self.auto_name = Some(self.name.clone());
            }
            if untouched(&self.memory, &d.memory, &old_memory) {
                self.memory = memory_text(p.memory_mib);
            }
            let old_cpus = before.map(|b| b.cpus.to_string()).unwrap_or_default();
            if untouched(&self.cpus, &d.cpus, &old_cpus) {
                self.cpus = p.cpus.to_string();
            }
            if untouched(&self.disk_size, &d.disk_size, &old_disk) {
                self.disk_size = size_text(p.disk_bytes);
            }
        }
        if !self.firmware_chosen {
            self.firmware =
                nvram::default_firmware(self.ovmf, found.proposal().map(|p| p.firmware));
        }
        self.detected = Some((iso, found));
    }

    /// The person picks the firmware: detection no longer changes it.
    pub fn choose_firmware(&mut self, firmware: Firmware) {
        self.firmware = firmware;
        self.firmware_chosen = true;
    }

    /// The form for editing `def`.
    pub fn edit(def: &VmDef) -> VmForm {
        let path = |p: &Option<PathBuf>| {
            p.as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        VmForm {
            editing: Some(def.clone()),
            name: def.name.clone(),
            memory: if def.memory_mib.is_multiple_of(1024) {
                format!("{}G", def.memory_mib / 1024)
            } else {
                format!("{}M", def.memory_mib)
            },
            cpus: def.cpus.to_string(),
            firmware: def.firmware,
            firmware_chosen: true,
            ovmf: vmm::firmware::uefi::available(),
            disk_size: String::new(),
            disk_qcow2: true,
            disk_preallocate: false,
            existing_disk: String::new(),
            cdrom: path(&def.cdrom),
            kernel: path(&def.kernel),
            initrd: path(&def.initrd),
            cmdline: def.cmdline.clone().unwrap_or_default(),
            vnc: def.vnc.clone(),
            password_file: path(&def.vnc_password_file),
            network: match def.network {
                NetMode::User => NetChoice::Nat,
                NetMode::Tap(_) => NetChoice::Tap,
                NetMode::None => NetChoice::None,
            },
            tap_name: match &def.network {
                NetMode::Tap(name) => name.clone(),
                _ => String::new(),
            },
            mac: def.mac.to_string(),
            forwards: def.forwards.iter().map(ForwardRow::of).collect(),
            detected: None,
            auto_name: None,
        }
    }

    /// The network mode chosen, checked as `--network` checks it.
    fn net_mode(&self) -> Result<NetMode, String> {
        match self.network {
            NetChoice::Nat => Ok(NetMode::User),
            NetChoice::None => Ok(NetMode::None),
            NetChoice::Tap if self.tap_name.trim().is_empty() => {
                Err("the name of a TAP device is needed (e.g. vmtap0)".into())
            }
            NetChoice::Tap => format!("tap:{}", self.tap_name.trim())
                .parse()
                .map_err(|e: vmm::net::SpecError| e.to_string()),
        }
    }

    /// The MAC address typed, if any.
    fn mac_addr(&self) -> Result<Option<MacAddr>, String> {
        match self.mac.trim() {
            "" => Ok(None),
            m => m
                .parse()
                .map(Some)
                .map_err(|e: vmm::net::SpecError| e.to_string()),
        }
    }

    /// The forwards table, parsed (only called once [`VmForm::check`] passed).
    fn parsed_forwards(&self) -> Result<Vec<Forward>, String> {
        self.forwards.iter().map(ForwardRow::parse).collect()
    }

    /// The network fields' reasons: the mode, the MAC, each forward (a row whose host
    /// socket an earlier row has is refused as `vmdesk create` refuses it).
    fn check_network(&self, c: &mut FormCheck) {
        c.network = self.net_mode().err();
        c.mac = self.mac_addr().err();
        if self.editing.is_some() && self.mac.trim().is_empty() {
            c.mac = Some("a MAC address is needed (e.g. 52:54:00:12:34:56)".into());
        }
        let parsed: Vec<Result<Forward, String>> =
            self.forwards.iter().map(ForwardRow::parse).collect();
        c.forwards = parsed
            .iter()
            .enumerate()
            .map(|(i, f)| match f {
                Err(e) => Some(e.clone()),
                Ok(f) => parsed[..i]
                    .iter()
                    .flatten()
                    .find(|g| library::forwards_clash(f, g))
                    .map(|g| {
                        format!(
                            "host port {}/{} is forwarded above ({})",
                            f.host_port,
                            f.protocol,
                            library::forward_label(g)
                        )
                    }),
            })
            .collect();
        if !self.forwards.is_empty() && self.network != NetChoice::Nat {
            c.forwards_mode = Some("port forwards need NAT: choose NAT, or remove them".into());
        }
    }

    pub fn path_mut(&mut self, f: PathField) -> &mut String {
        match f {
            PathField::Cdrom => &mut self.cdrom,
            PathField::ExistingDisk => &mut self.existing_disk,
            PathField::Kernel => &mut self.kernel,
            PathField::Initrd => &mut self.initrd,
            PathField::PasswordFile => &mut self.password_file,
        }
    }

    /// Checks every field on its own. `taken` says whether another VM has a name.
    pub fn check(&self, taken: &dyn Fn(&str) -> bool, host: &HostFacts) -> FormCheck {
        let mut c = FormCheck::default();
        let name = self.name.trim();
        let own = self.editing.as_ref().is_some_and(|d| d.name == name);
        if let Err(e) = library::validate_name(name) {
            c.name = Some(if name.is_empty() {
                "a name is needed".into()
            } else {
                e.to_string()
            });
        } else if !own && taken(name) {
            c.name = Some(format!("a VM named '{name}' already exists"));
        }
        match vmm::config::parse_memory(&self.memory) {
            Err(e) => c.memory = Some(e),
            Ok(bytes) => {
                let def = VmDef::new("x", bytes.div_ceil(MIB), 1);
                if let Err(e) = library::validate(&def, host) {
                    c.memory = Some(e.to_string());
                }
            }
        }
        match self.cpus.trim().parse::<u32>() {
            Ok(0) | Err(_) => c.cpus = Some("a number of vCPUs, 1 or more".into()),
            Ok(n) if n > 255 => c.cpus = Some("at most 255 vCPUs".into()),
            Ok(n) if n as usize > host.cpus => {
                c.cpus_warning = Some(format!(
                    "more than this host's {} CPUs: slower, not faster",
                    host.cpus
                ))
            }
            Ok(_) => {}
        }
        // A UEFI VM edited on a host without OVMF keeps its store and may be saved; a new
        // store cannot be made.
        let was_uefi = self
            .editing
            .as_ref()
            .is_some_and(|d| d.firmware == Firmware::Uefi);
        if self.firmware == Firmware::Uefi && !self.ovmf && !was_uefi {
            c.firmware = Some(OVMF_MISSING.into());
        }
        let store_gone = self.editing.as_ref().is_some_and(|d| {
            d.efi_vars
                .as_ref()
                .is_none_or(|p| std::fs::symlink_metadata(p).is_err())
        });
        if self.firmware == Firmware::Uefi && was_uefi && self.ovmf && store_gone {
            // Saving makes one (`VmService::save_edit`): said, so the boot entries the old
            // one held are not lost without a word.
            c.firmware_warning =
                Some("its UEFI variable store is missing: saving makes a new, empty one".into());
        }
        if self.firmware == Firmware::Bios
            && let Some((_, found)) = &self.detected
            && let Some(p) = found.proposal()
            && p.firmware == osinfo::FirmwareNeed::UefiRequired
        {
            c.firmware_warning = Some(format!(
                "{} needs UEFI: its installer will not start with BIOS",
                p.os_name
            ));
        }
        if self.editing.is_none() {
            if !self.disk_size.trim().is_empty()
                && let Err(e) = crate::disk::parse_size(&self.disk_size)
            {
                c.disk = Some(e);
            }
            c.existing_disk = file_problem(&self.existing_disk);
        }
        c.cdrom = file_problem(&self.cdrom);
        c.kernel = file_problem(&self.kernel);
        let no_kernel = self.kernel.trim().is_empty();
        c.initrd = file_problem(&self.initrd).or_else(|| {
            (no_kernel && !self.initrd.trim().is_empty()).then(|| "an initrd needs a kernel".into())
        });
        if no_kernel && !self.cmdline.trim().is_empty() {
            c.cmdline = Some("a command line needs a kernel".into());
        }
        if vmm::config::parse_vnc(self.vnc.trim()).is_err() {
            c.vnc = Some("use ADDR:N, ADDR:auto or none".into());
        }
        self.check_network(&mut c);
        c.password_file = file_problem(&self.password_file).or_else(|| {
            let p = opt_path(&self.password_file)?;
            display::rfb::Password::from_file(&p)
                .err()
                .map(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        "its first line (the password) is empty".into()
                    }
                    _ => e.to_string(),
                })
        });
        c
    }

    /// The new VM the form describes (only called once [`VmForm::check`] passed).
    pub fn to_new_vm(&self) -> Result<NewVm, String> {
        let mut disks = Vec::new();
        if !self.disk_size.trim().is_empty() {
            let spec = format!(
                "size={},format={}{}",
                self.disk_size.trim(),
                if self.disk_qcow2 { "qcow2" } else { "raw" },
                if self.disk_preallocate && !self.disk_qcow2 {
                    ",preallocation=full"
                } else {
                    ""
                }
            );
            // Parsed here too, so what the service gets is known good.
            let _: DiskOpt = parse_disk_opt(&spec)?;
            disks.push(spec);
        }
        if let Some(p) = opt_path(&self.existing_disk) {
            let spec = format!("path={}", p.display());
            let _: DiskOpt = parse_disk_opt(&spec)?;
            disks.push(spec);
        }
        Ok(NewVm {
            name: Some(self.name.trim().into()),
            memory: Some(vmm::config::parse_memory(&self.memory)?),
            cpus: Some(self.cpus.trim().parse().map_err(|_| "bad vCPUs")?),
            disks,
            cdrom: opt_path(&self.cdrom),
            kernel: opt_path(&self.kernel),
            initrd: opt_path(&self.initrd),
            cmdline: Some(self.cmdline.trim())
                .filter(|s| !s.is_empty())
                .map(Into::into),
            vnc: self.vnc.trim().into(),
            vnc_password_file: opt_path(&self.password_file),
            network: self.net_mode()?,
            forwards: self.parsed_forwards()?,
            mac: self.mac_addr()?,
            firmware: Some(self.firmware),
        })
    }

    /// The edited definition: the original with this form's fields (disks unchanged).
    pub fn to_def(&self) -> Result<VmDef, String> {
        let mut def = self.editing.clone().ok_or("not editing a VM")?;
        def.name = self.name.trim().into();
        def.memory_mib = vmm::config::parse_memory(&self.memory)?.div_ceil(MIB);
        def.cpus = self.cpus.trim().parse().map_err(|_| "bad vCPUs")?;
        // Its variable store stays recorded either way: see `VmService::save_edit`.
        def.firmware = self.firmware;
        def.cdrom = opt_path(&self.cdrom).map(absolute);
        def.kernel = opt_path(&self.kernel).map(absolute);
        def.initrd = opt_path(&self.initrd).map(absolute);
        def.cmdline = Some(self.cmdline.trim())
            .filter(|s| !s.is_empty())
            .map(Into::into);
        def.vnc = match self.vnc.trim() {
            "auto" => "127.0.0.1:auto".into(),
            v => v.into(),
        };
        def.vnc_password_file = opt_path(&self.password_file).map(absolute);
        def.network = self.net_mode()?;
        def.forwards = self.parsed_forwards()?;
        def.mac = self.mac_addr()?.ok_or("a MAC address is needed")?;
        Ok(def)
    }
}

/// Why UEFI cannot be chosen here, and the fix.
const OVMF_MISSING: &str = "UEFI needs the ovmf package: sudo apt-get install ovmf";

/// A memory size as the form shows it: whole GiB as "4G", else MiB.
fn memory_text(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// A disk size as the form shows it: whole GiB as "20G", else MiB (rounded up).
fn size_text(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes.div_ceil(MIB))
    }
}

/// Which field a failed create concerns, to show the reason beside it.
fn field_of_error(msg: &str) -> Option<&'static str> {
    if msg.contains("cannot create") || msg.contains("(delete it, or use --disk path=") {
        Some("disk")
    } else if msg.contains("--disk path=") {
        Some("existing_disk")
    } else if msg.contains("already exists") {
        Some("name")
    } else {
        None
    }
}

type CreateResult = Result<(VmDef, Vec<library::Warning>), String>;

/// The open create or edit dialog.
pub struct FormDialog {
    pub form: VmForm,
    /// Why the last submit failed, and the field it concerns (None: the form as a whole).
    pub failed: Option<(Option<&'static str>, String)>,
    /// A create running on its worker thread.
    working: Option<Receiver<CreateResult>>,
    /// How far that create is in reserving disk space, and whether to stop it.
    progress: Arc<CreateProgress>,
}

/// Written by the create's worker thread, read by the dialog.
#[derive(Default)]
struct CreateProgress {
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

impl CreateProgress {
    /// The fraction reserved, once there is space to reserve.
    fn fraction(&self) -> Option<f32> {
        let total = self.total.load(Ordering::Relaxed);
        (total > 0).then(|| self.done.load(Ordering::Relaxed) as f32 / total as f32)
    }
}

impl FormDialog {
    pub fn new(form: VmForm) -> FormDialog {
        FormDialog {
            form,
            failed: None,
            working: None,
            progress: Arc::default(),
        }
    }

    pub fn working(&self) -> bool {
        self.working.is_some()
    }
}

impl VmdeskApp {
    pub(super) fn form_dialog(&mut self, ctx: &egui::Context) {
        let Some(dialog) = &mut self.form else {
            return;
        };
        // A create finishing on its worker thread.
        if let Some(rx) = &dialog.working {
            match rx.try_recv() {
                Ok(Ok((def, warnings))) => {
                    let mut m = format!("created '{}'", def.name);
                    for w in warnings {
                        m += &format!(" (warning: {w})");
                    }
                    self.form = None;
                    self.refreshed = None;
                    self.say(m, false);
                    return;
                }
                Ok(Err(e)) => {
                    dialog.working = None;
                    dialog.failed = Some((field_of_error(&e), e));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    ctx.request_repaint_after(std::time::Duration::from_millis(100));
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    dialog.working = None;
                    dialog.failed = Some((None, "the create failed without a reason".into()));
                }
            }
        }
        let vms = &self.vms;
        let taken = |n: &str| vms.exists(n);
        dialog.form.follow_iso(&taken, &osinfo::detect);
        let check = dialog.form.check(&taken, &self.host);
        let editing = dialog.form.editing.clone();
        let title = match &editing {
            None => "New VM".to_string(),
            Some(d) => format!("Edit '{}'", d.name),
        };
        let mut open = true;
        let mut submit = false;
        let mut cancel = false;
        let mut browse = None;
        let working = dialog.working();
        egui::Window::new(title)
            .id(egui::Id::unique("vm-form"))
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.add_enabled_ui(!working, |ui| {
                    browse = form_grid(ui, &mut dialog.form, &check, &dialog.failed);
                });
                if let Some((None, e)) = &dialog.failed {
                    ui.colored_label(Color32::LIGHT_RED, e);
                }
                ui.horizontal(|ui| {
                    let label = if editing.is_some() { "Save" } else { "Create" };
                    submit = ui
                        .add_enabled(check.ok() && !working, egui::Button::new(label))
                        .clicked();
                    cancel = ui
                        .add_enabled(!working, egui::Button::new("Cancel"))
                        .clicked();
                    if working {
                        match dialog.progress.fraction() {
                            // Reserving space can take minutes where the host filesystem
                            // has no fallocate: show how far, and let it be stopped.
                            Some(f) => {
                                ui.add(
                                    egui::ProgressBar::new(f)
                                        .desired_width(160.0)
                                        .show_percentage(),
                                );
                                ui.label("Reserving disk space…");
                                if ui.button("Stop").clicked() {
                                    dialog.progress.cancel.store(true, Ordering::Relaxed);
                                }
                            }
                            None => {
                                ui.spinner();
                                ui.label("Creating the disk…");
                            }
                        }
                    }
                });
            });
        if let Some(field) = browse {
            self.browse(Target::Form(field), field.title(), field.filter(), false);
        }
        let Some(dialog) = &mut self.form else {
            return;
        };
        if submit {
            dialog.failed = None;
            match &editing {
                None => match dialog.form.to_new_vm() {
                    Err(e) => dialog.failed = Some((None, e)),
                    Ok(args) => {
                        let (tx, rx) = channel();
                        let vms = self.vms.clone();
                        let progress = Arc::new(CreateProgress::default());
                        dialog.progress = progress.clone();
                        let repaint = ctx.clone();
                        std::thread::spawn(move || {
                            let mut report = |done, total| {
                                progress.done.store(done, Ordering::Relaxed);
                                progress.total.store(total, Ordering::Relaxed);
                                repaint.request_repaint();
                                !progress.cancel.load(Ordering::Relaxed)
                            };
                            let r = vms.create(args, &mut report).map_err(|e| format!("{e:#}"));
                            let _ = tx.send(r);
                        });
                        dialog.working = Some(rx);
                        ctx.request_repaint();
                    }
                },
                Some(original) => {
                    let r = dialog
                        .form
                        .to_def()
                        .map_err(anyhow::Error::msg)
                        .and_then(|new| {
                            self.vms
                                .save_edit(original, &new, &self.host)
                                .map(|w| (new, w))
                        });
                    match r {
                        Ok((new, warnings)) => {
                            let mut m = if new.name == original.name {
                                format!("saved '{}'", new.name)
                            } else {
                                format!(
                                    "renamed '{}' to '{}' and saved it",
                                    original.name, new.name
                                )
                            };
                            for w in warnings {
                                m += &format!(" (warning: {w})");
                            }
                            self.form = None;
                            self.refreshed = None;
                            self.say(m, false);
                        }
                        Err(e) => dialog.failed = Some((None, format!("{e:#}"))),
                    }
                }
            }
        } else if (cancel || !open) && !working {
            self.form = None;
        }
    }
}

/// Draws the form's fields; returns the path field whose "Browse…" was pressed.
fn form_grid(
    ui: &mut egui::Ui,
    form: &mut VmForm,
    check: &FormCheck,
    failed: &Option<(Option<&'static str>, String)>,
) -> Option<PathField> {
    let mut browse = None;
    let failed_on = |field: &str| match failed {
        Some((Some(f), e)) if *f == field => Some(e.clone()),
        _ => None,
    };
    let creating = form.editing.is_none();
    egui::Grid::new("vm-form-grid")
        .num_columns(3)
        .show(ui, |ui| {
            let reason = |ui: &mut egui::Ui, err: &Option<String>| {
                match err {
                    Some(e) => ui.colored_label(Color32::LIGHT_RED, e),
                    None => ui.label(""),
                };
                ui.end_row();
            };
            let text =
                |ui: &mut egui::Ui, label: &str, value: &mut String, err: &Option<String>| {
                    // Named by its label, for screen readers (and the UI tests).
                    let l = ui.label(label);
                    ui.add(egui::TextEdit::singleline(value).desired_width(260.0))
                        .labelled_by(l.id);
                    reason(ui, err);
                };
            let mut path = |ui: &mut egui::Ui,
                            label: &str,
                            field: PathField,
                            value: &mut String,
                            err: &Option<String>| {
                let l = ui.label(label);
                ui.horizontal(|ui| {
                    ui.add(egui::TextEdit::singleline(value).desired_width(190.0))
                        .labelled_by(l.id);
                    if ui.button("Browse…").clicked() {
                        browse = Some(field);
                    }
                });
                reason(ui, err);
            };
            text(
                ui,
                "Name",
                &mut form.name,
                &check.name.clone().or(failed_on("name")),
            );
            text(ui, "Memory", &mut form.memory, &check.memory);
            let cpus_note = check.cpus.clone().or(check.cpus_warning.clone());
            text(ui, "vCPUs", &mut form.cpus, &cpus_note);
            if creating {
                text(
                    ui,
                    "New disk (empty: none)",
                    &mut form.disk_size,
                    &check.disk.clone().or(failed_on("disk")),
                );
                ui.label("Disk format");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut form.disk_qcow2, true, "qcow2");
                    ui.radio_value(&mut form.disk_qcow2, false, "raw");
                });
                ui.label("");
                ui.end_row();
                ui.label("");
                ui.add_enabled(
                    !form.disk_qcow2,
                    egui::Checkbox::new(&mut form.disk_preallocate, "Reserve all its space now"),
                )
                .on_hover_text(
                    "A raw disk is sparse: it takes host space as the guest writes. Reserved \
                     now, a full host disk shows up here instead of as I/O errors during an \
                     install. (qcow2 always grows as the guest writes.)",
                )
                .on_disabled_hover_text("raw disks only: a qcow2 image grows as the guest writes");
                ui.label("");
                ui.end_row();
                path(
                    ui,
                    "Existing disk image",
                    PathField::ExistingDisk,
                    &mut form.existing_disk,
                    &check.existing_disk.clone().or(failed_on("existing_disk")),
                );
            } else if let Some(def) = &form.editing {
                ui.label("Disks");
                let disks: Vec<String> = def
                    .disks
                    .iter()
                    .map(|d| format!("{} ({})", d.path.display(), d.format.as_str()))
                    .collect();
                ui.label(if disks.is_empty() {
                    "none".to_string()
                } else {
                    disks.join("\n")
                });
                ui.label("");
                ui.end_row();
            }
            path(
                ui,
                "Installer ISO",
                PathField::Cdrom,
                &mut form.cdrom,
                &check.cdrom,
            );
            if let (true, Some((_, found))) = (creating, &form.detected) {
                ui.label("Detected");
                ui.add(egui::Label::new(found.summary(form.firmware)).wrap());
                ui.label("");
                ui.end_row();
            }
            firmware_row(ui, form);
            reason(
                ui,
                &check.firmware.clone().or(check.firmware_warning.clone()),
            );
            path(
                ui,
                "Kernel",
                PathField::Kernel,
                &mut form.kernel,
                &check.kernel,
            );
            path(
                ui,
                "Initrd",
                PathField::Initrd,
                &mut form.initrd,
                &check.initrd,
            );
            text(ui, "Kernel command line", &mut form.cmdline, &check.cmdline);
            text(ui, "VNC", &mut form.vnc, &check.vnc);
            path(
                ui,
                "VNC password file",
                PathField::PasswordFile,
                &mut form.password_file,
                &check.password_file,
            );
            network_rows(ui, form, check);
        });
    browse
}

/// The firmware choice: BIOS, or UEFI where the host has OVMF (else greyed out, its hover
/// text naming the package). The grid's reason cell is the caller's.
fn firmware_row(ui: &mut egui::Ui, form: &mut VmForm) {
    ui.label("Firmware");
    ui.horizontal(|ui| {
        let bios = form.firmware == Firmware::Bios;
        let keeps_store = form.editing.as_ref().is_some_and(|d| d.efi_vars.is_some());
        let hover = if keeps_store {
            "SeaBIOS. This VM's UEFI variables are kept, for a switch back to UEFI."
        } else {
            "SeaBIOS: boots every PC operating system that predates UEFI, and most since."
        };
        if ui.radio(bios, "BIOS").on_hover_text(hover).clicked() {
            form.choose_firmware(Firmware::Bios);
        }
        let uefi = ui
            .add_enabled(form.ovmf, egui::RadioButton::new(!bios, "UEFI"))
            .on_hover_text(
                "OVMF, with a variable store of this VM's own for its boot entries: what                  current operating systems install for, and what Windows 11 needs.",
            )
            .on_disabled_hover_text(OVMF_MISSING);
        if uefi.clicked() {
            form.choose_firmware(Firmware::Uefi);
        }
    });
}

/// The network rows of the form's grid: the mode, a TAP device's name, the MAC address and
/// the port forwards table.
fn network_rows(ui: &mut egui::Ui, form: &mut VmForm, check: &FormCheck) {
    let red = |ui: &mut egui::Ui, err: &Option<String>| match err {
        Some(e) => ui.colored_label(Color32::LIGHT_RED, e),
        None => ui.label(""),
    };
    let tap = form.network == NetChoice::Tap;
    ui.label("Network");
    ui.horizontal(|ui| {
        ui.radio_value(&mut form.network, NetChoice::Nat, "NAT")
            .on_hover_text(
                "User-mode networking through passt: no root, no setup. The guest reaches \
                 the internet and this machine's own services at its gateway address; \
                 port forwards let this machine reach the guest's.",
            );
        ui.radio_value(&mut form.network, NetChoice::Tap, "TAP device")
            .on_hover_text(
                "An existing TAP device you may open, e.g. one on a bridge to your LAN: \
                 sudo ip tuntap add vmtap0 mode tap user $USER",
            );
        ui.radio_value(&mut form.network, NetChoice::None, "None");
    });
    red(ui, if tap { &None } else { &check.network });
    ui.end_row();
    if tap {
        let l = ui.label("TAP device");
        ui.add(
            egui::TextEdit::singleline(&mut form.tap_name)
                .hint_text("vmtap0")
                .desired_width(260.0),
        )
        .labelled_by(l.id);
        red(ui, &check.network);
        ui.end_row();
    }
    let l = ui.label("MAC address");
    let hint = if form.editing.is_none() {
        "a new one (52:54:00:…)"
    } else {
        ""
    };
    ui.add(
        egui::TextEdit::singleline(&mut form.mac)
            .hint_text(hint)
            .desired_width(260.0),
    )
    .labelled_by(l.id);
    red(ui, &check.mac);
    ui.end_row();

    ui.label("Port forwards");
    let nat = form.network == NetChoice::Nat;
    ui.vertical(|ui| {
        let mut remove = None;
        if !form.forwards.is_empty() {
            egui::Grid::new("vm-form-forwards")
                .num_columns(6)
                .show(ui, |ui| {
                    let protocol = ui.label("Protocol").id;
                    let host_addr = ui.label("Host address").id;
                    let host_port = ui.label("Host port").id;
                    let guest_port = ui.label("Guest port").id;
                    ui.label("");
                    ui.label("");
                    ui.end_row();
                    for (i, row) in form.forwards.iter_mut().enumerate() {
                        egui::ComboBox::from_id_salt(("vm-form-forward-proto", i))
                            .selected_text(row.protocol.to_string())
                            .width(56.0)
                            .show_ui(ui, |ui| {
                                for p in [Protocol::Tcp, Protocol::Udp] {
                                    ui.selectable_value(&mut row.protocol, p, p.to_string());
                                }
                            })
                            .response
                            .labelled_by(protocol);
                        ui.add(
                            egui::TextEdit::singleline(&mut row.host_addr)
                                .hint_text("127.0.0.1")
                                .desired_width(96.0),
                        )
                        .labelled_by(host_addr)
                        .on_hover_text(
                            "Empty: 127.0.0.1, only this machine may connect; 0.0.0.0: \
                             every address of this machine",
                        );
                        ui.add(egui::TextEdit::singleline(&mut row.host_port).desired_width(48.0))
                            .labelled_by(host_port);
                        ui.add(egui::TextEdit::singleline(&mut row.guest_port).desired_width(48.0))
                            .labelled_by(guest_port);
                        if ui.small_button("Remove").clicked() {
                            remove = Some(i);
                        }
                        red(ui, check.forwards.get(i).unwrap_or(&None));
                        ui.end_row();
                    }
                });
        }
        if let Some(i) = remove {
            form.forwards.remove(i);
        }
        if ui
            .add_enabled(nat, egui::Button::new("Add forward"))
            .on_hover_text("Reach a service in the guest from this machine, e.g. host port 2222 to the guest's SSH on 22")
            .on_disabled_hover_text("port forwards need NAT")
            .clicked()
        {
            form.forwards.push(ForwardRow::default());
        }
    });
    red(ui, &check.forwards_mode);
    ui.end_row();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::Library;
    use crate::runtime::Runtime;

    #[test]
    fn the_iso_fills_the_figures_the_person_left_alone() {
        let dir = std::env::temp_dir().join(format!("vmdesk-form-iso-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.iso"), dir.join("b.iso"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        // Detection stands in for osinfo here: a.iso holds "A 1", b.iso "B 2".
        let detect = |p: &std::path::Path| {
            let (name, memory_mib, disk_bytes, cpus) = if p.ends_with("a.iso") {
                ("a1", 2048, 20 << 30, 1)
            } else {
                ("b2", 4096, (25 << 30) + (1 << 20), 2)
            };
            osinfo::Detection::Found(osinfo::Proposal {
                os_name: name.to_uppercase(),
                vm_name: name.into(),
                memory_mib,
                disk_bytes,
                cpus,
                firmware: osinfo::FirmwareNeed::Any,
            })
        };
        let free = |_: &str| false;
        let mut f = VmForm {
            cdrom: a.display().to_string(),
            ..Default::default()
        };
        f.follow_iso(&free, &detect);
        assert_eq!(
            (
                f.name.as_str(),
                f.memory.as_str(),
                f.cpus.as_str(),
                f.disk_size.as_str()
            ),
            ("a1", "2G", "1", "20G")
        );
        // The person sets the memory; another ISO changes the rest, not that.
        f.memory = "3G".into();
        f.cdrom = b.display().to_string();
        f.follow_iso(&free, &|p| detect(p));
        assert_eq!(
            (
                f.name.as_str(),
                f.memory.as_str(),
                f.cpus.as_str(),
                f.disk_size.as_str()
            ),
            ("b2", "3G", "2", "25601M")
        );
        assert!(
            f.detected
                .as_ref()
                .unwrap()
                .1
                .summary(f.firmware)
                .starts_with("B2: ")
        );
        // A name of the person's stays; a taken one gets a number.
        f.name = "mine".into();
        f.cdrom = a.display().to_string();
        f.follow_iso(&free, &detect);
        assert_eq!(f.name, "mine");
        let mut g = VmForm {
            cdrom: a.display().to_string(),
            ..Default::default()
        };
        g.follow_iso(&|n: &str| n == "a1", &detect);
        assert_eq!(g.name, "a1-2");
        // That name too is detection's: the next ISO replaces it.
        g.cdrom = b.display().to_string();
        g.follow_iso(&free, &detect);
        assert_eq!(g.name, "b2");
        // Editing a VM never detects.
        let mut e = VmForm {
            editing: Some(VmDef::new("x", 512, 1)),
            ..Default::default()
        };
        e.cdrom = a.display().to_string();
        e.follow_iso(&free, &detect);
        assert!(e.detected.is_none() && e.name.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Detection stands in for osinfo: every ISO holds an OS that says `need`.
    fn detect_need(need: osinfo::FirmwareNeed) -> impl Fn(&std::path::Path) -> osinfo::Detection {
        move |_| {
            osinfo::Detection::Found(osinfo::Proposal {
                os_name: "Some OS".into(),
                vm_name: "some".into(),
                memory_mib: 2048,
                disk_bytes: 20 << 30,
                cpus: 2,
                firmware: need,
            })
        }
    }

    #[test]
    fn the_firmware_follows_the_os_until_the_person_picks_one() {
        use osinfo::FirmwareNeed::{Any, UefiRequired, UefiSupported};
        let dir = std::env::temp_dir().join(format!("vmdesk-form-fw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.iso"), dir.join("b.iso"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let free = |_: &str| false;
        let mut f = VmForm {
            ovmf: true,
            ..Default::default()
        };
        assert_eq!(f.firmware, Firmware::Bios, "no ISO: BIOS");
        f.cdrom = a.display().to_string();
        f.follow_iso(&free, &detect_need(UefiSupported));
        assert_eq!(f.firmware, Firmware::Uefi);
        assert_eq!(f.to_new_vm().unwrap().firmware, Some(Firmware::Uefi));
        assert!(
            f.detected
                .as_ref()
                .unwrap()
                .1
                .summary(f.firmware)
                .ends_with("; UEFI firmware")
        );
        // An OS that says nothing: BIOS again; the ISO taken out: BIOS.
        f.cdrom = b.display().to_string();
        f.follow_iso(&free, &detect_need(Any));
        assert_eq!(f.firmware, Firmware::Bios);
        f.cdrom = a.display().to_string();
        f.follow_iso(&free, &detect_need(UefiSupported));
        assert_eq!(f.firmware, Firmware::Uefi);
        f.cdrom.clear();
        f.follow_iso(&free, &detect_need(UefiSupported));
        assert_eq!(f.firmware, Firmware::Bios);
        // Picked: it stays, whatever the next ISO holds.
        f.choose_firmware(Firmware::Bios);
        f.cdrom = b.display().to_string();
        f.follow_iso(&free, &detect_need(UefiRequired));
        assert_eq!(f.firmware, Firmware::Bios);
        let c = f.check(&free, &host());
        assert!(c.ok(), "BIOS for a UEFI-only OS is allowed: {c:?}");
        assert_eq!(
            c.firmware_warning.as_deref(),
            Some("Some OS needs UEFI: its installer will not start with BIOS")
        );
        // No OVMF: BIOS whatever the OS, and UEFI refused with the package to install.
        let mut g = VmForm {
            ovmf: false,
            cdrom: a.display().to_string(),
            ..Default::default()
        };
        g.follow_iso(&free, &detect_need(UefiRequired));
        assert_eq!(g.firmware, Firmware::Bios);
        g.choose_firmware(Firmware::Uefi);
        assert_eq!(
            g.check(&free, &host()).firmware.as_deref(),
            Some("UEFI needs the ovmf package: sudo apt-get install ovmf")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn editing_changes_the_firmware_and_keeps_the_store() {
        let mut def = VmDef::new("vm", 512, 1);
        def.firmware = Firmware::Uefi;
        def.efi_vars = Some("/d/nvram/vm_VARS.fd".into());
        let mut f = VmForm::edit(&def);
        assert_eq!((f.firmware, f.firmware_chosen), (Firmware::Uefi, true));
        assert_eq!(f.to_def().unwrap(), def);
        // Its store is not there: saving would make a new one, and the dialog says so.
        f.ovmf = true;
        let c = f.check(&|_| false, &host());
        assert!(c.ok(), "{c:?}");
        assert_eq!(
            c.firmware_warning.as_deref(),
            Some("its UEFI variable store is missing: saving makes a new, empty one")
        );
        // Without OVMF a UEFI VM may still be edited (its store is there)...
        f.ovmf = false;
        assert!(f.check(&|_| false, &host()).ok());
        f.choose_firmware(Firmware::Bios);
        let d = f.to_def().unwrap();
        assert_eq!(d.firmware, Firmware::Bios);
        assert_eq!(d.efi_vars, def.efi_vars, "kept for a switch back");
        // ...but a BIOS VM cannot switch to UEFI there.
        let mut f = VmForm::edit(&d);
        f.ovmf = false;
        f.choose_firmware(Firmware::Uefi);
        assert!(f.check(&|_| false, &host()).firmware.is_some());
    }

    #[test]
    fn ui_the_firmware_choice_greys_out_uefi_without_ovmf() {
        use egui::accesskit::Role;
        use egui_kittest::Harness;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let root = std::env::temp_dir().join(format!("vmdesk-form-fwui-{}", std::process::id()));
        let app = |ovmf: bool| {
            let mut app = VmdeskApp::new(
                Library::at(root.join("vms")),
                Runtime::at(root.join("run")),
                host(),
            );
            app.form = Some(FormDialog::new(VmForm {
                name: "vm".into(),
                ovmf,
                ..Default::default()
            }));
            Harness::builder()
                .with_size(egui::vec2(1000.0, 900.0))
                .build_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app)
        };
        let firmware = |h: &Harness<'_, VmdeskApp>| h.state().form.as_ref().unwrap().form.firmware;
        // With OVMF: BIOS by default (no ISO), UEFI a click away.
        let mut h = app(true);
        h.run_steps(2);
        h.get_by_label("Firmware");
        let uefi = h.get_by_role_and_label(Role::RadioButton, "UEFI");
        assert!(!uefi.accesskit_node().is_disabled());
        assert_eq!(firmware(&h), Firmware::Bios);
        uefi.click();
        h.run_steps(2);
        assert_eq!(firmware(&h), Firmware::Uefi);
        let form = &h.state().form.as_ref().unwrap().form;
        assert!(form.firmware_chosen);
        assert_eq!(form.to_new_vm().unwrap().firmware, Some(Firmware::Uefi));
        drop(h);
        // Without: UEFI greyed out, its hover text naming the package; clicks do nothing.
        let mut h = app(false);
        h.run_steps(2);
        let uefi = h.get_by_role_and_label(Role::RadioButton, "UEFI");
        assert!(uefi.accesskit_node().is_disabled());
        uefi.hover();
        // A tooltip waits for the pointer to rest (half a second; a step is a quarter).
        h.run_steps(8);
        h.get_by_label("UEFI needs the ovmf package: sudo apt-get install ovmf");
        h.get_by_role_and_label(Role::RadioButton, "UEFI").click();
        h.run_steps(2);
        assert_eq!(firmware(&h), Firmware::Bios);
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn only_a_raw_disk_is_preallocated() {
        let mut f = VmForm {
            name: "vm".into(),
            disk_preallocate: true,
            ..Default::default()
        };
        // qcow2 (the default) never: the box is greyed out there.
        assert_eq!(f.to_new_vm().unwrap().disks, ["size=10G,format=qcow2"]);
        f.disk_qcow2 = false;
        assert_eq!(
            f.to_new_vm().unwrap().disks,
            ["size=10G,format=raw,preallocation=full"]
        );
        f.disk_preallocate = false;
        assert_eq!(f.to_new_vm().unwrap().disks, ["size=10G,format=raw"]);
    }

    #[test]
    fn ui_reserving_space_shows_a_progress_bar_that_can_stop_it() {
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let root = std::env::temp_dir().join(format!("vmdesk-form-prog-{}", std::process::id()));
        let host = HostFacts {
            ram: Some(4096 * MIB),
            cpus: 2,
        };
        let mut app = VmdeskApp::new(
            Library::at(root.join("vms")),
            Runtime::at(root.join("run")),
            host,
        );
        // A create that has reserved a quarter of its disk and is still going.
        let (_tx, rx) = channel::<CreateResult>();
        let mut dialog = FormDialog::new(VmForm::default());
        dialog.working = Some(rx);
        dialog.progress.total.store(8 << 30, Ordering::Relaxed);
        dialog.progress.done.store(2 << 30, Ordering::Relaxed);
        let progress = dialog.progress.clone();
        app.form = Some(dialog);
        let mut h = egui_kittest::Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("Reserving disk space…");
        let bar = h.get_by_role(egui::accesskit::Role::ProgressIndicator);
        assert_eq!(bar.accesskit_node().numeric_value(), Some(25.0), "per cent");
        assert!(!progress.cancel.load(Ordering::Relaxed));
        h.get_by_label("Stop").click();
        h.run_steps(2);
        assert!(
            progress.cancel.load(Ordering::Relaxed),
            "Stop asks the worker to stop"
        );
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn direct_boot_and_password_fields() {
        let host = HostFacts {
            ram: Some(4096 * MIB),
            cpus: 2,
        };
        let dir = std::env::temp_dir().join(format!("vmdesk-form-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (empty, good) = (dir.join("empty.pw"), dir.join("good.pw"));
        std::fs::write(&empty, "\n").unwrap();
        std::fs::write(&good, "secret\n").unwrap();
        let mut f = VmForm {
            name: "x".into(),
            initrd: good.display().to_string(),
            cmdline: "quiet".into(),
            password_file: empty.display().to_string(),
            ..Default::default()
        };
        let c = f.check(&|_| false, &host);
        assert_eq!(c.initrd.as_deref(), Some("an initrd needs a kernel"));
        assert_eq!(c.cmdline.as_deref(), Some("a command line needs a kernel"));
        assert_eq!(
            c.password_file.as_deref(),
            Some("its first line (the password) is empty")
        );
        f.kernel = good.display().to_string();
        f.password_file = good.display().to_string();
        let c = f.check(&|_| false, &host);
        assert!(c.ok(), "{c:?}");
        let a = f.to_new_vm().unwrap();
        assert_eq!(a.kernel, Some(good.clone()));
        assert_eq!(a.cmdline.as_deref(), Some("quiet"));
        assert_eq!(a.vnc_password_file, Some(good.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_create_is_shown_beside_its_field() {
        assert_eq!(
            field_of_error("'a': cannot create /i/a.qcow2: No space left on device"),
            Some("disk")
        );
        assert_eq!(
            field_of_error(
                "'a': /i/a.qcow2 already exists (delete it, or use --disk path=/i/a.qcow2)"
            ),
            Some("disk")
        );
        assert_eq!(
            field_of_error("'a': --disk path=/x.img: no such file"),
            Some("existing_disk")
        );
        assert_eq!(
            field_of_error("a VM named 'a' already exists"),
            Some("name")
        );
        assert_eq!(field_of_error("something else"), None);
    }

    fn host() -> HostFacts {
        HostFacts {
            ram: Some(4096 * MIB),
            cpus: 2,
        }
    }

    fn fwd(proto: Protocol, addr: &str, host: &str, guest: &str) -> ForwardRow {
        ForwardRow {
            protocol: proto,
            host_addr: addr.into(),
            host_port: host.into(),
            guest_port: guest.into(),
        }
    }

    #[test]
    fn network_fields_are_checked_as_the_cli_checks_them() {
        let mut f = VmForm {
            name: "vm".into(),
            ..Default::default()
        };
        assert_eq!(f.network, NetChoice::Nat, "new VMs get NAT");
        let c = f.check(&|_| false, &host());
        assert!(c.ok(), "{c:?}");
        let a = f.to_new_vm().unwrap();
        assert_eq!(
            (a.network, a.mac, a.forwards.len()),
            (NetMode::User, None, 0)
        );

        f.forwards = vec![
            fwd(Protocol::Tcp, "", "2222", "22"),
            fwd(Protocol::Udp, "0.0.0.0", "2222", "22"),
            fwd(Protocol::Tcp, "", "", "80"),
            fwd(Protocol::Tcp, "localhost", "8080", "80"),
            fwd(Protocol::Tcp, "0.0.0.0", "2222", "23"),
        ];
        let c = f.check(&|_| false, &host());
        assert_eq!(
            c.forwards,
            [
                None,
                None,
                Some("the host port must be a number from 1 to 65535".into()),
                Some("the host address is not an IPv4 address".into()),
                Some("host port 2222/tcp is forwarded above (127.0.0.1:2222→22)".into()),
            ]
        );
        assert!(!c.ok());
        f.forwards.truncate(2);
        let c = f.check(&|_| false, &host());
        assert!(c.ok(), "{c:?}");
        let a = f.to_new_vm().unwrap();
        let specs: Vec<String> = a.forwards.iter().map(|f| f.to_string()).collect();
        assert_eq!(specs, ["tcp:127.0.0.1:2222-:22", "udp:0.0.0.0:2222-:22"]);

        // Forwards are NAT's: with TAP or none the mode says so, and nothing is created.
        f.network = NetChoice::None;
        let c = f.check(&|_| false, &host());
        assert_eq!(
            c.forwards_mode.as_deref(),
            Some("port forwards need NAT: choose NAT, or remove them")
        );
        assert!(!c.ok());
        f.forwards.clear();
        assert!(f.check(&|_| false, &host()).ok());
        assert_eq!(f.to_new_vm().unwrap().network, NetMode::None);

        f.network = NetChoice::Tap;
        let c = f.check(&|_| false, &host());
        assert_eq!(
            c.network.as_deref(),
            Some("the name of a TAP device is needed (e.g. vmtap0)")
        );
        f.tap_name = "a/b".into();
        let c = f.check(&|_| false, &host());
        assert!(
            c.network
                .unwrap()
                .contains("is not a network interface name"),
            "the spec's words"
        );
        f.tap_name = " vmtap0 ".into();
        f.mac = "01:02:03:04:05:06".into();
        let c = f.check(&|_| false, &host());
        assert_eq!(c.network, None);
        assert!(c.mac.unwrap().contains("multicast"));
        f.mac = "52:54:00:0A:0B:0C".into();
        assert!(f.check(&|_| false, &host()).ok());
        let a = f.to_new_vm().unwrap();
        assert_eq!(a.network, NetMode::Tap("vmtap0".into()));
        assert_eq!(a.mac.unwrap().to_string(), "52:54:00:0a:0b:0c");
    }

    #[test]
    fn editing_keeps_the_network_and_changes_it() {
        let mut def = VmDef::new("vm", 512, 1);
        def.forwards = vec!["tcp::2222-:22".parse().unwrap()];
        let mut f = VmForm::edit(&def);
        assert_eq!(f.network, NetChoice::Nat);
        assert_eq!(f.mac, def.mac.to_string());
        assert_eq!(f.forwards, [fwd(Protocol::Tcp, "127.0.0.1", "2222", "22")]);
        assert!(f.check(&|_| false, &host()).ok());
        assert_eq!(f.to_def().unwrap(), def, "unchanged: the same definition");
        // An edited VM keeps an address: an empty one is refused, not replaced.
        f.mac.clear();
        assert!(f.check(&|_| false, &host()).mac.is_some());
        f.mac = def.mac.to_string();
        f.forwards.clear();
        f.network = NetChoice::Tap;
        f.tap_name = "vmtap0".into();
        let d = f.to_def().unwrap();
        assert_eq!(d.network, NetMode::Tap("vmtap0".into()));
        assert!(d.forwards.is_empty());
        assert_eq!(d.mac, def.mac);
        let back = VmForm::edit(&d);
        assert_eq!(
            (back.network, back.tap_name.as_str()),
            (NetChoice::Tap, "vmtap0")
        );
    }

    #[test]
    fn ui_the_edit_dialog_shows_the_forwards_and_removes_one() {
        use egui::accesskit::Role;
        use egui_kittest::Harness;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let root = std::env::temp_dir().join(format!("vmdesk-form-net-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let lib = Library::at(root.join("vms"));
        let mut def = VmDef::new("vm", 512, 1);
        def.forwards = vec![
            "tcp::2222-:22".parse().unwrap(),
            "tcp::8080-:80".parse().unwrap(),
        ];
        lib.create(&def).unwrap();
        let mut app = VmdeskApp::new(lib.clone(), Runtime::at(root.join("run")), host());
        app.form = Some(FormDialog::new(VmForm::edit(&def)));
        // Tall enough for the whole form with its forwards table.
        let mut h = Harness::builder()
            .with_size(egui::vec2(1000.0, 900.0))
            .build_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("Port forwards");
        // The host ports, in their text fields.
        assert!(h.query_all_by_value("2222").count() > 0);
        assert!(h.query_all_by_value("8080").count() > 0);
        // TAP while there are forwards: said beside the network, and Save is off.
        h.get_by_label("TAP device").click();
        h.run_steps(2);
        h.get_by_label("port forwards need NAT: choose NAT, or remove them");
        h.get_by_label("the name of a TAP device is needed (e.g. vmtap0)");
        assert!(
            h.get_by_role_and_label(Role::Button, "Save")
                .accesskit_node()
                .is_disabled()
        );
        assert!(
            h.get_by_role_and_label(Role::Button, "Add forward")
                .accesskit_node()
                .is_disabled()
        );
        h.get_by_label("NAT").click();
        h.run_steps(2);
        h.get_all_by_label("Remove").next().unwrap().click();
        // The window takes a few frames to shrink to the table's new height.
        h.run_steps(5);
        assert_eq!(h.query_all_by_value("2222").count(), 0);
        assert!(h.query_all_by_value("8080").count() > 0);
        h.get_by_role_and_label(Role::Button, "Save").click();
        h.run_steps(2);
        assert!(h.state().form.is_none(), "saved and closed");
        drop(h);
        let saved = lib.get("vm").unwrap();
        let specs: Vec<String> = saved.forwards.iter().map(|f| f.to_string()).collect();
        assert_eq!(specs, ["tcp:127.0.0.1:8080-:80"]);
        assert_eq!(saved.mac, def.mac);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn editing_keeps_disks_and_makes_paths_absolute() {
        let mut def = VmDef::new("vm", 1536, 2);
        def.disks.push(crate::library::DiskDef {
            path: "/img/vm.qcow2".into(),
            format: crate::library::DiskFormat::Qcow2,
            size: Some(1 << 30),
            preallocated: false,
            bus: crate::library::DiskBus::Virtio,
        });
        let mut f = VmForm::edit(&def);
        assert_eq!(f.memory, "1536M");
        f.memory = "2G".into();
        f.cdrom = "rel.iso".into();
        f.vnc = "auto".into();
        let d = f.to_def().unwrap();
        assert_eq!(d.memory_mib, 2048);
        assert_eq!(d.disks, def.disks);
        assert!(d.cdrom.unwrap().is_absolute());
        assert_eq!(d.vnc, "127.0.0.1:auto");
    }
}
