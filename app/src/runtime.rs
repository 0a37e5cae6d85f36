//! Running VMs: one `vmdesk-vmm` process per VM, found again through files in
//! `$XDG_RUNTIME_DIR/vmdesk/`:
//!
//! - `<name>.sock`: the VMM's control socket (JSON lines; see `vmm::control`);
//! - `<name>.pid`: the VMM's pid, written by its supervisor;
//! - `<name>.log`: the VMM's stdout and stderr (the `vnc: listening on …` line is read here);
//! - `<name>.serial`: the guest's COM1, the whole run's output;
//! - `<name>.serial-sock`: COM1 for viewers (`vmdesk serial`, the window's serial
//!   console), served by the VMM (`--serial-socket`); not `.serial.sock`, which is the
//!   control socket of a VM named `<name>.serial`;
//! - `<name>.exit`: how the VMM ended (`exit N` or `signal N`), written by its supervisor.
//! - `<name>.thumb.png`: the window's latest screendump for its thumbnail (removed once read).
//!
//! A VM must outlive the app that started it, and its end must be known even when no app is
//! running then. So `start` spawns a tiny supervisor (this same binary, `vmdesk __supervise`)
//! in a new session (setsid: no terminal hang-up reaches it); the supervisor spawns the VMM,
//! writes its pid, waits for it and writes the exit record. The state of a VM is then:
//! running or paused (the pid is alive; its socket says which), stopped (no pid, or a clean
//! `exit 0`), or crashed (the pid is gone without a clean exit record; the log tail says why).
//!
//! Not handled: two apps starting the same VM in the same instant (the second VMM fails to
//! bind the control socket and exits, which start reports as a failure).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use thiserror::Error;

use crate::library::{Firmware, NetMode, VmDef};

/// The line `vmdesk-vmm` prints on stderr once its VNC server listens.
const VNC_LINE: &str = "vnc: listening on ";
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("'{0}' is already running")]
    AlreadyRunning(String),
    #[error("'{0}' is not running")]
    NotRunning(String),
    #[error("'{0}' is running: shut it down (or force it off) first")]
    Running(String),
    #[error("'{name}' failed to start: {why}")]
    StartFailed { name: String, why: String },
    #[error("'{name}': the VMM refused '{command}': {desc} ({class})")]
    Refused {
        name: String,
        command: String,
        class: String,
        desc: String,
    },
    #[error("'{name}': control socket {}: {why}", path.display())]
    Control {
        name: String,
        path: PathBuf,
        why: String,
    },
    #[error(
        "cannot find vmdesk-vmm next to {} or on PATH (build it: cargo build -p vmm)",
        exe.display()
    )]
    NoVmm { exe: PathBuf },
    #[error("'{name}': cannot take a screenshot: {why}")]
    Screenshot { name: String, why: String },
    #[error(
        "'{0}' has no installer ISO (or kernel) to reinstall from: set one first (the Edit dialog, or change the CD while it runs)"
    )]
    NoInstallMedia(String),
    #[error("'{name}': the installer ISO {} is gone: {why}", path.display())]
    InstallMediaMissing {
        name: String,
        path: PathBuf,
        why: String,
    },
    #[error(
        "'{name}': {} {} not created by vmdesk (added with path=), so reinstall will not wipe {}: pass --force to wipe {} too, or --keep-existing to reinstall leaving {} as {}",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        if paths.len() == 1 { "was" } else { "were" },
        if paths.len() == 1 { "it" } else { "them" },
        if paths.len() == 1 { "it" } else { "them" },
        if paths.len() == 1 { "it" } else { "they" },
        if paths.len() == 1 { "it is" } else { "they are" },
    )]
    NotOurDisks { name: String, paths: Vec<PathBuf> },
    #[error("'{name}': cannot make a fresh disk: {source}")]
    FreshDisk {
        name: String,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    Stopped,
    Running,
    Paused,
    /// The VMM ended without a clean exit: `why` is its exit record, `log_tail` its last words.
    Crashed {
        why: String,
        log_tail: String,
    },
}

impl VmState {
    pub fn is_live(&self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }

    pub fn label(&self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Crashed { .. } => "crashed",
        }
    }
}

/// A running VM whose firmware found nothing to boot: what the VMM's `status` says about
/// it (its `boot` object), and how to get out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFailure {
    /// The VMM's words: each device tried and why it did not boot.
    pub message: String,
    /// The VM has a CD drive (the firmware tried it), so an ISO can go in while it runs.
    pub cd_drive: bool,
}

/// The short note the VM list shows beside the state.
pub const NO_BOOT_NOTE: &str = "no bootable device";

/// The note for a running VM whose network card has lost its link (its passt ended, say):
/// the guest runs on without a network, and the VM's log says why.
pub const NET_DOWN_NOTE: &str = "network down";

/// Whether a `status` reply's `net` object says the card's link is down.
pub fn link_down(status: &Value) -> bool {
    status["net"]["link"] == "down"
}

impl BootFailure {
    /// From a `status` reply's `return` value: `Some` when its boot failed.
    pub fn from_status(status: &Value) -> Option<BootFailure> {
        let boot = &status["boot"];
        if boot["state"] != "failed" {
            return None;
        }
        Some(BootFailure {
            message: boot["message"]
                .as_str()
                .unwrap_or("No bootable device")
                .to_string(),
            cd_drive: boot["tried"]
                .as_array()
                .is_some_and(|t| t.iter().any(|d| d["device"] == "cdrom")),
        })
    }

