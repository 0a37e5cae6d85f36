//! The VM library: one TOML file per VM definition in `$XDG_CONFIG_HOME/vmdesk/vms/<name>.toml`.
//!
//! - Every write goes to a temp file in the same directory, is synced, and is renamed over
//!   (or, for a new VM, hard-linked into) its final name, so a reader never sees half a file
//!   and a crash mid-write leaves the old definition whole.
//! - Creating a VM links the temp file to its name, which fails if the name is taken: two
//!   writers creating the same name at once get exactly one winner, with no lock file.
//! - A file that does not parse is an error on that VM alone ([`Entry::def`]); it is never
//!   rewritten by [`Library::update`], so a hand edit that went wrong is not lost.
//!
//! Validation against the host (RAM, CPU count) lives here too, so the CLI and the GUI
//! refuse the same things with the same words.
//!
//! Network: every definition has a network mode, a MAC address and port forwards. A
//! definition written before vmdesk had networking has none of them; it loads as a user-mode
//! (NAT) VM without forwards, with a MAC address made for it then and saved into its file,
//! so the guest sees the same card from then on ([`Library::get`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use thiserror::Error;
pub use vmm::net::{Forward, MacAddr, NetMode, Protocol};

const MIB: u64 = 1 << 20;
/// The least RAM a PC firmware boots in (the VMM refuses less).
const MIN_MEMORY_MIB: u64 = 2;
const MAX_NAME: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl From<DiskFormat> for vmm::disk::ImageFormat {
    fn from(f: DiskFormat) -> Self {
        match f {
            DiskFormat::Raw => vmm::disk::ImageFormat::Raw,
            DiskFormat::Qcow2 => vmm::disk::ImageFormat::Qcow2,
        }
    }
}

impl From<vmm::disk::ImageFormat> for DiskFormat {
    fn from(f: vmm::disk::ImageFormat) -> Self {
        match f {
            vmm::disk::ImageFormat::Raw => DiskFormat::Raw,
            vmm::disk::ImageFormat::Qcow2 => DiskFormat::Qcow2,
        }
    }
}

/// Where a disk is attached, as `vmdesk-vmm --disk …,if=` takes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: what every current guest has drivers for, and the fastest.
    #[default]
    Virtio,
    /// An ATA disk on the IDE controller, for guests without virtio drivers.
    Ide,
}

impl DiskBus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Ide => "ide",
        }
    }

    fn is_virtio(&self) -> bool {
        *self == DiskBus::Virtio
    }
}

/// One disk of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskDef {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// The size vmdesk created it with (for reinstall); `None` for an existing image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// vmdesk reserved all of its space when it made it (raw only); reinstall does the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preallocated: bool,
    /// Where the guest finds it (virtio unless the file says otherwise).
    #[serde(default, skip_serializing_if = "DiskBus::is_virtio")]
    pub bus: DiskBus,
}

/// The firmware a VM boots with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS: what every VM had before UEFI, so a definition without the field is one.
    #[default]
    Bios,
    /// OVMF from the host's `ovmf` package, with the VM's own variable store.
    Uefi,
}

impl Firmware {
    /// As `--firmware` takes it, the definition writes it and `vmdesk list` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }

    /// As people read it (the dialogs, the summaries).
    pub fn label(self) -> &'static str {
        match self {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        }
    }
}

impl std::str::FromStr for Firmware {
    type Err = String;
    fn from_str(s: &str) -> Result<Firmware, String> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "uefi" => Ok(Firmware::Uefi),
            _ => Err(format!("firmware '{s}': use bios or uefi")),
        }
    }
}

/// A VM definition: what `vmdesk create` was given, enough to build the VMM command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDef {
    pub name: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    pub cpus: u32,
    /// Written for every VM; a file from before UEFI has none and is a BIOS VM.
    #[serde(default)]
    pub firmware: Firmware,
    /// The VM's own UEFI variable store (boot entries, the firmware's settings), made when
    /// it got UEFI firmware. Kept here rather than derived from the name, so a rename can
    /// move it and a hand-edited path is honoured. A VM switched back to BIOS keeps it
    /// (see [`crate::nvram`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi_vars: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// As `vmdesk-vmm --vnc` takes it: `ADDR:N`, `ADDR:auto` or `none`.
    #[serde(default = "default_vnc")]
    pub vnc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc_password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskDef>,
    /// How the VM reaches the network; user-mode NAT (passt) for definitions from before
    /// vmdesk had networking.
    #[serde(default = "default_network")]
    pub network: NetMode,
    /// The network card's address, made when the VM is created and kept for its life, so
    /// the guest (and a DHCP server on a bridge) sees the same card at every start. A file
    /// without one gets one from [`Library::get`]; this default is never kept.
    #[serde(default = "placeholder_mac")]
    pub mac: MacAddr,
    /// Host ports forwarded to the guest (user-mode networking only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<Forward>,
}

