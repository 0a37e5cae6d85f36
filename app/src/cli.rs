//! The command line: `vmdesk create|list|start|shutdown|reinstall|destroy|reset|pause|resume|
//! set|delete|eject|insert|vncdisplay|screenshot|send-key|console|serial|doctor|disk|demo …`, virsh's
//! names where virsh has one. Each command
//! returns an error naming the VM and the cause; [`Usage`] errors (bad input) exit 2, the
//! rest 1.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use vmm::disk::Preallocation;

use crate::disk::{self, terminal_progress};
use crate::library::{
    self, DiskBus, DiskDef, DiskFormat, Forward, HostFacts, Library, LibraryError, MacAddr,
    NetMode, VmDef,
};
use crate::osinfo;
use crate::runtime::{self, Runtime, RuntimeError, VmState};

const MIB: u64 = 1 << 20;

/// Bad input from the user: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Usage(msg.into()).into())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Define a new VM (and create its new disk).
    Create(CreateArgs),
    /// List the VMs with their state, memory, vCPUs and VNC address.
    List,
    /// Start a VM in the background.
    Start { name: String },
    /// Press the VM's ACPI power button (the guest shuts down if it listens).
    Shutdown {
        name: String,
        /// Wait up to this many seconds for the guest to power off.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Reinstall a stopped VM, as `virt-install --reinstall`: replace the disks vmdesk created
    /// (--disk size=…) with fresh, empty ones of the same size and format, and start it
    /// booting from its installer ISO (or kernel) again. Everything on those disks is lost.
    ///
    /// Disk images the VM was given with --disk path=… were not created by vmdesk and are not
    /// wiped: reinstall refuses while the VM has one, unless --keep-existing (leave them as
    /// they are, e.g. a data disk) or --force (wipe them too) says what to do with them.
    Reinstall {
        name: String,
        /// Also wipe the images given with --disk path=… (fresh images of their current
        /// virtual size and format).
        #[arg(long, conflicts_with = "keep_existing")]
        force: bool,
        /// Leave the images given with --disk path=… as they are.
        #[arg(long)]
        keep_existing: bool,
    },
    /// Force the VM off: quit, then kill the VMM if it has not gone after the timeout.
    Destroy {
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Reset the VM (the reset button).
    Reset { name: String },
    /// Pause the VM's vCPUs.
    Pause { name: String },
    /// Resume a paused VM.
    Resume { name: String },
    /// Change a stopped VM's network: its mode, port forwards and MAC address, as
    /// `create` takes them (the VM gets them at its next start).
    Set(SetArgs),
    /// Copy a stopped VM to a new one (virt-clone): its disks copied whole into the images
    /// folder (sparse images stay sparse), its settings, a new MAC address.
    Clone { name: String, new_name: String },
    /// Give a stopped VM another name; the disk images vmdesk made for it (named after
    /// it), its log and its serial output follow.
    Rename { name: String, new_name: String },
    /// Delete a stopped VM's definition.
    Delete {
        name: String,
        /// Also delete its disk images.
        #[arg(long)]
        delete_disks: bool,
    },
    /// Take the ISO out of the VM's CD drive: at once when it runs, and from its
    /// definition, so it starts without it (e.g. after an install).
    Eject { name: String },
    /// Put an ISO in the VM's CD drive, in place of any: at once when it runs, and in its
    /// definition.
    Insert { name: String, iso: PathBuf },
    /// Print the VM's VNC display, e.g. 127.0.0.1:1 (connect with `vncviewer 127.0.0.1:1`).
    Vncdisplay { name: String },
    /// Open a window with the VM's screen (the console alone).
    Console { name: String },
    /// Attach this terminal to the VM's serial console (COM1), as `virsh console`: the
    /// recent output, then the guest's as it comes; what you type goes to the guest.
    /// Ctrl+] detaches. Several viewers may be attached at once.
    Serial { name: String },
    /// Save the VM's screen as a PNG.
    Screenshot { name: String, out: PathBuf },
    /// Type keys on the VM's keyboard, e.g. `send-key NAME ctrl-alt-Delete` or
    /// `send-key NAME H i exclam Return`.
    ///
    /// Each KEY is a chord: X keysym names joined by '-', pressed in order, held, released
    /// in reverse; the chords go one after another. Names: letters, digits and characters
    /// as themselves (a, A, 1, !), X names (Return, Escape, Tab, BackSpace, space, Delete,
    /// Up, Page_Down, F1, exclam, minus ...; case does not matter beyond one character),
    /// and ctrl, alt, shift, super, meta for the modifiers. A character on the shifted
    /// level (A, !) brings its own Shift. Unlike virsh, the keys of one chord share one
    /// argument (virsh presses all its arguments together).
    SendKey {
        name: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// How long each chord is held down, and the pause before the next.
        #[arg(long, value_name = "MS", default_value_t = vmm::control::DEFAULT_HOLD_TIME_MS)]
        hold_time: u64,
    },
    /// Check that this host can run VMs, and say how to fix what is missing.
    Doctor,
    /// Disk images.
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    /// Put vmdesk in the desktop's application menu: a launcher entry (running this
    /// vmdesk) and its icon, for this user ($XDG_DATA_HOME, else ~/.local/share).
    InstallDesktop,
    /// Create (or reuse) and start the demo VM: a small interactive boot program, no ISO
    /// needed.
    Demo,
    /// Internal: the process that stays with one running VMM (started by `start`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        dir: PathBuf,
        name: String,
        vmm: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The VM's name. With --cdrom it may be left out: the name of the OS found on the ISO
    /// (osinfo-db's short id, e.g. debian11) is used.
    #[arg(long)]
    pub name: Option<String>,
    /// Guest RAM: a number with K, M or G (plain numbers are MiB); 512M by default. With
    /// --cdrom and none of --memory, --cpus and --disk, the memory, vCPUs and disk the OS on
    /// the ISO recommends (osinfo-db) are used instead of the defaults.
    #[arg(long, value_parser = vmm::config::parse_memory)]
    pub memory: Option<u64>,
    /// vCPUs; 1 by default.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// A new disk `size=10G[,path=P][,format=qcow2|raw][,preallocation=off|full]` or an
    /// existing image `path=P[,format=…]`; repeatable. A new disk goes in vmdesk's images
    /// folder, or at `path=` with the format its name says (.qcow2; .raw or .img). A new
    /// raw disk is sparse unless
    /// `preallocation=full` reserves all its space now. `bus=ide` puts it on the IDE
    /// controller (for guests without virtio drivers; at most 3) instead of virtio.
    #[arg(
        long = "disk",
        value_name = "size=S[,path=P][,format=F][,preallocation=P][,bus=B] | path=P[,format=F][,bus=B]"
    )]
    pub disks: Vec<String>,
    /// An installer ISO for the CD-ROM drive.
    #[arg(long)]
    pub cdrom: Option<PathBuf>,
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    #[arg(long)]
    pub cmdline: Option<String>,
    /// VNC: ADDR:N (port 5900+N), ADDR:auto, auto, or none.
    #[arg(long, default_value = "127.0.0.1:auto")]
    pub vnc: String,
    #[arg(long, value_name = "FILE")]
    pub vnc_password_file: Option<PathBuf>,
    /// The network: user (NAT through passt: no root, the default; `nat` says the same),
    /// tap:NAME (an existing TAP device, e.g. on a bridge to the LAN) or none.
    #[arg(long, value_name = "MODE", default_value = "user", value_parser = parse_network)]
    pub network: NetMode,
    /// Forward a host port to the guest (user network only), QEMU's hostfwd form:
    /// PROTO:[HOSTADDR]:HOSTPORT-:GUESTPORT, e.g. tcp::2222-:22 (the host address defaults to
    /// 127.0.0.1: only this machine may connect); repeatable.
    #[arg(long = "forward", value_name = "SPEC", value_parser = parse_forward)]
    pub forwards: Vec<Forward>,
    /// The network card's MAC address (default: a new one in 52:54:00:xx:xx:xx).
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
}