    /// How to fix it with the CLI.
    pub fn cli_fix(&self, name: &str) -> String {
        if self.cd_drive {
            format!(
                "to fix it, put an installer ISO in its CD drive and restart the boot: \
                 vmdesk insert {name} ISO; vmdesk reset {name}"
            )
        } else {
            format!(
                "to fix it, give it an installer ISO: vmdesk destroy {name}; vmdesk insert \
                 {name} ISO; vmdesk start {name}"
            )
        }
    }

    /// How to fix it in the window.
    pub fn gui_fix(&self) -> &'static str {
        if self.cd_drive {
            "To fix it, choose an installer ISO with \"CD…\", then press \"Reset\"."
        } else {
            "To fix it, press \"Force off\", choose an installer ISO with \"CD…\", then \"Start\"."
        }
    }
}

/// What reinstall does with disk images vmdesk did not create (`--disk path=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExistingImages {
    /// Refuse to reinstall: they are the user's, not ours to wipe.
    #[default]
    Refuse,
    /// Leave them as they are (a data disk kept across reinstalls).
    Keep,
    /// Wipe them too: fresh images of their current virtual size and format.
    Wipe,
}

/// What a reinstall does, worked out before anything is touched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReinstallPlan {
    /// Images replaced by fresh, empty ones.
    pub wipe: Vec<crate::disk::FreshImage>,
    /// Images left as they are.
    pub keep: Vec<PathBuf>,
}

/// The runtime directory and the VMM binary.
#[derive(Clone, Debug)]
pub struct Runtime {
    dir: PathBuf,
}