fn default_vnc() -> String {
    "127.0.0.1:auto".into()
}

fn default_network() -> NetMode {
    NetMode::User
}

fn placeholder_mac() -> MacAddr {
    MacAddr::DEFAULT
}

/// A MAC address for a new VM: QEMU/KVM's 52:54:00 block with three random bytes, as
/// libvirt makes them. Not secret, it only has to differ from the neighbours' cards: the
/// standard library's randomly keyed hasher is random enough and cannot fail.
pub fn random_mac() -> MacAddr {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    let b = h.finish().to_le_bytes();
    MacAddr::from_seed([b[0], b[1], b[2]])
}

/// The MAC address given to a definition from before networking, made from the file itself
/// (its text, inode and modification time): every reader of that file makes the same one,
/// so two processes loading it at once (the GUI's list and `vmdesk start`) agree whichever
/// of them saves it, and even where it cannot be saved.
fn mac_for_old_file(text: &str, meta: Option<&std::fs::Metadata>) -> MacAddr {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    // SipHash with fixed keys: the same input gives the same address in every process.
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    if let Some(m) = meta {
        (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()).hash(&mut h);
    }
    let b = h.finish().to_le_bytes();
    MacAddr::from_seed([b[0], b[1], b[2]])
}

/// What `vmdesk list` and the GUI's list show as the network: `nat`, `tap:NAME` or `-`.
pub fn network_label(mode: &NetMode) -> String {
    match mode {
        NetMode::User => "nat".into(),
        NetMode::Tap(name) => format!("tap:{name}"),
        NetMode::None => "-".into(),
    }
}

/// A forward as a person connects to it: `127.0.0.1:2222→22` (TCP), `0.0.0.0:5353→53/udp`.
pub fn forward_label(f: &Forward) -> String {
    let proto = match f.protocol {
        Protocol::Tcp => "",
        Protocol::Udp => "/udp",
    };
    format!("{}:{}→{}{proto}", f.host_addr, f.host_port, f.guest_port)
}

/// Whether two forwards want the same host socket: one protocol and port on one address,
/// or on any address when either listens on all of them (0.0.0.0 takes the port everywhere).
pub fn forwards_clash(a: &Forward, b: &Forward) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_addr == b.host_addr
            || a.host_addr.is_unspecified()
            || b.host_addr.is_unspecified())
}

impl VmDef {
    pub fn new(name: &str, memory_mib: u64, cpus: u32) -> VmDef {
        VmDef {
            name: name.into(),
            memory_mib,
            cpus,
            firmware: Firmware::Bios,
            efi_vars: None,
            cdrom: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            vnc: default_vnc(),
            vnc_password_file: None,
            disks: Vec::new(),
            network: NetMode::User,
            mac: random_mac(),
            forwards: Vec::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum LibraryError {
    #[error("no VM named '{0}'")]
    NotFound(String),
    #[error("a VM named '{0}' already exists")]
    Exists(String),
    #[error("{}: not a valid VM definition: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "{}: refusing to overwrite a definition that does not parse (fix or delete it first)",
        path.display()
    )]
    WontOverwriteCorrupt { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid VM: {0}")]
    Invalid(#[from] ValidationError),
    #[error("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep VM definitions")]
    NoConfigDir,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why a definition cannot be used. Each names the field, for the form's per-field reason.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error(
        "name '{0}': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error("memory {0} MiB is below the {MIN_MEMORY_MIB} MiB a PC firmware needs")]
    MemoryTooSmall(u64),
    #[error("memory {asked} MiB is more than this host's {host} MiB of RAM")]
    MemoryAboveHost { asked: u64, host: u64 },
    #[error("vCPUs must be at least 1")]
    ZeroCpus,
    #[error("vCPUs {0} is more than 255 (the most a PC's APIC ids address)")]
    TooManyCpus(u32),
    #[error("an initrd or a kernel command line needs a kernel")]
    InitrdWithoutKernel,
    #[error("vnc '{0}': use ADDR:N, ADDR:auto or none")]
    BadVnc(String),
    #[error(
        "port forwards need the user-mode network (NAT), not '{0}': use --network user, or drop the forwards"
    )]
    ForwardsNeedUserNetwork(NetMode),
    #[error("port forwards {0} and {1} both want host port {port}/{proto}", port = .1.host_port, proto = .1.protocol)]
    DuplicateForward(Forward, Forward),
}

/// A warning that does not stop the VM from being created or started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    MoreCpusThanHost {
        asked: u32,
        host: usize,
    },
    /// Another VM forwards the same host port: only one of them can run at a time.
    SameForwardAs {
        vm: String,
        forward: Forward,
    },
    /// Another VM on a TAP device (perhaps on the same bridge) has the same MAC address.
    SameMacAs {
        vm: String,
        mac: MacAddr,
    },
    /// The OS on the VM's CD needs UEFI (osinfo-db marks BIOS unsupported), and the VM
    /// has BIOS: asked for, or the ovmf package is missing.
    NeedsUefi {
        vm: String,
        os: String,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::MoreCpusThanHost { asked, host } => write!(
                f,
                "{asked} vCPUs is more than this host's {host} CPUs: the guest will run slower, not faster"
            ),
            Warning::SameForwardAs { vm, forward } => write!(
                f,
                "'{vm}' forwards host port {}/{} too: the two cannot run at the same time",
                forward.host_port, forward.protocol
            ),
            Warning::SameMacAs { vm, mac } => write!(
                f,
                "'{vm}' has the same MAC address {mac}: the two cannot share a network"
            ),
            Warning::NeedsUefi { vm, os } => write!(
                f,
                "{os} needs UEFI firmware, and '{vm}' has BIOS: its installer will not start \
                 (vmdesk set {vm} --firmware uefi, with the ovmf package installed)"
            ),
        }
    }
}

