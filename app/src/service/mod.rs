//! The VM service: everything vmdesk does to VMs, for both front ends. The CLI
//! ([`crate::cli`]) parses a command, calls one method here and prints what it returns;
//! the GUI ([`crate::gui`]) calls the same methods from its worker threads and shows the
//! result. Neither reaches the library of definitions ([`Library`]) or the running VMs
//! ([`Runtime`]) on its own, and neither imports the other.
//!
//! Methods return what happened (the definition made, the VNC address, the images
//! deleted), never text for one front end; errors name the VM and the cause, and bad input
//! is a [`Usage`] error (the CLI's exit status 2).

mod create;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::library::{self, HostFacts, Library, LibraryError, VmDef};
use crate::nvram::{self, nvram_dir};
use crate::runtime::{self, ExistingImages, ReinstallPlan, Runtime, RuntimeError, VmState};

pub(crate) use create::absolute;
pub use create::{DiskOpt, NewVm, VmChange, images_dir, parse_disk_opt};

/// Bad input from the person: the CLI exits with status 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub(crate) fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Usage(msg.into()).into())
}

/// A VM as the lists show it: its definition (or why it cannot be read), its state, and
/// what a running one says about itself.
#[derive(Debug)]
pub struct VmStatus {
    pub name: String,
    pub def: Result<VmDef, String>,
    pub state: VmState,
    /// Where its VNC server listens, while it runs.
    pub vnc: Option<SocketAddr>,
    /// The firmware found nothing to boot.
    pub boot: Option<runtime::BootFailure>,
    /// The network card lost its link.
    pub net_down: bool,
}

/// A VM started: the warnings its definition raised, and its VNC address.
#[derive(Debug)]
pub struct Started {
    pub warnings: Vec<library::Warning>,
    pub vnc: Option<SocketAddr>,
}

/// What a VM's keyboard, power and pause controls ask of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The ACPI power button.
    PowerButton,
    Reset,
    Pause,
    Resume,
}

impl Control {
    fn command(self) -> &'static str {
        match self {
            Control::PowerButton => "powerdown",
            Control::Reset => "reset",
            Control::Pause => "pause",
            Control::Resume => "resume",
        }
    }
}

/// The VM library and the running VMs, as one service. Cheap to clone (worker threads
/// each take one).
#[derive(Clone)]
pub struct VmService {
    lib: Library,
    rt: Runtime,
    /// Whether the host has UEFI firmware (the `ovmf` package), asked each time it matters.
    ovmf: nvram::Require,
}

impl VmService {
    pub fn new(lib: Library, rt: Runtime) -> VmService {
        VmService {
            lib,
            rt,
            ovmf: vmm::firmware::uefi::require,
        }
    }

    /// The service on a host whose UEFI firmware is what `require` says (tests play a host
    /// without the `ovmf` package through this; nobody uninstalls it for a test).
    pub fn with_ovmf(mut self, require: nvram::Require) -> VmService {
        self.ovmf = require;
        self
    }

    /// Whether new VMs may have UEFI firmware here.
    pub fn ovmf_available(&self) -> bool {
        (self.ovmf)().is_ok()
    }

    /// The user's library and run dir (XDG locations).
    pub fn open_default() -> anyhow::Result<VmService> {
        Ok(VmService::new(
            Library::open_default()?,
            Runtime::open_default(),
        ))
    }

    /// A VM's definition; an unknown name or a broken definition is bad input.
    pub fn get(&self, name: &str) -> anyhow::Result<VmDef> {
        self.lib.get(name).map_err(|e| match e {
            LibraryError::NotFound(_) | LibraryError::Invalid(_) => Usage(e.to_string()).into(),
            e => e.into(),
        })
    }

    /// Whether a VM of that name is defined (its file exists, even broken).
    pub fn exists(&self, name: &str) -> bool {
        self.lib.path_of(name).exists()
    }

    pub fn state(&self, name: &str) -> VmState {
        self.rt.state(name)
    }