impl Runtime {
    /// `$XDG_RUNTIME_DIR/vmdesk`, or a per-user directory under the temp dir when the
    /// session has no runtime dir (a cron job, a bare ssh).
    pub fn open_default() -> Runtime {
        let base = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join("vmdesk"),
            _ => std::env::temp_dir().join(format!("vmdesk-{}", nix::unistd::getuid())),
        };
        Runtime::at(base)
    }

    pub fn at(dir: impl Into<PathBuf>) -> Runtime {
        Runtime { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }
    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.file(name, "sock")
    }
    pub fn pid_path(&self, name: &str) -> PathBuf {
        self.file(name, "pid")
    }
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.file(name, "log")
    }
    pub fn exit_path(&self, name: &str) -> PathBuf {
        self.file(name, "exit")
    }
    pub fn serial_path(&self, name: &str) -> PathBuf {
        self.file(name, "serial")
    }
    pub fn serial_socket_path(&self, name: &str) -> PathBuf {
        self.file(name, "serial-sock")
    }

    /// The VMM's pid if that process is alive and is this VM's VMM (its command line names
    /// this VM's socket: a recycled pid is not mistaken for it).
    pub fn live_pid(&self, name: &str) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pid_path(name)).ok()?;
        let pid: i32 = text.trim().parse().ok().filter(|&p| p > 0)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let sock = self.socket_path(name);
        let ours = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == sock.as_os_str().as_encoded_bytes());
        // A zombie still has a cmdline until reaped, but kill(0) alone would call it alive:
        // check its state too.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        (ours && !zombie).then_some(Pid::from_raw(pid))
    }

    pub fn state(&self, name: &str) -> VmState {
        if self.live_pid(name).is_some() {
            return match self.command(name, "status", json!({})) {
                Ok(v) if v["status"] == "paused" => VmState::Paused,
                // Alive but not answering (still starting, or busy): it is running.
                _ => VmState::Running,
            };
        }
        let pid_file = self.pid_path(name).exists();
        let mut record = std::fs::read_to_string(self.exit_path(name)).ok();
        if record.is_none() && pid_file {
            // The VMM just ended and its supervisor is reaping it: give it a moment to
            // write how.
            let deadline = Instant::now() + Duration::from_millis(500);
            while record.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                record = std::fs::read_to_string(self.exit_path(name)).ok();
            }
        }
        match record.as_deref().map(str::trim) {
            Some("exit 0") => VmState::Stopped,
            Some(r) => VmState::Crashed {
                why: describe_exit(r),
                log_tail: self.log_tail(name, 20),
            },
            None if pid_file => VmState::Crashed {
                why: "the VMM is gone and left no exit record (it and its supervisor were killed)"
                    .into(),
                log_tail: self.log_tail(name, 20),
            },
            None => VmState::Stopped,
        }
    }

    /// When the VM runs and its firmware found nothing to boot, what its VMM says about it
    /// (`None` also when the VMM does not answer).
    pub fn boot_failure(&self, name: &str) -> Option<BootFailure> {
        BootFailure::from_status(&self.live_status(name)?)
    }

    /// A running VM's `status` reply (`None` when it is not running or does not answer).
    pub fn live_status(&self, name: &str) -> Option<Value> {
        self.live_pid(name)?;
        self.command(name, "status", json!({})).ok()
    }

    /// The last `lines` lines of the VMM's log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read(self.log_path(name)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where the VM's VNC server listens, from its log.
    pub fn vnc_addr(&self, name: &str) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(self.log_path(name)).ok()?;
        parse_vnc_line(&text)
    }

    /// Sends one control command and returns its `return` value.
    pub fn command(&self, name: &str, execute: &str, args: Value) -> Result<Value, RuntimeError> {
        // A screendump of a large screen takes a moment; a VMM that does not answer in
        // this long is stuck, and the caller should not be.
        self.command_within(name, execute, args, Duration::from_secs(10))
    }

    /// [`Runtime::command`] for a command that takes its time (`send-key` answers once the
    /// last key is up): gives up after `timeout`.
    pub fn command_within(
        &self,
        name: &str,
        execute: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, RuntimeError> {
        let path = self.socket_path(name);
        let fail = |why: String| RuntimeError::Control {
            name: name.into(),
            path: path.clone(),
            why,
        };
        let mut req = match args {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        req.insert("execute".into(), Value::String(execute.into()));
        let stream = UnixStream::connect(&path).map_err(|e| fail(e.to_string()))?;
        let timeout = Some(timeout);
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|e| fail(e.to_string()))?;
        let mut line = serde_json::to_string(&Value::Object(req)).expect("JSON of a map");
        line.push('\n');
        (&stream)
            .write_all(line.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(&stream)
            .read_line(&mut answer)
            .map_err(|e| fail(e.to_string()))?;
        if answer.is_empty() {
            return Err(fail("closed without an answer".into()));
        }
        let v: Value = serde_json::from_str(&answer)
            .map_err(|e| fail(format!("bad answer {answer:?}: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(RuntimeError::Refused {
                name: name.into(),
                command: execute.into(),
                class: err["class"].as_str().unwrap_or("?").into(),
                desc: err["desc"].as_str().unwrap_or("?").into(),
            });
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }

    /// Starts `def` detached and waits until its VNC server listens (or, with no VNC,
    /// its control socket answers). Returns the VNC address.
    pub fn start(&self, def: &VmDef, vmm: &Path) -> Result<Option<SocketAddr>, RuntimeError> {
        self.start_with(def, vmm, &[])
    }

    /// [`Runtime::start`] with extra `vmdesk-vmm` options for this run only.
    fn start_with(
        &self,
        def: &VmDef,
        vmm: &Path,
        extra: &[&str],
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        let name = def.name.as_str();
        if self.state(name).is_live() {
            return Err(RuntimeError::AlreadyRunning(name.into()));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        self.clean(name);
        // The last run's log (its VNC line among them) must not be read as this run's;
        // keep it for reading as `.log.old`.
        let _ = std::fs::rename(self.log_path(name), self.file(name, "log.old"));
        let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
        let mut cmd = Command::new(exe);
        cmd.arg("__supervise")
            .arg(&self.dir)
            .arg(name)
            .arg(vmm)
            .args(self.vmm_args(def))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(io(vmm))?;
        // Reap the supervisor when it ends, so a long-lived GUI collects no zombies.
        std::thread::spawn(move || child.wait());

        let deadline = Instant::now() + Duration::from_secs(30);
        let wants_vnc = def.vnc != "none";
        loop {
            if let Ok(r) = std::fs::read_to_string(self.exit_path(name)) {
                let tail = self.log_tail(name, 5);
                return Err(RuntimeError::StartFailed {
                    name: name.into(),
                    why: format!(
                        "{}{}",
                        describe_exit(r.trim()),
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!(":\n{tail}")
                        }
                    ),
                });
            }
            let has_pid = self.pid_path(name).exists();
            if wants_vnc {
                if let Some(addr) = self.vnc_addr(name).filter(|_| has_pid) {
                    return Ok(Some(addr));
                }
            } else if self.command(name, "status", json!({})).is_ok() {
                return Ok(None);
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::StartFailed {
                    name: name.into(),
                    why: format!(
                        "no sign of life after 30 s; see {}",
                        self.log_path(name).display()
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Checks that `def` can be reinstalled and works out what happens to each disk,
    /// touching nothing: the VM is stopped, it has install media (an ISO that opens, or a
    /// kernel for direct boot), and every image vmdesk did not create is accounted for by
    /// `existing`.
    pub fn plan_reinstall(
        &self,
        def: &VmDef,
        existing: ExistingImages,
    ) -> Result<ReinstallPlan, RuntimeError> {
        let name = def.name.as_str();
        if self.state(name).is_live() {
            return Err(RuntimeError::Running(name.into()));
        }
        match (&def.cdrom, &def.kernel) {
            (Some(iso), _) => {
                if let Err(e) = std::fs::File::open(iso) {
                    return Err(RuntimeError::InstallMediaMissing {
                        name: name.into(),
                        path: iso.clone(),
                        why: e.to_string(),
                    });
                }
            }
            (None, Some(_)) => {}
            (None, None) => return Err(RuntimeError::NoInstallMedia(name.into())),
        }
        let mut plan = ReinstallPlan::default();
        let mut foreign = Vec::new();
        for d in &def.disks {
            let format = d.format.into();
            let fresh = |size| crate::disk::FreshImage {
                path: d.path.clone(),
                format,
                size,
                prealloc: if d.preallocated {
                    vmm::disk::Preallocation::Full
                } else {
                    vmm::disk::Preallocation::Off
                },
            };
            match (d.size, existing) {
                (Some(size), _) => plan.wipe.push(fresh(size)),
                (None, ExistingImages::Refuse) => foreign.push(d.path.clone()),
                (None, ExistingImages::Keep) => plan.keep.push(d.path.clone()),
                (None, ExistingImages::Wipe) => {
                    let size = crate::disk::virtual_size(&d.path, format).map_err(|e| {
                        RuntimeError::FreshDisk {
                            name: name.into(),
                            source: std::io::Error::new(
                                e.kind(),
                                format!("{}: {e}", d.path.display()),
                            ),
                        }
                    })?;
                    plan.wipe.push(fresh(size));
                }
            }
        }
        if !foreign.is_empty() {
            return Err(RuntimeError::NotOurDisks {
                name: name.into(),
                paths: foreign,
            });
        }
        Ok(plan)
    }

    /// What `virt-install --reinstall` does: replaces the VM's disks with fresh ones of the
    /// same size and format (per [`Runtime::plan_reinstall`]) and starts it booting from the
    /// CD first. Nothing is wiped unless every check passed.
    pub fn reinstall(
        &self,
        def: &VmDef,
        existing: ExistingImages,
        vmm: &Path,
    ) -> Result<(ReinstallPlan, Option<SocketAddr>), RuntimeError> {
        let plan = self.plan_reinstall(def, existing)?;
        crate::disk::replace_with_fresh(&plan.wipe).map_err(|source| RuntimeError::FreshDisk {
            name: def.name.clone(),
            source,
        })?;
        // The CD first, for this boot only: a disk that was kept may boot, and the
        // installer must start anyway; when it reboots at its end, the machine boots by
        // the VM's usual order, the disk first (see `vmm_args`).
        let boot: &[&str] = match &def.cdrom {
            None => &[],
            Some(_) => &["--boot-once", "cdrom"],
        };
        let addr = self.start_with(def, vmm, boot)?;
        Ok((plan, addr))
    }

    /// The `vmdesk-vmm` options for `def`, with this runtime dir's socket and serial file.
    pub fn vmm_args(&self, def: &VmDef) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |k: &str, v: std::ffi::OsString| {
            a.push(k.into());
            a.push(v);
        };
        push("--memory", format!("{}M", def.memory_mib).into());
        push("--cpus", def.cpus.to_string().into());
        // BIOS is the VMM's default: a BIOS VM's command line is what it was before UEFI.
        if def.firmware == Firmware::Uefi {
            push("--firmware", "uefi".into());
            // Without one the VMM would keep the variables in memory only; the service
            // refuses to start a UEFI VM whose store is missing (`nvram::check_for_start`).
            if let Some(p) = &def.efi_vars {
                push("--efi-vars", p.into());
            }
        }
        push("--control", self.socket_path(&def.name).into());
        let mut serial = std::ffi::OsString::from("file:");
        serial.push(self.serial_path(&def.name));
        push("--serial", serial);
        push("--serial-socket", self.serial_socket_path(&def.name).into());
        push("--vnc", def.vnc.clone().into());
        if let Some(p) = &def.vnc_password_file {
            push("--vnc-password-file", p.into());
        }
        for d in &def.disks {
            let mut spec = d.path.clone().into_os_string();
            spec.push(format!(
                ",format={},if={}",
                d.format.as_str(),
                d.bus.as_str()
            ));
            push("--disk", spec);
        }
        if let Some(iso) = &def.cdrom {
            push("--cdrom", iso.into());
            // The boot order after an install: the disk first, then the CD. SeaBIOS goes
            // on to the CD when a disk has no boot signature, so a new VM's empty disk
            // boots the installer; once the installer has put a boot loader on the disk,
            // its reboot at the end and every start after that boot the installed system,
            // with the CD still in the drive (virt-install's answer is to boot the disk
            // after the install phase; ours needs no state that could disagree with the
            // disk). `reinstall` boots the CD first once instead.
            if !def.disks.is_empty() {
                push("--boot", "disk,cdrom".into());
            }
        }
        if let Some(k) = &def.kernel {
            push("--kernel", k.into());
        }
        if let Some(i) = &def.initrd {
            push("--initrd", i.into());
        }
        if let Some(c) = &def.cmdline {
            push("--cmdline", c.into());
        }
        // A VM without a network gets no network options: vmdesk-vmm's default is none.
        if def.network != NetMode::None {
            push("--net", def.network.to_string().into());
            push("--mac", def.mac.to_string().into());
            for f in &def.forwards {
                push("--forward", f.to_string().into());
            }
        }
        a
    }

    /// Stops the VM now: `quit`, then SIGKILL if it has not gone after `grace`. Leaves the
    /// VM stopped (its runtime files but the log removed).
    pub fn destroy(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(pid) = self.live_pid(name) else {
            return Err(RuntimeError::NotRunning(name.into()));
        };
        let _ = self.command(name, "quit", json!({}));
        if !self.wait_gone(name, grace) {
            tracing::warn!("{name}: did not quit in {grace:?}: SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
            self.wait_gone(name, Duration::from_secs(5));
        }
        self.clean(name);
        Ok(())
    }

    /// Waits until the VM's VMM is gone; true if it went within `timeout`. Then also (up
    /// to 2 s) for its supervisor's record of how it ended: the VMM counts as gone from the
    /// moment it is a zombie, the supervisor writes the record after reaping it, and a
    /// clean-up (delete, destroy) done in between would see the record reappear after it.
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.live_pid(name).is_none() {
                let recorded = Instant::now() + Duration::from_secs(2);
                while !self.exit_path(name).exists() && Instant::now() < recorded {
                    std::thread::sleep(POLL);
                }
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Forgets a stopped VM's run: sockets, pid and exit record (the log stays for
    /// reading). A VMM removes its sockets when it ends; one that was killed leaves them.
    pub fn clean(&self, name: &str) {
        for ext in ["sock", "serial-sock", "pid", "exit"] {
            let _ = std::fs::remove_file(self.file(name, ext));
        }
    }

    /// Removes every runtime file of a VM, log included (for `delete`).
    /// Moves a stopped VM's log, serial output and thumbnail to the names of `new`.
    pub fn rename_files(&self, old: &str, new: &str) {
        for ext in ["log", "log.old", "serial", "thumb.png"] {
            let _ = std::fs::rename(self.file(old, ext), self.file(new, ext));
        }
        self.clean(old);
    }

    pub fn remove_all(&self, name: &str) {
        self.clean(name);
        for ext in ["log", "log.old", "serial", "thumb.png"] {
            let _ = std::fs::remove_file(self.file(name, ext));
        }
    }
}

/// Saves the VM's screen as a PNG: the VMM's `screendump` when it has one, else one full
/// frame read through its VNC port (the door every client uses), with the VM's password.
pub fn screenshot(rt: &Runtime, def: &VmDef, out: &Path) -> Result<(), RuntimeError> {
    let name = def.name.as_str();
    match rt.command(name, "screendump", json!({ "path": out })) {
        Ok(_) => return Ok(()),
        Err(RuntimeError::Refused { class, .. })
            if class == "DeviceNotFound" || class == "CommandNotFound" => {}
        Err(e) => return Err(e),
    }
    let fail = |why: String| RuntimeError::Screenshot {
        name: name.into(),
        why,
    };
    let addr = rt
        .vnc_addr(name)
        .ok_or_else(|| fail("it has no screendump and no VNC server".into()))?;
    let mut opts = display::client::ClientOptions::default();
    if let Some(p) = &def.vnc_password_file {
        opts.password = Some(
            display::rfb::Password::from_file(p)
                .map_err(|e| fail(format!("{}: {e}", p.display())))?,
        );
    }
    let mut client = display::client::Client::connect(addr, &opts)
        .map_err(|e| fail(format!("VNC {addr}: {e}")))?;
    client
        .set_pixel_format(display::pixel::PixelFormat::NATIVE)
        .and_then(|()| client.set_encodings(&[0]))
        .map_err(|e| fail(format!("VNC {addr}: {e}")))?;
    client
        .update(false)
        .map_err(|e| fail(format!("VNC {addr}: {e}")))?;
    let fb = &client.fb;
    write_png(out, fb.width as u32, fb.height as u32, &fb.pixels).map_err(|e| RuntimeError::Io {
        path: out.to_path_buf(),
        source: e,
    })
}

/// Writes 0x00RRGGBB pixels as an 8-bit RGB PNG.
pub fn write_png(out: &Path, width: u32, height: u32, pixels: &[u32]) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut enc = png::Encoder::new(file, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    let rgb: Vec<u8> = pixels
        .iter()
        .flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8])
        .collect();
    w.write_image_data(&rgb).map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)
}

/// "exit 1" → words for a person.
fn describe_exit(record: &str) -> String {
    match record.split_once(' ') {
        Some(("exit", "1")) => "the VMM exited with status 1 (the guest failed)".into(),
        // Bad options, or what they name is not there (an image, passt, a TAP device): the
        // VMM's own line, in the log tail after this, says which.
        Some(("exit", "2")) => {
            "the VMM exited with status 2 (it refused its options or could not set them up)".into()
        }
        Some(("exit", n)) => format!("the VMM exited with status {n}"),
        Some(("signal", n)) => format!("the VMM was killed by signal {n}"),
        _ => format!("the VMM ended: {record}"),
    }
}

pub fn parse_vnc_line(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find_map(|l| l.strip_prefix(VNC_LINE))
        .and_then(|a| a.trim().parse().ok())
}

/// `127.0.0.1:5901` → `127.0.0.1:1`, as `virsh vncdisplay` prints it (a port below 5900 is
/// printed as `ADDR::PORT`, the VNC clients' spelling of a raw port).
pub fn vnc_display(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    match addr.port().checked_sub(5900) {
        Some(n) => format!("{host}:{n}"),
        None => format!("{host}::{}", addr.port()),
    }
}

/// `vmdesk __supervise DIR NAME VMM ARGS…`: the process that stays with one VMM. It runs in
/// its own session, writes the VMM's pid, waits for it and records how it ended. Returns the
/// process exit code.
pub fn supervise(dir: &Path, name: &str, vmm: &Path, args: &[std::ffi::OsString]) -> i32 {
    // Leave the starting terminal's session, so closing it does not take the VM down.
    let _ = nix::unistd::setsid();
    let runtime = Runtime::at(dir);
    let log = match std::fs::File::create(runtime.log_path(name)) {
        Ok(f) => f,
        Err(_) => return 1,
    };
    let write_record = |text: &str| {
        let tmp = runtime.file(name, "exit.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, runtime.exit_path(name));
        }
    };
    let (out, err) = match (log.try_clone(), log.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return 1,
    };
    let mut child = match Command::new(vmm)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(&log, "vmdesk: cannot run {}: {e}", vmm.display());
            write_record("exit 127");
            return 1;
        }
    };
    let tmp = runtime.file(name, "pid.tmp");
    if std::fs::write(&tmp, format!("{}\n", child.id())).is_ok() {
        let _ = std::fs::rename(&tmp, runtime.pid_path(name));
    }
    let record = match child.wait() {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "exit ?".into(),
            }
        }
        Err(e) => format!("wait failed: {e}"),
    };
    write_record(&record);
    0
}

/// `vmdesk-vmm` next to the running binary, else on PATH.
pub fn find_vmm() -> Result<PathBuf, RuntimeError> {
    let exe = std::env::current_exe().unwrap_or_default();
    if let Some(dir) = exe.parent() {
        let p = dir.join("vmdesk-vmm");
        if p.is_file() {
            return Ok(p);
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("vmdesk-vmm"))
                .find(|p| p.is_file())
        })
        .ok_or(RuntimeError::NoVmm { exe })
}