/// What validation needs to know about the host.
#[derive(Clone, Copy, Debug)]
pub struct HostFacts {
    pub ram: Option<u64>,
    pub cpus: usize,
}

impl HostFacts {
    pub fn detect() -> HostFacts {
        HostFacts {
            ram: vmm::host::total_ram(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(ValidationError::BadName(name.into()))
    }
}

/// Checks a definition against itself and the host. Errors refuse it; warnings are shown.
pub fn validate(def: &VmDef, host: &HostFacts) -> Result<Vec<Warning>, ValidationError> {
    validate_name(&def.name)?;
    if def.memory_mib < MIN_MEMORY_MIB {
        return Err(ValidationError::MemoryTooSmall(def.memory_mib));
    }
    if let Some(ram) = host.ram
        && def.memory_mib.saturating_mul(MIB) > ram
    {
        return Err(ValidationError::MemoryAboveHost {
            asked: def.memory_mib,
            host: ram / MIB,
        });
    }
    if def.cpus == 0 {
        return Err(ValidationError::ZeroCpus);
    }
    if def.cpus > 255 {
        return Err(ValidationError::TooManyCpus(def.cpus));
    }
    if def.kernel.is_none() && (def.initrd.is_some() || def.cmdline.is_some()) {
        return Err(ValidationError::InitrdWithoutKernel);
    }
    if vmm::config::parse_vnc(&def.vnc).is_err() {
        return Err(ValidationError::BadVnc(def.vnc.clone()));
    }
    validate_network(&def.network, &def.forwards)?;
    let mut warnings = Vec::new();
    if def.cpus as usize > host.cpus {
        warnings.push(Warning::MoreCpusThanHost {
            asked: def.cpus,
            host: host.cpus,
        });
    }
    Ok(warnings)
}

/// The network settings on their own (the form checks them as they are typed): forwards
/// only with user-mode networking, and no two on one host socket.
pub fn validate_network(mode: &NetMode, forwards: &[Forward]) -> Result<(), ValidationError> {
    if !forwards.is_empty() && *mode != NetMode::User {
        return Err(ValidationError::ForwardsNeedUserNetwork(mode.clone()));
    }
    for (i, a) in forwards.iter().enumerate() {
        if let Some(b) = forwards[..i].iter().find(|b| forwards_clash(a, b)) {
            return Err(ValidationError::DuplicateForward(*b, *a));
        }
    }
    Ok(())
}

/// One file in the library: its name and the definition, or why it cannot be read.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub def: Result<VmDef, LibraryError>,
}

/// The directory of VM definitions.
#[derive(Clone, Debug)]
pub struct Library {
    dir: PathBuf,
}

/// `$XDG_CONFIG_HOME`, or `~/.config` as the XDG spec says when it is unset or empty.
pub fn xdg_dir(var: &str, fallback_under_home: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() && Path::new(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(fallback_under_home)),
    }
}