#[derive(clap::Args, Debug, Default)]
pub struct SetArgs {
    pub name: String,
    /// user (NAT, also `nat`), tap:NAME or none.
    #[arg(long, value_name = "MODE", value_parser = parse_network)]
    pub network: Option<NetMode>,
    /// Add a port forward, PROTO:[HOSTADDR]:HOSTPORT-:GUESTPORT; repeatable.
    #[arg(long = "forward", value_name = "SPEC", value_parser = parse_forward)]
    pub forwards: Vec<Forward>,
    /// Remove every port forward first (with --forward: replace them).
    #[arg(long)]
    pub no_forwards: bool,
    /// The network card's MAC address.
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
}

/// `--network`: the spec's own words on error, so clap's one line says what is wrong.
pub fn parse_network(s: &str) -> Result<NetMode, String> {
    s.parse().map_err(|e: vmm::net::SpecError| e.to_string())
}

/// `--forward`.
pub fn parse_forward(s: &str) -> Result<Forward, String> {
    s.parse().map_err(|e: vmm::net::SpecError| e.to_string())
}

/// `--mac`.
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse().map_err(|e: vmm::net::SpecError| e.to_string())
}

/// A `--disk` option, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum DiskOpt {
    New {
        size: u64,
        /// Where to make it (`path=` beside `size=`); by default in vmdesk's images folder.
        path: Option<PathBuf>,
        format: DiskFormat,
        /// `preallocation=full`: reserve all its space at creation.
        preallocate: bool,
        bus: DiskBus,
    },
    Existing {
        path: PathBuf,
        format: DiskFormat,
        bus: DiskBus,
    },
}

fn parse_format(s: &str) -> Result<DiskFormat, String> {
    match s {
        "raw" => Ok(DiskFormat::Raw),
        "qcow2" => Ok(DiskFormat::Qcow2),
        _ => Err(format!("format={s}: use raw or qcow2")),
    }
}

pub fn parse_disk_opt(s: &str) -> Result<DiskOpt, String> {
    let (mut size, mut path, mut format, mut preallocate) = (None, None, None, None);
    let mut bus = DiskBus::Virtio;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("size", v)) => size = Some(disk::parse_size(v)?),
            Some(("path", v)) if !v.is_empty() => path = Some(PathBuf::from(v)),
            Some(("format", v)) => format = Some(parse_format(v)?),
            Some(("preallocation", "off")) => preallocate = Some(false),
            Some(("preallocation", "full")) => preallocate = Some(true),
            Some(("preallocation", v)) => {
                return Err(format!("preallocation={v}: use off or full"));
            }
            Some(("bus", "virtio")) => bus = DiskBus::Virtio,
            Some(("bus", "ide")) => bus = DiskBus::Ide,
            Some(("bus", v)) => return Err(format!("bus={v}: use virtio or ide")),
            _ => {
                return Err(format!(
                    "--disk {s}: '{part}' is not size=, path=, format=, preallocation= or bus="
                ));
            }
        }
    }
    match (size, path) {
        (Some(size), path) => {
            let format = match &path {
                // A new image at a path of the person's: its format follows its name.
                Some(p) => disk::new_image_format(p, format.map(Into::into))
                    .map_err(|e| format!("--disk {s}: {e}"))?
                    .into(),
                None => format.unwrap_or(DiskFormat::Qcow2),
            };
            let preallocate = preallocate.unwrap_or(false);
            if preallocate && format == DiskFormat::Qcow2 {
                return Err(format!(
                    "--disk {s}: preallocation=full is for raw disks (add format=raw; a \
                     qcow2 image grows as the guest writes)"
                ));
            }
            Ok(DiskOpt::New {
                size,
                path,
                format,
                preallocate,
                bus,
            })
        }
        (None, Some(_)) if preallocate.is_some() => Err(format!(
            "--disk {s}: preallocation= is for a new disk (size=), not an existing image"
        )),
        (None, Some(path)) => {
            // An existing image: as said, else as its name says, else raw (vmdesk-vmm
            // refuses to let a guest turn a raw image it probed into anything else).
            let format = format.unwrap_or_else(|| {
                vmm::disk::ImageFormat::from_name(&path).map_or(DiskFormat::Raw, Into::into)
            });
            Ok(DiskOpt::Existing { path, format, bus })
        }
        (None, None) => Err(format!(
            "--disk {s}: give size= (a new disk, with path= to say where) or path= (an \
             existing image)"
        )),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}", p.display()))
}