/// Test support: a process that passes for `name`'s running VMM (its command line names
/// the VM's control socket, which is how [`Runtime::live_pid`] tells a VMM from a reused
/// pid), with its pid file written; kill it to "stop" the VM.
#[cfg(test)]
pub(crate) fn fake_vmm(rt: &Runtime, name: &str) -> std::process::Child {
    let child = Command::new("sh")
        .arg("-c")
        .arg("sleep 30")
        .arg(rt.socket_path(name))
        .spawn()
        .unwrap();
    std::fs::write(rt.pid_path(name), format!("{}\n", child.id())).unwrap();
    // Until it has exec'd, its command line is still the test's.
    let t0 = std::time::Instant::now();
    while rt.live_pid(name).is_none() && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::{DiskDef, DiskFormat};

    fn temp_rt(tag: &str) -> Runtime {
        let d = std::env::temp_dir().join(format!("vmdesk-rt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Runtime::at(d)
    }

    #[test]
    fn a_failed_boot_in_status_and_its_fix() {
        let status = json!({
            "status": "running",
            "boot": {
                "state": "failed",
                "tried": [{"device": "disk"}, {"device": "cdrom"}],
                "message": "No bootable device: the CD x.iso is not bootable",
            },
        });
        let f = BootFailure::from_status(&status).unwrap();
        assert_eq!(
            f.message,
            "No bootable device: the CD x.iso is not bootable"
        );
        assert!(f.cd_drive);
        assert_eq!(
            f.cli_fix("vm"),
            "to fix it, put an installer ISO in its CD drive and restart the boot: vmdesk \
             insert vm ISO; vmdesk reset vm"
        );
        assert!(f.gui_fix().contains("Reset"));
        let no_cd = json!({"boot": {"state": "failed", "tried": [{"device": "disk"}]}});
        let f = BootFailure::from_status(&no_cd).unwrap();
        assert!(!f.cd_drive);
        assert_eq!(
            f.cli_fix("vm"),
            "to fix it, give it an installer ISO: vmdesk destroy vm; vmdesk insert vm ISO; \
             vmdesk start vm"
        );
        for state in ["booted", "trying", "firmware"] {
            let v = json!({"boot": {"state": state, "tried": []}});
            assert_eq!(BootFailure::from_status(&v), None, "{state}");
        }
        // A VMM from before the boot report.
        assert_eq!(
            BootFailure::from_status(&json!({"status": "running"})),
            None
        );
    }

    #[test]
    fn vnc_line_and_display() {
        let log = "vmdesk-vmm: warning: kvm_pvm\nvnc: listening on 127.0.0.1:5903\nmore\n";
        let a = parse_vnc_line(log).unwrap();
        assert_eq!(a, "127.0.0.1:5903".parse().unwrap());
        assert_eq!(vnc_display(a), "127.0.0.1:3");
        assert_eq!(vnc_display("[::1]:5900".parse().unwrap()), "[::1]:0");
        assert_eq!(
            vnc_display("127.0.0.1:80".parse().unwrap()),
            "127.0.0.1::80"
        );
        assert_eq!(parse_vnc_line("vnc: listening on garbage\n"), None);
        assert_eq!(parse_vnc_line(""), None);
    }

    /// The VMM is gone (here: its pid is dead) but its supervisor has not recorded the end
    /// yet: waiting for it to be gone also waits for the record, so a clean-up right after
    /// (delete, destroy) is not undone by the record appearing later.
    #[test]
    fn gone_waits_for_the_supervisor_record() {
        let rt = temp_rt("gone");
        std::fs::write(rt.pid_path("vm"), "999999999\n").unwrap();
        let exit = rt.exit_path("vm");
        let supervisor = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(exit, "exit 0\n").unwrap();
        });
        assert!(rt.wait_gone("vm", Duration::from_secs(1)));
        assert!(rt.exit_path("vm").exists(), "returned before the record");
        supervisor.join().unwrap();
        rt.remove_all("vm");
        assert!(!rt.exit_path("vm").exists());
        let _ = std::fs::remove_dir_all(rt.dir());
    }

    #[test]
    fn states_from_the_runtime_files() {
        let rt = temp_rt("states");
        assert_eq!(rt.state("vm"), VmState::Stopped);
        // A clean exit record: stopped.
        std::fs::write(rt.pid_path("vm"), "999999999\n").unwrap();
        std::fs::write(rt.exit_path("vm"), "exit 0\n").unwrap();
        assert_eq!(rt.state("vm"), VmState::Stopped);
        // A failure: crashed, with the log's tail.
        std::fs::write(rt.exit_path("vm"), "exit 1\n").unwrap();
        std::fs::write(
            rt.log_path("vm"),
            "a\nvmdesk-vmm: the guest stopped: triple fault\n",
        )
        .unwrap();
        match rt.state("vm") {
            VmState::Crashed { why, log_tail } => {
                assert!(why.contains("status 1"), "{why}");
                assert!(log_tail.contains("triple fault"), "{log_tail}");
            }
            s => panic!("{s:?}"),
        }
        // Pid gone, no record at all.
        std::fs::remove_file(rt.exit_path("vm")).unwrap();
        assert!(matches!(rt.state("vm"), VmState::Crashed { .. }));
        // A live pid that is not our VMM (this test process) is not taken for it.
        std::fs::write(rt.pid_path("vm"), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(rt.live_pid("vm"), None);
        // Garbage in the pid file.
        std::fs::write(rt.pid_path("vm"), "-1\n").unwrap();
        assert_eq!(rt.live_pid("vm"), None);
        rt.remove_all("vm");
        assert_eq!(rt.state("vm"), VmState::Stopped);
        let _ = std::fs::remove_dir_all(rt.dir());
    }

    #[test]
    fn vmm_command_line() {
        let rt = Runtime::at("/run/user/1000/vmdesk");
        let mut def = VmDef::new("web1", 1024, 2);
        def.network = NetMode::None;
        def.cdrom = Some("/isos/d.iso".into());
        def.disks.push(DiskDef {
            path: "/img/web1.qcow2".into(),
            format: DiskFormat::Qcow2,
            size: None,
            preallocated: false,
            bus: crate::library::DiskBus::Virtio,
        });
        def.disks.push(DiskDef {
            path: "/img/old.raw".into(),
            format: DiskFormat::Raw,
            size: None,
            preallocated: false,
            bus: crate::library::DiskBus::Ide,
        });
        let args: Vec<String> = rt
            .vmm_args(&def)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "--memory 1024M --cpus 2 --control /run/user/1000/vmdesk/web1.sock \
             --serial file:/run/user/1000/vmdesk/web1.serial \
             --serial-socket /run/user/1000/vmdesk/web1.serial-sock --vnc 127.0.0.1:auto \
             --disk /img/web1.qcow2,format=qcow2,if=virtio --disk /img/old.raw,format=raw,if=ide \
             --cdrom /isos/d.iso --boot disk,cdrom"
        );
        // What we pass is what the VMM parses.
        let mut argv = vec!["vmdesk-vmm".to_string()];
        argv.extend(args);
        let cli = <vmm::config::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        assert_eq!(cli.memory, 1024 << 20);
        assert_eq!(cli.disks.len(), 2);
        assert_eq!(cli.disks[1].bus, vmm::config::DiskBus::Ide);
        use vmm::config::BootDevice::{Cdrom, Disk};
        assert_eq!(cli.boot.map(|b| b.0), Some(vec![Disk, Cdrom]));
        // No disk: nothing to order.
        def.disks.clear();
        let args: Vec<String> = rt
            .vmm_args(&def)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(!args.contains(&"--boot".to_string()), "{args:?}");
        assert!(
            !args.iter().any(|a| a == "--firmware" || a == "--efi-vars"),
            "BIOS: the VMM's default, nothing said: {args:?}"
        );
    }

    #[test]
    fn a_uefi_vm_names_its_firmware_and_variable_store() {
        let rt = Runtime::at("/run/user/1000/vmdesk");
        let mut def = VmDef::new("win", 4096, 2);
        def.network = NetMode::None;
        def.firmware = Firmware::Uefi;
        def.efi_vars = Some("/home/u/.local/share/vmdesk/nvram/win_VARS.fd".into());
        let args: Vec<String> = rt
            .vmm_args(&def)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let line = args.join(" ");
        assert!(
            line.starts_with(
                "--memory 4096M --cpus 2 --firmware uefi \
                 --efi-vars /home/u/.local/share/vmdesk/nvram/win_VARS.fd --control "
            ),
            "{line}"
        );
        // A VM switched back to BIOS keeps its store, but boots SeaBIOS without it.
        def.firmware = Firmware::Bios;
        let line = rt
            .vmm_args(&def)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            !line.contains("--firmware") && !line.contains("--efi-vars"),
            "{line}"
        );
    }

    #[test]
    fn the_network_goes_on_the_vmm_command_line() {
        let rt = Runtime::at("/run/user/1000/vmdesk");
        let args = |def: &VmDef| -> Vec<String> {
            rt.vmm_args(def)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        let mut def = VmDef::new("web1", 1024, 2);
        def.mac = "52:54:00:0a:0b:0c".parse().unwrap();
        def.forwards = vec![
            "tcp::2222-:22".parse().unwrap(),
            "udp:0.0.0.0:5353-:53".parse().unwrap(),
        ];
        let a = args(&def).join(" ");
        assert!(
            a.ends_with(
                " --net user --mac 52:54:00:0a:0b:0c --forward tcp:127.0.0.1:2222-:22 \
                 --forward udp:0.0.0.0:5353-:53"
            ),
            "{a}"
        );
        def.network = NetMode::Tap("vmtap0".into());
        def.forwards.clear();
        let a = args(&def).join(" ");
        assert!(
            a.ends_with(" --net tap:vmtap0 --mac 52:54:00:0a:0b:0c"),
            "{a}"
        );
        // What we pass is what the VMM parses.
        def.network = NetMode::User;
        def.forwards = vec!["tcp::2222-:22".parse().unwrap()];
        let mut argv = vec!["vmdesk-vmm".to_string()];
        argv.extend(args(&def));
        let cli = <vmm::config::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        assert_eq!(cli.net, NetMode::User);
        assert_eq!(cli.mac, Some(def.mac));
        assert_eq!(cli.forwards, def.forwards);
        // No network: no network options at all (the VMM's default is none).
        def.network = NetMode::None;
        assert!(!args(&def).iter().any(|a| a == "--net" || a == "--mac"));
    }

    #[test]
    fn reinstall_checks_everything_before_it_wipes_anything() {
        let rt = temp_rt("reinstall");
        let dir = rt.dir().to_path_buf();
        let iso = dir.join("i.iso");
        std::fs::write(&iso, [0u8; 2048]).unwrap();
        let (ours, theirs) = (dir.join("ours.raw"), dir.join("theirs.raw"));
        std::fs::write(&ours, [0xAB; 4096]).unwrap();
        std::fs::write(&theirs, [0xCD; 8192]).unwrap();
        let mut def = VmDef::new("vm", 64, 1);
        def.disks = vec![
            DiskDef {
                path: ours.clone(),
                format: DiskFormat::Raw,
                size: Some(4096),
                preallocated: false,
                bus: crate::library::DiskBus::Virtio,
            },
            DiskDef {
                path: theirs.clone(),
                format: DiskFormat::Raw,
                size: None,
                preallocated: false,
                bus: crate::library::DiskBus::Virtio,
            },
        ];
        let vmm = Path::new("/nonexistent/vmdesk-vmm");
        let untouched = || {
            assert_eq!(std::fs::read(&ours).unwrap(), [0xAB; 4096]);
            assert_eq!(std::fs::read(&theirs).unwrap(), [0xCD; 8192]);
        };

        let e = rt.reinstall(&def, ExistingImages::Wipe, vmm).unwrap_err();
        assert!(matches!(e, RuntimeError::NoInstallMedia(_)), "{e}");
        assert!(e.to_string().contains("'vm' has no installer ISO"), "{e}");
        def.cdrom = Some(dir.join("gone.iso"));
        let e = rt.reinstall(&def, ExistingImages::Wipe, vmm).unwrap_err();
        assert!(e.to_string().contains("gone.iso"), "{e}");
        def.cdrom = Some(iso.clone());
        let e = rt.reinstall(&def, ExistingImages::Refuse, vmm).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RuntimeError::NotOurDisks { .. }), "{e}");
        for part in ["'vm'", "theirs.raw", "--force", "--keep-existing"] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        assert!(!msg.contains("ours.raw"), "{msg}");
        untouched();

        let plan = rt.plan_reinstall(&def, ExistingImages::Keep).unwrap();
        assert_eq!(plan.keep, std::slice::from_ref(&theirs));
        assert_eq!(plan.wipe.len(), 1);
        assert_eq!(plan.wipe[0].path, ours);
        assert_eq!(plan.wipe[0].size, 4096);
        let plan = rt.plan_reinstall(&def, ExistingImages::Wipe).unwrap();
        assert!(plan.keep.is_empty());
        assert_eq!(plan.wipe[1].path, theirs);
        assert_eq!(plan.wipe[1].size, 8192, "the image's own virtual size");

        // A running VM (a process whose command line names its socket) is refused.
        let mut child = fake_vmm(&rt, "vm");
        let e = rt.reinstall(&def, ExistingImages::Keep, vmm).unwrap_err();
        assert!(matches!(e, RuntimeError::Running(_)), "{e}");
        let _ = child.kill();
        let _ = child.wait();
        untouched();

        let _ = std::fs::remove_dir_all(rt.dir());
    }

    #[test]
    fn control_talks_json_lines() {
        let rt = temp_rt("control");
        let listener = std::os::unix::net::UnixListener::bind(rt.socket_path("vm")).unwrap();
        let server = std::thread::spawn(move || {
            for reply in [
                r#"{"return":{"status":"paused"}}"#,
                r#"{"error":{"class":"GenericError","desc":"no CD drive"}}"#,
            ] {
                let (s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert!(v["execute"].is_string());
                (&s).write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
        });
        let v = rt.command("vm", "status", json!({})).unwrap();
        assert_eq!(v["status"], "paused");
        let e = rt.command("vm", "eject", json!({})).unwrap_err();
        assert!(e.to_string().contains("no CD drive"), "{e}");
        server.join().unwrap();
        assert!(matches!(
            rt.command("nothere", "status", json!({})),
            Err(RuntimeError::Control { .. })
        ));
        let _ = std::fs::remove_dir_all(rt.dir());
    }
}