impl Library {
    /// The user's library, `$XDG_CONFIG_HOME/vmdesk/vms`.
    pub fn open_default() -> Result<Library, LibraryError> {
        let base = xdg_dir("XDG_CONFIG_HOME", ".config").ok_or(LibraryError::NoConfigDir)?;
        Ok(Library::at(base.join("vmdesk").join("vms")))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Library {
        Library { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// Every `*.toml` in the library, sorted by name; unreadable ones carry their error.
    pub fn list(&self) -> Result<Vec<Entry>, LibraryError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(io(&self.dir))?;
            let file = ent.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".toml")) else {
                continue;
            };
            // Temp files are dot-files; a name that could not have been created is not ours.
            if validate_name(name).is_err() {
                continue;
            }
            out.push(Entry {
                name: name.to_string(),
                def: self.get(name),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Reads one definition.
    pub fn get(&self, name: &str) -> Result<VmDef, LibraryError> {
        validate_name(name)?;
        let path = self.path_of(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LibraryError::NotFound(name.into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(LibraryError::Corrupt {
                    path,
                    why: "not UTF-8 text".into(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let mut def: VmDef = toml::from_str(&text).map_err(|e| LibraryError::Corrupt {
            path: path.clone(),
            why: e.message().to_string(),
        })?;
        if def.name != name {
            return Err(LibraryError::Corrupt {
                path,
                why: format!("the file says its name is '{}'", def.name),
            });
        }
        let has_mac = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("mac"));
        if !has_mac {
            // Written before vmdesk had networking: its card gets an address now, kept.
            def.mac = mac_for_old_file(&text, std::fs::metadata(&path).ok().as_ref());
            if let Err(e) = self.save_upgraded(&def, &text) {
                tracing::warn!("{}: cannot save its new MAC address: {e}", path.display());
            }
        }
        Ok(def)
    }

    /// Saves `def`, read from a file whose text was `was`, unless the file has changed since
    /// (then whoever changed it wrote a whole definition, and this one is stale).
    fn save_upgraded(&self, def: &VmDef, was: &str) -> Result<(), LibraryError> {
        let tmp = self.write_temp(def)?;
        let path = self.path_of(&def.name);
        let result = match std::fs::read_to_string(&path) {
            Ok(now) if now == was => std::fs::rename(&tmp, &path).map_err(io(&path)),
            Ok(_) => Ok(()),
            Err(e) => Err(io(&path)(e)),
        };
        let _ = std::fs::remove_file(&tmp);
        sync_dir(&self.dir);
        result
    }

    /// What `def` (the VM `own`, before any rename) would share with the other VMs here:
    /// a forwarded host port, or a network card's MAC address. Unreadable files are skipped.
    pub fn network_clashes(&self, def: &VmDef, own: &str) -> Vec<Warning> {
        let mut out = Vec::new();
        let Ok(entries) = self.list() else {
            return out;
        };
        for other in entries
            .iter()
            .filter(|e| e.name != own && e.name != def.name)
        {
            let Ok(o) = &other.def else { continue };
            for f in &def.forwards {
                if o.forwards.iter().any(|g| forwards_clash(f, g)) {
                    out.push(Warning::SameForwardAs {
                        vm: other.name.clone(),
                        forward: *f,
                    });
                }
            }
            // Each NAT VM has a network of its own; TAP devices may share a bridge.
            let tap = |d: &VmDef| matches!(d.network, NetMode::Tap(_));
            if tap(def) && tap(o) && o.mac == def.mac {
                out.push(Warning::SameMacAs {
                    vm: other.name.clone(),
                    mac: def.mac,
                });
            }
        }
        out
    }

    /// Adds a new VM; fails with [`LibraryError::Exists`] if the name is taken, even by a
    /// writer racing this one.
    pub fn create(&self, def: &VmDef) -> Result<(), LibraryError> {
        validate_name(&def.name)?;
        let tmp = self.write_temp(def)?;
        let path = self.path_of(&def.name);
        // link(2) never replaces an existing name: the create-or-fail is atomic.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(LibraryError::Exists(def.name.clone()))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Replaces an existing, readable definition. A file that does not parse is left alone.
    pub fn update(&self, def: &VmDef) -> Result<(), LibraryError> {
        match self.get(&def.name) {
            Ok(_) => {}
            Err(LibraryError::Corrupt { path, .. }) => {
                return Err(LibraryError::WontOverwriteCorrupt { path });
            }
            Err(e) => return Err(e),
        }
        let tmp = self.write_temp(def)?;
        let path = self.path_of(&def.name);
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&path)(e)
        })?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Renames a VM and saves `def` (which carries the new name) in one step that never
    /// loses it: the new file is linked in first (failing if the name is taken), then the
    /// old one removed. A crash between the two leaves both, never neither.
    pub fn rename(&self, old: &str, def: &VmDef) -> Result<(), LibraryError> {
        match self.get(old) {
            Ok(_) => {}
            Err(LibraryError::Corrupt { path, .. }) => {
                return Err(LibraryError::WontOverwriteCorrupt { path });
            }
            Err(e) => return Err(e),
        }
        self.create(def)?;
        if let Err(e) = self.remove(old) {
            let _ = self.remove(&def.name);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a definition (readable or not).
    pub fn remove(&self, name: &str) -> Result<(), LibraryError> {
        validate_name(name)?;
        let path = self.path_of(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(LibraryError::NotFound(name.into()))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes `def` to a fresh, unique temp file beside its final name and syncs it.
    fn write_temp(&self, def: &VmDef) -> Result<PathBuf, LibraryError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let text = toml::to_string_pretty(def).map_err(|e| LibraryError::Corrupt {
            path: self.path_of(&def.name),
            why: e.to_string(),
        })?;
        let tmp = self.dir.join(format!(
            ".{}.toml.{}.{}.tmp",
            def.name,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&tmp)(e)
        })?;
        Ok(tmp)
    }
}

/// Makes a rename durable. Best effort: a failure here does not undo the write.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn temp_lib(tag: &str) -> Library {
        let d = std::env::temp_dir().join(format!("vmdesk-lib-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Library::at(d)
    }

    fn host() -> HostFacts {
        HostFacts {
            ram: Some(4096 * MIB),
            cpus: 2,
        }
    }

    fn full_def() -> VmDef {
        let mut d = VmDef::new("web1", 1024, 2);
        d.cdrom = Some("/isos/debian.iso".into());
        d.kernel = Some("/k/bzImage".into());
        d.cmdline = Some("console=ttyS0 quiet".into());
        d.vnc = "127.0.0.1:3".into();
        d.disks = vec![
            DiskDef {
                path: "/img/web1.qcow2".into(),
                format: DiskFormat::Qcow2,
                size: Some(10 << 30),
                preallocated: false,
                bus: DiskBus::Virtio,
            },
            DiskDef {
                path: "/img/data.raw".into(),
                format: DiskFormat::Raw,
                size: None,
                preallocated: false,
                bus: DiskBus::Virtio,
            },
        ];
        d
    }

    #[test]
    fn round_trip_and_list() {
        let lib = temp_lib("rt");
        assert!(
            lib.list().unwrap().is_empty(),
            "a missing dir is an empty library"
        );
        let def = full_def();
        lib.create(&def).unwrap();
        lib.create(&VmDef::new("alpha", 64, 1)).unwrap();
        assert_eq!(lib.get("web1").unwrap(), def);
        let names: Vec<_> = lib.list().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["alpha", "web1"]);
        assert!(matches!(lib.create(&def), Err(LibraryError::Exists(n)) if n == "web1"));
        let mut changed = def.clone();
        changed.memory_mib = 2048;
        lib.update(&changed).unwrap();
        assert_eq!(lib.get("web1").unwrap().memory_mib, 2048);
        lib.remove("web1").unwrap();
        assert!(matches!(lib.get("web1"), Err(LibraryError::NotFound(_))));
        assert!(matches!(
            lib.update(&changed),
            Err(LibraryError::NotFound(_))
        ));
        // No temp files left behind.
        let left: Vec<_> = std::fs::read_dir(lib.dir()).unwrap().collect();
        assert_eq!(left.len(), 1);
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn rename_moves_the_definition_and_never_takes_a_name() {
        let lib = temp_lib("rename");
        lib.create(&VmDef::new("old", 64, 1)).unwrap();
        lib.create(&VmDef::new("taken", 128, 1)).unwrap();
        let mut d = VmDef::new("taken", 256, 2);
        assert!(matches!(
            lib.rename("old", &d),
            Err(LibraryError::Exists(_))
        ));
        assert_eq!(lib.get("old").unwrap().memory_mib, 64);
        assert_eq!(lib.get("taken").unwrap().memory_mib, 128);
        d.name = "new".into();
        lib.rename("old", &d).unwrap();
        assert!(matches!(lib.get("old"), Err(LibraryError::NotFound(_))));
        assert_eq!(lib.get("new").unwrap(), d);
        assert!(matches!(
            lib.rename("nothere", &VmDef::new("x", 64, 1)),
            Err(LibraryError::NotFound(_))
        ));
        let names: Vec<_> = lib.list().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["new", "taken"]);
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn a_corrupt_file_is_an_error_on_that_vm_alone_and_is_not_overwritten() {
        let lib = temp_lib("corrupt");
        lib.create(&VmDef::new("good", 128, 1)).unwrap();
        std::fs::write(
            lib.path_of("broken"),
            "name = \"broken\"\nmemory_mib = [oops\n",
        )
        .unwrap();
        std::fs::write(lib.path_of("binary"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
        std::fs::write(
            lib.path_of("liar"),
            toml::to_string(&VmDef::new("other", 64, 1)).unwrap(),
        )
        .unwrap();
        std::fs::write(
            lib.path_of("extra"),
            "name = \"extra\"\nmemory_mib = 64\ncpus = 1\ncolour = \"red\"\n",
        )
        .unwrap();
        let entries = lib.list().unwrap();
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(entries.len(), 5);
        assert!(by_name("good").def.is_ok());
        for bad in ["broken", "binary", "liar", "extra"] {
            let err = by_name(bad).def.as_ref().unwrap_err();
            assert!(matches!(err, LibraryError::Corrupt { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("{bad}.toml")), "{err}");
        }
        // Saving over the broken file is refused and the file keeps the user's text.
        let before = std::fs::read(lib.path_of("broken")).unwrap();
        let err = lib.update(&VmDef::new("broken", 64, 1)).unwrap_err();
        assert!(matches!(err, LibraryError::WontOverwriteCorrupt { .. }));
        assert!(matches!(
            lib.create(&VmDef::new("broken", 64, 1)),
            Err(LibraryError::Exists(_))
        ));
        assert_eq!(std::fs::read(lib.path_of("broken")).unwrap(), before);
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn two_writers_creating_one_name_get_one_winner() {
        let lib = temp_lib("race");
        for round in 0..20 {
            let name = format!("vm{round}");
            let barrier = Arc::new(Barrier::new(2));
            let handles: Vec<_> = (0..2u64)
                .map(|i| {
                    let (lib, barrier, name) = (lib.clone(), barrier.clone(), name.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        lib.create(&VmDef::new(&name, 64 + i, 1))
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let wins = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "{results:?}");
            assert!(
                results
                    .iter()
                    .any(|r| matches!(r, Err(LibraryError::Exists(_))))
            );
            let mem = lib.get(&name).unwrap().memory_mib;
            let winner = results.iter().position(|r| r.is_ok()).unwrap() as u64;
            assert_eq!(mem, 64 + winner, "the file is the winner's, whole");
        }
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn two_writers_updating_never_leave_half_a_file() {
        let lib = temp_lib("update-race");
        lib.create(&VmDef::new("vm", 64, 1)).unwrap();
        let writers: Vec<_> = (0..2u32)
            .map(|w| {
                let lib = lib.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let mut d = VmDef::new("vm", 64 + i, 1 + w);
                        d.cmdline = Some("x".repeat(i as usize * 50));
                        d.kernel = Some("/k".into());
                        lib.update(&d).unwrap();
                    }
                })
            })
            .collect();
        // A reader racing them always sees one writer's whole definition.
        for _ in 0..200 {
            let d = lib.get("vm").unwrap();
            if let Some(c) = &d.cmdline {
                assert_eq!(c.len() as u64, (d.memory_mib - 64) * 50);
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(std::fs::read_dir(lib.dir()).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn validation_names_the_host_figure() {
        let h = host();
        assert_eq!(validate(&VmDef::new("ok", 1024, 2), &h), Ok(vec![]));
        let err = validate(&VmDef::new("big", 8192, 1), &h).unwrap_err();
        assert_eq!(
            err,
            ValidationError::MemoryAboveHost {
                asked: 8192,
                host: 4096
            }
        );
        assert!(err.to_string().contains("4096 MiB"), "{err}");
        assert_eq!(
            validate(&VmDef::new("many", 512, 4), &h),
            Ok(vec![Warning::MoreCpusThanHost { asked: 4, host: 2 }])
        );
        assert_eq!(
            validate(&VmDef::new("zero", 512, 0), &h),
            Err(ValidationError::ZeroCpus)
        );
        assert_eq!(
            validate(&VmDef::new("tiny", 1, 1), &h),
            Err(ValidationError::MemoryTooSmall(1))
        );
        let mut d = VmDef::new("vnc", 64, 1);
        d.vnc = "nonsense".into();
        assert!(matches!(validate(&d, &h), Err(ValidationError::BadVnc(_))));
        let mut d = VmDef::new("initrd", 64, 1);
        d.initrd = Some("/i".into());
        assert_eq!(validate(&d, &h), Err(ValidationError::InitrdWithoutKernel));
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "web-1", "Win_10.x", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_network_settings_are_stored_in_their_written_forms() {
        let lib = temp_lib("net");
        let mut d = VmDef::new("web", 256, 1);
        assert_eq!(d.network, NetMode::User, "new VMs get NAT");
        assert_eq!(&d.mac.0[..3], &[0x52, 0x54, 0x00]);
        d.mac = "52:54:00:ab:cd:ef".parse().unwrap();
        d.forwards = vec![
            "tcp::2222-:22".parse().unwrap(),
            "udp:0.0.0.0:5353-:53".parse().unwrap(),
        ];
        lib.create(&d).unwrap();
        let text = std::fs::read_to_string(lib.path_of("web")).unwrap();
        for line in [
            "network = \"user\"",
            "mac = \"52:54:00:ab:cd:ef\"",
            "\"tcp:127.0.0.1:2222-:22\"",
            "\"udp:0.0.0.0:5353-:53\"",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert_eq!(lib.get("web").unwrap(), d);
        d.network = NetMode::Tap("vmtap0".into());
        d.forwards.clear();
        lib.update(&d).unwrap();
        let text = std::fs::read_to_string(lib.path_of("web")).unwrap();
        assert!(text.contains("network = \"tap:vmtap0\""), "{text}");
        assert!(!text.contains("forwards"), "none: not written\n{text}");
        assert_eq!(lib.get("web").unwrap(), d);
        // A bad value in a hand-edited file is that VM's error, in the spec's words.
        std::fs::write(
            lib.path_of("typo"),
            "name = \"typo\"\nmemory_mib = 64\ncpus = 1\nnetwork = \"bridge\"\n",
        )
        .unwrap();
        let e = lib.get("typo").unwrap_err().to_string();
        assert!(e.contains("unknown network mode 'bridge'"), "{e}");
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn a_definition_from_before_networking_gets_nat_and_a_mac_that_is_saved() {
        let lib = temp_lib("old");
        std::fs::create_dir_all(lib.dir()).unwrap();
        // What vmdesk wrote before it had networking.
        let old = "name = \"old\"\nmemory_mib = 512\ncpus = 2\nvnc = \"127.0.0.1:auto\"\n\n\
                   [[disks]]\npath = \"/img/old.qcow2\"\nformat = \"qcow2\"\nsize = 1073741824\n";
        std::fs::write(lib.path_of("old"), old).unwrap();
        let d = lib.get("old").unwrap();
        assert_eq!(d.network, NetMode::User);
        assert!(d.forwards.is_empty());
        assert_eq!(&d.mac.0[..3], &[0x52, 0x54, 0x00]);
        assert_ne!(d.mac, MacAddr::DEFAULT, "its own, not QEMU's default");
        assert_eq!(
            (d.memory_mib, d.cpus, d.disks.len()),
            (512, 2, 1),
            "nothing lost"
        );
        // Saved: the file now says so, and every later read gives the same card.
        let text = std::fs::read_to_string(lib.path_of("old")).unwrap();
        assert!(text.contains(&format!("mac = \"{}\"", d.mac)), "{text}");
        assert!(text.contains("network = \"user\""), "{text}");
        assert!(text.contains("/img/old.qcow2"), "{text}");
        assert_eq!(lib.get("old").unwrap(), d);
        assert_eq!(
            std::fs::read_dir(lib.dir()).unwrap().count(),
            1,
            "no temp files"
        );

        // A reader that loaded the old file just before another saved it made the same
        // card (and so does one that cannot save it).
        let racing = temp_lib("old-race");
        std::fs::create_dir_all(racing.dir()).unwrap();
        std::fs::write(racing.path_of("old"), old).unwrap();
        let meta = std::fs::metadata(racing.path_of("old")).unwrap();
        let early = mac_for_old_file(old, Some(&meta));
        let a = racing.get("old").unwrap();
        assert_eq!(a.mac, early);
        assert_eq!(racing.get("old").unwrap().mac, early, "as saved");
        // Two libraries' files of the same text still get different cards (their inodes).
        let other = temp_lib("old-other");
        std::fs::create_dir_all(other.dir()).unwrap();
        std::fs::write(other.path_of("old"), old).unwrap();
        assert_ne!(other.get("old").unwrap().mac, a.mac);
        for l in [lib, racing, other] {
            let _ = std::fs::remove_dir_all(l.dir());
        }
    }

    #[test]
    fn the_firmware_is_written_and_a_file_without_it_is_bios() {
        let lib = temp_lib("fw");
        std::fs::create_dir_all(lib.dir()).unwrap();
        // From before UEFI: no field, a BIOS VM, nothing lost.
        std::fs::write(
            lib.path_of("old"),
            "name = \"old\"\nmemory_mib = 64\ncpus = 1\nmac = \"52:54:00:01:02:03\"\n",
        )
        .unwrap();
        let old = lib.get("old").unwrap();
        assert_eq!(
            (old.firmware, old.efi_vars.as_ref()),
            (Firmware::Bios, None)
        );
        // New VMs say which.
        lib.create(&VmDef::new("new", 64, 1)).unwrap();
        let text = std::fs::read_to_string(lib.path_of("new")).unwrap();
        assert!(text.contains("firmware = \"bios\"\n"), "{text}");
        assert!(!text.contains("efi_vars"), "{text}");
        let mut d = VmDef::new("efi", 64, 1);
        d.firmware = Firmware::Uefi;
        d.efi_vars = Some("/data/vmdesk/nvram/efi_VARS.fd".into());
        lib.create(&d).unwrap();
        let text = std::fs::read_to_string(lib.path_of("efi")).unwrap();
        assert!(text.contains("firmware = \"uefi\"\n"), "{text}");
        assert!(
            text.contains("efi_vars = \"/data/vmdesk/nvram/efi_VARS.fd\"\n"),
            "{text}"
        );
        assert_eq!(lib.get("efi").unwrap(), d);
        // A value of someone's own is that VM's error.
        std::fs::write(
            lib.path_of("odd"),
            "name = \"odd\"\nmemory_mib = 64\ncpus = 1\nfirmware = \"coreboot\"\n",
        )
        .unwrap();
        let e = lib.get("odd").unwrap_err().to_string();
        assert!(e.contains("odd.toml") && e.contains("coreboot"), "{e}");
        assert_eq!("uefi".parse::<Firmware>(), Ok(Firmware::Uefi));
        assert!(
            "efi"
                .parse::<Firmware>()
                .unwrap_err()
                .contains("use bios or uefi")
        );
        let _ = std::fs::remove_dir_all(lib.dir());
    }

    #[test]
    fn forwards_need_nat_and_one_host_socket_each() {
        let h = host();
        let fwd = |s: &str| s.parse::<Forward>().unwrap();
        let mut d = VmDef::new("f", 64, 1);
        d.forwards = vec![
            fwd("tcp::2222-:22"),
            fwd("tcp::8080-:80"),
            fwd("udp::2222-:22"),
        ];
        assert_eq!(
            validate(&d, &h),
            Ok(vec![]),
            "same port, other protocol: fine"
        );
        d.forwards.push(fwd("tcp:10.0.0.1:2222-:22"));
        assert_eq!(
            validate(&d, &h),
            Ok(vec![]),
            "same port, other address: fine"
        );
        d.forwards.push(fwd("tcp:127.0.0.1:8080-:8000"));
        let e = validate(&d, &h).unwrap_err();
        assert_eq!(
            e,
            ValidationError::DuplicateForward(fwd("tcp::8080-:80"), fwd("tcp::8080-:8000"))
        );
        assert_eq!(
            e.to_string(),
            "port forwards tcp:127.0.0.1:8080-:80 and tcp:127.0.0.1:8080-:8000 both want host port 8080/tcp"
        );
        // All addresses (0.0.0.0) take the port on every one of them.
        d.forwards = vec![fwd("tcp:10.0.0.1:2222-:22"), fwd("tcp:0.0.0.0:2222-:23")];
        assert!(matches!(
            validate(&d, &h),
            Err(ValidationError::DuplicateForward(..))
        ));
        d.forwards = vec![fwd("tcp::2222-:22")];
        for mode in [NetMode::None, NetMode::Tap("vmtap0".into())] {
            d.network = mode.clone();
            let e = validate(&d, &h).unwrap_err();
            assert_eq!(e, ValidationError::ForwardsNeedUserNetwork(mode.clone()));
            assert!(e.to_string().contains(&format!("not '{mode}'")), "{e}");
        }
        d.forwards.clear();
        assert_eq!(validate(&d, &h), Ok(vec![]), "TAP without forwards");
    }

    #[test]
    fn network_and_forward_labels() {
        assert_eq!(network_label(&NetMode::User), "nat");
        assert_eq!(
            network_label(&NetMode::Tap("br0-tap".into())),
            "tap:br0-tap"
        );
        assert_eq!(network_label(&NetMode::None), "-");
        let fwd = |s: &str| forward_label(&s.parse().unwrap());
        assert_eq!(fwd("tcp::2222-:22"), "127.0.0.1:2222→22");
        assert_eq!(fwd("udp:0.0.0.0:5353-:53"), "0.0.0.0:5353→53/udp");
    }

    #[test]
    fn new_vms_get_different_macs() {
        let macs: std::collections::HashSet<[u8; 6]> = (0..64).map(|_| random_mac().0).collect();
        // 64 draws from 2^24: a repeat is a broken generator, not bad luck (p < 1e-4).
        assert_eq!(macs.len(), 64);
        assert!(macs.iter().all(|m| m[..3] == [0x52, 0x54, 0x00]));
    }

    #[test]
    fn bad_names_never_touch_the_file_system() {
        let lib = temp_lib("names");
        assert!(matches!(
            lib.get("../../etc/passwd"),
            Err(LibraryError::Invalid(_))
        ));
        assert!(matches!(
            lib.create(&VmDef::new("../escape", 64, 1)),
            Err(LibraryError::Invalid(_))
        ));
        assert!(!lib.dir().exists());
    }
}