/// Where new disk images go: `$XDG_DATA_HOME/vmdesk/images`.
pub(crate) fn images_dir() -> anyhow::Result<PathBuf> {
    let base = library::xdg_dir("XDG_DATA_HOME", ".local/share")
        .context("neither XDG_DATA_HOME nor HOME is set: nowhere to put disk images")?;
    Ok(base.join("vmdesk").join("images"))
}

fn install_desktop() -> anyhow::Result<()> {
    let Some(home) = crate::desktop::data_home() else {
        bail!("neither XDG_DATA_HOME nor HOME is set: no place for the launcher entry");
    };
    let exe = std::env::current_exe().context("cannot tell where this vmdesk is")?;
    let done = crate::desktop::install(&home, &exe)
        .with_context(|| format!("cannot install the launcher entry under {}", home.display()))?;
    println!("installed {}", done.entry.display());
    println!("installed {}", done.icon.display());
    Ok(())
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    if let Command::Disk(c) = cmd {
        return disk::run(c);
    }
    if let Command::Doctor = cmd {
        return doctor();
    }
    if let Command::InstallDesktop = cmd {
        return install_desktop();
    }
    let lib = Library::open_default()?;
    let rt = Runtime::open_default();
    match cmd {
        Command::Create(args) => create(&lib, args),
        Command::Clone { name, new_name } => {
            let images = images_dir()?;
            let mut progress = terminal_progress("copying disks");
            let (def, warnings) =
                crate::clone::clone_vm(&lib, &rt, &images, &name, &new_name, &mut progress)?;
            for w in warnings {
                eprintln!("vmdesk: warning: '{new_name}': {w}");
            }
            println!(
                "cloned '{name}' to '{new_name}' ({})",
                network_summary(&def)
            );
            for d in &def.disks {
                println!("  disk {} ({})", d.path.display(), d.format.as_str());
            }
            Ok(())
        }
        Command::Rename { name, new_name } => {
            let def = crate::clone::rename_vm(&lib, &rt, &images_dir()?, &name, &new_name)?;
            println!("renamed '{name}' to '{new_name}'");
            for d in &def.disks {
                println!("  disk {}", d.path.display());
            }
            Ok(())
        }
        Command::Demo => demo(&lib, &rt),
        Command::List => list(&lib, &rt),
        Command::Start { name } => {
            let def = get(&lib, &name)?;
            for w in library::validate(&def, &HostFacts::detect())
                .map_err(|e| Usage(format!("'{name}': {e}")))?
            {
                eprintln!("vmdesk: warning: '{name}': {w}");
            }
            let vmm = runtime::find_vmm()?;
            match rt.start(&def, &vmm)? {
                Some(addr) => {
                    println!("started '{name}': vncviewer {}", runtime::vnc_display(addr))
                }
                None => println!("started '{name}'"),
            }
            Ok(())
        }
        Command::Shutdown { name, wait } => {
            live(&lib, &rt, &name)?;
            rt.command(&name, "powerdown", json!({}))?;
            match wait {
                None => println!("pressed the power button of '{name}'"),
                Some(secs) => {
                    if !rt.wait_gone(&name, Duration::from_secs(secs)) {
                        bail!(
                            "'{name}' did not power off within {secs} s (vmdesk destroy {name} forces it off)"
                        );
                    }
                    rt.clean(&name);
                    println!("'{name}' powered off");
                }
            }
            Ok(())
        }
        Command::Reinstall {
            name,
            force,
            keep_existing,
        } => {
            let def = get(&lib, &name)?;
            let existing = match (force, keep_existing) {
                (true, _) => runtime::ExistingImages::Wipe,
                (_, true) => runtime::ExistingImages::Keep,
                _ => runtime::ExistingImages::Refuse,
            };
            // Every check that can fail without touching a disk runs before the VMM is
            // looked for, and the VMM before anything is wiped.
            rt.plan_reinstall(&def, existing)?;
            let vmm = runtime::find_vmm()?;
            let (plan, addr) = rt.reinstall(&def, existing, &vmm)?;
            for d in &plan.wipe {
                println!(
                    "fresh disk {} ({}, {} bytes)",
                    d.path.display(),
                    d.format,
                    d.size
                );
            }
            for p in &plan.keep {
                println!("kept {}", p.display());
            }
            match addr {
                Some(a) => println!(
                    "reinstalling '{name}': vncviewer {}",
                    runtime::vnc_display(a)
                ),
                None => println!("reinstalling '{name}'"),
            }
            Ok(())
        }
        Command::Set(args) => {
            let (def, warnings) = set_network(&lib, &rt, args)?;
            for w in warnings {
                eprintln!("vmdesk: warning: '{}': {w}", def.name);
            }
            println!("'{}': {}", def.name, network_summary(&def));
            Ok(())
        }
        Command::Destroy { name, timeout } => {
            live(&lib, &rt, &name)?;
            rt.destroy(&name, Duration::from_secs(timeout))?;
            println!("'{name}' is off");
            Ok(())
        }
        Command::Reset { name } => simple(&lib, &rt, &name, "reset"),
        Command::Pause { name } => simple(&lib, &rt, &name, "pause"),
        Command::Resume { name } => simple(&lib, &rt, &name, "resume"),
        Command::Delete { name, delete_disks } => delete(&lib, &rt, &name, delete_disks),
        Command::Eject { name } => {
            println!("{}", set_media(&lib, &rt, &name, None)?);
            Ok(())
        }
        Command::Insert { name, iso } => {
            println!("{}", set_media(&lib, &rt, &name, Some(iso))?);
            Ok(())
        }
        Command::Vncdisplay { name } => {
            live(&lib, &rt, &name)?;
            let addr = rt
                .vnc_addr(&name)
                .with_context(|| format!("'{name}' has no VNC server"))?;
            println!("{}", runtime::vnc_display(addr));
            Ok(())
        }
        Command::Console { name } => {
            live(&lib, &rt, &name)?;
            let def = get(&lib, &name)?;
            let addr = rt
                .vnc_addr(&name)
                .with_context(|| format!("'{name}' has no VNC server"))?;
            let opts = crate::console::ConsoleOptions {
                password_file: def.vnc_password_file,
                // Asked again before every reconnection: the window follows a VM that is
                // restarted on another display.
                target: Some(crate::console::runtime_target(rt.clone(), &name)),
                standalone: true,
                frames_shown: None,
                boot_note: Some(crate::console::runtime_boot_note(rt.clone(), &name)),
            };
            crate::gui::run_console_with(&name, addr, opts)
        }
        Command::Serial { name } => crate::serial::terminal::run(&lib, &rt, &name),
        Command::Screenshot { name, out } => {
            live(&lib, &rt, &name)?;
            let def = get(&lib, &name)?;
            // The VMM writes the file, from its own working directory: give it a full path.
            let out = absolute(&out)?;
            runtime::screenshot(&rt, &def, &out)?;
            println!("saved the screen of '{name}' to {}", out.display());
            Ok(())
        }
        Command::SendKey {
            name,
            keys,
            hold_time,
        } => send_key(&lib, &rt, &name, &keys, hold_time),
        Command::Supervise {
            dir,
            name,
            vmm,
            args,
        } => std::process::exit(runtime::supervise(&dir, &name, &vmm, &args)),
        Command::Disk(_) | Command::Doctor | Command::InstallDesktop => {
            unreachable!("handled above")
        }
    }
}