    /// The VM's log (the VMM's output), for people to look at.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.rt.log_path(name)
    }

    /// The library's folder (the GUI keeps its first-run marker beside it).
    pub fn library_dir(&self) -> &Path {
        self.lib.dir()
    }

    /// Every VM with its state, in the library's order.
    pub fn list(&self) -> anyhow::Result<Vec<VmStatus>> {
        Ok(self
            .lib
            .list()?
            .into_iter()
            .map(|e| {
                let state = self.rt.state(&e.name);
                let live = state.is_live();
                let status = live.then(|| self.rt.live_status(&e.name)).flatten();
                VmStatus {
                    vnc: live.then(|| self.rt.vnc_addr(&e.name)).flatten(),
                    boot: status.as_ref().and_then(runtime::BootFailure::from_status),
                    net_down: status.as_ref().is_some_and(runtime::link_down),
                    def: e.def.map_err(|err| err.to_string()),
                    name: e.name,
                    state,
                }
            })
            .collect())
    }

    /// Fails unless `name` is defined and running (or paused).
    pub fn ensure_live(&self, name: &str) -> anyhow::Result<()> {
        // A VM whose definition broke while it ran is still running: only the name must exist.
        if !self.exists(name) {
            self.get(name)?;
        }
        match self.rt.state(name) {
            s if s.is_live() => Ok(()),
            VmState::Crashed { why, log_tail } => {
                bail!("'{name}' is not running: it crashed: {why}\n{log_tail}")
            }
            _ => bail!("'{name}' is not running"),
        }
    }

    /// A running VM's VNC server.
    pub fn vnc_addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.ensure_live(name)?;
        self.rt
            .vnc_addr(name)
            .with_context(|| format!("'{name}' has no VNC server"))
    }

    pub fn start(&self, name: &str) -> anyhow::Result<Started> {
        let def = self.get(name)?;
        let warnings = library::validate(&def, &HostFacts::detect())
            .map_err(|e| Usage(format!("'{name}': {e}")))?;
        nvram::check_for_start(&def, self.ovmf)?;
        let vmm = runtime::find_vmm()?;
        let vnc = self.rt.start(&def, &vmm)?;
        Ok(Started { warnings, vnc })
    }

    /// Defines the demo VM if need be (see [`crate::demo::prepare`]); true when it is not
    /// running and should be started.
    pub fn prepare_demo(&self) -> anyhow::Result<bool> {
        Ok(crate::demo::prepare(&self.lib, &self.rt)?.1)
    }

    pub fn control(&self, name: &str, control: Control) -> anyhow::Result<()> {
        self.ensure_live(name)?;
        self.rt.command(name, control.command(), json!({}))?;
        Ok(())
    }

    /// After the power button: waits up to `timeout` for the VM to go; false if it did not.
    pub fn wait_powered_off(&self, name: &str, timeout: Duration) -> bool {
        if !self.rt.wait_gone(name, timeout) {
            return false;
        }
        self.rt.clean(name);
        true
    }

    /// Forces a VM off (its VMM killed after `grace`).
    pub fn destroy(&self, name: &str, grace: Duration) -> anyhow::Result<()> {
        self.ensure_live(name)?;
        self.rt.destroy(name, grace)?;
        Ok(())
    }

    /// Deletes a stopped VM, with `delete_disks` its images too, and then the linked-clone
    /// bases no VM needs any more; its UEFI variable store goes either way (it is the VM's,
    /// not a disk of the person's). Returns the files deleted.
    pub fn delete(&self, name: &str, delete_disks: bool) -> anyhow::Result<Vec<PathBuf>> {
        if self.rt.state(name).is_live() {
            bail!("'{name}' is running: stop it first (vmdesk destroy {name})");
        }
        let mut deleted = Vec::new();
        let mut backings = Vec::new();
        // A definition that does not parse cannot say where its store is: the one vmdesk
        // would have made for it, named after it, is its.
        let mut store = nvram_dir().ok().map(|d| nvram::store_path(&d, name));
        match self.lib.get(name) {
            Ok(def) if delete_disks => {
                store = def.efi_vars.clone();
                let images: Vec<PathBuf> = def.disks.iter().map(|d| d.path.clone()).collect();
                backings = crate::linked_clone::backings_of(&images);
                for d in &def.disks {
                    match std::fs::remove_file(&d.path) {
                        Ok(()) => deleted.push(d.path.clone()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("'{name}': cannot delete {}", d.path.display())
                            });
                        }
                    }
                }
            }
            Ok(def) => store = def.efi_vars,
            Err(LibraryError::NotFound(_)) | Err(LibraryError::Invalid(_)) => {
                return Err(self.get(name).unwrap_err());
            }
            // A broken definition can be deleted, but its disks are unknown.
            Err(e) if delete_disks => {
                bail!(
                    "'{name}': {e}; cannot tell which disks are its (delete without --delete-disks)"
                )
            }
            Err(_) => {}
        }
        self.lib.remove(name)?;
        self.rt.remove_all(name);
        deleted.extend(crate::linked_clone::remove_unused_bases(
            &self.lib, backings,
        )?);
        if let Some(p) = store {
            deleted.extend(nvram::remove(name, &p)?);
        }
        Ok(deleted)
    }

    /// A copy of a stopped VM under `new_name`: its disks copied whole
    /// ([`crate::clone::clone_vm`]), or with `linked` shared through qcow2 overlays on a
    /// read-only base ([`crate::linked_clone::clone_linked`]; `progress` is not called).
    pub fn clone_vm(
        &self,
        name: &str,
        new_name: &str,
        linked: bool,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
        let dirs = crate::clone::Dirs::open_default()?;
        if linked {
            return crate::linked_clone::clone_linked(&self.lib, &self.rt, &dirs, name, new_name);
        }
        crate::clone::clone_vm(&self.lib, &self.rt, &dirs, name, new_name, progress)
    }

    /// A stopped VM renamed, its files following (see [`crate::clone::rename_vm`]).
    pub fn rename(&self, name: &str, new_name: &str) -> anyhow::Result<VmDef> {
        let dirs = crate::clone::Dirs::open_default()?;
        crate::clone::rename_vm(&self.lib, &self.rt, &dirs, name, new_name)
    }

    /// Saves an edited definition: refused while the VM runs, or when its file changed
    /// since `original` was read (another window or the CLI saved meanwhile). A new name
    /// takes the VM's images, log, serial output and UEFI variables along, as
    /// [`VmService::rename`] does (a new VM of the old name must not inherit them). A switch
    /// to UEFI makes the VM's variable store if it has none; a switch to BIOS keeps it (see
    /// [`crate::nvram`]). Returns the new definition's warnings.
    pub fn save_edit(
        &self,
        original: &VmDef,
        new: &VmDef,
        host: &HostFacts,
    ) -> anyhow::Result<Vec<library::Warning>> {
        let old = &original.name;
        if self.rt.state(old).is_live() {
            bail!("'{old}' is running: shut it down before editing it");
        }
        if self.lib.get(old)? != *original {
            bail!(
                "'{old}' was changed elsewhere since this dialog opened: close it and edit again"
            );
        }
        let mut warnings =
            library::validate(new, host).map_err(|e| anyhow::anyhow!("'{old}': {e}"))?;
        warnings.extend(self.lib.network_clashes(new, old));
        let dirs = crate::clone::Dirs::open_default()?;
        let mut new = new.clone();
        let made = nvram::ensure(&mut new, &dirs.nvram, self.ovmf)?;
        let saved = if new.name == *old {
            self.lib.update(&new).map_err(anyhow::Error::from)
        } else {
            crate::clone::save_renamed(&self.lib, &self.rt, &dirs, old, &mut new)
        };
        if let Err(e) = saved {
            if let Some(p) = made {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        Ok(warnings)
    }

    /// Checks a reinstall could go ahead (nothing touched).
    pub fn plan_reinstall(
        &self,
        name: &str,
        existing: ExistingImages,
    ) -> anyhow::Result<ReinstallPlan> {
        let def = self.get(name)?;
        Ok(self.rt.plan_reinstall(&def, existing)?)
    }

    /// Fresh disks and a start from the CD; returns what was wiped and kept, and the VNC
    /// address.
    pub fn reinstall(
        &self,
        name: &str,
        existing: ExistingImages,
    ) -> anyhow::Result<(ReinstallPlan, Option<SocketAddr>)> {
        let def = self.get(name)?;
        // Every check that can fail without touching a disk runs before the VMM is looked
        // for, and the VMM before anything is wiped.
        self.rt.plan_reinstall(&def, existing)?;
        nvram::check_for_start(&def, self.ovmf)?;
        let vmm = runtime::find_vmm()?;
        Ok(self.rt.reinstall(&def, existing, &vmm)?)
    }

    /// Ejects (`iso` None) or changes the VM's CD: on a running VM through its control
    /// socket, and in its definition either way, so the next start sees the same. Returns
    /// what was done, in a sentence.
    pub fn set_media(&self, name: &str, iso: Option<PathBuf>) -> anyhow::Result<String> {
        let mut def = self.get(name)?;
        if iso.is_none() && def.cdrom.is_none() {
            return usage(format!("'{name}' has no CD in its drive: nothing to eject"));
        }
        let iso = iso.map(|p| std::path::absolute(&p).unwrap_or(p));
        if let Some(p) = &iso
            && !p.is_file()
        {
            return usage(format!("'{name}': {}: no such file", p.display()));
        }
        let mut note = "";
        if self.rt.state(name).is_live() {
            let r = match &iso {
                None => self.rt.command(name, "eject", json!({})),
                Some(p) => self.rt.command(name, "change-media", json!({ "path": p })),
            };
            match r {
                Ok(_) => {}
                // Started without an ISO, it has no drive this run: the definition still changes.
                Err(RuntimeError::Refused { class, .. }) if class == "DeviceNotFound" => {
                    note = " (it has no CD drive until its next start)";
                }
                Err(e) => return Err(e.into()),
            }
        }
        def.cdrom = iso.clone();
        self.lib.update(&def)?;
        Ok(match iso {
            None => format!("ejected the CD of '{name}'{note}"),
            Some(p) => format!("'{name}' now has {} in its CD drive{note}", p.display()),
        })
    }

    /// The running VM's screen as a PNG at `out` (written by the VMM: a full path).
    pub fn screenshot(&self, name: &str, out: &Path) -> anyhow::Result<()> {
        self.ensure_live(name)?;
        let def = self.get(name)?;
        runtime::screenshot(&self.rt, &def, out)?;
        Ok(())
    }

    /// The running VM's serial console (COM1 through its VMM's serial socket): the recent
    /// output comes first, then the guest's as it comes; what is written goes to COM1.
    pub fn serial_connect(
        &self,
        name: &str,
    ) -> Result<std::os::unix::net::UnixStream, crate::serial::SerialError> {
        crate::serial::connect(&self.rt, name)
    }

    /// Waits up to `timeout` for the VM's VMM to be gone; false if it is still there.
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> bool {
        self.rt.wait_gone(name, timeout)
    }

    /// Keys to a running VM, as X keysym names in chords (`ctrl-alt-Delete`), each held
    /// `hold_ms`. The names are checked first (bad input, whether or not the VM runs).
    pub fn send_key(&self, name: &str, keys: &[String], hold_ms: u64) -> anyhow::Result<()> {
        let chords = display::keymap::parse_chords(keys).map_err(|e| Usage(e.to_string()))?;
        if hold_ms > vmm::control::MAX_HOLD_TIME_MS {
            return usage(format!(
                "--hold-time {hold_ms}: at most {} ms",
                vmm::control::MAX_HOLD_TIME_MS
            ));
        }
        self.ensure_live(name)?;
        // The VMM answers once the last key is up: each chord takes twice the hold time.
        let typing = Duration::from_millis(hold_ms.saturating_mul(2 * chords.len() as u64));
        self.rt.command_within(
            name,
            "send-key",
            json!({ "keys": keys, "hold-time": hold_ms }),
            typing + Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Where the VM's VNC server is while it runs (or is paused), asked again before each
    /// of the console window's reconnections (a restarted VMM may listen elsewhere).
    pub fn vnc_follower(&self, name: &str) -> Arc<dyn Fn() -> Option<SocketAddr> + Send + Sync> {
        let (rt, name) = (self.rt.clone(), name.to_owned());
        Arc::new(move || {
            if rt.state(&name).is_live() {
                rt.vnc_addr(&name)
            } else {
                None
            }
        })
    }

    /// The console window's boot note: the firmware found nothing to boot, why its VMM
    /// thinks so, and how to fix it in the window.
    pub fn boot_note(&self, name: &str) -> Arc<dyn Fn() -> Option<String> + Send + Sync> {
        let (rt, name) = (self.rt.clone(), name.to_owned());
        Arc::new(move || {
            rt.boot_failure(&name)
                .map(|f| format!("{}. {}", f.message, f.gui_fix()))
        })
    }

    /// The running VM's screen, dumped by its VMM to a PNG in the run dir, handed to `read`
    /// and removed (the GUI's thumbnails).
    pub fn read_screen<T>(
        &self,
        name: &str,
        read: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<T, String> {
        let path = self.rt.dir().join(format!("{name}.thumb.png"));
        let r = self
            .rt
            .command(name, "screendump", json!({ "path": path }))
            .map_err(|e| e.to_string())
            .and_then(|_| read(&path));
        let _ = std::fs::remove_file(&path);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::NetMode;
    use std::io::{BufRead, BufReader, Write};

    #[test]
    fn media_changes_live_and_in_the_definition() {
        let root = std::env::temp_dir().join(format!("vmdesk-media-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        let vms = VmService::new(lib.clone(), rt.clone());
        let iso = root.join("a.iso");
        std::fs::write(&iso, [0u8; 2048]).unwrap();
        let mut def = VmDef::new("vm", 64, 1);
        def.cdrom = Some(root.join("old.iso"));
        lib.create(&def).unwrap();

        // Stopped: only the definition changes.
        let m = vms.set_media("vm", Some(iso.clone())).unwrap();
        assert!(m.contains("a.iso"), "{m}");
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso.clone()));
        let e = vms
            .set_media("vm", Some(root.join("nope.iso")))
            .unwrap_err();
        assert!(e.to_string().contains("'vm'") && e.to_string().contains("no such file"));
        assert!(e.is::<Usage>());
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso.clone()));
        let e = vms.set_media("nosuch", None).unwrap_err();
        assert!(e.to_string().contains("no VM named 'nosuch'"), "{e}");
        // Nothing to eject from a VM without a CD.
        lib.create(&VmDef::new("bare", 64, 1)).unwrap();
        let e = vms.set_media("bare", None).unwrap_err();
        assert!(e.to_string().contains("'bare' has no CD"), "{e}");

        // Running (a process whose command line names the socket, and a fake control
        // socket): the VMM is told first; a refusal leaves the definition alone.
        let listener = std::os::unix::net::UnixListener::bind(rt.socket_path("vm")).unwrap();
        let mut child = crate::runtime::fake_vmm(&rt, "vm");
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in [
                r#"{"return":{"status":"running"}}"#,
                r#"{"error":{"class":"GenericError","desc":"cannot eject: the medium is locked"}}"#,
                r#"{"return":{"status":"running"}}"#,
                r#"{"return":{}}"#,
            ] {
                let (s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                seen.push(line);
                (&s).write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
            seen
        });
        let e = vms.set_media("vm", None).unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso.clone()));
        let m = vms.set_media("vm", None).unwrap();
        assert!(m.contains("ejected"), "{m}");
        assert_eq!(lib.get("vm").unwrap().cdrom, None);
        let seen = server.join().unwrap();
        assert!(seen[1].contains("\"eject\""), "{seen:?}");
        assert!(seen[3].contains("\"eject\""), "{seen:?}");
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&root);
    }

    fn no_ovmf() -> Result<(), vmm::firmware::uefi::UefiError> {
        Err(vmm::firmware::uefi::UefiError::Missing(
            vmm::firmware::uefi::OVMF_CODE.into(),
        ))
    }

    fn new_vm(name: &str) -> NewVm {
        NewVm {
            name: Some(name.into()),
            memory: Some(64 << 20),
            cpus: None,
            disks: Vec::new(),
            cdrom: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            vnc: "none".into(),
            vnc_password_file: None,
            network: NetMode::None,
            forwards: Vec::new(),
            mac: None,
            firmware: None,
        }
    }

    /// A host without the ovmf package (played: nobody uninstalls it for a test): new VMs
    /// get BIOS, asking for UEFI is bad input naming the package, and a UEFI VM does not
    /// start, each in one line.
    #[test]
    fn without_ovmf_uefi_is_refused_in_one_line() {
        use crate::library::Firmware;
        let root = std::env::temp_dir().join(format!("vmdesk-noovmf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        let vms = VmService::new(lib.clone(), rt).with_ovmf(no_ovmf);
        assert!(!vms.ovmf_available());
        let mut a = new_vm("vm");
        assert_eq!(vms.resolve_firmware(&a).unwrap(), Firmware::Bios);
        a.firmware = Some(Firmware::Uefi);
        let e = vms.resolve_firmware(&a).unwrap_err();
        assert!(e.is::<Usage>(), "exit status 2");
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.contains("sudo apt-get install ovmf"), "{msg}");
        let e = vms.create(a, &mut |_, _| true).unwrap_err();
        assert!(e.is::<Usage>() && e.to_string() == msg, "{e}");
        assert!(!lib.path_of("vm").exists(), "nothing made");
        // A UEFI VM defined elsewhere: start says what is missing and how to get it.
        let mut def = VmDef::new("efi", 64, 1);
        def.network = NetMode::None;
        def.firmware = Firmware::Uefi;
        def.efi_vars = Some(root.join("efi_VARS.fd"));
        lib.create(&def).unwrap();
        let e = vms.start("efi").unwrap_err().to_string();
        assert!(e.starts_with("'efi' has UEFI firmware, but"), "{e}");
        assert!(e.contains("sudo apt-get install ovmf"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        // With OVMF, a store that is missing is said, with the fix, never made anew.
        let vms = VmService::new(lib.clone(), Runtime::at(root.join("run")));
        if vms.ovmf_available() {
            let e = vms.start("efi").unwrap_err().to_string();
            assert!(e.contains("efi_VARS.fd is missing"), "{e}");
            assert!(e.contains("vmdesk set efi --firmware uefi"), "{e}");
            assert!(!root.join("efi_VARS.fd").exists());
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn set_refuses_a_running_vm_and_keeps_its_definition() {
        let root = std::env::temp_dir().join(format!("vmdesk-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        let vms = VmService::new(lib.clone(), rt.clone());
        lib.create(&VmDef::new("vm", 64, 1)).unwrap();
        let before = lib.get("vm").unwrap();
        let mut child = crate::runtime::fake_vmm(&rt, "vm");
        let e = vms
            .set(VmChange {
                name: "vm".into(),
                network: Some(NetMode::None),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("'vm' is running: shut it down first"),
            "{e}"
        );
        assert!(!e.is::<Usage>(), "a failure, not bad usage");
        assert_eq!(lib.get("vm").unwrap(), before);
        let _ = child.kill();
        let _ = child.wait();
        // Stopped: done.
        let (def, warnings) = vms
            .set(VmChange {
                name: "vm".into(),
                network: Some(NetMode::None),
                ..Default::default()
            })
            .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(def.network, NetMode::None);
        assert_eq!(lib.get("vm").unwrap(), def);
        let _ = std::fs::remove_dir_all(&root);
    }
}