fn get(lib: &Library, name: &str) -> anyhow::Result<VmDef> {
    lib.get(name).map_err(|e| match e {
        LibraryError::NotFound(_) | LibraryError::Invalid(_) => Usage(e.to_string()).into(),
        e => e.into(),
    })
}

/// Fails unless `name` is defined and running (or paused).
fn live(lib: &Library, rt: &Runtime, name: &str) -> anyhow::Result<()> {
    // A VM whose definition broke while it ran is still running: only the name must exist.
    if !lib.path_of(name).exists() {
        get(lib, name)?;
    }
    match rt.state(name) {
        s if s.is_live() => Ok(()),
        VmState::Crashed { why, log_tail } => {
            bail!("'{name}' is not running: it crashed: {why}\n{log_tail}")
        }
        _ => bail!("'{name}' is not running"),
    }
}

/// `vmdesk demo`: defines the demo VM if needed, starts it unless it runs, and says how to
/// see it.
fn demo(lib: &Library, rt: &Runtime) -> anyhow::Result<()> {
    use crate::demo::NAME;
    let (def, start) = crate::demo::prepare(lib, rt)?;
    let addr = if !start {
        print!("'{NAME}' is already running");
        rt.vnc_addr(NAME)
    } else {
        for w in library::validate(&def, &HostFacts::detect())
            .map_err(|e| Usage(format!("'{NAME}': {e}")))?
        {
            eprintln!("vmdesk: warning: '{NAME}': {w}");
        }
        let vmm = runtime::find_vmm()?;
        let addr = rt.start(&def, &vmm)?;
        print!("started '{NAME}'");
        addr
    };
    match addr {
        Some(a) => println!(": vncviewer {}", runtime::vnc_display(a)),
        None => println!(),
    }
    println!("see it in a window: vmdesk console {NAME}  (vmdesk shutdown {NAME} powers it off)");
    Ok(())
}

fn simple(lib: &Library, rt: &Runtime, name: &str, execute: &str) -> anyhow::Result<()> {
    live(lib, rt, name)?;
    rt.command(name, execute, json!({}))?;
    println!("{execute}: done for '{name}'");
    Ok(())
}

/// `vmdesk send-key`: the names are checked here first (bad input, whether or not the VM
/// runs), and again by the VMM, which sends nothing unless all are good.
fn send_key(
    lib: &Library,
    rt: &Runtime,
    name: &str,
    keys: &[String],
    hold_ms: u64,
) -> anyhow::Result<()> {
    let chords = display::keymap::parse_chords(keys).map_err(|e| Usage(e.to_string()))?;
    if hold_ms > vmm::control::MAX_HOLD_TIME_MS {
        return usage(format!(
            "--hold-time {hold_ms}: at most {} ms",
            vmm::control::MAX_HOLD_TIME_MS
        ));
    }
    live(lib, rt, name)?;
    // The VMM answers once the last key is up: each chord takes twice the hold time.
    let typing = Duration::from_millis(hold_ms.saturating_mul(2 * chords.len() as u64));
    rt.command_within(
        name,
        "send-key",
        json!({ "keys": keys, "hold-time": hold_ms }),
        typing + Duration::from_secs(10),
    )?;
    println!("sent {} to '{name}'", keys.join(" "));
    Ok(())
}

fn create(lib: &Library, mut a: CreateArgs) -> anyhow::Result<()> {
    if let Some(found) = fill_from_iso(lib, &mut a)? {
        println!("{}", found.summary());
    }
    let (def, warnings) = create_vm(lib, a, &mut terminal_progress("reserving disk space"))?;
    let name = &def.name;
    for w in warnings {
        eprintln!("vmdesk: warning: '{name}': {w}");
    }
    println!(
        "created '{name}' ({} MiB, {} vCPUs)",
        def.memory_mib, def.cpus
    );
    for d in &def.disks {
        println!("  disk {} ({})", d.path.display(), d.format.as_str());
    }
    println!("  {}", network_summary(&def));
    Ok(())
}

/// The default memory and vCPUs of `vmdesk create`.
const DEFAULT_MEMORY: u64 = 512 * MIB;
const DEFAULT_CPUS: u32 = 1;

/// `vmdesk create --cdrom ISO` that leaves out the name, or every figure (memory, vCPUs,
/// disks): the OS on the ISO (osinfo-db) supplies them, as virt-install's and GNOME Boxes'
/// detection does; what the person gave stays. Returns what detection found, to be shown.
fn fill_from_iso(lib: &Library, a: &mut CreateArgs) -> anyhow::Result<Option<osinfo::Detection>> {
    let no_figures = a.memory.is_none() && a.cpus.is_none() && a.disks.is_empty();
    let Some(iso) = a.cdrom.as_ref().filter(|p| p.is_file()) else {
        return Ok(None);
    };
    if a.name.is_some() && !no_figures {
        return Ok(None);
    }
    let found = osinfo::detect(iso);
    match (found.proposal(), &a.name) {
        (Some(p), name) => {
            if name.is_none() {
                a.name = Some(p.free_name(&|n| lib.path_of(n).exists()));
            }
            if no_figures {
                a.memory = Some(p.memory_mib * MIB);
                a.cpus = Some(p.cpus);
                a.disks = vec![format!("size={}", p.disk_bytes)];
            }
        }
        (None, None) => {
            return usage(format!(
                "give the VM a name with --name ({})",
                found.why_none().unwrap_or_default()
            ));
        }
        (None, Some(_)) => {}
    }
    Ok(Some(found))
}

/// The network in a line: `network nat, MAC 52:54:00:…, forwards 127.0.0.1:2222→22`.
fn network_summary(def: &VmDef) -> String {
    let mut s = match &def.network {
        NetMode::None => return "network none".into(),
        mode => format!("network {}, MAC {}", library::network_label(mode), def.mac),
    };
    if !def.forwards.is_empty() {
        let f: Vec<String> = def.forwards.iter().map(library::forward_label).collect();
        s += &format!(", forwards {}", f.join(", "));
    }
    s
}

/// `vmdesk set`: changes a stopped VM's network settings in its definition. `--forward`
/// adds to the forwards it has, after `--no-forwards` removed them.
pub fn set_network(
    lib: &Library,
    rt: &Runtime,
    a: SetArgs,
) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
    let name = &a.name;
    let mut def = get(lib, name)?;
    if a.network.is_none() && a.forwards.is_empty() && !a.no_forwards && a.mac.is_none() {
        return usage(format!(
            "'{name}': nothing to change: give --network, --forward, --no-forwards or --mac"
        ));
    }
    if rt.state(name).is_live() {
        bail!("'{name}' is running: shut it down first (its network is set up when it starts)");
    }
    if a.no_forwards {
        def.forwards.clear();
    }
    if let Some(mode) = a.network {
        def.network = mode;
    }
    def.forwards.extend(a.forwards);
    if let Some(mac) = a.mac {
        def.mac = mac;
    }
    let mut warnings = library::validate(&def, &HostFacts::detect())
        .map_err(|e| Usage(format!("'{name}': {e}")))?;
    warnings.extend(lib.network_clashes(&def, name));
    lib.update(&def)?;
    Ok((def, warnings))
}

/// Validates, creates the new disks and adds the VM to the library; on any failure nothing
/// is left behind. Shared by `vmdesk create` and the GUI's create dialog. `progress` hears
/// (bytes reserved, bytes to reserve) while preallocated disks are made, and returns
/// `false` to cancel (then nothing is left either).
pub fn create_vm(
    lib: &Library,
    a: CreateArgs,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
    let Some(name) = a.name.clone() else {
        return usage("give the VM a name with --name");
    };
    let memory = a.memory.unwrap_or(DEFAULT_MEMORY);
    let mut def = VmDef::new(&name, memory.div_ceil(MIB), a.cpus.unwrap_or(DEFAULT_CPUS));
    def.vnc = match a.vnc.as_str() {
        "auto" => "127.0.0.1:auto".into(),
        v => v.into(),
    };
    def.cmdline = a.cmdline;
    let file = |p: Option<PathBuf>, what: &str| -> anyhow::Result<Option<PathBuf>> {
        match p {
            None => Ok(None),
            Some(p) if p.is_file() => Ok(Some(absolute(&p)?)),
            Some(p) => usage(format!("'{name}': --{what} {}: no such file", p.display())),
        }
    };
    def.cdrom = file(a.cdrom, "cdrom")?;
    def.kernel = file(a.kernel, "kernel")?;
    def.initrd = file(a.initrd, "initrd")?;
    def.vnc_password_file = file(a.vnc_password_file, "vnc-password-file")?;
    def.network = a.network;
    def.forwards = a.forwards;
    if let Some(mac) = a.mac {
        def.mac = mac;
    }
    let disks: Vec<DiskOpt> = a
        .disks
        .iter()
        .map(|s| parse_disk_opt(s).map_err(Usage))
        .collect::<Result<_, _>>()?;
    let mut warnings = library::validate(&def, &HostFacts::detect())
        .map_err(|e| Usage(format!("'{name}': {e}")))?;
    warnings.extend(lib.network_clashes(&def, &name));
    if lib.path_of(&name).exists() {
        return usage(format!("a VM named '{name}' already exists"));
    }

    // New disks go to the images dir, named after the VM; never over an existing file.
    let mut created: Vec<PathBuf> = Vec::new();
    let to_reserve: u64 = disks
        .iter()
        .map(|d| match d {
            DiskOpt::New {
                size,
                preallocate: true,
                ..
            } => *size,
            _ => 0,
        })
        .sum();
    let mut reserved = 0;
    let result = (|| -> anyhow::Result<()> {
        let mut new_index = 0;
        for d in disks {
            match d {
                DiskOpt::Existing { path, format, bus } => {
                    if !path.is_file() {
                        return usage(format!(
                            "'{name}': --disk path={}: no such file",
                            path.display()
                        ));
                    }
                    def.disks.push(DiskDef {
                        path: absolute(&path)?,
                        format,
                        size: None,
                        preallocated: false,
                        bus,
                    });
                }
                DiskOpt::New {
                    size,
                    path,
                    format,
                    preallocate,
                    bus,
                } => {
                    let path = match path {
                        Some(p) => absolute(&p)?,
                        None => {
                            let dir = images_dir()?;
                            std::fs::create_dir_all(&dir)
                                .with_context(|| format!("cannot create {}", dir.display()))?;
                            let stem = match new_index {
                                0 => name.clone(),
                                n => format!("{name}-{n}"),
                            };
                            new_index += 1;
                            dir.join(format!("{stem}.{}", format.as_str()))
                        }
                    };
                    if std::fs::symlink_metadata(&path).is_ok() {
                        bail!(
                            "'{name}': {} already exists (delete it, or use --disk path={} \
                             without size= to use it as it is)",
                            path.display(),
                            path.display()
                        );
                    }
                    let prealloc = if preallocate {
                        Preallocation::Full
                    } else {
                        Preallocation::Off
                    };
                    let before = reserved;
                    let mut report = |done: u64| {
                        reserved = before + done;
                        progress(reserved, to_reserve)
                    };
                    let made = vmm::disk::create_image_with(
                        &path,
                        format.into(),
                        size,
                        false,
                        prealloc,
                        &mut report,
                    );
                    match made {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                            bail!("'{name}': cancelled while creating {}", path.display())
                        }
                        r => r.with_context(|| {
                            format!("'{name}': cannot create {}", path.display())
                        })?,
                    }
                    created.push(path.clone());
                    def.disks.push(DiskDef {
                        path,
                        format,
                        size: Some(size),
                        preallocated: preallocate,
                        bus,
                    });
                }
            }
        }
        lib.create(&def).map_err(|e| match e {
            LibraryError::Exists(_) => Usage(e.to_string()).into(),
            e => anyhow::Error::from(e),
        })
    })();
    if let Err(e) = result {
        for p in created {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok((def, warnings))
}

/// One VM's line in `vmdesk list`, its cells as shown.
#[derive(Debug, Default)]
struct ListRow {
    name: String,
    state: String,
    memory: String,
    cpus: String,
    vnc: String,
    /// `nat`, `tap:NAME` or `-`.
    net: String,
    /// How to reach the guest's services: `127.0.0.1:2222→22, …`, or `-`.
    forwards: String,
    note: String,
}

impl ListRow {
    fn header() -> ListRow {
        ListRow {
            name: "NAME".into(),
            state: "STATE".into(),
            memory: "MEMORY".into(),
            cpus: "CPUS".into(),
            vnc: "VNC".into(),
            net: "NET".into(),
            forwards: "FORWARDS".into(),
            note: "NOTE".into(),
        }
    }
}

/// The table: fixed columns up to VNC, then NET and FORWARDS as wide as their widest cell
/// (a TAP name, several forwards), then the free-text NOTE; no trailing blanks.
fn list_lines(rows: &[ListRow]) -> Vec<String> {
    let width = |cell: fn(&ListRow) -> &str| {
        rows.iter()
            .map(|r| cell(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let net_w = width(|r| &r.net);
    let fwd_w = width(|r| &r.forwards);
    rows.iter()
        .map(|r| {
            let line = format!(
                "{:<20} {:<9} {:>8} {:>5}  {:<15}  {:<net_w$}  {:<fwd_w$}  {}",
                r.name, r.state, r.memory, r.cpus, r.vnc, r.net, r.forwards, r.note
            );
            line.trim_end().to_string()
        })
        .collect()
}

fn list(lib: &Library, rt: &Runtime) -> anyhow::Result<()> {
    let mut rows = vec![ListRow::header()];
    let mut problems = Vec::new();
    for e in lib.list()? {
        let state = rt.state(&e.name);
        let vnc = if state.is_live() {
            rt.vnc_addr(&e.name)
                .map(runtime::vnc_display)
                .unwrap_or_else(|| "-".into())
        } else {
            "-".into()
        };
        // A running VM that sits in the firmware's "No bootable device", or whose network
        // went down, says so.
        let status = state.is_live().then(|| rt.live_status(&e.name)).flatten();
        let boot = status.as_ref().and_then(runtime::BootFailure::from_status);
        let net_down = status.as_ref().is_some_and(runtime::link_down);
        let mut notes = Vec::new();
        if boot.is_some() {
            notes.push(runtime::NO_BOOT_NOTE);
        }
        if net_down {
            notes.push(runtime::NET_DOWN_NOTE);
            problems.push(format!(
                "'{}' has lost its network (the card's link is down; its log says why: {})",
                e.name,
                rt.log_path(&e.name).display()
            ));
        }
        let mut row = ListRow {
            name: e.name.clone(),
            vnc,
            note: notes.join(", "),
            ..ListRow::default()
        };
        match &e.def {
            Ok(d) => {
                row.state = state.label().into();
                row.memory = format!("{}M", d.memory_mib);
                row.cpus = d.cpus.to_string();
                row.net = library::network_label(&d.network);
                row.forwards = if d.forwards.is_empty() {
                    "-".into()
                } else {
                    let f: Vec<String> = d.forwards.iter().map(library::forward_label).collect();
                    f.join(", ")
                };
            }
            Err(err) => {
                row.state = "error".into();
                for cell in [
                    &mut row.memory,
                    &mut row.cpus,
                    &mut row.net,
                    &mut row.forwards,
                ] {
                    *cell = "-".into();
                }
                problems.push(err.to_string());
            }
        }
        rows.push(row);
        if let Some(f) = &boot {
            problems.push(format!(
                "'{}' found nothing to boot: {}\n  {}",
                e.name,
                f.message,
                f.cli_fix(&e.name)
            ));
        }
        if let VmState::Crashed { why, .. } = &state {
            problems.push(format!(
                "'{}' crashed: {why} (log: {})",
                e.name,
                rt.log_path(&e.name).display()
            ));
        }
    }
    for line in list_lines(&rows) {
        println!("{line}");
    }
    for p in problems {
        eprintln!("vmdesk: {p}");
    }
    Ok(())
}

/// Deletes a stopped VM (and with `delete_disks` its images). Shared with the GUI.
pub fn delete(lib: &Library, rt: &Runtime, name: &str, delete_disks: bool) -> anyhow::Result<()> {
    if rt.state(name).is_live() {
        bail!("'{name}' is running: stop it first (vmdesk destroy {name})");
    }
    match lib.get(name) {
        Ok(def) => {
            if delete_disks {
                for d in &def.disks {
                    match std::fs::remove_file(&d.path) {
                        Ok(()) => println!("deleted {}", d.path.display()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("'{name}': cannot delete {}", d.path.display())
                            });
                        }
                    }
                }
            }
        }
        Err(LibraryError::NotFound(_)) | Err(LibraryError::Invalid(_)) => {
            return Err(get(lib, name).unwrap_err());
        }
        // A broken definition can be deleted, but its disks are unknown.
        Err(e) if delete_disks => {
            bail!("'{name}': {e}; cannot tell which disks are its (delete without --delete-disks)")
        }
        Err(_) => {}
    }
    lib.remove(name)?;
    rt.remove_all(name);
    println!("deleted '{name}'");
    Ok(())
}

/// Ejects (`iso` None) or changes the VM's CD: on a running VM through its control socket,
/// and in its definition either way, so the next start sees the same. Returns what was done.
/// Shared by `vmdesk eject` / `vmdesk insert` and the GUI's CD dialog.
pub fn set_media(
    lib: &Library,
    rt: &Runtime,
    name: &str,
    iso: Option<PathBuf>,
) -> anyhow::Result<String> {
    let mut def = get(lib, name)?;
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
    if rt.state(name).is_live() {
        let r = match &iso {
            None => rt.command(name, "eject", json!({})),
            Some(p) => rt.command(name, "change-media", json!({ "path": p })),
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
    lib.update(&def)?;
    Ok(match iso {
        None => format!("ejected the CD of '{name}'{note}"),
        Some(p) => format!("'{name}' now has {} in its CD drive{note}", p.display()),
    })
}

fn doctor() -> anyhow::Result<()> {
    let check = crate::host_check::HostCheck::detect();
    print!("{}", check.to_text());
    if !check.ok() {
        bail!("this host cannot run VMs yet: see the fixes above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    #[test]
    fn media_changes_live_and_in_the_definition() {
        let root = std::env::temp_dir().join(format!("vmdesk-media-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        let iso = root.join("a.iso");
        std::fs::write(&iso, [0u8; 2048]).unwrap();
        let mut def = VmDef::new("vm", 64, 1);
        def.cdrom = Some(root.join("old.iso"));
        lib.create(&def).unwrap();

        // Stopped: only the definition changes.
        let m = set_media(&lib, &rt, "vm", Some(iso.clone())).unwrap();
        assert!(m.contains("a.iso"), "{m}");
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso.clone()));
        let e = set_media(&lib, &rt, "vm", Some(root.join("nope.iso"))).unwrap_err();
        assert!(e.to_string().contains("'vm'") && e.to_string().contains("no such file"));
        assert!(e.is::<Usage>());
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso.clone()));
        let e = set_media(&lib, &rt, "nosuch", None).unwrap_err();
        assert!(e.to_string().contains("no VM named 'nosuch'"), "{e}");
        // Nothing to eject from a VM without a CD.
        lib.create(&VmDef::new("bare", 64, 1)).unwrap();
        let e = set_media(&lib, &rt, "bare", None).unwrap_err();
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
        let e = set_media(&lib, &rt, "vm", None).unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso.clone()));
        let m = set_media(&lib, &rt, "vm", None).unwrap();
        assert!(m.contains("ejected"), "{m}");
        assert_eq!(lib.get("vm").unwrap().cdrom, None);
        let seen = server.join().unwrap();
        assert!(seen[1].contains("\"eject\""), "{seen:?}");
        assert!(seen[3].contains("\"eject\""), "{seen:?}");
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn list_columns_fit_their_widest_cell_and_end_without_blanks() {
        let row = |name: &str, net: &str, forwards: &str, note: &str| ListRow {
            name: name.into(),
            state: "stopped".into(),
            memory: "64M".into(),
            cpus: "1".into(),
            vnc: "-".into(),
            net: net.into(),
            forwards: forwards.into(),
            note: note.into(),
        };
        let lines = list_lines(&[
            ListRow::header(),
            row("web", "nat", "127.0.0.1:2222→22, 0.0.0.0:5353→53/udp", ""),
            row("lan", "tap:vmtap-long0", "-", "no bootable device"),
            row("off", "-", "-", ""),
        ]);
        assert_eq!(
            lines,
            [
                "NAME                 STATE       MEMORY  CPUS  VNC              NET              FORWARDS                                NOTE",
                "web                  stopped        64M     1  -                nat              127.0.0.1:2222→22, 0.0.0.0:5353→53/udp",
                "lan                  stopped        64M     1  -                tap:vmtap-long0  -                                       no bootable device",
                "off                  stopped        64M     1  -                -                -",
            ]
        );
        // Narrow cells: the columns are no wider than their headers.
        let lines = list_lines(&[ListRow::header(), row("a", "-", "-", "")]);
        assert_eq!(
            lines[0],
            "NAME                 STATE       MEMORY  CPUS  VNC              NET  FORWARDS  NOTE"
        );
        assert_eq!(
            lines[1],
            "a                    stopped        64M     1  -                -    -"
        );
    }

    #[test]
    fn set_refuses_a_running_vm_and_keeps_its_definition() {
        let root = std::env::temp_dir().join(format!("vmdesk-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (lib, rt) = (Library::at(root.join("vms")), Runtime::at(root.join("run")));
        lib.create(&VmDef::new("vm", 64, 1)).unwrap();
        let before = lib.get("vm").unwrap();
        let mut child = crate::runtime::fake_vmm(&rt, "vm");
        let e = set_network(
            &lib,
            &rt,
            SetArgs {
                name: "vm".into(),
                network: Some(NetMode::None),
                ..Default::default()
            },
        )
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
        let (def, warnings) = set_network(
            &lib,
            &rt,
            SetArgs {
                name: "vm".into(),
                network: Some(NetMode::None),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(def.network, NetMode::None);
        assert_eq!(lib.get("vm").unwrap(), def);
        assert_eq!(network_summary(&def), "network none");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn disk_options() {
        assert_eq!(
            parse_disk_opt("size=10G"),
            Ok(DiskOpt::New {
                size: 10 << 30,
                path: None,
                format: DiskFormat::Qcow2,
                preallocate: false,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("size=64M,format=raw"),
            Ok(DiskOpt::New {
                size: 64 << 20,
                path: None,
                format: DiskFormat::Raw,
                preallocate: false,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("size=64M,format=raw,preallocation=full"),
            Ok(DiskOpt::New {
                size: 64 << 20,
                path: None,
                format: DiskFormat::Raw,
                preallocate: true,
                bus: DiskBus::Virtio,
            })
        );
        // A new disk at a path of the person's: its format follows its name.
        for (spec, format) in [
            ("size=1G,path=/x/t1.raw", DiskFormat::Raw),
            ("size=1G,path=/x/t1.IMG", DiskFormat::Raw),
            ("size=1G,path=/x/t1.qcow2", DiskFormat::Qcow2),
            ("size=1G,path=/x/t1", DiskFormat::Qcow2),
            ("size=1G,path=/x/t1,format=raw", DiskFormat::Raw),
            ("size=1G,path=/x/t1.raw,format=raw", DiskFormat::Raw),
        ] {
            match parse_disk_opt(spec) {
                Ok(DiskOpt::New {
                    path, format: f, ..
                }) => {
                    assert_eq!((path.is_some(), f), (true, format), "{spec}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
        for (bad, says) in [
            ("size=1G,path=/x/t1.raw,format=qcow2", "its name says raw"),
            ("size=1G,path=/x/t1.qcow2,format=raw", "its name says qcow2"),
            (
                "size=1G,path=/x/t1.qcow2,preallocation=full",
                "is for raw disks",
            ),
            ("size=1G,preallocation=full", "is for raw disks"),
            ("size=1G,format=raw,preallocation=some", "use off or full"),
            ("path=/x/a.raw,preallocation=full", "is for a new disk"),
        ] {
            let e = parse_disk_opt(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            parse_disk_opt("path=/x/a.qcow2"),
            Ok(DiskOpt::Existing {
                path: "/x/a.qcow2".into(),
                format: DiskFormat::Qcow2,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("path=/x/a.img"),
            Ok(DiskOpt::Existing {
                path: "/x/a.img".into(),
                format: DiskFormat::Raw,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("path=/x/a.raw,bus=ide"),
            Ok(DiskOpt::Existing {
                path: "/x/a.raw".into(),
                format: DiskFormat::Raw,
                bus: DiskBus::Ide,
            })
        );
        assert!(
            parse_disk_opt("size=1G,bus=scsi")
                .unwrap_err()
                .contains("use virtio or ide")
        );
        for bad in [
            "",
            "size=0",
            "format=qcow2",
            "size=1G,format=vmdk",
            "path=",
            "colour=red",
        ] {
            assert!(parse_disk_opt(bad).is_err(), "{bad}");
        }
    }
}
